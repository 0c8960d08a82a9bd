r"""Feynman–Kac weights for reverse diffusion on a geometric composition (score-only).

Skreta et al. (ICML 2025, "Feynman–Kac correctors") weight the particles of reverse diffusion
so that they track the composed density instead of what the summed score transports. Here
for any ``p̃_t = ∏_k p^k_t^{w_k}`` (products, powers, ratios, CFG, classifier guidance), with
``W = Σ_k w_k`` over the diffusion factors.

**Derivation.** The VP forward process ``dx = −½β x dt + √β dW`` (``β(t) = −d log α²_t/dt``)
has marginals ``p_t`` with score ``s = ∇ log p_t`` that obey Fokker–Planck::

    ∂_t log p_t = ½β (d + x·s + ∇·s + |s|²)                                     (d = dim x)

The particles run, in reverse time ``τ``, ``dx = b dτ + √β dW`` with the composed score
``s = Σ_k w_k s_k`` and ``b = β(½W x + s)`` (reverse diffusion's ``β(½x + s)`` plus the linear
term ``½(W − 1)β x``, explained below). Its generator's adjoint gives
``L*p̃/p̃ = −∇·b − b·s + ½β (∇·s + |s|²)``, and weighting each path by ``exp(∫ g dτ)`` makes
the weighted particles follow ``p̃_t`` when ``g = ∂_τ log p̃ − L*p̃/p̃``. Summing the leaves'
Fokker–Planck equations with weights ``w_k``, every divergence cancels::

    g(x, t) = β(t) · [ h(x, t) + ½(W − 1) x·s ],   h = ½( |Σ_k w_k s_k|² − Σ_k w_k |s_k|² ).

No divergence, no energy: the weights cost nothing beyond the per-factor scores the composed
score is made of. For ``W = 1`` (conjunctions, CFG, classifier guidance) the linear term is
zero and ``b`` is reverse diffusion's drift. Special cases: ``h = 0`` for a single model; CFG
with scale ``w``, ``h = ½ w(w − 1) |s_c − s_u|²``; a product of two models, ``h = ⟨s₁, s₂⟩``.
The linear term makes ``g = 0`` at the noisiest levels, where every factor is ``N(0, I)``
(``s = −W x``) and the drift keeps ``p̃ = N(0, I/W)`` invariant; without it a product's
weights degenerate there for no gain.

**Classifier factors.** ``p_t(y | x)^λ`` is not a diffusion marginal, but for a Bayes-consistent
classifier it equals ``p_t(x | y)/p_t(x)`` (up to ``p(y)``) relative to the diffusion ``p_t`` it
guides. So it enters as the pair ``(s_ref + c, λ), (s_ref, −λ)`` with ``c = ∇ log p_t(y | x)``
and ``s_ref`` the one diffusion factor of the composite (two or more are ambiguous and refused).
Classifier guidance ``p · p(y|x)^λ`` then gets ``h = ½ λ(λ − 1) |c|²``. The weights are exact
only as far as the classifier is consistent with the model.

**Discretisation.** Between levels ``t_{i+1} → t_i`` the log-weight gains
``½(ĝ_{i+1} + ĝ_i) · B_i`` (``ĝ = g/β``; trapezoid rule, with values the sampler has anyway),
``B_i = ∫ β dt = log(α²_i/α²_{i+1})``. The step is, for ``W = 1``, the DDPM step, so the
particles' paths are reverse diffusion's and only resampling (always at the last level when
the weights differ) changes them (``clip`` clamps ``x̂₀`` as there; the weights ignore what the
clamp changes). For ``W ≠ 1`` it is the exponential
integrator of ``b`` around ``s = −W x``: with ``r = s + W x``, ``κ = W/2`` and
``φ = e^{−κ B_i}``, ``x' = φ x + (1 − φ)/κ · r + √((1 − φ²)/(2κ)) z``, exact for the noisiest
levels' Gaussian at any step size (the cosine schedule's top steps have ``B`` up to 5.5). The
error is ``O(1/T)``: the weights are exact only as ``T → ∞``; the energy forms of
:mod:`.smc` are exact at any ``T``.

**Start.** At the noisiest level every factor is ``N(0, I)`` up to ``α_{T−1}`` (``10⁻³`` for the
cosine schedule), so ``p̃ ∝ N(0, I/W)``: particles start there, ``W > 0`` is required, and the
evidence starts from ``log ∫ N(x; 0, I)^W dx = ½ d (1 − W) log 2π − ½ d log W``.

Cost per level: the composed score's network calls (views of one network still batched),
plus ``O(K·n·d)`` arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..compose import factor_scores, factors
from ..errors import CapabilityError
from ..models.base import DiffusionModel
from ..models.classifier import ClassifierFactor
from ..schedules import Levels
from ..utils import batch_sum
from .reverse import ddpm_step

__all__ = ["FeynmanKac", "beta_integral"]


def beta_integral(levels: Levels, i: int) -> float:
    """``B = ∫ β dt = log(α²_{i−1}/α²_i)`` over the step from level ``i`` to ``i − 1``."""
    return 2.0 * math.log(float(levels.alpha[i - 1] / levels.alpha[i]))


class FeynmanKac:
    """The weights and the step of reverse diffusion with Feynman–Kac weights on ``model``
    (module docstring). Capability errors are raised here, when it is built."""

    def __init__(self, model: DiffusionModel) -> None:
        pairs = factors(model)
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
                "diffusion factors; at the noisiest level it is N(0, I)^W, a normalisable "
                "density only for W > 0")

    def start_scale(self) -> float:
        """Standard deviation of ``p̃`` at the noisiest level, ``1/√W``."""
        return self.total_weight**-0.5

    def log_start_normaliser(self, dim: int) -> float:
        """``log ∫ N(x; 0, I)^W dx``."""
        w = self.total_weight
        return 0.5 * dim * (1.0 - w) * math.log(2 * math.pi) - 0.5 * dim * math.log(w)

    def score_and_rate(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """The composed score ``Σ w_k s_k`` (shape of ``x``) and ``ĝ = g/β``, ``(B,)`` float64."""
        terms = factor_scores(self.model, x, t)
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
            rate = rate + 0.5 * (self.total_weight - 1.0) * batch_sum(x.to(torch.float64) * s64)
        return score, rate

    def step(self, x: Tensor, score: Tensor, levels: Levels, i: int,
             generator: torch.Generator | None, clip: tuple[float, float] | None) -> Tensor:
        """The move from level ``i`` to ``i − 1`` (``i ≥ 1``) given the composed score at
        ``(x, t_i)`` (module docstring)."""
        w = self.total_weight
        if w == 1.0:
            return ddpm_step(x, score, levels, i, generator, clip)
        if clip is not None:
            raise ValueError("clip= needs total exponent W = 1 for fkc (the DDPM step); "
                             f"{self.model.describe()} has W = {w:g}")
        kappa = 0.5 * w
        phi = math.exp(-kappa * beta_integral(levels, i))
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (phi * x + (1 - phi) / kappa * (score + w * x)
                + ((1 - phi**2) / (2 * kappa)) ** 0.5 * z)
