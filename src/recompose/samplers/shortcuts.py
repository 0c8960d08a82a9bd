r"""The samplers' names as shortcuts: ``rc.sample(model, n, "hmc", num_steps=5)`` is
``rc.sample(model, n, rc.samplers.Annealed(rc.mcmc.hmc(), num_steps=5))``.

==========  ====================================================================
name        sampler object (defaults)
==========  ====================================================================
``reverse``  :class:`~.reverse.Reverse` ()
``ode``      :class:`~.ode.ODE` (``method="euler"``)
``ula``      :class:`~.annealed.Annealed` (``rc.mcmc.ula()``, ``num_steps=10``)
``uhmc``     :class:`~.annealed.Annealed` (``rc.mcmc.uhmc()``, ``num_steps=10``)
``mala``     :class:`~.annealed.Annealed` (``rc.mcmc.mala()``, ``num_steps=10``)
``hmc``      :class:`~.annealed.Annealed` (``rc.mcmc.hmc()``, ``num_steps=10``)
``smc``      :class:`~.smc.SMC` (``moves="hmc"``, ``num_steps=2``, AIS weights)
``fkc``      :class:`~.fkc.FKC` (no moves)
==========  ====================================================================

Options go to the sampler's constructor, and for the annealed names to the kernel's factory
when they are its arguments (``num_leapfrog_steps``, ``damping``, ``energy``…). An option that
neither takes is a one-line ``TypeError`` naming it; so is an option given beside a sampler
object (set it in the object's constructor instead). An option given as ``None`` is not given
(the default), except ``moves=None``: no moves. A kernel object in place of a name is
the annealed sampler with that kernel.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..mcmc import KERNELS
from ..mcmc.base import Kernel
from .annealed import Annealed
from .base import Sampler
from .fkc import FKC
from .ode import ODE
from .reverse import Reverse
from .smc import SMC

__all__ = ["SAMPLERS", "make_sampler"]

SAMPLERS = ("reverse", "ode", "ula", "uhmc", "mala", "hmc", "smc", "fkc")

_OBJECTS: dict[str, Callable[..., Sampler]] = {"reverse": Reverse, "ode": ODE, "smc": SMC,
                                               "fkc": FKC}


def _names(fn: Callable) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind is not p.VAR_KEYWORD and p.name != "kernel"]


def _refuse(option: str, name: str, allowed: list[str]) -> TypeError:
    return TypeError(f"{option} does not apply to sampler {name!r} (its options: "
                     f"{', '.join(allowed) or 'none'})")


def make_sampler(sampler: str | Sampler | Kernel, **options: object) -> Sampler:
    """The sampler object a name (with its options), a kernel or a sampler object stands for
    (module docstring)."""
    # None is "not given" (the sampler's default), except moves=None: no moves
    options = {k: v for k, v in options.items() if v is not None or k == "moves"}
    if isinstance(sampler, Sampler):
        if options:
            option = next(iter(options))
            raise TypeError(f"{option} cannot be combined with a sampler object; set it in its "
                            f"constructor, e.g. rc.samplers.{type(sampler).__name__}(..., "
                            f"{option}=...)")
        return sampler
    if isinstance(sampler, Kernel):
        return _annealed(sampler.name, sampler, options, kernel_given=True)
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}, "
                         "or pass a sampler object (rc.samplers.…) or a kernel (rc.mcmc.…)")
    if sampler in KERNELS:
        return _annealed(sampler, KERNELS[sampler], options, kernel_given=False)
    cls = _OBJECTS[sampler]
    allowed = _names(cls)
    if sampler in ("smc", "fkc"):  # their moves' factory options, when moves is a name
        moves = options.get("moves", "hmc" if sampler == "smc" else None)
        # a kernel object's factory options reach the constructor, which says where they go
        factory = KERNELS.get(moves.name if isinstance(moves, Kernel) else moves)
        allowed += [] if factory is None else _names(factory)
    for option in options:
        if option not in allowed:
            raise _refuse(option, sampler, allowed)
    return cls(**options)


def _annealed(name: str, kernel: Kernel | Callable[..., Kernel], options: dict,
              kernel_given: bool) -> Annealed:
    """``Annealed`` with the kernel's factory options split off from the sampler's."""
    own = _names(Annealed)
    factory_options = [] if kernel_given else _names(kernel)
    for option in options:
        if option not in own + factory_options:
            if kernel_given and option != "kernel":
                raise TypeError(f"{option} cannot be combined with a kernel object; set it in "
                                f"the factory, e.g. rc.mcmc.{name}({option}=...)")
            raise _refuse(option, name, factory_options + own)
    if not kernel_given:
        kernel = kernel(**{k: v for k, v in options.items() if k in factory_options})
    return Annealed(kernel, **{k: v for k, v in options.items() if k in own})
