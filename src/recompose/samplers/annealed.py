r"""Annealed MCMC over the noise levels (R3 Algorithm 1).

At each level ``t_i`` (from the noisiest, ``i = T − 1``, down to ``i = 0``) the chains target
the composed time-``t_i`` density ``π_i(x) ∝ exp(−E_comp(x, t_i))`` — e.g. the product
``∏_k p^k_{t_i}(x)`` — which is a well-defined unnormalised density even though it is not the
diffusion of the composition::

    x ~ prior                                     at level T − 1
    for i = T − 1, …, 0:
        if i < T − 1 and predictor:  x ← posterior step from level i + 1 (reverse diffusion)
        repeat K times:              x ← kernel step targeting π_i
    if denoise: x ← Tweedie's x̂₀ at level 0       (the last reverse-diffusion step)
    return x

* ``predictor=False`` is the R3 2D notebook (pure annealed MCMC); ``True`` is the R3 PyTorch
  code (reverse-diffusion predictor, MCMC corrector). The predictor reuses the kernel's cached
  score: no extra evaluation.
* ``denoise`` ends every sampler as reverse diffusion ends, so samplers compare on equal
  terms; ``denoise=False`` returns samples of ``π_0`` (the R3 notebook).
* ``kernel.init(x, π_i, generator, previous=state)`` lets the kernel carry what it needs from
  the previous level (U-HMC/HMC: the momentum; ULA/MALA: nothing).
* Step sizes ``c · σ_{t_i}^p`` (:mod:`recompose.mcmc.step_sizes`), defaults from the kernel;
  MALA / HMC adapt ``c`` toward a target acceptance by default.
* ``clip`` clamps Tweedie's ``x̂₀`` in the predictor and denoising steps, never in MCMC steps.

Cost per level: one composite evaluation at the predictor's output (score; energy too for
Metropolis kernels) plus the kernel's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import CapabilityError
from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter, StepSizeRule
from ..models.base import DiffusionModel, model_device_dtype
from .base import (
    STEP_ADVICE,
    Finished,
    Run,
    Sampler,
    finite_or_raise,
    model_output_or_raise,
)
from .result import LevelRecord

__all__ = ["Annealed", "Moves", "run_kernel", "StepOptions", "check_kernel"]


class Moves(NamedTuple):
    """What :func:`run_kernel` did at one level: per-chain mean acceptance ``(B,)`` (float64),
    the fraction of divergent transitions, the last step size, evaluations per chain."""

    acceptance: Tensor
    divergent: Tensor
    step_size: Tensor
    score_evals: int
    energy_evals: int

    def record(self, **extra: object) -> LevelRecord:
        """This level's :class:`~.result.LevelRecord` (``extra``: further fields, e.g. ``ess``)."""
        return LevelRecord(acceptance=float(self.acceptance.mean()),
                           acceptance_min=float(self.acceptance.min()),
                           step_size=float(self.step_size), divergent=float(self.divergent),
                           **extra)


def run_kernel(kernel: Kernel, state: NamedTuple, target: Target, num_steps: int, base: Tensor,
               adapter: AcceptanceAdapter | None, generator: torch.Generator | None
               ) -> tuple[NamedTuple, Moves]:
    """``num_steps`` kernel steps targeting one level, with step size ``base`` (times the
    adapter's multiplier, updated after every step)."""
    x = state.x
    base = base.to(x.device)
    size = base
    accept_sum = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    divergent_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    score_evals = energy_evals = 0
    for _ in range(num_steps):
        size = base * adapter.multiplier() if adapter is not None else base
        state, info = kernel.step(state, target, size.to(x.dtype), generator)
        score_evals += info.score_evals
        energy_evals += info.energy_evals
        accept_sum = accept_sum + info.accept_prob.to(torch.float64)
        divergent_sum = divergent_sum + info.is_divergent.sum()
        if adapter is not None:
            adapter.update(info.accept_prob)
    steps = max(num_steps, 1)
    return state, Moves(accept_sum / steps, divergent_sum / (steps * x.shape[0]), size,
                        score_evals, energy_evals)


def check_kernel(kernel: object, role: str) -> Kernel:
    """A :class:`~recompose.mcmc.base.Kernel` (e.g. ``rc.mcmc.hmc(num_leapfrog_steps=5)``)."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"{role} must be a kernel built by recompose.mcmc (e.g. "
                        f"rc.mcmc.hmc(num_leapfrog_steps=5)), got {type(kernel).__name__}")
    return kernel


def _inapplicable(option: str, why: str) -> TypeError:
    return TypeError(f"{option} does not apply {why}")


class StepOptions:
    """The step rule ``step_size · σ_t^step_power`` of a kernel (its defaults unless given) and
    whether to adapt ``step_size`` toward ``target_accept`` (Metropolis kernels; default on
    for them). Validated when built; the adapter is made fresh for every run."""

    def __init__(self, kernel: Kernel, step_size: float | None, step_power: float | None,
                 adapt: bool | None, target_accept: float | None) -> None:
        c = kernel.step_size if step_size is None else step_size
        p = kernel.step_power if step_power is None else step_power
        if c is None or p is None:
            raise ValueError(f"kernel {kernel.name!r} has no default step size; give "
                             "step_size= and step_power=")
        self.rule = StepSizeRule(float(c), float(p))
        self.adapt = kernel.metropolis if adapt is None else bool(adapt)
        if self.adapt and not kernel.metropolis:
            raise _inapplicable("adapt", f"to kernel {kernel.name!r} (adapt needs an acceptance "
                                         "rate: only Metropolis kernels such as mala and hmc "
                                         "adapt)")
        if target_accept is not None and not self.adapt:
            raise _inapplicable("target_accept", f"to kernel {kernel.name!r} with adapt=False")
        self.target_accept = None
        if self.adapt:
            target = kernel.target_accept if target_accept is None else target_accept
            if target is None:
                raise ValueError(f"kernel {kernel.name!r} has no default target acceptance; "
                                 "give target_accept=")
            if not 0.0 < float(target) < 1.0:
                raise ValueError(f"target acceptance must lie in (0, 1), got {target}")
            self.target_accept = float(target)

    def adapter(self, device: torch.device) -> AcceptanceAdapter | None:
        """A fresh :class:`~recompose.mcmc.step_sizes.AcceptanceAdapter` on ``device`` when
        adapting, else ``None``."""
        return AcceptanceAdapter(self.target_accept, device=device) if self.adapt else None

    def settings(self) -> dict:
        """The step rule and adaptation settings, JSON-ready (for the run record)."""
        return {"step_size": self.rule.scale, "step_power": self.rule.power,
                "adapt": self.adapt, "target_accept": self.target_accept}


def require_kernel_energy(kernel: Kernel, model: DiffusionModel) -> None:
    if kernel.needs_energy and not model.has_energy:
        raise CapabilityError(
            f"{kernel.name.upper()} needs energies for its Metropolis-Hastings test but "
            f"{model.describe()} is score-only; use energy-parameterised models, "
            "energy='path' (energy differences estimated from the scores), or the "
            "'ula', 'uhmc', 'ode' or 'reverse' samplers")


class _Chains(NamedTuple):
    kernel_state: NamedTuple | None  # the kernel's state at the current level
    x: Tensor  # the chains at the current level (the initial draws before the first)
    adapter: AcceptanceAdapter | None


class Annealed(Sampler):
    """Annealed MCMC with ``kernel`` (module docstring).

    Args:
        kernel: an MCMC kernel, e.g. ``rc.mcmc.hmc(num_leapfrog_steps=5)``.
        num_steps: kernel steps ``K`` per level (R3: 10).
        step_size: ``c`` of the step rule ``c · σ_t^p`` (default: the kernel's).
        step_power: ``p`` of the step rule (default: the kernel's).
        adapt: adapt ``c`` toward ``target_accept`` (default: on for Metropolis kernels).
        target_accept: default: the kernel's (MALA 0.574, HMC 0.65).
        predictor: a reverse-diffusion step between levels (free; R3's PyTorch code).
        denoise: end with Tweedie's ``x̂₀`` (free); ``False`` returns samples of ``π_0``.
    """

    def __init__(self, kernel: Kernel, num_steps: int = 10, step_size: float | None = None,
                 step_power: float | None = None, adapt: bool | None = None,
                 target_accept: float | None = None, predictor: bool = True,
                 denoise: bool = True) -> None:
        self.kernel = check_kernel(kernel, "kernel")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an integer ≥ 0, got {num_steps!r}")
        self.num_steps = num_steps
        self.steps = StepOptions(self.kernel, step_size, step_power, adapt, target_accept)
        self.predictor, self.denoise = bool(predictor), bool(denoise)

    @property
    def name(self) -> str:
        return self.kernel.name

    def check(self, model: DiffusionModel) -> None:
        require_kernel_energy(self.kernel, model)

    def settings(self) -> dict:
        return {"kernel": self.kernel.name, "num_steps": self.num_steps, **self.steps.settings(),
                "predictor": self.predictor, "denoise": self.denoise,
                "metropolis": self.kernel.metropolis, **self.kernel.params}

    def start(self, run: Run) -> _Chains:
        device = model_device_dtype(run.composition)[0]
        return _Chains(None, run.x_init, self.steps.adapter(device))

    def positions(self, state: _Chains) -> Tensor:
        return state.kernel_state.x

    def level(self, run: Run, state: _Chains, i: int) -> tuple[_Chains, LevelRecord]:
        previous, x = state.kernel_state, state.x
        if previous is not None:
            x = previous.x
            if self.predictor:  # the kernel's cached score is the composed score at t_{i+1}
                x = run.levels.posterior_step(previous.x, previous.score, i + 1, run.generator,
                                              run.clip)
        target = run.target(i)
        kernel_state = self.kernel.init(x, target, run.generator, previous=previous)
        finite_or_raise(kernel_state.x, i, run.levels, STEP_ADVICE)  # the predictor's output
        model_output_or_raise(kernel_state.score, kernel_state.x, i, run.levels)
        run.count(score=1, energy=int(self.kernel.needs_energy))
        kernel_state, moved = run_kernel(self.kernel, kernel_state, target, self.num_steps,
                                         self.steps.rule(run.levels.sigma[i]), state.adapter,
                                         run.generator)
        run.count(moved.score_evals, moved.energy_evals)
        finite_or_raise(kernel_state.x, i, run.levels, STEP_ADVICE)
        return _Chains(kernel_state, kernel_state.x, state.adapter), moved.record()

    def finish(self, run: Run, state: _Chains) -> Finished:
        final = state.kernel_state
        if not self.denoise:
            return Finished(final.x)
        return Finished(run.levels.posterior_step(final.x, final.score, 0, run.generator,
                                                  run.clip))
