r"""Sequential Monte Carlo over the noise levels: weighted particles for any composition.

Targets, as in annealed MCMC: at level ``t_i`` the composed density ``γ_i(x) = exp(−E_i(x))``
(``E_i = E_comp(·, t_i)``, e.g. ``Σ_k E_k`` for a product), normaliser ``Z_i = ∫ γ_i``. Levels
run from the noisiest, ``i = T − 1``, to the cleanest, ``i = 0``. Particles ``x^j``, ``j ≤ n``.

**Start** (level ``T − 1``): ``x ~ q_{T−1} = N(0, I)``, weight ``w = γ_{T−1}(x) / q_{T−1}(x)``.

**From level i + 1 to i**, two forms:

* AIS (default, ``reverse_step=False``; Neal 2001): keep the points and re-weight them,
  ``w_i(x) = γ_i(x) / γ_{i+1}(x)``, i.e. ``log w_i = E_{i+1}(x) − E_i(x)``; then the moves (below)
  carry them toward ``γ_i``. This is annealed MCMC with weights and resampling (Zhang et al.
  2026). It needs moves.
* DDPM proposal (``reverse_step=True``): ``x' ~ q_i(x' | x) = N(μ_{i+1}(x), β̃_{i+1} I)``, the DDPM
  step with the composed score (:func:`~.reverse.ddpm_transition`), with the forward noising
  step ``L_i(x | x') = N(x; a x', β I)`` (``a = α_{i+1}/α_i``, ``β = 1 − a²``) as backward
  kernel (Del Moral, Doucet & Jasra 2006, eq. 31)::

      log w_i = −E_i(x') + E_{i+1}(x) + log N(x; a x', β I) − log N(x'; μ_{i+1}(x), β̃ I)

  If the ``γ_i`` were the marginals of one diffusion and the score exact, every ``w_i → 1`` as
  ``T`` grows: the weights correct what composing the time-``t`` densities breaks (R3 §3).
  Measured weakness: near ``t = 1`` the step divides by ``a`` (≈ 0.08 for the first step of the
  cosine schedule at ``T = 100``), which amplifies a product's score (``K`` times a diffusion's
  scale) and collapses the weights (docs/results.md).

Either way the weighted particles at level ``i`` are consistent for ``γ_i / Z_i``.

**Evidence.** With ``W^j`` the normalised weights before an increment (uniform after a
resampling), ``Ẑ_i = Ẑ_{i+1} Σ_j W^j w_i^j`` and ``Ẑ_{T−1} = (1/n) Σ_j w^j``; ``Ẑ_0`` is an
unbiased estimate of ``Z_0`` (its log, ``log_evidence``, is biased low by about
``Var(Ẑ)/2Ẑ²``, which shrinks as ``1/n``). For normalised leaves, ``Z_0`` of a product is
the overlap ``∫ ∏_k p^k_{t_0}``.

**Groups.** Chains with different conditions (a label or a layout per chain) target different
densities: their weights are not comparable, and resampling across them would hand one
chain's particle to another's target. ``groups`` (one integer id per particle) splits the
population: normalisation, ESS, resampling and evidence are per group (``info.ess`` reports
the worst group's ESS fraction times ``n``; ``log_evidence`` becomes one value per group).

**Resample** when ``ESS < ess_threshold · n`` (:mod:`recompose.resampling`; 1 = every level,
0 = never), and at the cleanest level whenever the weights are unequal, so the returned ``x``
are equally weighted draws (the weights before that last resampling are returned). **Moves**:
``K`` steps of an MCMC kernel targeting ``γ_i`` after the reweighting and resampling; at the
last level they also separate the copies the resampling made. A Metropolis-corrected kernel
(MALA, HMC) leaves ``γ_i`` invariant, so the weights stay valid; unadjusted kernels (ULA,
U-HMC) are allowed but their discretisation bias is not corrected. ``denoise`` ends with
Tweedie's step as every sampler does.

**Cost** per particle: one ``energy_and_score`` per level (``T`` network gradients, as many as
reverse diffusion with ``T`` levels; the moves' first step reuses it), plus the moves' own cost
and, for unadjusted moves, one energy (no gradient) per level. Bookkeeping (weights, ESS,
resampling, gathers) is O(n·D) per level.

**Score-only composites.** Both forms above need ``E_i(x') − E_{i+1}(x)``: its change in ``x``
is a line integral of the score, but its change in ``t`` is not determined by ``∇_x`` alone. The
third form (``feynman_kac=``, sampler ``"fkc"``) needs no energy: the particles take the DDPM
step and carry the Feynman–Kac weights of Skreta et al. (2025), whose rate for a geometric
composition is a function of the factors' scores alone (:mod:`.feynman_kac`: the leaves'
Fokker–Planck equations make every divergence cancel). Those weights are exact only as
``T → ∞`` (an ``O(1/T)`` discretisation error); the energy forms are exact at any ``T``.
Optional moves (any kernel targeting ``p̃_{t_i}``, e.g. U-HMC on scores) after the resampling
spread its copies, at the moves' cost plus one evaluation of the factors' scores per level.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch
from torch import Tensor

from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter, StepSizeRule
from ..models.base import DiffusionModel
from ..resampling import normalize_log_weights, resample
from ..schedules import Levels
from ..utils import batch_sum
from .annealed import (
    _STEP_ADVICE,
    LevelCallback,
    Moves,
    SampleInfo,
    SampleResult,
    _finite_or_raise,
    _model_output_or_raise,
    run_kernel,
)
from .feynman_kac import FeynmanKac, beta_integral
from .reverse import ddpm_step, ddpm_transition

__all__ = ["smc"]


def _log_normal(diff: Tensor, var: float) -> Tensor:
    """``log N(diff; 0, var I)`` per row, float64, shape ``(B,)``."""
    d = diff[0].numel()
    return -0.5 * batch_sum(diff.to(torch.float64) ** 2) / var - 0.5 * d * math.log(
        2 * math.pi * var)


def _gather(state: NamedTuple | None, index: Tensor) -> NamedTuple | None:
    """The particles ``index`` of every per-particle field of a state (``None`` fields stay)."""
    if state is None:
        return None
    return type(state)(*(f[index] if torch.is_tensor(f) else f for f in state))


def _cached(target: Target, x: Tensor, energy: Tensor, score: Tensor) -> Target:
    """``target`` that answers from ``(energy, score)`` when asked about ``x`` itself, so a
    kernel's ``init`` does not evaluate the network again at the points just weighted."""
    def both(y: Tensor) -> tuple[Tensor, Tensor]:
        return (energy, score) if y is x else target.energy_and_score(y)
    return Target(score=lambda y: score if y is x else target.score(y), energy=target.energy,
                  energy_and_score=both)


class _Populations:
    """The sets of particles that share one target. Chains with different conditions (a label
    per chain) target different densities, so weights are normalised, resampled and turned
    into evidence within each group, never across groups."""

    def __init__(self, groups: Tensor | None, n: int, device: torch.device) -> None:
        if groups is None:
            self.members = [torch.arange(n, device=device)]
        else:
            groups = torch.as_tensor(groups, device=device)
            if groups.shape != (n,) or groups.is_floating_point():
                raise ValueError(f"groups must be {n} integer ids (one per particle), got "
                                 f"{groups.dtype} of shape {tuple(groups.shape)}")
            self.members = [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)]
        self.sizes = torch.tensor([len(m) for m in self.members], dtype=torch.float64,
                                  device=device)
        self.single = len(self.members) == 1  # one population: no indexing

    def initial(self) -> Tensor:
        """Equal normalised log-weights, ``−log n_g`` in group ``g``."""
        log_w = torch.empty(int(self.sizes.sum()), dtype=torch.float64, device=self.sizes.device)
        for m, size in zip(self.members, self.sizes):
            log_w[m] = -torch.log(size)
        return log_w

    def normalize(self, log_w: Tensor) -> tuple[Tensor, Tensor]:
        """Log-weights normalised in each group, and each group's ``logsumexp`` ``(G,)``."""
        if self.single:
            out, total = normalize_log_weights(log_w)
            return out, total[None]
        out, sums = torch.empty_like(log_w), []
        for m in self.members:
            out[m], total = normalize_log_weights(log_w[m])
            sums.append(total)
        return out, torch.stack(sums)

    def ess(self, log_w: Tensor) -> Tensor:
        """``(G,)`` effective sample size of each group (normalised log-weights)."""
        if self.single:
            return torch.exp(-torch.logsumexp(2 * log_w, dim=0))[None]
        return torch.stack([torch.exp(-torch.logsumexp(2 * log_w[m], dim=0))
                            for m in self.members])

    def unequal(self, log_w: Tensor) -> Tensor:
        """``(G,)``: whether a group's weights differ."""
        if self.single:
            return (log_w.max() - log_w.min() > 1e-12)[None]
        return torch.stack([log_w[m].max() - log_w[m].min() > 1e-12 for m in self.members])

    def resample(self, log_w: Tensor, which: Tensor, scheme: str,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Ancestor of every particle ``(n,)`` (itself outside the groups ``which``) and the
        log-weights after it (equal in the resampled groups)."""
        if self.single:
            index = resample(log_w, scheme, generator=generator)
            return index, torch.full_like(log_w, -math.log(log_w.shape[0]))
        index = torch.arange(log_w.shape[0], device=log_w.device)
        log_w = log_w.clone()
        for g in torch.nonzero(which).flatten().tolist():
            m = self.members[g]
            index[m] = m[resample(log_w[m], scheme, generator=generator)]
            log_w[m] = -torch.log(self.sizes[g])
        return index, log_w


class _Level(NamedTuple):
    """Particles at one level with their cached composed energy ``(n,)`` (``None`` for the
    Feynman–Kac form) and score, and the Feynman–Kac rate ``h`` ``(n,)`` (that form only)."""

    x: Tensor
    energy: Tensor | None
    score: Tensor
    rate: Tensor | None = None


def _evaluate(target: Target, x: Tensor, i: int, levels: Levels) -> _Level:
    energy, score = target.energy_and_score(x)
    _model_output_or_raise(score, x, i, levels)
    _model_output_or_raise(energy[:, None], x, i, levels, "energy")
    return _Level(x, energy, score)


def _fk_evaluate(fk: FeynmanKac, x: Tensor, i: int, levels: Levels) -> _Level:
    score, rate = fk.score_and_rate(x, levels.t[i].to(x.dtype))
    _model_output_or_raise(score, x, i, levels)
    return _Level(x, None, score, rate)


def _fk_step(cur: _Level | None, x_init: Tensor, fk: FeynmanKac, levels: Levels, i: int,
             generator: torch.Generator | None, clip: tuple[float, float] | None
             ) -> tuple[_Level, Tensor]:
    """Feynman–Kac form (:mod:`.feynman_kac`): its step from level ``i + 1`` to ``i`` and
    the trapezoid rule for ``∫ g dτ`` over it; at the noisiest level, draws from ``N(0, I/W)``
    whose log-weight is the constant ``log ∫ N(x; 0, I)^W dx`` (for the evidence)."""
    dim = x_init[0].numel()
    if cur is None:
        new = _fk_evaluate(fk, x_init * fk.start_scale(), i, levels)
        return new, torch.full_like(new.rate, fk.log_start_normaliser(dim))
    x = fk.step(cur.x, cur.score, levels, i + 1, generator, clip)
    _finite_or_raise(x, i, levels, "the composed score is too large for the step; use more "
                                    "levels")
    new = _fk_evaluate(fk, x, i, levels)
    return new, 0.5 * (cur.rate + new.rate) * beta_integral(levels, i + 1)


def _fk_move(cur: _Level, previous: NamedTuple | None, target: Target, fk: FeynmanKac,
             kernel: Kernel, num_steps: int, step_size: Tensor,
             adapter: AcceptanceAdapter | None, generator: torch.Generator | None, i: int,
             levels: Levels) -> tuple[_Level, NamedTuple, Moves]:
    """Feynman–Kac form with moves: ``num_steps`` kernel steps targeting ``p̃_{t_i}`` spread the
    copies that resampling made (the weighted particles stay consistent for ``p̃_{t_i}``: an
    invariant kernel preserves it; ULA / U-HMC only approximately), then one evaluation of the
    factors' scores at the moved points gives the rate the next increment needs."""
    if kernel.needs_energy:  # the cached level has no energy: the kernel evaluates its own
        start, extra = target, 1
    else:
        start, extra = _cached(target, cur.x, cur.energy, cur.score), 0
    state = kernel.init(cur.x, start, generator, previous=previous)
    state, moved = run_kernel(kernel, state, target, num_steps, step_size, adapter, generator)
    new = _fk_evaluate(fk, state.x, i, levels)
    return new, state, moved._replace(score_evals=moved.score_evals + 1 + extra,
                                      energy_evals=moved.energy_evals + extra)


def _propose(cur: _Level, target: Target, levels: Levels, i: int,
             generator: torch.Generator | None, clip: tuple[float, float] | None
             ) -> tuple[_Level, Tensor]:
    """DDPM proposal from level ``i + 1`` to ``i`` and the incremental log-weight ``(n,)``."""
    mean, var = ddpm_transition(cur.x, cur.score, levels, i + 1, clip)
    z = torch.randn(cur.x.shape, generator=generator, device=cur.x.device, dtype=cur.x.dtype)
    x = mean + var**0.5 * z
    _finite_or_raise(x, i, levels, "the composed score is too large for the DDPM proposal; "
                                    "use more levels")
    new = _evaluate(target, x, i, levels)
    a = float(levels.alpha[i + 1] / levels.alpha[i])
    log_backward = _log_normal(cur.x - a * x, 1.0 - a**2)
    log_forward = _log_normal(x - mean, var)
    log_inc = (cur.energy.to(torch.float64) - new.energy.to(torch.float64)
               + log_backward - log_forward)
    return new, log_inc


def _reweight(cur: _Level | None, x_init: Tensor, target: Target, levels: Levels, i: int,
              reverse_step: bool, generator: torch.Generator | None,
              clip: tuple[float, float] | None) -> tuple[_Level, Tensor]:
    """The particles at level ``i`` (``target``) and their incremental log-weights (module
    docstring)."""
    if cur is None:  # the noisiest level: importance sampling from N(0, I)
        new = _evaluate(target, x_init, i, levels)
        return new, -new.energy.to(torch.float64) - _log_normal(x_init, 1.0)
    if reverse_step:
        return _propose(cur, target, levels, i, generator, clip)
    new = _evaluate(target, cur.x, i, levels)  # AIS: the same points, level i + 1 → i
    return new, cur.energy.to(torch.float64) - new.energy.to(torch.float64)


def _move(cur: _Level, previous: NamedTuple | None, target: Target, kernel: Kernel,
          num_steps: int, step_size: Tensor, adapter: AcceptanceAdapter | None,
          generator: torch.Generator | None) -> tuple[_Level, NamedTuple, Moves]:
    """``num_steps`` kernel moves targeting the level; returns the moved particles (with the
    energy the next weight needs), the kernel state and what the moves did."""
    state = kernel.init(cur.x, _cached(target, cur.x, cur.energy, cur.score), generator,
                        previous=previous)
    state, moved = run_kernel(kernel, state, target, num_steps, step_size, adapter, generator)
    energy, extra = state.energy, 0
    if energy is None:  # unadjusted moves: the next weight needs E_i at the new points
        energy, extra = target.energy(state.x), 1
    return _Level(state.x, energy, state.score), state, moved._replace(
        energy_evals=moved.energy_evals + extra)


def smc(
    model: DiffusionModel, x_init: Tensor, levels: Levels, moves: Kernel | None = None,
    num_steps: int = 0, step_rule: StepSizeRule | None = None,
    adapter: AcceptanceAdapter | None = None, ess_threshold: float = 0.5,
    resampling: str = "systematic", reverse_step: bool = False, denoise: bool = True,
    generator: torch.Generator | None = None, callback: LevelCallback | None = None,
    clip: tuple[float, float] | None = None, feynman_kac: FeynmanKac | None = None,
    groups: Tensor | None = None,
) -> SampleResult:
    """SMC from ``x_init ~ N(0, I)`` at level ``T − 1`` (module docstring); ``moves``: a kernel
    run ``num_steps`` times per level with step sizes from ``step_rule``. With ``feynman_kac``
    (built from ``model``), the score-only form: DDPM steps with Feynman–Kac weights (moves, if
    any, rejuvenate the particles after resampling; see :func:`_fk_move`).
    ``groups``: one integer id per particle; particles with different ids (different conditions)
    are weighted and resampled separately (:class:`_Populations`).
    """
    start = time.perf_counter()
    num, n = len(levels), x_init.shape[0]
    per_level = {k: torch.full((num,), fill, dtype=torch.float64, device=x_init.device)
                 for k, fill in (("acceptance", 1.0), ("acceptance_min", 1.0),
                                 ("divergent", 0.0), ("ess", 0.0))}
    steps = torch.full((num,), math.nan, dtype=torch.float64, device=x_init.device)
    resampled: list[int] = []
    pops = _Populations(groups, n, x_init.device)
    log_w = pops.initial()
    log_z = torch.zeros(len(pops.members), dtype=torch.float64, device=x_init.device)
    score_evals = energy_evals = 0
    cur = kernel_state = None
    with torch.no_grad():
        for i in reversed(range(num)):
            target = model.at(levels.t[i].to(x_init.dtype))
            if feynman_kac is None:
                cur, log_inc = _reweight(cur, x_init, target, levels, i, reverse_step, generator,
                                         clip)
                energy_evals += 1
            else:
                cur, log_inc = _fk_step(cur, x_init, feynman_kac, levels, i, generator, clip)
            score_evals += 1
            log_w, log_sum = pops.normalize(log_w + log_inc)  # W ∝ W_prev · w_i
            log_z = log_z + log_sum  # Ẑ_i = Ẑ_{i+1} Σ_j W_prev^j w_i^j
            ess_g = pops.ess(log_w)
            # reported: the worst group's ESS fraction, times n
            ess = per_level["ess"][i] = n * (ess_g / pops.sizes).min()
            if i == 0:
                final_log_w = log_w
            which = (ess_g < ess_threshold * pops.sizes) | (ess_threshold >= 1)
            if i == 0:  # the last level resamples unequal weights, before its moves: the
                # returned particles are equally weighted draws, moved after their duplication
                which = which | pops.unequal(log_w)
            if bool(which.any()):
                index, log_w = pops.resample(log_w, which, resampling, generator)
                cur, kernel_state = _gather(cur, index), _gather(kernel_state, index)
                resampled.append(i)
            if moves is not None and num_steps > 0:
                step = step_rule(levels.sigma[i])
                if feynman_kac is None:
                    cur, kernel_state, moved = _move(cur, kernel_state, target, moves, num_steps,
                                                     step, adapter, generator)
                else:
                    cur, kernel_state, moved = _fk_move(cur, kernel_state, target, feynman_kac,
                                                        moves, num_steps, step, adapter,
                                                        generator, i, levels)
                _finite_or_raise(cur.x, i, levels, _STEP_ADVICE)
                score_evals += moved.score_evals
                energy_evals += moved.energy_evals
                per_level["acceptance"][i] = moved.acceptance.mean()
                per_level["acceptance_min"][i] = moved.acceptance.min()
                per_level["divergent"][i], steps[i] = moved.divergent, moved.step_size
            if callback is not None:
                callback({"level": i, "t": float(levels.t[i]), "x": cur.x, "ess": float(ess),
                          "resampled": resampled[-1:] == [i],
                          "acceptance": None if moves is None or num_steps == 0
                          else float(per_level["acceptance"][i])})
        x = ddpm_step(cur.x, cur.score, levels, 0, generator, clip) if denoise else cur.x
    leaves = model.num_networks
    info = SampleInfo(
        sampler="smc" if feynman_kac is None else "fkc", num_chains=n, t=levels.t.tolist(),
        acceptance=per_level["acceptance"].tolist(),
        acceptance_min=per_level["acceptance_min"].tolist(), step_size=steps.tolist(),
        divergent=per_level["divergent"].tolist(), score_evals=score_evals,
        energy_evals=energy_evals, network_score_evals=score_evals * leaves,
        network_energy_evals=energy_evals * leaves, wall_time=time.perf_counter() - start,
        ess=per_level["ess"].tolist(), resampled=sorted(resampled),
        log_evidence=float(log_z[0]) if len(log_z) == 1 else log_z.tolist(),
        evidence_t=float(levels.t[0]),
    )
    return SampleResult(x, info, log_weights=final_log_w)
