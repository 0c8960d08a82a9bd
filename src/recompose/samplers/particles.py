r"""Weighted particles over the noise levels: the one generic step that SMC and FKC share.

Particles ``x^j`` (``j ≤ n``) with normalised log-weights ``log W^j`` target at level ``t_i``
the composed density ``γ_i``. A weighted sampler differs from another only in how particles
arrive at a level and what that does to their weights (:meth:`Weighted.arrive`), and in the
optional MCMC moves that follow (:meth:`Weighted.move`); the rest is this module's::

    (particles, log w_i) = arrive(particles at level i + 1)      # proposal, weight increment
    log W ← normalise(log W + log w_i);  Ẑ_i = Ẑ_{i+1} Σ_j W_prev^j w_i^j
    if ESS = 1/Σ_j (W^j)² < ess_threshold · n  (or i = 0 and the weights differ):
        resample (:mod:`recompose.resampling`); log W ← −log n
    particles ← moves targeting γ_i (num_steps kernel steps)

``Ẑ_0`` is an unbiased estimate of the cleanest level's normaliser ``Z_0`` (``log_evidence``
is biased low by about ``Var(Ẑ)/2Ẑ²``, which shrinks as ``1/n``). The last level resamples
whenever the weights differ, so the returned ``x`` are equally weighted draws (the weights
before that resampling are returned as ``log_weights``); then Tweedie's step to the data
(``denoise``), as every sampler ends.

**Groups.** Chains with different conditions (a label or a layout per chain) target different
densities: their weights are not comparable, and resampling across them would hand one
chain's particle to another's target. ``groups`` (one integer id per particle) splits the
population: normalisation, ESS, resampling and evidence are per group (``info.ess`` reports
the worst group's ESS fraction times ``n``; ``log_evidence`` becomes one value per group).

**Reward factors** (:mod:`recompose.rewards`). For ``model * rc.reward(r, λ)`` the weighted
samplers run ``model`` and multiply the weights by the reward's potentials: at a level that reads
it, ``log w_i += A_i − A_{i+1}`` with the accumulated log-potential ``A`` (per particle, copied
by resampling) of the reward's ``potential`` option, read at Tweedie's ``x̂₀`` from the
particles' composed score (no network call); at level 0 ``A_0 = r(x₀)/λ`` on the returned
sample, so the weights target the tilted density. The reward is called once per reading level
on all particles (``info.reward_evals`` per chain).

Bookkeeping (weights, ESS, resampling, gathers) is O(n·D) per level.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import CapabilityError
from ..mcmc import KERNELS
from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter
from ..models.base import DiffusionModel, model_device_dtype
from ..resampling import SCHEMES, normalize_log_weights, resample
from ..rewards import tilt_update
from ..utils import batch_sum
from .annealed import Moves, StepOptions, check_kernel
from .base import STEP_ADVICE, Finished, Run, Sampler, finite_or_raise
from .result import LevelRecord

__all__ = ["Weighted", "Populations", "Particles", "log_normal", "gather", "cached",
           "resolve_moves"]


def log_normal(diff: Tensor, var: float) -> Tensor:
    """``log N(diff; 0, var I)`` per row, float64, shape ``(B,)``."""
    d = diff[0].numel()
    return -0.5 * batch_sum(diff.to(torch.float64) ** 2) / var - 0.5 * d * math.log(
        2 * math.pi * var)


def gather(state: NamedTuple | None, index: Tensor) -> NamedTuple | None:
    """The particles ``index`` of every per-particle field of a state (``None`` fields stay)."""
    if state is None:
        return None
    return type(state)(*(f[index] if torch.is_tensor(f) else f for f in state))


def cached(target: Target, x: Tensor, energy: Tensor | None, score: Tensor) -> Target:
    """``target`` that answers from ``(energy, score)`` when asked about ``x`` itself, so a
    kernel's ``init`` does not evaluate the network again at the points just weighted."""
    def both(y: Tensor) -> tuple[Tensor, Tensor]:
        return (energy, score) if y is x else target.energy_and_score(y)
    return Target(score=lambda y: score if y is x else target.score(y), energy=target.energy,
                  energy_and_score=both)


class Populations:
    """The sets of particles that share one target (module docstring, *Groups*)."""

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


class Particles(NamedTuple):
    """Particles at one level with their cached composed energy ``(n,)`` (``None`` where the
    sampler has none) and score, a sampler-specific per-particle term (FKC's rate), and for
    tracked compositions each tracked model's log-density ``(n, K)`` and score ``(n, K, *D)``
    (:mod:`.tracking`; resampling copies them with the particle)."""

    x: Tensor
    energy: Tensor | None
    score: Tensor
    rate: Tensor | None = None
    log_density: Tensor | None = None
    tracked_scores: Tensor | None = None


class _State(NamedTuple):
    context: Any  # what the sampler prepared for this run (:meth:`Weighted.prepare`)
    particles: Particles | None  # None before the noisiest level
    kernel_state: NamedTuple | None
    log_w: Tensor
    log_z: Tensor
    final_log_w: Tensor | None
    pops: Populations
    adapter: AcceptanceAdapter | None
    tilt: tuple[Tensor | None, ...] = ()  # each reward's accumulated log-potential A (n,)


def resolve_moves(moves: str | Kernel | None, kernel_options: dict) -> Kernel | None:
    """A kernel for ``moves``: a kernel object, or a kernel's name and its factory options."""
    if moves is None:
        if kernel_options:
            raise TypeError(f"{next(iter(kernel_options))} configures the moves, but there are "
                            "none: give moves= too")
        return None
    if isinstance(moves, str):
        if moves not in KERNELS:
            raise ValueError(f"moves must be an MCMC kernel ({', '.join(KERNELS)}) or a "
                             f"kernel object, got {moves!r}")
        return KERNELS[moves](**kernel_options)
    if kernel_options:
        option = next(iter(kernel_options))
        raise TypeError(f"{option} cannot be combined with a kernel object; set it in the "
                        f"factory, e.g. rc.mcmc.{moves.name}({option}=...)")
    return check_kernel(moves, "moves")


class Weighted(Sampler):
    """Base class of the weighted samplers: the generic step of the module docstring.
    Subclasses implement :meth:`arrive` and :meth:`move`."""

    weighted = True
    weighs_rewards = True

    def __init__(self, moves: Kernel | None, num_steps: int | None, default_steps: int,
                 ess_threshold: float, resampling: str, step_size: float | None,
                 step_power: float | None, adapt: bool | None, target_accept: float | None,
                 denoise: bool) -> None:
        if num_steps is None:
            num_steps = 0 if moves is None else default_steps
        elif moves is None and num_steps:
            raise TypeError(f"num_steps does not apply to {self.name} without moves (give "
                            "moves=, e.g. moves='uhmc')")
        if isinstance(ess_threshold, bool) or not 0.0 <= float(ess_threshold) <= 1.0:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
        if resampling not in SCHEMES:
            raise ValueError(f"unknown resampling {resampling!r}; choose one of "
                             f"{', '.join(SCHEMES)}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an integer ≥ 0, got {num_steps!r}")
        self.moves, self.num_steps = moves, num_steps
        self.ess_threshold, self.resampling = float(ess_threshold), resampling
        self.denoise = bool(denoise)
        self.steps = None
        if moves is not None:
            self.steps = StepOptions(moves, step_size, step_power, adapt, target_accept)
        else:
            given = {"step_size": step_size, "step_power": step_power, "adapt": adapt,
                     "target_accept": target_accept}
            for option, value in given.items():
                if value is not None:
                    raise TypeError(f"{option} does not apply to {self.name} without moves "
                                    "(it configures the moves' step)")

    # -------------------------------------------------------------- what subclasses give
    def prepare(self, run: Run) -> Any:
        """What :meth:`arrive` and :meth:`move` need for this run (``context``)."""
        return None

    def arrive(self, run: Run, context: Any, cur: Particles | None, i: int
               ) -> tuple[Particles, Tensor]:
        """The particles at level ``i`` (from those at ``i + 1``, or from ``run.x_init`` at the
        noisiest level) and their incremental log-weights ``(n,)`` float64."""
        raise NotImplementedError  # pragma: no cover - abstract

    def move(self, run: Run, context: Any, cur: Particles, previous: NamedTuple | None,
             target: Target, adapter: AcceptanceAdapter | None, i: int
             ) -> tuple[Particles, NamedTuple, Moves]:
        """``num_steps`` kernel moves targeting level ``i``; the moved particles with what the
        next :meth:`arrive` needs, the kernel state, and what the moves did."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -------------------------------------------------------------- the generic step
    def check(self, model: DiffusionModel) -> None:
        if self.moves is not None and self.moves.needs_energy and not model.has_energy:
            raise CapabilityError(
                f"{self.name}'s moves ({self.moves.name}) need energies but {model.describe()} "
                "is score-only; use energy='path' for the kernel, or ula / uhmc moves")

    def settings(self) -> dict:
        out = {"ess_threshold": self.ess_threshold, "resampling": self.resampling,
               "moves": None if self.moves is None else self.moves.name,
               "num_steps": self.num_steps if self.moves is not None else 0,
               "denoise": self.denoise}
        if self.moves is not None:
            out |= self.steps.settings() | {"metropolis": self.moves.metropolis,
                                            **self.moves.params}
        return out

    def start(self, run: Run) -> _State:
        device = run.x_init.device
        pops = Populations(run.groups, run.x_init.shape[0], device)
        adapter = None if self.steps is None else self.steps.adapter(
            model_device_dtype(run.composition)[0])
        return _State(self.prepare(run), None, None, pops.initial(),
                      torch.zeros(len(pops.members), dtype=torch.float64, device=device),
                      None, pops, adapter, (None,) * len(run.rewards))

    def positions(self, state: _State) -> Tensor:
        return state.particles.x

    def level(self, run: Run, state: _State, i: int) -> tuple[_State, LevelRecord]:
        pops, n = state.pops, run.x_init.shape[0]
        cur, log_inc = self.arrive(run, state.context, state.particles, i)
        tilt = state.tilt
        if run.rewards:
            tilt, log_inc = self.reward_potentials(run, cur, tilt, log_inc, i)
        log_w, log_sum = pops.normalize(state.log_w + log_inc)  # W ∝ W_prev · w_i
        log_z = state.log_z + log_sum  # Ẑ_i = Ẑ_{i+1} Σ_j W_prev^j w_i^j
        ess_g = pops.ess(log_w)
        ess = float(n * (ess_g / pops.sizes).min())  # the worst group's fraction, times n
        final_log_w = log_w if i == 0 else state.final_log_w
        which = (ess_g < self.ess_threshold * pops.sizes) | (self.ess_threshold >= 1)
        if i == 0:  # the returned particles are equally weighted draws, moved after their
            which = which | pops.unequal(log_w)  # duplication
        kernel_state, resampled = state.kernel_state, bool(which.any())
        if resampled:
            index, log_w = pops.resample(log_w, which, self.resampling, run.generator)
            cur, kernel_state = gather(cur, index), gather(kernel_state, index)
            tilt = tuple(None if a is None else a[index] for a in tilt)
        record = LevelRecord(ess=ess, resampled=resampled)
        if self.moves is not None and self.num_steps > 0:
            cur, kernel_state, moved = self.move(run, state.context, cur, kernel_state,
                                                 run.target(i), state.adapter, i)
            finite_or_raise(cur.x, i, run.levels, STEP_ADVICE)
            run.count(moved.score_evals, moved.energy_evals)
            record = moved.record(ess=ess, resampled=resampled)
        return state._replace(particles=cur, kernel_state=kernel_state, log_w=log_w,
                              log_z=log_z, final_log_w=final_log_w, tilt=tilt), record

    def reward_point(self, run: Run, cur: Particles, i: int) -> Tensor:
        """Where the rewards are read at level ``i``: Tweedie's ``x̂₀`` from the particles'
        composed score; at level 0 exactly the sample :meth:`finish` returns."""
        if i == 0:
            return run.levels.posterior(cur.x, cur.score, 0, run.clip)[0] if self.denoise \
                else cur.x
        return run.levels.denoised(cur.x, cur.score, i, run.clip)[0]

    def reward_potentials(self, run: Run, cur: Particles, tilt: tuple[Tensor | None, ...],
                          log_inc: Tensor, i: int) -> tuple[tuple[Tensor | None, ...], Tensor]:
        """The rewards read at level ``i`` (module docstring, *Reward factors*): the new
        accumulated log-potentials and the increment with their change added."""
        reading = [k for k, r in enumerate(run.rewards) if r.reads(i)]
        if not reading:
            return tilt, log_inc
        x0 = self.reward_point(run, cur, i)
        rho = run.rows(lambda y: torch.stack([run.rewards[k](y) for k in reading], 1), x0)
        run.reward_evals += len(reading)
        new = list(tilt)
        for col, k in enumerate(reading):
            r, old = run.rewards[k], tilt[k]
            new[k] = rho[:, col] if i == 0 else tilt_update(r, old, rho[:, col])
            if old is None:
                log_inc = log_inc + new[k]
            else:  # a particle already at weight 0 (−inf) stays there, without NaN
                log_inc = log_inc + torch.where(torch.isneginf(old), 0.0, new[k] - old)
        return tuple(new), log_inc

    def finish(self, run: Run, state: _State) -> Finished:
        cur = state.particles
        x = cur.x
        if self.denoise:
            x = run.levels.posterior_step(cur.x, cur.score, 0, run.generator, run.clip)
        log_z = state.log_z
        return Finished(x, state.final_log_w,
                        float(log_z[0]) if len(log_z) == 1 else log_z.tolist())

    def _kernel_moves(self, run: Run, start: Target, target: Target, cur: Particles,
                      previous: NamedTuple | None, adapter: AcceptanceAdapter | None, i: int
                      ) -> tuple[Any, Moves]:
        """Initialise the moves' kernel at ``cur`` (answering from ``start``) and run it."""
        from .annealed import run_kernel

        kernel_state = self.moves.init(cur.x, start, run.generator, previous=previous)
        return run_kernel(self.moves, kernel_state, target, self.num_steps,
                          self.steps.rule(run.levels.sigma[i]), adapter, run.generator)
