r"""Best-of-N: draw ``N`` candidates per sample with any unweighted sampler and keep the one
with the highest reward (the baseline that reward-weighted samplers are compared with).

For ``model * rc.reward(r, λ)``, every returned sample ``j`` is chosen among ``N`` independent
runs ``x_j^{(1)}, …, x_j^{(N)}`` of the inner sampler on ``model``::

    x_j = x_j^{(k*)},   k* = argmax_k Σ_r r(x_j^{(k)})/λ_r   (the first on ties)

It does not sample the tilted density (it selects, whatever ``λ``), and it costs ``N`` times the
inner sampler per sample: ``info.score_evals`` (and the network evaluations) count all ``N``
candidates per returned sample, ``info.reward_evals`` the ``N`` reward calls. The candidates are
``N`` runs on the same ``n`` chains (candidate ``k`` of chain ``j`` sits on row ``j``), so a model
or reward with a condition per chain sees each chain's own condition. Rewards need not be
differentiable. Per-level diagnostics are the candidates' mean (``acceptance_min``: their
lowest).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import CapabilityError
from ..models.base import DiffusionModel
from .base import Finished, Run, Sampler
from .result import LevelRecord

__all__ = ["BestOf"]


class _Candidates(NamedTuple):
    runs: list[Run]
    states: list[object]


def _merge(records: list[LevelRecord]) -> LevelRecord:
    """One level's record over the candidates: means, and the lowest ``acceptance_min``."""
    def mean(key: str) -> float | None:
        values = [getattr(r, key) for r in records if getattr(r, key) is not None]
        return sum(values) / len(values) if values else None

    lows = [r.acceptance_min for r in records if r.acceptance_min is not None]
    return LevelRecord(acceptance=mean("acceptance"), acceptance_min=min(lows) if lows else None,
                       step_size=mean("step_size"), divergent=mean("divergent"))


class BestOf(Sampler):
    """Best-of-``candidates`` with an inner sampler (module docstring).

    Args:
        sampler: the inner sampler: a name (``"reverse"``, ``"ode"``, ``"hmc"``…) or an
            unweighted sampler object.
        candidates: ``N ≥ 1`` candidates per returned sample.
        **options: with a name, the inner sampler's options (as for :func:`recompose.sample`).
    """

    name = "best-of"
    weighs_rewards = True

    def __init__(self, sampler: str | Sampler = "reverse", candidates: int = 4,
                 **options: object) -> None:
        from .shortcuts import make_sampler

        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be an integer ≥ 1, got {candidates!r}")
        inner = make_sampler(sampler, **options)
        if inner.weighted or inner.weighs_rewards:
            raise ValueError(f"best-of-N draws independent candidates; {inner.name} is not an "
                             "independent-chain sampler (use 'reverse', 'ode' or an annealed "
                             "sampler)")
        self.inner, self.candidates = inner, candidates
        self.tracks, self.from_pure_noise = inner.tracks, inner.from_pure_noise

    def check(self, model: DiffusionModel) -> None:
        """The inner sampler's capability errors."""
        self.inner.check(model)

    def settings(self) -> dict:
        """``candidates``, the inner sampler's name and its settings (prefixed ``inner_``)."""
        return {"candidates": self.candidates, "inner": self.inner.name,
                **{f"inner_{k}": v for k, v in self.inner.settings().items()}}

    def start(self, run: Run) -> _Candidates:
        """``N`` inner runs on the same chains (the first from ``run.x_init``, the others from
        fresh prior draws)."""
        if not run.rewards:
            raise CapabilityError("best-of-N keeps the candidate with the highest reward: "
                                  "sample model * rc.reward(...)")
        runs, states = [], []
        for k in range(self.candidates):
            x_init = run.x_init if k == 0 else run.levels.prior(
                run.x_init.shape[0], tuple(run.x_init.shape[1:]), run.generator,
                run.x_init.device, run.x_init.dtype)
            inner = dataclasses.replace(run, x_init=x_init, rewards=(), score_evals=0,
                                        energy_evals=0, reward_evals=0)
            runs.append(inner)
            states.append(self.inner.start(inner))
        return _Candidates(runs, states)

    def positions(self, state: _Candidates) -> Tensor:
        """All candidates' positions, ``(N·n, *D)``, candidate by candidate."""
        return torch.cat([self.inner.positions(s) for s in state.states])

    def level(self, run: Run, state: _Candidates, i: int) -> tuple[_Candidates, LevelRecord]:
        """Every candidate's level ``i``; the record is their mean."""
        records, states = [], []
        for inner, s in zip(state.runs, state.states):
            s, record = self.inner.level(inner, s, i)
            states.append(s)
            records.append(record)
        return _Candidates(state.runs, states), _merge(records)

    def finish(self, run: Run, state: _Candidates) -> Finished:
        """Each row's candidate with the highest reward (module docstring)."""
        done = [self.inner.finish(inner, s) for inner, s in zip(state.runs, state.states)]
        run.count(score=sum(r.score_evals for r in state.runs),
                  energy=sum(r.energy_evals for r in state.runs))
        scores = torch.stack([sum(r(d.x) for r in run.rewards) for d in done])  # (N, n)
        run.reward_evals += self.candidates * len(run.rewards)
        scores = torch.where(torch.isnan(scores), -math.inf, scores)
        best = scores.argmax(0)  # the first maximum on ties
        rows = torch.arange(scores.shape[1], device=best.device)
        x = torch.stack([d.x for d in done])[best.to(run.x_init.device), rows]
        log_density = None
        if done[0].log_density is not None:
            log_density = {k: torch.stack([d.log_density[k] for d in done])[best, rows]
                           for k in done[0].log_density}
        return Finished(x, log_density=log_density)
