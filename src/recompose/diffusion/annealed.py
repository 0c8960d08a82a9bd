r"""Samplers over the noise levels: reverse diffusion and annealed MCMC (R3 Algorithm 1).

Annealed MCMC targets, at each level ``t_i`` (from the noisiest, ``i = T − 1``, down to
``i = 0``), the composed time-``t_i`` density ``π_i(x) ∝ exp(−E_comp(x, t_i))`` — e.g. the
product ``∏_k p^k_{t_i}(x)`` — which is a well-defined unnormalised density even though it is
not the diffusion of the composition::

    x ~ N(0, I)                                   at level T − 1
    for i = T − 1, …, 0:
        if i < T − 1 and reverse_step:  x ← ddpm_step(x, s_comp(x, t_{i+1}))
        repeat K times:                 x ← kernel step targeting π_i
    if denoise: x ← (x + σ_0² s_comp(x, t_0)) / α_0   Tweedie, as the last DDPM step
    return x

* ``reverse_step=False`` is the R3 2D notebook (pure annealed MCMC); ``True`` is the R3
  PyTorch code (DDPM predictor, then MCMC corrector). The predictor reuses the kernel's cached
  score at ``x``: no extra evaluation.
* ``denoise`` ends every sampler as DDPM ends reverse diffusion, so samplers compare on equal
  terms; ``denoise=False`` returns samples of ``π_0`` (the R3 notebook).
* ``kernel.init(x, π_i, generator, previous=state)`` lets the kernel carry what it needs from
  the previous level (U-HMC/HMC: the momentum; ULA/MALA: nothing).
* ``SampleInfo.divergent[i]``: fraction of transitions (chains × steps) at level ``i`` flagged
  ``Info.is_divergent``.
* ``clip`` clamps Tweedie's ``x̂₀`` in every DDPM step (:func:`~.reverse.ddpm_step`), never in
  MCMC steps. ``kernel=None`` gives plain reverse diffusion (``T`` ancestral steps).

Costs are counted per chain in composite evaluations (``score_evals``, ``energy_evals``; an
``energy_and_score`` call counts in both) and in network evaluations (× leaves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter, StepSizeRule
from ..models.base import DiffusionModel
from ..schedules import Levels
from ..utils import check_finite
from .reverse import ddpm_step

__all__ = ["SampleInfo", "SampleResult", "SamplingWarning", "reverse_diffusion",
           "annealed_mcmc", "run_kernel", "ACCEPTANCE_FLOOR"]

ACCEPTANCE_FLOOR = 0.05  # mean MH acceptance under which a run is reported as stuck
ESS_FLOOR = 0.01  # SMC: effective sample size (fraction of n) under which a run is reported


class SamplingWarning(RuntimeWarning):
    """A run that finished but whose samples are suspect (see :meth:`SampleInfo.problems`)."""


@dataclass
class SampleInfo:
    """Diagnostics of a sampling run. Per-level arrays are ordered from level 0 (cleanest) up."""

    sampler: str
    num_chains: int
    t: list[float]
    acceptance: list[float]  # mean MH acceptance probability per level (1 for unadjusted)
    acceptance_min: list[float]  # lowest per-chain mean acceptance at each level
    step_size: list[float]  # final step size used at each level (nan for reverse diffusion)
    divergent: list[float]  # fraction of transitions flagged divergent per level (0 if none)
    score_evals: int = 0  # composite score evaluations per chain
    energy_evals: int = 0  # composite energy evaluations per chain
    network_score_evals: int = 0  # leaf-network gradient evaluations per chain
    network_energy_evals: int = 0
    wall_time: float = 0.0
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # see :meth:`problems`
    # SMC only (see recompose.diffusion.smc): ESS before resampling, per level; the levels
    # where it resampled; log Ẑ of the cleanest level's composed density (one per group when
    # the particles were grouped), and that level's t.
    ess: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)
    log_evidence: float | list[float] | None = None
    evidence_t: float | None = None

    @property
    def mean_acceptance(self) -> float:
        return float(sum(self.acceptance) / len(self.acceptance))

    def problems(self, acceptance_floor: float = ACCEPTANCE_FLOOR) -> list[str]:
        """What makes this run's samples suspect: a Metropolis-corrected chain that (almost)
        never moved, SMC weights that collapsed onto a few particles, or divergent
        transitions."""
        out = []
        if self.settings.get("metropolis") and self.mean_acceptance < acceptance_floor:
            out.append(f"{self.sampler}: mean acceptance {self.mean_acceptance:.3f} is under "
                       f"{acceptance_floor}: the chains barely moved and the samples are close "
                       "to the predictor's; lower the step size (or enable adaptation)")
        if self.ess and min(self.ess) < ESS_FLOOR * self.num_chains:
            i = min(range(len(self.ess)), key=self.ess.__getitem__)
            fix = ("" if self.sampler == "fkc" else
                   ", or AIS weights with moves (reverse_step=False)")
            out.append(f"{self.sampler}: the weights collapsed onto ESS {self.ess[i]:.1f} of "
                       f"{self.num_chains} particles at t = {self.t[i]:.3f}: the samples and "
                       f"the evidence rest on a few particles; use more levels or particles{fix}")
        bad = [i for i, d in enumerate(self.divergent) if d > 0]
        if bad:
            worst = max(self.divergent)
            out.append(f"{self.sampler}: divergent transitions at {len(bad)} of "
                       f"{len(self.divergent)} levels (up to {worst:.1%} of the chain steps at "
                       "one level); lower the step size")
        return out

    def to_dict(self) -> dict:
        return asdict(self) | {"mean_acceptance": self.mean_acceptance}


@dataclass
class SampleResult:
    """Samples ``x`` of shape ``(n, *D)`` and their :class:`SampleInfo`. For SMC,
    ``log_weights`` ``(n,)`` are the normalised float64 log-weights of the particles before the
    final resampling (``x`` is equally weighted); ``None`` for the other samplers."""

    x: Tensor
    info: SampleInfo
    log_weights: Tensor | None = None


LevelCallback = Callable[[dict], None]


def _finite_or_raise(x: Tensor, i: int, levels: Levels, advice: str) -> None:
    try:
        check_finite(x, f"sampling diverged at level {i} (t = {float(levels.t[i]):.3f})")
    except FloatingPointError as err:
        raise FloatingPointError(f"{err}; {advice}") from None


def _model_output_or_raise(value: Tensor, x: Tensor, i: int, levels: Levels,
                           what: str = "score") -> None:
    """The model's score (or energy) at finite points. Not finite where the chains are at the
    data's scale (diffused data and noise are O(1)) means the model, not the sampler, is at
    fault."""
    try:
        check_finite(value, f"the model's {what} is not finite at level {i} "
                            f"(t = {float(levels.t[i]):.3f})")
    except FloatingPointError as err:
        if float(x.abs().max()) > FAR:
            raise FloatingPointError(f"{err} where the chains ran far away (|x| up to "
                                     f"{float(x.abs().max()):.3g}); {_STEP_ADVICE}") from None
        raise FloatingPointError(
            f"{err}: the model itself gives non-finite values at finite inputs (check its "
            "weights and the exponents of the composition); a smaller step size will not help"
        ) from None


FAR = 1e4  # |x| beyond which non-finite scores are blamed on runaway chains


_STEP_ADVICE = "use a smaller step size or enable step-size adaptation"
_SCORE_ADVICE = ("the composed score is too large for reverse diffusion's steps (large "
                 "exponents?); use more levels or an annealed MCMC sampler")


def reverse_diffusion(
    model: DiffusionModel, x_init: Tensor, levels: Levels,
    generator: torch.Generator | None = None, callback: LevelCallback | None = None,
    clip: tuple[float, float] | None = None,
) -> SampleResult:
    """DDPM ancestral sampling with the model's (composed) score from ``x_init`` at level T−1."""
    start = time.perf_counter()
    x = x_init
    num = len(levels)
    with torch.no_grad():
        for i in reversed(range(num)):
            score = model.score(x, levels.t[i].to(x.dtype))
            _model_output_or_raise(score, x, i, levels)
            x = ddpm_step(x, score, levels, i, generator, clip)
            _finite_or_raise(x, i, levels, _SCORE_ADVICE)
            if callback is not None:
                callback({"level": i, "t": float(levels.t[i]), "x": x})
    ones = [1.0] * num
    info = SampleInfo(
        sampler="reverse", num_chains=x.shape[0], t=levels.t.tolist(), acceptance=ones,
        acceptance_min=ones, step_size=[float("nan")] * num, divergent=[0.0] * num,
        score_evals=num, network_score_evals=num * model.num_networks,
        wall_time=time.perf_counter() - start,
    )
    return SampleResult(x, info)


class Moves(NamedTuple):
    """What :func:`run_kernel` did at one level: per-chain mean acceptance ``(B,)`` (float64),
    the fraction of divergent transitions, the last step size, evaluations per chain."""

    acceptance: Tensor
    divergent: Tensor
    step_size: Tensor
    score_evals: int
    energy_evals: int


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


def annealed_mcmc(
    model: DiffusionModel, x_init: Tensor, levels: Levels, kernel: Kernel, num_steps: int,
    step_rule: StepSizeRule, adapter: AcceptanceAdapter | None = None,
    reverse_step: bool = True, denoise: bool = True, generator: torch.Generator | None = None,
    callback: LevelCallback | None = None, clip: tuple[float, float] | None = None,
) -> SampleResult:
    """Annealed MCMC over ``levels`` with ``num_steps`` kernel steps per level."""
    start = time.perf_counter()
    num = len(levels)
    x = x_init
    state = None
    score_evals = energy_evals = 0
    acc_mean = torch.ones(num, dtype=torch.float64, device=x.device)
    acc_min = torch.ones(num, dtype=torch.float64, device=x.device)
    steps = torch.zeros(num, dtype=torch.float64, device=x.device)
    divergent = torch.zeros(num, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i in reversed(range(num)):
            t_i = levels.t[i].to(x.dtype)
            if state is not None and reverse_step:
                # Predictor: the kernel's cached score is the composed score at (x, t_{i+1}).
                x = ddpm_step(state.x, state.score, levels, i + 1, generator, clip)
            elif state is not None:
                x = state.x
            target = model.at(t_i)
            state = kernel.init(x, target, generator, previous=state)
            _finite_or_raise(state.x, i, levels, _STEP_ADVICE)  # the predictor step's output
            _model_output_or_raise(state.score, state.x, i, levels)
            score_evals += 1
            energy_evals += int(kernel.needs_energy)
            state, moved = run_kernel(kernel, state, target, num_steps,
                                      step_rule(levels.sigma[i]), adapter, generator)
            score_evals += moved.score_evals
            energy_evals += moved.energy_evals
            acc_mean[i], acc_min[i] = moved.acceptance.mean(), moved.acceptance.min()
            divergent[i], steps[i] = moved.divergent, moved.step_size
            _finite_or_raise(state.x, i, levels, _STEP_ADVICE)
            if callback is not None:
                callback({"level": i, "t": float(levels.t[i]), "x": state.x,
                          "acceptance": float(acc_mean[i]), "step_size": float(steps[i]),
                          "divergent": float(divergent[i])})
        x = state.x
        if denoise:  # Tweedie's x̂₀ from the cached composed score at level 0: no extra cost
            x = ddpm_step(state.x, state.score, levels, 0, generator, clip)
    leaves = model.num_networks
    info = SampleInfo(
        sampler=kernel.name, num_chains=x.shape[0], t=levels.t.tolist(),
        acceptance=acc_mean.tolist(), acceptance_min=acc_min.tolist(), step_size=steps.tolist(),
        divergent=divergent.tolist(), score_evals=score_evals, energy_evals=energy_evals,
        network_score_evals=score_evals * leaves, network_energy_evals=energy_evals * leaves,
        wall_time=time.perf_counter() - start,
    )
    return SampleResult(x, info)
