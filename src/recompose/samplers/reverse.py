r"""Reverse diffusion: the DDPM ancestral step (Ho et al. 2020) on any path and composite.

From level ``i`` to ``i − 1`` with the composed score ``s`` at ``(x, t_i)``, the posterior step
of the path (:meth:`~recompose.schedules.Levels.posterior`)::

    x_{i−1} = (x + v s)/a + √(v σ²_{i−1}/σ²_i) z,     a = α_i/α_{i−1},  v = σ_i² − a² σ²_{i−1}

(VP: ``v = 1 − a² = β``, DDPM's ``(x − β ε̂/σ_i)/√(1 − β)`` with its posterior variance); the
last step, to the clean data, is Tweedie's ``x̂₀``. On a composite ``s`` is the composed score:
that this does **not** sample the composition is the point of R3 §3 (the product of time-``t``
marginals is not the diffusion of the product). ``clip=(lo, hi)`` clamps ``x̂₀`` inside every
step (DDPM's ``clip_denoised``).

**Tracked compositions** (score-only mixtures, :func:`~recompose.compose.superpose`): each
tracked model's log-density is carried along every chain by the Itô estimator
(:mod:`.tracking`); a mixture's score is formed from it, and a superposition's AND step solves
its ``κ`` per chain. The estimates are returned as ``result.log_density``.

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
from .tracking import Tracked, Tracker

__all__ = ["Reverse"]


class _Chains(NamedTuple):
    x: Tensor
    score: Tensor | None  # the composed score at (x, this level); None before the first
    tracked: Tracked | None = None  # tracked log-densities; None when nothing is tracked


class Reverse(Sampler):
    """DDPM ancestral sampling with the model's (composed) score. No options."""

    name = "reverse"
    tracks = True

    def start(self, run: Run) -> _Chains:
        tracker = Tracker.of(run.composition)
        if tracker is None:
            return _Chains(run.x_init, None)
        return _Chains(run.x_init, None, Tracked(tracker, None, None))

    def level(self, run: Run, state: _Chains, i: int) -> tuple[_Chains, LevelRecord]:
        if state.tracked is not None:
            return self._tracked_level(run, state, i), LevelRecord()
        x = state.x
        if state.score is not None:  # the step from level i + 1
            x = run.levels.posterior_step(x, state.score, i + 1, run.generator, run.clip)
            finite_or_raise(x, i + 1, run.levels, SCORE_ADVICE)
        score = run.model.score(x, run.t(i))
        model_output_or_raise(score, x, i, run.levels)
        run.count(score=1)
        return _Chains(x, score), LevelRecord()

    def finish(self, run: Run, state: _Chains) -> Finished:
        tracked = state.tracked
        if tracked is not None and tracked.tracker.superposition:
            x = tracked.tracker.and_finish(run.levels, state.x, tracked.scores, tracked.kappa,
                                           run.clip)
        else:
            x = run.levels.posterior_step(state.x, state.score, 0, run.generator, run.clip)
        finite_or_raise(x, 0, run.levels, SCORE_ADVICE)
        if tracked is None:
            return Finished(x)
        return Finished(x, log_density=tracked.tracker.named(tracked.log_density))

    def _tracked_level(self, run: Run, state: _Chains, i: int) -> _Chains:
        """Arrive at level ``i`` carrying the log-densities, then evaluate the tracked models
        there (and form the mixture's score from them)."""
        tracked, x, levels = state.tracked, state.x, run.levels
        tracker, kappa = tracked.tracker, tracked.kappa
        if tracked.log_density is None:
            log_density = tracker.start(x, levels)
        else:
            if tracker.superposition:
                x, kappa = tracker.and_step(levels, x, tracked.scores, tracked.log_density,
                                            i + 1, run.generator, run.clip)
            else:
                x = levels.posterior_step(x, state.score, i + 1, run.generator, run.clip)
            finite_or_raise(x, i + 1, levels, SCORE_ADVICE)
            log_density = tracker.advance(tracked.log_density, state.x, x, tracked.scores,
                                          levels, i + 1)
        raw = run.rows(lambda y: tracker.evaluate(y, run.t(i)), x)
        model_output_or_raise(raw, x, i, levels)
        run.count(score=1)
        score = None if tracker.superposition else tracker.score(raw, log_density)
        return _Chains(x, score, Tracked(tracker, log_density, tracker.tracked_scores(raw),
                                         kappa))
