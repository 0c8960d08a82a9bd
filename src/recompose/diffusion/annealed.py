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
  PyTorch code (a DDPM predictor then MCMC corrector steps). The predictor reuses the score the
  kernel already holds at ``x``, so it costs no extra evaluation.
* ``denoise`` ends every sampler the same way as DDPM ends reverse diffusion, so samplers are
  compared on equal terms; ``denoise=False`` returns samples of ``π_0`` (the R3 notebook).
* Each level starts with ``kernel.init(x, π_i, generator, previous=state)``: the kernel decides
  what it carries from the previous level's last state (U-HMC/HMC: the momentum, as in the R3
  notebook; ULA/MALA: nothing).
* ``SampleInfo.divergent[i]`` is the fraction of transitions (chains × steps) at level ``i``
  that the kernel flagged as divergent (``Info.is_divergent``: a non-finite proposal, or an HMC
  energy error above :data:`~recompose.mcmc.base.DIVERGENCE_THRESHOLD`).
* ``clip`` (images in a known range) clamps Tweedie's ``x̂₀`` inside every DDPM step, the
  predictor steps and the final denoise (see :func:`~recompose.diffusion.reverse.ddpm_step`);
  MCMC steps are never clipped.
* ``kernel=None`` gives plain reverse diffusion: ``T`` ancestral steps, the last one Tweedie's
  denoiser to ``t = 0``.

Costs are counted per chain in composite evaluations (``score_evals``, ``energy_evals``; an
``energy_and_score`` call counts in both) and in network evaluations (× leaves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ..mcmc.base import Kernel
from ..mcmc.step_sizes import AcceptanceAdapter, StepSizeRule
from ..models.base import DiffusionModel
from ..schedules import Levels
from ..utils import check_finite
from .reverse import ddpm_step

__all__ = ["SampleInfo", "SampleResult", "reverse_diffusion", "annealed_mcmc"]


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

    @property
    def mean_acceptance(self) -> float:
        return float(sum(self.acceptance) / len(self.acceptance))

    def to_dict(self) -> dict:
        return asdict(self) | {"mean_acceptance": self.mean_acceptance}


@dataclass
class SampleResult:
    """Samples ``x`` of shape ``(n, *D)`` and their :class:`SampleInfo`."""

    x: Tensor
    info: SampleInfo


LevelCallback = Callable[[dict], None]


def _finite_or_raise(x: Tensor, i: int, levels: Levels) -> None:
    try:
        check_finite(x, f"sampling diverged at level {i} (t = {float(levels.t[i]):.3f})")
    except FloatingPointError as err:
        raise FloatingPointError(
            f"{err}; use a smaller step size or enable step-size adaptation"
        ) from None


def reverse_diffusion(
    model: DiffusionModel,
    x_init: Tensor,
    levels: Levels,
    generator: torch.Generator | None = None,
    callback: LevelCallback | None = None,
    clip: tuple[float, float] | None = None,
) -> SampleResult:
    """DDPM ancestral sampling with the model's (composed) score from ``x_init`` at level T−1."""
    start = time.perf_counter()
    x = x_init
    num = len(levels)
    with torch.no_grad():
        for i in reversed(range(num)):
            score = model.score(x, levels.t[i].to(x.dtype))
            x = ddpm_step(x, score, levels, i, generator, clip)
            _finite_or_raise(x, i, levels)
            if callback is not None:
                callback({"level": i, "t": float(levels.t[i]), "x": x})
    ones = [1.0] * num
    info = SampleInfo(
        sampler="reverse",
        num_chains=x.shape[0],
        t=levels.t.tolist(),
        acceptance=ones,
        acceptance_min=ones,
        step_size=[float("nan")] * num,
        divergent=[0.0] * num,
        score_evals=num,
        network_score_evals=num * model.num_networks,
        wall_time=time.perf_counter() - start,
    )
    return SampleResult(x, info)


def annealed_mcmc(
    model: DiffusionModel,
    x_init: Tensor,
    levels: Levels,
    kernel: Kernel,
    num_steps: int,
    step_rule: StepSizeRule,
    adapter: AcceptanceAdapter | None = None,
    reverse_step: bool = True,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: LevelCallback | None = None,
    clip: tuple[float, float] | None = None,
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
            score_evals += 1
            energy_evals += int(kernel.needs_energy)

            base = step_rule(levels.sigma[i]).to(x.device)
            accept_sum = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            divergent_sum = torch.zeros((), dtype=torch.float64, device=x.device)
            for _ in range(num_steps):
                size = base * adapter.multiplier() if adapter is not None else base
                state, info = kernel.step(state, target, size.to(x.dtype), generator)
                score_evals += info.score_evals
                energy_evals += info.energy_evals
                accept_sum = accept_sum + info.accept_prob.to(torch.float64)
                divergent_sum = divergent_sum + info.is_divergent.sum()
                if adapter is not None:
                    adapter.update(info.accept_prob)
            per_chain = accept_sum / max(num_steps, 1)
            acc_mean[i], acc_min[i] = per_chain.mean(), per_chain.min()
            divergent[i] = divergent_sum / (max(num_steps, 1) * x.shape[0])
            steps[i] = size if num_steps > 0 else base
            _finite_or_raise(state.x, i, levels)
            if callback is not None:
                callback({"level": i, "t": float(levels.t[i]), "x": state.x,
                          "acceptance": float(acc_mean[i]), "step_size": float(steps[i]),
                          "divergent": float(divergent[i])})
        x = state.x
        if denoise:  # Tweedie's x̂₀ from the cached composed score at level 0: no extra cost
            x = ddpm_step(state.x, state.score, levels, 0, generator, clip)
    leaves = model.num_networks
    info = SampleInfo(
        sampler=kernel.name,
        num_chains=x.shape[0],
        t=levels.t.tolist(),
        acceptance=acc_mean.tolist(),
        acceptance_min=acc_min.tolist(),
        step_size=steps.tolist(),
        divergent=divergent.tolist(),
        score_evals=score_evals,
        energy_evals=energy_evals,
        network_score_evals=score_evals * leaves,
        network_energy_evals=energy_evals * leaves,
        wall_time=time.perf_counter() - start,
    )
    return SampleResult(x, info)
