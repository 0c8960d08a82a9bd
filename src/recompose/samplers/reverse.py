r"""Reverse diffusion: the DDPM ancestral step (Ho et al. 2020) on any path and composite.

From level ``i`` to ``i − 1`` with the composed score ``s`` at ``(x, t_i)``, the posterior step
of the path (:meth:`~recompose.schedules.Levels.posterior`)::

    x_{i−1} = (x + v s)/a + √(v σ²_{i−1}/σ²_i) z,     a = α_i/α_{i−1},  v = σ_i² − a² σ²_{i−1}

(VP: ``v = 1 − a² = β``, DDPM's ``(x − β ε̂/σ_i)/√(1 − β)`` with its posterior variance); the
last step, to the clean data, is Tweedie's ``x̂₀``. On a composite ``s`` is the composed score:
that this does **not** sample the composition is the point of R3 §3 (the product of time-``t``
marginals is not the diffusion of the product). ``clip=(lo, hi)`` clamps ``x̂₀`` inside every
step (DDPM's ``clip_denoised``).

Cost: one composite score per level (``T`` network calls per leaf).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from .base import (
    SCORE_ADVICE,
    Finished,
    Run,
    Sampler,
    finite_or_raise,
    model_output_or_raise,
)
from .result import LevelRecord

__all__ = ["Reverse"]


class _Chains(NamedTuple):
    x: Tensor
    score: Tensor | None  # the composed score at (x, this level); None before the first


class Reverse(Sampler):
    """DDPM ancestral sampling with the model's (composed) score. No options."""

    name = "reverse"

    def start(self, run: Run) -> _Chains:
        return _Chains(run.x_init, None)

    def level(self, run: Run, state: _Chains, i: int) -> tuple[_Chains, LevelRecord]:
        x = state.x
        if state.score is not None:  # the step from level i + 1
            x = run.levels.posterior_step(x, state.score, i + 1, run.generator, run.clip)
            finite_or_raise(x, i + 1, run.levels, SCORE_ADVICE)
        score = run.model.score(x, run.t(i))
        model_output_or_raise(score, x, i, run.levels)
        run.count(score=1)
        return _Chains(x, score), LevelRecord()

    def finish(self, run: Run, state: _Chains) -> Finished:
        x = run.levels.posterior_step(state.x, state.score, 0, run.generator, run.clip)
        finite_or_raise(x, 0, run.levels, SCORE_ADVICE)
        return Finished(x)
