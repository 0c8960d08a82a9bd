r"""Rewards and verifiers as factors of a composition: ``model * rc.reward(r, temperature=λ)``.

A reward ``r(x) -> (B,)`` (a verifier, a classifier's log-probability, a count, a detector; any
scorer of clean samples) tilts a composition's clean density::

    π(x) ∝ p_0(x) · exp(r(x)/λ)            (λ > 0: the temperature; λ → 0 keeps the argmax)

**Along the trajectory** the reward is read at Tweedie's estimate of the clean sample,
``x̂₀(x_t) = (x_t + σ_t² s(x_t, t))/α_t`` with ``s`` the composition's own score (clamped to
``clip`` as the samplers' steps are), so it costs no extra network call in the weighted samplers.

**Weighted samplers** (``"smc"``, ``"fkc"``; Feynman–Kac steering, Singhal et al. 2025) multiply
each particle's weight by potentials ``G_i``. With ``ρ_i = r(x̂₀(x_{t_i}))/λ`` at the levels where
the reward is read (every ``interval``-th level, and always the last), a particle carries the
accumulated log-potential ``A_i = Σ_{j ≥ i} log G_j`` (copied by resampling), which each option
sets as::

    potential="difference":  A_i = ρ_i                  (log G_i = ρ_i − ρ_{i+1})
    potential="max":         A_i = max(A_{i+1}, ρ_i)    (the best reward seen so far)
    potential="sum":         A_i = A_{i+1} + ρ_i        (every reward seen, added up)

and at the last level, whatever the option, ``A_0 = r(x₀)/λ`` on exactly the sample returned (the
denoised ``x̂₀`` when the sampler denoises). The product of a path's potentials is then
``exp(r(x₀)/λ)``: the weighted particles target ``π`` (the sampler's own target times the tilt)
and are consistent as the number of particles grows, whatever the intermediate choice; the
choice only decides how early particles with a poor outlook are dropped. The sampler's
``log_evidence`` becomes ``log ∫ p̃_0 exp(r/λ)``. Rewards enter only the weights there: the
proposals and moves are the sampler's own (moves are refused: they would leave the tilted
targets behind).

**Gradient samplers** (``"reverse"``, ``"ode"``, annealed MCMC) need ``∇ₓ`` of the tilt: a
``differentiable=True`` reward adds ``∇ₓ r(x̂₀(x, t))/λ`` to the score (reward guidance; the
gradient runs through the network in ``x̂₀``, one extra backward pass per evaluation; here
``x̂₀`` is not clamped: the model does not know the sampler's ``clip``) and
``−r(x̂₀)/λ`` to the energy. A reward that is not differentiable (an indicator, a count, a
classifier's argmax) is refused by them in one line, before any work: it can only weight.

**Best-of-N** (:class:`~recompose.samplers.best_of.BestOf`) draws ``N`` candidates per sample
and keeps the one with the highest reward: the baseline at ``N`` times the cost.

Shapes: ``x`` ``(B, *D)``; a reward returns ``(B,)`` (finite, or ``−inf``: weight zero for
good; a particle with ``−inf`` at an intermediate reading stays at zero, so ``−inf`` there is a
hard constraint, not only a potential, and the consistency above holds for finite readings). A
reward is called on all particles at once, only on the levels that read it; ``info.reward_evals``
counts calls per chain beside the network evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .errors import CapabilityError, CompositionError
from .models.base import DiffusionModel
from .utils import append_dims, as_time, keep_graph

__all__ = ["Reward", "Tilted", "reward", "POTENTIALS", "split_rewards", "tilt_update",
           "reward_levels"]

POTENTIALS = ("difference", "max", "sum")

RewardFn = Callable[[Tensor], Tensor]


class Reward:
    """A reward factor ``exp(r(x)/λ)`` (module docstring); build it with :func:`reward`."""

    def __init__(self, fn: RewardFn, temperature: float = 1.0, differentiable: bool = False,
                 potential: str = "difference", interval: int = 1,
                 name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a reward is a function of x (B, *D) -> (B,), got "
                            f"{type(fn).__name__}")
        if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                or not (math.isfinite(temperature) and temperature > 0)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {', '.join(POTENTIALS)}, got "
                             f"{potential!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an integer ≥ 1 (read the reward every that "
                             f"many levels), got {interval!r}")
        self.fn, self.temperature = fn, float(temperature)
        self.differentiable, self.potential = bool(differentiable), potential
        self.interval = interval
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, x: Tensor) -> Tensor:
        """``r(x)/λ`` as float64 ``(B,)``; a wrong shape or NaN is an error."""
        value = self.fn(x)
        if not torch.is_tensor(value) or value.shape != (x.shape[0],):
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"reward {self.name!r} must return a tensor of shape "
                             f"({x.shape[0]},) (one value per sample), got {shape}")
        if bool(torch.isnan(value).any()) or bool((value == math.inf).any()):
            raise FloatingPointError(f"reward {self.name!r} returned NaN or +inf for "
                                     f"{int((torch.isnan(value) | (value == math.inf)).sum())} "
                                     "samples (−inf is allowed: weight zero)")
        return value.to(device=x.device, dtype=torch.float64) / self.temperature

    def reads(self, i: int) -> bool:
        """Whether weighted samplers read this reward at level ``i``: every ``interval``-th
        level, counted from the cleanest (level 0 always)."""
        return i % self.interval == 0

    def settings(self) -> dict:
        """The factor's options, JSON-ready (recorded in ``info.settings``)."""
        return {"name": self.name, "temperature": self.temperature,
                "differentiable": self.differentiable, "potential": self.potential,
                "interval": self.interval}

    def describe(self) -> str:
        """Short name for messages."""
        return f"reward({self.name}, λ={self.temperature:g})"

    __repr__ = describe

    def __mul__(self, other: object) -> Tilted:
        if isinstance(other, DiffusionModel):
            return tilt(other, [self])
        if isinstance(other, Reward):
            raise CompositionError("two rewards make a factor only with a model: "
                                   "model * reward_a * reward_b")
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> object:
        raise CompositionError(f"{self.describe()} cannot be divided; a reward tilts a model: "
                               "model * reward")

    def __rtruediv__(self, other: object) -> object:
        raise CompositionError(f"dividing by {self.describe()} is not supported; negate the "
                               "reward instead: rc.reward(lambda x: -r(x), ...)")

    def __pow__(self, w: object) -> object:
        raise CompositionError(f"a power of {self.describe()} is its temperature: use "
                               "rc.reward(r, temperature=λ / w)")

    def __add__(self, other: object) -> object:
        raise CompositionError(f"{self.describe()} is a factor, not a density: it cannot be "
                               "a part of a mixture")

    __radd__ = __add__


def reward(fn: RewardFn, temperature: float = 1.0, differentiable: bool = False,
           potential: str = "difference", interval: int = 1, name: str | None = None
           ) -> Reward:
    """The factor ``exp(fn(x)/temperature)`` for ``model * rc.reward(...)``.

    Args:
        fn: the reward, ``x (B, *D) -> (B,)`` on clean samples (called with all particles).
        temperature: ``λ > 0``; smaller is greedier.
        differentiable: ``fn`` can be differentiated by autograd, so gradient samplers may
            use it (reward guidance); otherwise only weighted samplers and best-of-N can.
        potential: the intermediate potentials of weighted samplers: ``"difference"``
            (default), ``"max"`` or ``"sum"`` (module docstring); the last level always
            corrects to ``exp(r(x₀)/λ)``.
        interval: read the reward every ``interval`` levels (and at the last one).
        name: for messages and the run record (default: ``fn.__name__``).
    """
    return Reward(fn, temperature, differentiable, potential, interval, name)


def _with_graph(model: DiffusionModel, x: Tensor, t: Tensor) -> tuple[Tensor | None, Tensor]:
    """``model``'s energy (``None`` if score-only) and score at ``x`` (which requires grad),
    with the graph kept so that ``x̂₀(x)`` can be differentiated through the network."""
    if model.has_energy:
        energy = model.energy(x, t)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return energy, -grad
    with keep_graph():  # energy parts inside a score-only composite keep their graph too
        score = model.score(x, t)
    if not score.requires_grad:
        raise CapabilityError(
            f"{model.describe()}'s score is not differentiable in x (it detaches its input), so "
            "a reward's gradient through x̂₀ cannot be formed; use the reward in weights "
            "('fkc', rc.samplers.BestOf)")
    return None, score


class Tilted(DiffusionModel):
    """``base · Π_j exp(r_j(x̂₀)/λ_j)`` (module docstring): a composition with reward factors.

    Weighted samplers and best-of-N run ``base`` and use the rewards in weights; gradient
    samplers run this model, whose score adds each (differentiable) reward's gradient."""

    marginal = False

    def __init__(self, base: DiffusionModel, rewards: Sequence[Reward]) -> None:
        super().__init__()
        if isinstance(base, Tilted):
            base, rewards = base.base, [*base.rewards, *rewards]
        self.base = base
        self.rewards = tuple(rewards)
        self.schedule, self.event_shape = base.schedule, base.event_shape
        self.has_energy = base.has_energy
        self.reward_rows = 0  # rows of reward calls made through score / energy

    @property
    def differentiable(self) -> bool:
        """Whether every reward can be differentiated (gradient samplers need it)."""
        return all(r.differentiable for r in self.rewards)

    def _refuse_gradient(self) -> None:
        bad = [r.describe() for r in self.rewards if not r.differentiable]
        if bad:
            raise CapabilityError(
                f"{', '.join(bad)} is not differentiable, so it has no gradient for a score; "
                "use it in weights: sample with 'fkc' or 'smc' (proposal='ddpm'), or "
                "rc.samplers.BestOf; or declare rc.reward(..., differentiable=True) if autograd "
                "can differentiate it")

    def _tilt(self, x0: Tensor) -> Tensor:
        self.reward_rows += x0.shape[0] * len(self.rewards)  # one call per reward, as elsewhere
        return sum(r(x0) for r in self.rewards)

    def _x0(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        alpha, sigma = self.schedule(t)
        return (x + append_dims(sigma, x.ndim) ** 2 * score) / append_dims(alpha, x.ndim)

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``E_base(x, t) − Σ_j r_j(x̂₀)/λ_j``."""
        t = as_time(t, x.shape[0], x)
        energy, score = self.base.energy_and_score(x, t)
        with torch.no_grad():
            tilt = self._tilt(self._x0(x, t, score))
        return energy - tilt.to(energy.dtype)

    def _guided(self, x: Tensor, t: float | Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """The base's energy and score and the tilt's gradient, one backward pass through
        ``x̂₀``."""
        self._refuse_gradient()
        t = as_time(t, x.shape[0], x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            energy, score = _with_graph(self.base, xg, t)
            tilt = self._tilt(self._x0(xg, t, score))
            (grad,) = torch.autograd.grad(tilt.sum(), xg)
        energy = None if energy is None else energy.detach() - tilt.detach().to(energy.dtype)
        return energy, score.detach() + grad.to(score.dtype), tilt

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Both at once, with one backward pass through ``x̂₀``."""
        if not self.has_energy:
            self.base.energy(x, t)  # raises the base's CapabilityError
        energy, score, _ = self._guided(x, t)
        return energy, score

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``s_base + Σ_j ∇ₓ r_j(x̂₀(x, t))/λ_j`` (differentiable rewards only)."""
        return self._guided(x, t)[1]

    def leaves(self) -> Iterator[DiffusionModel]:
        """The base's leaves (rewards are not networks of the path)."""
        yield from self.base.leaves()

    def describe(self) -> str:
        """``base * reward(name, λ) * …``."""
        return f"{self.base.describe()} * " + " * ".join(r.describe() for r in self.rewards)


def tilt(model: DiffusionModel, rewards: Sequence[Reward]) -> Tilted:
    """``model · Π rewards`` (a tilted model's rewards are appended)."""
    return Tilted(model, rewards)


def split_rewards(model: DiffusionModel) -> tuple[DiffusionModel, tuple[Reward, ...]]:
    """``(base, rewards)`` of a tilted model; ``(model, ())`` for any other."""
    if isinstance(model, Tilted):
        return model.base, model.rewards
    if any(isinstance(m, Tilted) for m in model.modules()):
        raise CompositionError(f"{model.describe()} has a reward factor inside a composite; "
                               "a reward tilts the whole composition: (a * b) * rc.reward(...)")
    return model, ()


def reward_levels(reward: Reward, num_levels: int) -> list[int]:
    """The levels at which weighted samplers read ``reward`` (:meth:`Reward.reads`)."""
    return [i for i in range(num_levels) if reward.reads(i)]


def tilt_update(reward: Reward, accumulated: Tensor | None, rho: Tensor) -> Tensor:
    """The accumulated log-potential ``A_i`` from ``A_{i+1}`` (``None`` before the first read)
    and ``ρ_i = r(x̂₀)/λ`` (module docstring)."""
    if accumulated is None or reward.potential == "difference":
        return rho
    if reward.potential == "max":
        return torch.maximum(accumulated, rho)
    return accumulated + rho
