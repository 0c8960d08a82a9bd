r"""Log-densities tracked along the trajectory: the Itô density estimator (Skreta et al.,
*The Superposition of Diffusion Models Using the Itô Density Estimator*, 2025), on any
Gaussian path, and the two operators it makes possible for score-only models: mixtures (OR)
and SuperDiff's AND.

**The estimator.** The forward SDE ``dx = f_t x dt + g_t dW`` (``f = d log α/dt``,
``g² = dσ²/dt − 2fσ²``; :mod:`recompose.schedules`) has marginals ``q_t`` with score
``s = ∇ log q_t`` obeying Fokker–Planck::

    ∂_t log q = −d f − f x·s + ½ g² (∇·s + |s|²)                         (d = dim x)

Let ``x_τ`` be *any* trajectory in reverse time ``τ`` (``t`` decreasing) whose noise is
``g dW``, whatever its drift (reverse diffusion of another model, of a mixture, FKC's step).
Itô's formula for ``log q_{t(τ)}(x_τ)`` adds ``½ g² ∇·s dτ`` to ``−∂_t log q dτ + ⟨s, dx⟩``,
which cancels the divergence::

    d log q_t(x_τ) = ⟨s, dx⟩ + [d f + f x·s − ½ g² |s|²] dτ.

No divergence, no energy: the log-density of every model is tracked from its score along a
chain that none of them needs to drive. (An ODE or an MCMC move at fixed ``t`` has no such
cancellation: tracking along it would need ``∇·s``. Those samplers refuse tracked models.)

**Discretisation** (left point, the Itô sum). Over the step from level ``i`` to ``i − 1`` with
the scores ``s_k`` at ``(x, t_i)`` and the step's actual increment ``dx = x' − x``::

    Δℓ_k = ⟨s_k, dx⟩ + d F_i + F_i ⟨x, s_k⟩ − ½ B_i |s_k|²,
    F_i = ∫ f dt = log(α_i/α_{i−1}),      B_i = ∫ g² dt

(``Levels.drift_integral``, ``Levels.g2_integral``: coefficients integrated exactly over the
step, scores frozen at its start; the posterior step's noise variance ``v σ²_{i−1}/σ²_i``
tends to ``B_i`` as the steps shrink). Its error per step is
``½(dxᵀ∇s dx − B ∇·s)`` and higher-order terms: zero-mean fluctuations of order ``B_i |∇s|``,
which add up over the ``T`` steps like ``T^{−1/2}``, and an ``O(1/T)`` bias. The bias is a sum
over coordinates, so it grows with the dimension ``d``, and it depends on the model's shape
(``∇s``): two models get *different* offsets, which a mixture's responsibilities read as a
change of weights. Per coordinate it is small (10⁻³–10⁻² nats at 50 levels), over the 768
coordinates of a 16×16 RGB image it is nats; use many levels on images and check the fractions
(docs/results.md §13, *dimension*).

**A Gaussian control variate.** The top steps of a VP path are huge (cosine: ``B`` up to 5.5,
``a = α_i/α_{i−1}`` down to 0.06), and there the sum above is off by several nats per chain even
for a Gaussian. Every path has one density whose log is known exactly: ``G_t = N(0, v_t I)``,
``v_t = α_t² + σ_t²``, the marginal of data ``N(0, I)``, with score ``−x/v_t``. It solves the
same Fokker–Planck equation, so the estimator applies to ``log(q^k/G)`` as well; the tracker
adds the exact ``Δ log G`` to the Itô sum of the residual ``r_k = s_k + x/v_{t_i}``::

    Δℓ_k = log G_{i−1}(x') − log G_i(x) + ⟨r_k, dx⟩ + F_i ⟨x, r_k⟩ − ½ B_i (|s_k|² − |x/v_{t_i}|²)

Same limit, same cost, exact for ``G``; the error now
scales with ``∇s + I/v`` instead of ``∇s``, which removes the top steps' error (at the noisiest
levels every model is ``G`` up to the data's share). (Measured while building it, on the
estimator oracle of docs/results.md §13 at ``T = 100``, cosine VP: the spread of the error
between chains fell from 2.6 nats without it to 0.36 with it; the table there is with it.)

**Start.** At the noisiest level every normalised model is the prior ``N(0, v I)`` up to the
data's share ``α`` (``10⁻³`` at the top of the paths here), so ``ℓ_k = log N(x; 0, v I)`` for
every ``k`` (``= log G_{t_max}``). The estimates are therefore ``log q^k_t(x_t)`` *with* each
model's normaliser, comparable between models (the start's error is ``O(α)``, the same for
all). They are kept in float64, per chain, in the sampler's per-run state (never on a model or
sampler object).

**OR (mixtures).** ``Σ_k w_k q^k_t`` is the time-``t`` marginal of the diffusion of
``Σ_k w_k q^k_0``, so reverse diffusion with its exact score samples the mixture exactly; the
score is ``Σ_k r_k s_k`` with ``r = softmax(log w + ℓ)``
(:meth:`~recompose.compose.Mixture.tracked_score`). With tracked ``ℓ`` the only error is the
estimator's. No importance weight can repair it (the exact ``ℓ`` is what is unknown), and none
is needed: ``"fkc"`` on a mixture alone has weight 1 on every particle and *is* this reverse
diffusion (bit for bit). Inside a product (``mix(A, B) * C``) the tracked mixture is one
marginal factor of the Feynman–Kac weights like any other (:mod:`.fkc`), which then correct
the product, with resampling when they degenerate; resampling copies a particle's ``ℓ`` with it.

**AND (superposition).** With the posterior step ``x' = (x + v ŝ)/a + σ̃ z`` and
``ŝ = s_b + κ(s_a − s_b)``, ``dx`` is affine in ``κ``, and so is
``(ℓ_a + Δℓ_a) − (ℓ_b + Δℓ_b)``. The noise ``z`` is drawn first; then::

    κ = −[(ℓ_a − ℓ_b) + ⟨δ, dx₀⟩ + c_a − c_b] / ((v/a)|δ|²),     δ = s_a − s_b,

with ``dx₀`` the increment at ``κ = 0`` and ``c_k = d F + F⟨x, s_k⟩ − ½ B |s_k|²``, makes the
two tracked log-densities equal after the step. Where ``|δ|`` is tiny (the noisiest levels,
where both models are the prior) ``κ`` is unbounded, so it is clipped to ``kappa_range``
(default ``[−1, 2]``: at most one score's length of extrapolation beyond either model; ``κ =
½`` where ``δ = 0``); a clipped step leaves the difference to later steps. With ``clip=`` the
step clamps ``x̂₀`` and ``κ`` comes from the unclamped step, so equality is approximate. The
last step (Tweedie's ``x̂₀``, no noise) reuses the previous ``κ``. The samples lie where both
models find them equally likely, reached by reverse diffusion: a procedure, not the product
``a · b`` (whose samplers are ``"fkc"``, ``"smc"``, annealed MCMC).

Cost: the tracked models' scores (one network call per distinct network, views stacked) per
level, as the mixture's score needs anyway, plus ``O(K·n·d)`` arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..compose import (
    Superposition,
    factor_scores,
    factor_weights,
    factors,
    is_tracked,
    needs_tracking,
    part_scores,
    power,
    product,
)
from ..errors import CapabilityError
from ..models.base import DiffusionModel
from ..schedules import Levels
from ..utils import batch_sum
from .particles import log_normal

__all__ = ["Tracker", "Tracked"]

_F64 = torch.float64


class Tracked(NamedTuple):
    """A reverse-diffusion run's tracked state at one level."""

    tracker: Tracker
    log_density: Tensor | None  # (n, K) float64 at (x, this level); None before the first
    scores: Tensor | None  # (n, K, *D): each tracked model's score there
    kappa: Tensor | None = None  # AND: (n,) the last step's κ


class Tracker:
    """The tracked models of a composition and the estimator over them (module docstring).

    ``model`` is a tracked mixture, a superposition, or a product (powers, ratios) with tracked
    mixtures among its canonical factors. Built per run; holds no run state."""

    def __init__(self, model: DiffusionModel) -> None:
        pairs = factors(model)
        nodes = [(b, w) for b, w in pairs if is_tracked(b)]
        seen = {id(b) for b, _ in nodes}
        for m in model.modules():
            if is_tracked(m) and id(m) not in seen:
                raise CapabilityError(
                    f"{m.describe()} sits inside {model.describe()}, where the samplers cannot "
                    "form its score: a tracked mixture can be sampled alone or as a factor of "
                    "a product (a * b, a**w), a superposition only alone")
        self.superposition = any(isinstance(b, Superposition) for b, _ in nodes)
        if self.superposition and len(pairs) != 1:
            raise CapabilityError(
                f"a superposition is a sampling procedure, not a density: it cannot be a "
                f"factor of {model.describe()}; sample it alone with 'reverse'")
        self.nodes = nodes
        self.parts: list[DiffusionModel] = []  # each distinct part once
        column: dict[int, int] = {}  # id(part) -> its column in self.parts
        for b, _ in nodes:
            for p in b.parts:
                if id(p) not in column:
                    column[id(p)] = len(self.parts)
                    self.parts.append(p)
        self.columns = [[column[id(p)] for p in b.parts] for b, _ in nodes]
        rest = [(b, w) for b, w in pairs if not is_tracked(b)]
        self.rest = product([power(b, w) for b, w in rest]) if rest else None
        self.rest_weights = [] if self.rest is None else factor_weights(self.rest)
        self.names = _unique([p.describe() for p in self.parts])

    @staticmethod
    def of(model: DiffusionModel) -> Tracker | None:
        """A tracker for ``model``, or ``None`` when nothing in it needs tracking."""
        return Tracker(model) if needs_tracking(model) else None

    # ------------------------------------------------------------------ evaluation
    @property
    def num_tracked(self) -> int:
        """The number of distinct models whose log-densities are tracked."""
        return len(self.parts)

    def evaluate(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``(B, K + M, *D)``: the ``K`` tracked models' scores, then the ``M`` other factors'
        own scores (:func:`~recompose.compose.factor_scores`); a row-wise function of ``x``."""
        scores = part_scores(self.parts, x, t)
        if self.rest is None:
            return scores
        rest = torch.stack([s for _, _, s in factor_scores(self.rest, x, t)], dim=1)
        return torch.cat([scores, rest], dim=1)

    def tracked_scores(self, raw: Tensor) -> Tensor:
        """The tracked models' scores ``(B, K, *D)`` of an :meth:`evaluate` output."""
        return raw[:, : self.num_tracked]

    def terms(self, raw: Tensor, log_density: Tensor) -> list[tuple[float, bool, Tensor]]:
        """``[(w_k, marginal_k, s_k)]`` of the composition's factors (as
        :func:`~recompose.compose.factor_scores`), each mixture's score formed from ``ℓ``."""
        out = [(w, True, b.tracked_score(raw[:, cols], log_density[:, cols]))
               for (b, w), cols in zip(self.nodes, self.columns)]
        k = self.num_tracked
        out += [(w, m, raw[:, k + j]) for j, (w, m) in enumerate(self.rest_weights)]
        return out

    def score(self, raw: Tensor, log_density: Tensor) -> Tensor:
        """The composed score ``Σ_k w_k s_k`` (not for a superposition)."""
        return sum(w * s for w, _, s in self.terms(raw, log_density))

    def named(self, log_density: Tensor) -> dict[str, Tensor]:
        """``{name: ℓ (n,)}`` float64, one entry per tracked model."""
        return {name: log_density[:, k] for k, name in enumerate(self.names)}

    # ------------------------------------------------------------------ the estimator
    def start(self, x: Tensor, levels: Levels) -> Tensor:
        """``ℓ = log N(x; 0, v I)`` for every tracked model at the noisiest level, ``(n, K)``."""
        prior = log_normal(x, levels.prior_variance())
        return prior[:, None].expand(-1, self.num_tracked).clone()

    def advance(self, log_density: Tensor, x: Tensor, x_new: Tensor, scores: Tensor,
                levels: Levels, i: int) -> Tensor:
        """``ℓ + Δℓ`` over the step from level ``i`` (``x``, ``scores`` there) to ``i − 1``
        (``x_new``): the Itô sum of the module docstring."""
        s = scores.to(_F64)
        x64, new64 = x.to(_F64), x_new.to(_F64)
        ref = -x64[:, None] / levels.marginal_variance(i)  # the reference Gaussian's score
        r = s - ref
        exact = (log_normal(new64, levels.marginal_variance(i - 1))
                 - log_normal(x64, levels.marginal_variance(i)))
        f, b = levels.drift_integral(i), levels.g2_integral(i)
        residual = (_per_model(r * (new64 - x64)[:, None]) + f * _per_model(x64[:, None] * r)
                    - 0.5 * b * _per_model(r * (s + ref)))
        return log_density + exact[:, None] + residual

    # ------------------------------------------------------------------ AND
    def and_step(self, levels: Levels, x: Tensor, scores: Tensor, log_density: Tensor, i: int,
                 generator: torch.Generator | None, clip: tuple[float, float] | None
                 ) -> tuple[Tensor, Tensor]:
        """The posterior step from level ``i ≥ 1`` with ``κ`` that equalises the two tracked
        log-densities after it (module docstring); returns the new points and ``κ`` ``(n,)``."""
        lo, hi = self.nodes[0][0].kappa_range
        a, v = levels.transition(i)
        std = levels.posterior_variance(i) ** 0.5
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        s = scores.to(_F64)
        x64 = x.to(_F64)
        delta = s[:, 0] - s[:, 1]
        dx0 = (x64 + v * s[:, 1]) / a + std * z.to(_F64) - x64
        c = _drift_terms(x, s, levels, i)
        num = log_density[:, 0] - log_density[:, 1] + batch_sum(delta * dx0) + c[:, 0] - c[:, 1]
        den = (v / a) * batch_sum(delta**2)
        safe = den > 1e-300
        kappa = torch.where(safe, -num / torch.where(safe, den, 1.0),
                            torch.full_like(num, 0.5)).clamp(lo, hi)
        mean, _ = levels.posterior(x, self._blend(scores, kappa), i, clip)
        return mean + std * z, kappa

    def and_finish(self, levels: Levels, x: Tensor, scores: Tensor, kappa: Tensor | None,
                   clip: tuple[float, float] | None) -> Tensor:
        """Tweedie's step to the data with the last step's ``κ`` (``½`` if none was taken)."""
        if kappa is None:
            kappa = torch.full((x.shape[0],), 0.5, dtype=_F64, device=x.device)
        return levels.posterior_step(x, self._blend(scores, kappa), 0, None, clip)

    @staticmethod
    def _blend(scores: Tensor, kappa: Tensor) -> Tensor:
        """``s_b + κ (s_a − s_b)`` in the scores' dtype."""
        k = kappa.to(scores.dtype).reshape((-1,) + (1,) * (scores.ndim - 2))
        return scores[:, 1] + k * (scores[:, 0] - scores[:, 1])


def _drift_terms(x: Tensor, s: Tensor, levels: Levels, i: int) -> Tensor:
    """``d F + F ⟨x, s_k⟩ − ½ B |s_k|²`` ``(n, K)`` for float64 scores ``s`` ``(n, K, *D)``."""
    f, b = levels.drift_integral(i), levels.g2_integral(i)
    d = x[0].numel()
    return d * f + f * _per_model(x.to(_F64)[:, None] * s) - 0.5 * b * _per_model(s**2)


def _per_model(v: Tensor) -> Tensor:
    """Sum over the event dimensions of ``(n, K, *D)``: ``(n, K)``."""
    return v.reshape(v.shape[0], v.shape[1], -1).sum(dim=2)


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats suffixed ``#2``, ``#3``, … (two parts may describe alike)."""
    out, count = [], {}
    for name in names:
        count[name] = count.get(name, 0) + 1
        out.append(name if count[name] == 1 else f"{name}#{count[name]}")
    return out
