r"""Feynman–Kac correctors: reverse diffusion with weights for a geometric composition
(score-only; Skreta et al., ICML 2025), on any Gaussian path.

For ``p̃_t = ∏_k p^k_t^{w_k}`` (products, powers, ratios, CFG, classifier guidance), with
``W = Σ_k w_k`` over the diffusion factors, the particles run a reverse SDE and carry weights
so that they track ``p̃_t`` instead of what the summed score transports.

**Derivation.** The forward process ``dx = f x dt + g dW`` (:mod:`recompose.schedules`) has
marginals ``p_t`` with score ``s = ∇ log p_t`` that obey Fokker–Planck::

    ∂_t log p_t = ½g² (∇·s + |s|²) + ½g²κ (d + x·s),      κ = −2f/g²,  d = dim x

(VP: ``f = −½β``, ``g² = β``, ``κ = 1``; VE: ``κ = 0``). The particles run, in reverse time
``τ``, ``dx = b dτ + g dW`` with the composed score ``s = Σ_k w_k s_k`` and
``b = −f W x + g² s`` (reverse diffusion's drift for ``W = 1``). Its generator's adjoint gives
``L*p̃/p̃ = −∇·b − b·s + ½g² (∇·s + |s|²)``, and weighting each path by ``exp(∫ g dτ)`` makes
the weighted particles follow ``p̃_t`` when ``g = ∂_τ log p̃ − L*p̃/p̃``. Summing the leaves'
Fokker–Planck equations with weights ``w_k``, every divergence cancels::

    g(x, t) = g_t² · [ h(x, t) + ½κ_t(W − 1) x·s ],   h = ½( |Σ_k w_k s_k|² − Σ_k w_k |s_k|² ).

No divergence, no energy: the weights cost nothing beyond the per-factor scores the composed
score is made of. For ``W = 1`` (conjunctions, CFG, classifier guidance) the linear term is
zero. Special cases: ``h = 0`` for a single model; CFG with scale ``w``,
``h = ½ w(w − 1) |s_c − s_u|²``; a product of two models, ``h = ⟨s₁, s₂⟩``. The linear term
makes ``g = 0`` at the noisiest levels of VP, where every factor is ``N(0, I)`` and the drift
keeps ``p̃ = N(0, I/W)`` invariant; without it a product's weights degenerate there for no gain.

**Classifier factors.** ``p_t(y | x)^λ`` is not a diffusion marginal, but for a Bayes-consistent
classifier it equals ``p_t(x | y)/p_t(x)`` (up to ``p(y)``) relative to the diffusion ``p_t`` it
guides. So it enters as the pair ``(s_ref + c, λ), (s_ref, −λ)`` with ``c = ∇ log p_t(y | x)``
and ``s_ref`` the one diffusion factor of the composite (two or more are ambiguous and refused).
Classifier guidance ``p · p(y|x)^λ`` then gets ``h = ½ λ(λ − 1) |c|²``. The weights are exact
only as far as the classifier is consistent with the model.

**Discretisation.** Between levels ``t_{i+1} → t_i`` the log-weight gains
``½(ĝ_{i+1} + ĝ_i) · B_i`` (``ĝ = g/g²``; trapezoid rule, with values the sampler has anyway),
``B_i = ∫ g² dt`` over the step (VP: ``log(α²_i/α²_{i+1})``). For ``W = 1`` the step is the
reverse-diffusion (posterior) step, so the particles' paths are reverse diffusion's and only
resampling (always at the last level when the weights differ) changes them (``clip`` clamps
``x̂₀`` as there; the weights ignore what the clamp changes). For ``W ≠ 1`` it is the
exponential integrator of ``b`` around the noisiest levels' Gaussian ``s ≈ −W x/v``
(``v = α² + σ²``): with ``r = s + (W/v) x``, ``λ = W (1/v − κ/2)`` and ``φ = e^{−λ B_i}``,
``x' = φ x + (1 − φ)/λ · r + √((1 − φ²)/(2λ)) z``, exact for that Gaussian at any step size (the
cosine schedule's top steps have ``B`` up to 5.5); ``v``, ``κ`` are frozen at the step's start.
The error is ``O(1/T)``: the weights are exact only as ``T → ∞``; SMC's energy forms are exact
at any ``T``.

**Start.** At the noisiest level every factor is the prior ``N(0, v I)`` up to the data's share
``α`` (``10⁻³`` at the top of the paths here), so ``p̃ ∝ N(0, v I/W)``: particles start there,
``W > 0`` is required, and the evidence starts from
``log ∫ N(x; 0, v I)^W dx = ½ d (1 − W) log 2πv − ½ d log W``.

**Score-only mixtures** (tracked; :mod:`.tracking`). A mixture whose parts are score-only is
a marginal factor like any other: its score comes from each particle's tracked
log-densities (responsibilities ``softmax(log w + ℓ)``), carried through every step and copied
by resampling. Alone (``W = 1``, ``h = 0``) every weight is 1 and FKC is reverse diffusion with
tracking; in a product the weights correct the product as for any factor. Moves are refused
with a tracked mixture (tracking along an MCMC move needs the score's divergence), and so is a
superposition (not a density: no weights apply; sample it with ``"reverse"``).

**Moves** (optional): any kernel targeting ``p̃_{t_i}`` (e.g. U-HMC on scores) after the
resampling spreads its copies, at the moves' cost plus one evaluation of the factors' scores
per level.

Cost per level: the composed score's network calls (views of one network still batched),
plus ``O(K·n·d)`` arithmetic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..compose import Superposition, factor_scores, factors, needs_tracking
from ..errors import CapabilityError
from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter
from ..models.base import DiffusionModel
from ..models.classifier import ClassifierFactor
from ..schedules import Levels
from ..utils import batch_sum
from .annealed import Moves
from .base import Finished, Run, finite_or_raise, model_output_or_raise
from .particles import Particles, Weighted, cached, resolve_moves
from .tracking import Tracker

__all__ = ["FKC", "FeynmanKac"]


class FeynmanKac:
    """The weights and the step of reverse diffusion with Feynman–Kac weights on ``model``
    (module docstring). Capability errors are raised here, when it is built."""

    def __init__(self, model: DiffusionModel) -> None:
        pairs = factors(model)
        if any(isinstance(m, Superposition) for m in model.modules()):
            raise CapabilityError(
                f"{model.describe()} is a sampling procedure, not a density: Feynman–Kac "
                "weights do not apply; sample it with 'reverse'")
        self.tracker = Tracker.of(model)  # refuses tracked mixtures it cannot see
        marginal = [(b, w) for b, w in pairs if b.marginal]
        classifiers = [b for b, _ in pairs if not b.marginal]
        for b in classifiers:
            if not isinstance(b, ClassifierFactor):
                raise CapabilityError(
                    f"fkc needs the score of every factor of a product, but {b.describe()} is "
                    f"a composite ({type(b).__name__}) whose factors it cannot see; use 'smc' "
                    "with energy-parameterised models, or 'reverse' / annealed MCMC")
        if classifiers and len(marginal) != 1:
            raise CapabilityError(
                f"Feynman–Kac weights treat a classifier factor ({classifiers[0].describe()}) "
                "as the likelihood ratio p_t(x|y)/p_t(x) of the one diffusion model it guides, "
                f"but {model.describe()} has {len(marginal)} diffusion factors; guide a single "
                "model, or use 'smc' with energy-parameterised models")
        self.model = model
        total = sum(w for _, w in marginal)  # W; CFG's (1 − w) + w may round off 1
        self.total_weight = 1.0 if abs(total - 1.0) < 1e-9 else total
        if self.total_weight <= 0:
            raise CapabilityError(
                f"{model.describe()} has total exponent W = {self.total_weight:g} over its "
                "diffusion factors; at the noisiest level it is the prior to the power W, "
                "a normalisable "
                "density only for W > 0")

    def start_scale(self) -> float:
        """``1/√W``: the prior's draws scaled to ``p̃ = N(0, v I/W)`` at the noisiest level."""
        return self.total_weight**-0.5

    def log_start_normaliser(self, dim: int, var: float) -> float:
        """``log ∫ N(x; 0, var I)^W dx``."""
        w = self.total_weight
        return 0.5 * dim * (1.0 - w) * math.log(2 * math.pi * var) - 0.5 * dim * math.log(w)

    def score_and_rate(self, x: Tensor, t: float | Tensor, kappa: float
                       ) -> tuple[Tensor, Tensor]:
        """The composed score ``Σ w_k s_k`` (shape of ``x``) and ``ĝ = g/g²``, ``(B,)``
        float64, at ``(x, t)`` with the path's ``κ_t = kappa``."""
        return self.combine(factor_scores(self.model, x, t), x, kappa)

    def combine(self, terms: list[tuple[float, bool, Tensor]], x: Tensor, kappa: float
                ) -> tuple[Tensor, Tensor]:
        """:meth:`score_and_rate` from the factors' scores ``[(w_k, marginal_k, s_k)]``."""
        score = sum(w * s for w, _, s in terms)
        marginal = [(w, s.to(torch.float64)) for w, m, s in terms if m]
        squares = sum(w * batch_sum(s**2) for w, s in marginal)
        if len(marginal) < len(terms):  # classifier factors: ±λ pairs around the one diffusion
            ref = marginal[0][1]
            for w, m, c in terms:
                if not m:
                    c = c.to(torch.float64)
                    squares = squares + w * batch_sum(2 * ref * c + c**2)
        s64 = score.to(torch.float64)
        rate = 0.5 * (batch_sum(s64**2) - squares)
        if self.total_weight != 1.0:
            rate = rate + 0.5 * kappa * (self.total_weight - 1.0) * batch_sum(
                x.to(torch.float64) * s64)
        return score, rate

    def step(self, x: Tensor, score: Tensor, levels: Levels, i: int,
             generator: torch.Generator | None, clip: tuple[float, float] | None) -> Tensor:
        """The move from level ``i`` to ``i − 1`` (``i ≥ 1``) given the composed score at
        ``(x, t_i)`` (module docstring)."""
        w = self.total_weight
        if w == 1.0:
            return levels.posterior_step(x, score, i, generator, clip)
        if clip is not None:
            raise ValueError("clip= needs total exponent W = 1 for fkc (the DDPM step); "
                             f"{self.model.describe()} has W = {w:g}")
        var = levels.marginal_variance(i)
        rate = w * (1.0 / var - 0.5 * levels.drift_ratio(i))
        b = levels.g2_integral(i)
        phi = math.exp(-rate * b)
        if abs(rate * b) > 1e-8:
            drift, spread = (1 - phi) / rate, (1 - phi**2) / (2 * rate)
        else:  # λ → 0: the limits of both
            drift, spread = b, b
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return phi * x + drift * (score + (w / var) * x) + spread**0.5 * z


class FKC(Weighted):
    """Reverse diffusion with Feynman–Kac weights and resampling (module docstring).

    Args:
        moves: optional MCMC moves after resampling (a kernel object or name, e.g.
            ``"uhmc"``); none by default.
        num_steps: moves per level (default 1 with ``moves``).
        ess_threshold: resample when the effective sample size falls under
            ``ess_threshold · n`` (as for :class:`~.smc.SMC`).
        resampling: the resampling scheme (as for :class:`~.smc.SMC`).
        step_size: ``c`` of the moves' step rule ``c · σ_t^p``.
        step_power: ``p`` of the moves' step rule.
        adapt: adapt ``c`` toward ``target_accept`` (Metropolis moves).
        target_accept: the acceptance rate adaptation aims at.
        denoise: end with Tweedie's ``x̂₀``.
        **kernel_options: with ``moves`` given by name, its factory's options.
    """

    name = "fkc"

    def __init__(self, moves: str | Kernel | None = None, num_steps: int | None = None,
                 ess_threshold: float = 0.5, resampling: str = "systematic",
                 step_size: float | None = None, step_power: float | None = None,
                 adapt: bool | None = None, target_accept: float | None = None,
                 denoise: bool = True, **kernel_options: object) -> None:
        super().__init__(resolve_moves(moves, kernel_options), num_steps, 1,
                         ess_threshold, resampling, step_size, step_power, adapt,
                         target_accept, denoise)

    tracks = True

    def check(self, model: DiffusionModel) -> None:
        FeynmanKac(model)  # capability errors
        if self.moves is not None and needs_tracking(model):
            raise CapabilityError(
                f"fkc's moves ({self.moves.name}) would leave the tracked log-densities of "
                f"{model.describe()} behind (tracking along an MCMC move needs the score's "
                "divergence); use fkc without moves")
        super().check(model)

    def prepare(self, run: Run) -> FeynmanKac:
        return FeynmanKac(run.composition)

    def _evaluate(self, run: Run, fk: FeynmanKac, x: Tensor, i: int,
                  log_density: Tensor | None = None) -> Particles:
        kappa = run.levels.drift_ratio(i)
        tracker = fk.tracker
        if tracker is None:
            score, rate = run.rows(lambda y: fk.score_and_rate(y, run.t(i), kappa), x)
            model_output_or_raise(score, x, i, run.levels)
            run.count(score=1)
            return Particles(x, None, score, rate)
        raw = run.rows(lambda y: tracker.evaluate(y, run.t(i)), x)
        model_output_or_raise(raw, x, i, run.levels)
        run.count(score=1)
        score, rate = fk.combine(tracker.terms(raw, log_density), x, kappa)
        return Particles(x, None, score, rate, log_density, tracker.tracked_scores(raw))

    def arrive(self, run: Run, fk: FeynmanKac, cur: Particles | None, i: int
               ) -> tuple[Particles, Tensor]:
        levels = run.levels
        if cur is None:
            x = run.x_init * fk.start_scale()
            tracked = None if fk.tracker is None else fk.tracker.start(x, levels)
            new = self._evaluate(run, fk, x, i, tracked)
            dim = run.x_init[0].numel()
            return new, torch.full_like(new.rate, fk.log_start_normaliser(
                dim, levels.prior_variance()))
        x = fk.step(cur.x, cur.score, levels, i + 1, run.generator, run.clip)
        finite_or_raise(x, i, levels, "the composed score is too large for the step; use more "
                                      "levels")
        tracked = None if fk.tracker is None else fk.tracker.advance(
            cur.log_density, cur.x, x, cur.tracked_scores, levels, i + 1)
        new = self._evaluate(run, fk, x, i, tracked)
        return new, 0.5 * (cur.rate + new.rate) * levels.g2_integral(i + 1)

    def finish(self, run: Run, state: NamedTuple) -> Finished:
        done = super().finish(run, state)
        tracker = state.context.tracker
        if tracker is None:
            return done
        return done._replace(log_density=tracker.named(state.particles.log_density))

    def move(self, run: Run, fk: FeynmanKac, cur: Particles, previous: NamedTuple | None,
             target: Target, adapter: AcceptanceAdapter | None, i: int
             ) -> tuple[Particles, NamedTuple, Moves]:
        """The moves spread the copies that resampling made (the weighted particles stay
        consistent for ``p̃_{t_i}``: an invariant kernel preserves it; ULA / U-HMC only
        approximately), then one evaluation of the factors' scores at the moved points gives
        the rate the next increment needs."""
        if self.moves.needs_energy:  # the cached level has no energy: the kernel evaluates
            start, extra = target, 1
        else:
            start, extra = cached(target, cur.x, cur.energy, cur.score), 0
        state, moved = self._kernel_moves(run, start, target, cur, previous, adapter, i)
        new = self._evaluate(run, fk, state.x, i)  # the rate at the moved points
        return new, state, moved._replace(score_evals=moved.score_evals + extra,
                                          energy_evals=moved.energy_evals + extra)
