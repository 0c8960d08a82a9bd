r"""The probability-flow ODE: a deterministic sampler (DDIM with ``η = 0``; flow matching's and
EDM's Euler and Heun samplers on their paths).

In the variables ``y = x/α``, ``ρ = σ/α`` the probability-flow ODE of any Gaussian path is
``dy/dρ = ε̂(x, t)``, with ``ε̂ = −σ s`` from the composed score. From level ``i`` (``t``) to
``i − 1`` (``s``; the clean data ``ρ = 0`` below level 0):

* ``"euler"``: ``y_s = y_t + (ρ_s − ρ_t) ε̂_t``, i.e. ``x_s = α_s x̂₀ + σ_s ε̂`` — DDIM's step
  (:meth:`~recompose.schedules.Levels.ddim_step`); rectified flow: ``x_s = x + (σ_s − σ_t) u``;
  VE: ``x_s = x + (σ_s − σ_t) ε̂`` (EDM's Euler). One evaluation per level.
* ``"heun"``: the Euler step as predictor, ``ε̂`` at its end, then
  ``y_s = y_t + (ρ_s − ρ_t) (ε̂_t + ε̂_s)/2`` (EDM Algorithm 1); the step to the clean data stays
  Euler. Two evaluations per level but the noisiest (``2T − 1`` in all).

Global error ``O(1/T)`` (Euler) and ``O(1/T²)`` (Heun) for smooth ``ε̂``, from the prior to
the cleanest level; the last step, to the clean data, is DDIM's jump to ``x̂₀`` (``denoise``,
as every sampler ends), whose own error is ``O(σ²)`` of the cleanest level (for a Gaussian of
variance ``c²``, ``σ²/2c²``): ``O(1/T)`` on cosine VP, ``O(1/T²)`` on rectified flow, and
``σ_min²`` on VE. A top level at pure noise (``α = 0``: a flow's ``σ = 1``, levels from
:meth:`~recompose.schedules.Schedule.levels_at`, e.g. a diffusers scheduler's own steps) takes
the model's own ``x̂₀`` (:meth:`~recompose.models.base.DiffusionModel.denoised`) instead of a
score there: ``x_s = α_s x̂₀ + σ_s x/σ_t``, flow matching's ``x + (σ_s − σ_t)(x/σ_t − x̂₀)``.
``clip`` clamps
``x̂₀`` (and recomputes ``ε̂ = (x − α x̂₀)/σ``) at every evaluation. On a composite the ODE of
the summed scores transports the prior somewhere, but not to the composition (as reverse
diffusion; R3 §3).
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

__all__ = ["ODE", "ODE_METHODS"]

ODE_METHODS = ("euler", "heun")


class _Chains(NamedTuple):
    x: Tensor
    score: Tensor | None  # the composed score at (x, this level); None before the first
    x0: Tensor | None = None  # the model's own x̂₀ at a level where α = 0 (then no score)


class ODE(Sampler):
    """The deterministic probability-flow sampler; ``method``: ``"euler"`` (DDIM) or
    ``"heun"``; ``denoise=False`` stops at the cleanest level (module docstring)."""

    name = "ode"
    from_pure_noise = True

    def __init__(self, method: str = "euler", denoise: bool = True) -> None:
        if method not in ODE_METHODS:
            raise ValueError(f"method must be one of {', '.join(ODE_METHODS)}, got {method!r}")
        self.method, self.denoise = method, bool(denoise)

    def settings(self) -> dict:
        return {"method": self.method, "denoise": self.denoise}

    def _score(self, run: Run, x: Tensor, i: int) -> Tensor:
        score = run.model.score(x, run.t(i))
        model_output_or_raise(score, x, i, run.levels)
        run.count(score=1)
        return score

    def start(self, run: Run) -> _Chains:
        return _Chains(run.x_init, None)

    def level(self, run: Run, state: _Chains, i: int) -> tuple[_Chains, LevelRecord]:
        x = state.x
        if state.score is not None or state.x0 is not None:
            x = self._step(run, state, i + 1)
            finite_or_raise(x, i + 1, run.levels, SCORE_ADVICE)
        if float(run.levels.alpha[i]) == 0.0:  # pure noise: the model's own x̂₀, not a score
            x0 = run.model.denoised(x, run.t(i))
            model_output_or_raise(x0, x, i, run.levels)
            run.count(score=1)
            return _Chains(x, None, x0 if run.clip is None else x0.clamp(*run.clip)), \
                LevelRecord()
        return _Chains(x, self._score(run, x, i)), LevelRecord()

    def _euler(self, run: Run, state: _Chains, i: int) -> tuple[Tensor, Tensor]:
        """The Euler (DDIM) step from level ``i`` and ``ε̂`` there."""
        levels = run.levels
        if state.x0 is None:
            _, eps = levels.denoised(state.x, state.score, i, run.clip)
            return levels.ddim_step(state.x, state.score, i, run.clip), eps
        eps = state.x / float(levels.sigma[i])  # α = 0: x = σ ε
        _, alpha_s, sigma_s = levels.below(i)
        return alpha_s * state.x0 + sigma_s * eps, eps

    def _step(self, run: Run, state: _Chains, i: int) -> Tensor:
        """From level ``i`` to ``i − 1`` (``i ≥ 1``)."""
        levels, x = run.levels, state.x
        euler, eps_t = self._euler(run, state, i)
        if self.method == "euler":
            return euler
        _, eps_s = levels.denoised(euler, self._score(run, euler, i - 1), i - 1, run.clip)
        alpha_t, sigma_t = float(levels.alpha[i]), float(levels.sigma[i])
        alpha_s, sigma_s = float(levels.alpha[i - 1]), float(levels.sigma[i - 1])
        if alpha_t == 0.0:  # from pure noise: the trapezoid in σ (y = x/α is undefined there)
            x0_s = (euler - sigma_s * eps_s) / alpha_s
            return euler + 0.5 * (sigma_s - sigma_t) * ((eps_s - x0_s) - (eps_t - state.x0))
        y = x / alpha_t + (sigma_s / alpha_s - sigma_t / alpha_t) * 0.5 * (eps_t + eps_s)
        return alpha_s * y

    def finish(self, run: Run, state: _Chains) -> Finished:
        if not self.denoise:
            return Finished(state.x)
        x = state.x0 if state.x0 is not None else run.levels.ddim_step(state.x, state.score, 0,
                                                                           run.clip)
        finite_or_raise(x, 0, run.levels, SCORE_ADVICE)
        return Finished(x)
