r"""The composition algebra: products, powers and mixtures of time-indexed densities.

Three primitives, closed under the model contract (a composite is a :class:`DiffusionModel`):

==================  ===========================  ================================  =========
construct           energy                       score                             energies?
==================  ===========================  ================================  =========
``Product(m₁…mₙ)``  ``Σ Eᵢ``                     ``Σ sᵢ``                          no
``Power(m, w)``     ``w·E``                      ``w·s``                           no
``Mixture(m, w)``   ``−logsumexp(log wᵢ − Eᵢ)``  ``Σ softmaxᵢ(log wᵢ − Eᵢ)·sᵢ``    **yes**
==================  ===========================  ================================  =========

Everything else is sugar: negation ``a / b**α = Product(a, Power(b, −α))``; classifier-free
guidance ``cfg(cond, uncond, w) = uncond · (cond/uncond)^w``; classifier guidance
``guide(model, classifier_factor, λ) = model · factor^λ``.

Canonical form (so the algebra's laws hold by construction and trees stay small): a product
is flat, its factors are ``Power``s of non-product models, and factors with the same base
(by identity) merge by adding exponents; ``Power(Power(m, a), b) = Power(m, a·b)``;
``Power(m, 1) = m``; a power of a product distributes over its factors.

**Composing time-t marginals is not diffusing the composition.** ``∏ᵢ p^i_t`` is not the
time-``t`` marginal of the diffused ``∏ᵢ p^i_0`` for ``t > 0`` (R3 §3), so reverse diffusion
with a composed score samples the wrong distribution. The composed ``p_t`` is still a valid
unnormalised density at each ``t``, which is what annealed MCMC targets.

A mixture of energy models uses each part's energy *including* its normaliser (exact for
analytic models; learned energies are defined up to ``c_i(t)``:
:mod:`recompose.models.normalization`).

**Score-only mixtures and superpositions** (SuperDiff, Skreta et al. 2025). A mixture with a
score-only part is *tracked*: its score ``Σᵢ rᵢ sᵢ`` with responsibilities
``r = softmaxᵢ(log wᵢ + ℓᵢ)`` needs each part's log-density ``ℓᵢ = log pⁱ_t(x_t)`` at the
chain's point, which no function of ``(x, t)`` alone gives; the samplers that run a reverse SDE
estimate ``ℓᵢ`` along each chain from the scores (the Itô density estimator,
:mod:`recompose.samplers.tracking`) and form the score there (``"reverse"``, ``"fkc"``). The
estimates start from the common prior at the noisiest level, so they carry each part's
normaliser: a tracked ``mix(A, B, weights)`` is the mixture of the *normalised* densities, the
density that ``mix(normalize(A), normalize(B), weights)`` is for energy models. Evaluated on
its own, a tracked mixture's score raises a :class:`CapabilityError` that names those samplers.
``superpose(a, b, mode="and")`` (:class:`Superposition`) is SuperDiff's AND: reverse diffusion
with the score ``s_b + κ(s_a − s_b)``, ``κ`` chosen per chain and step so that the tracked
``ℓ_a`` and ``ℓ_b`` stay equal. It is a sampling procedure, not a density of this algebra (not
the product ``a * b``), and composes no further.

The operators ``a * b``, ``a / b``, ``a ** w`` and ``a + b`` are defined at the end of this
module and installed on :class:`~recompose.models.base.DiffusionModel` (which this module imports).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from numbers import Real

import torch
from torch import Tensor, nn

from .errors import ApproximationWarning, CapabilityError, CompositionError
from .models.base import DiffusionModel
from .rewards import Reward, Tilted, split_rewards

__all__ = ["Product", "Power", "Mixture", "Superposition", "product", "power", "mixture",
           "superpose", "cfg", "guide", "conjunction", "factors", "factor_scores",
           "factor_weights", "part_scores", "is_tracked", "needs_tracking",
           "TRACKING_SAMPLERS"]

#: the samplers that track log-densities along their chains (what a tracked model needs)
TRACKING_SAMPLERS = "'fkc' (without moves) or 'reverse'"


def _guidance_distilled(model: DiffusionModel) -> bool:
    """Whether a leaf is (a view of) a guidance-distilled network."""
    parent = getattr(model, "parent", None)
    return bool(getattr(model, "guidance_distilled", False)
                or getattr(parent, "guidance_distilled", False))


def _check_compatible(parts: Sequence[DiffusionModel], what: str,
                      roles: Sequence[str] | None = None) -> None:
    """Raise unless ``parts`` are models of one data shape under one noise schedule; ``roles``
    names them in messages (default ``part 1``, ``part 2``, …)."""
    if not parts:
        raise CompositionError(f"{what} needs at least one model")
    roles = [f"part {i + 1}" for i in range(len(parts))] if roles is None else list(roles)
    for role, p in zip(roles, parts):
        if not isinstance(p, DiffusionModel):
            raise TypeError(f"cannot form {what}: {role} is a {type(p).__name__}, expected a "
                            "DiffusionModel")
        if isinstance(p, Tilted):
            raise CompositionError(f"cannot form {what}: {role} ({p.describe()}) has a reward "
                                   "factor, which tilts a whole composition; apply it last, "
                                   "e.g. (a * b) * rc.reward(...)")
    first = parts[0]
    for role, p in zip(roles[1:], parts[1:]):
        if p.schedule != first.schedule:
            raise CompositionError(f"cannot form {what}: noise schedules differ, {role} "
                                   f"({p.describe()}) uses {p.schedule} but {roles[0]} "
                                   f"({first.describe()}) uses {first.schedule}; compose models "
                                   "trained with the same schedule")
        if tuple(p.event_shape) != tuple(first.event_shape):
            raise CompositionError(f"cannot form {what}: data shapes differ, {role} "
                                   f"({p.describe()}) has {tuple(p.event_shape)} but {roles[0]} "
                                   f"({first.describe()}) has {tuple(first.event_shape)}")


def _check_weight(w: float, what: str) -> float:
    w = float(w)
    if not math.isfinite(w):
        raise CompositionError(f"{what} must be finite, got {w}")
    return w


def _check_weights(weights: Sequence[float], n: int, noun: str) -> list[float]:
    """Mixture weights: one per part, finite and positive (as floats)."""
    if len(weights) != n:
        raise CompositionError(f"got {len(weights)} weights for {n} {noun}")
    w = [_check_weight(v, "a mixture weight") for v in weights]
    if any(v <= 0 for v in w):
        raise CompositionError(f"mixture weights must be positive, got {list(weights)}")
    return w


class Power(DiffusionModel):
    """``p^w``: energy ``w·E``, score ``w·s``. ``w`` may be negative (negation)."""

    marginal = False

    def __init__(self, base: DiffusionModel, exponent: float) -> None:
        super().__init__()
        self.base = base
        self.exponent = _check_weight(exponent, "an exponent")
        if self.exponent < 0 and any(_guidance_distilled(m) for m in base.leaves()):
            warnings.warn(
                f"{base.describe()} comes from a guidance-distilled network (FLUX-dev style): "
                "its views are not the densities the algebra assumes, so a negative power "
                "(NOT, CFG, / U) gives an approximate result", ApproximationWarning,
                stacklevel=3)
        self.schedule = base.schedule
        self.event_shape = tuple(base.event_shape)
        self.has_energy = base.has_energy

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.exponent * self.base.energy(x, t)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.exponent * self.base.score(x, t)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        e, s = self.base.energy_and_score(x, t)
        return self.exponent * e, self.exponent * s

    def denoised_terms(self, x: Tensor, t: Tensor) -> tuple[float, Tensor]:
        weight, terms = self.base.denoised_terms(x, t)
        return self.exponent * weight, self.exponent * terms

    def leaves(self) -> Iterator[DiffusionModel]:
        yield from self.base.leaves()

    def describe(self) -> str:
        return f"{self.base.describe()}**{self.exponent:g}"


class Product(DiffusionModel):
    """``∏ᵢ pᵢ``: energies and scores add. Build with :func:`product` or ``a * b``.

    Factors that are views of one network (same :attr:`~DiffusionModel.batch_slot` network:
    ``A.given(c₁) * A.given(c₂) …``, or ``A.given(y)**w * A**(1−w)``) are evaluated together,
    as ``network.stacked(conditions, exponents)``, in one batched network call.
    """

    marginal = False

    def __init__(self, factors: Sequence[DiffusionModel]) -> None:
        super().__init__()
        _check_compatible(factors, "a product", [f"factor {i + 1}" for i in range(len(factors))])
        self.factors = nn.ModuleList(factors)
        self.schedule = factors[0].schedule
        self.event_shape = tuple(factors[0].event_shape)
        self.has_energy = all(f.has_energy for f in factors)
        self._single, self._groups = _plan_calls(self.factors)
        # What one evaluation sums over; a plain list, so the stacked groups (which only refer
        # to networks already among the factors) are not registered as submodules.
        self._summands: list[DiffusionModel] = [*self._single, *self._groups]

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)
        return sum(m.energy(x, t) for m in self._summands)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return sum(m.score(x, t) for m in self._summands)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_energy:
            return super().energy_and_score(x, t)
        pairs = [m.energy_and_score(x, t) for m in self._summands]
        return sum(e for e, _ in pairs), sum(s for _, s in pairs)

    def denoised_terms(self, x: Tensor, t: Tensor) -> tuple[float, Tensor]:
        pairs = [m.denoised_terms(x, t) for m in self._summands]
        return sum(w for w, _ in pairs), sum(s for _, s in pairs)

    def leaves(self) -> Iterator[DiffusionModel]:
        for f in self.factors:
            yield from f.leaves()

    def describe(self) -> str:
        return " * ".join(f.describe() for f in self.factors)


def _plan_calls(factors: Sequence[DiffusionModel]
                ) -> tuple[list[DiffusionModel], list[DiffusionModel]]:
    """Split a product's factors into those evaluated on their own and one stacked model per
    network shared by two or more factors; the order (unshareable factors, lone views, groups)
    is fixed, so the sums are too."""
    bases = [f.base if isinstance(f, Power) else f for f in factors]
    alone, shared = _by_network(bases)
    stacked = [network.stacked([bases[k].batch_slot.condition for k in members],
                               [factors[k].exponent if isinstance(factors[k], Power) else 1.0
                                for k in members])
               for network, members in shared]
    return [factors[k] for k in alone], stacked


def _by_network(models: Sequence[DiffusionModel]
                ) -> tuple[list[int], list[tuple[nn.Module, list[int]]]]:
    """Indices of the models evaluated on their own (those without a batch slot, then the lone
    views of a network) and, per network shared by two or more views, their indices."""
    groups: dict[nn.Module, list[int]] = {}  # nn.Module hashes by identity: one per network
    alone: list[int] = []
    for k, m in enumerate(models):
        slot = m.batch_slot
        if slot is None:
            alone.append(k)
        else:
            groups.setdefault(slot.network, []).append(k)
    alone += [members[0] for members in groups.values() if len(members) == 1]
    return alone, [(net, members) for net, members in groups.items() if len(members) > 1]


class Mixture(DiffusionModel):
    """``Σᵢ wᵢ pᵢ``. Build with :func:`mixture` or ``a + b``.

    Energy parts: energy ``−logsumexp(log wᵢ − Eᵢ)`` and its score. A score-only part (or
    ``tracked=True``) makes it *tracked* (module docstring): ``has_energy`` is ``False`` and the
    score is formed by the tracking samplers from each chain's log-densities
    (:meth:`tracked_score`); every part must then be a diffusion marginal with a score of its
    own (a leaf, a view of a conditional network, an energy mixture)."""

    def __init__(self, parts: Sequence[DiffusionModel], weights: Sequence[float],
                 tracked: bool | None = None) -> None:
        super().__init__()
        _check_compatible(parts, "a mixture")
        self.tracked = (not all(p.has_energy for p in parts)) if tracked is None else tracked
        if self.tracked:
            _check_tracked_parts(parts, "a score-only mixture")
        w = _check_weights(weights, len(parts), "parts")
        total = sum(w)
        self.parts = nn.ModuleList(parts)
        self.weights = tuple(v / total for v in w)
        self.register_buffer("log_weights", torch.log(torch.tensor(self.weights,
                             dtype=torch.float64)), persistent=False)
        self.schedule = parts[0].schedule
        self.event_shape = tuple(parts[0].event_shape)
        self.has_energy = not self.tracked
        # Σ wᵢ p^i_t diffuses Σ wᵢ p^i_0 when the parts are normalised marginals
        self.marginal = all(p.marginal for p in parts)

    def _logits(self, energies: list[Tensor]) -> Tensor:
        e = torch.stack(energies, dim=1)  # (B, n)
        return self.log_weights.to(e.dtype) - e

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if self.tracked:
            raise _tracking_error(self)
        return -torch.logsumexp(self._logits([p.energy(x, t) for p in self.parts]), dim=1)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if self.tracked:
            raise _tracking_error(self)
        pairs = [p.energy_and_score(x, t) for p in self.parts]
        logits = self._logits([e for e, _ in pairs])
        resp = torch.softmax(logits, dim=1)  # (B, n) responsibilities
        scores = torch.stack([s for _, s in pairs], dim=1)  # (B, n, *D)
        resp = resp.reshape(resp.shape + (1,) * (scores.ndim - 2))
        return -torch.logsumexp(logits, dim=1), (resp * scores).sum(dim=1)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.energy_and_score(x, t)[1]

    def tracked_score(self, scores: Tensor, log_density: Tensor) -> Tensor:
        """The mixture's score ``Σᵢ rᵢ sᵢ`` from the parts' scores ``(B, n, *D)`` and their
        log-densities ``ℓ`` ``(B, n)`` at the same points: ``r = softmax(log w + ℓ)``."""
        resp = torch.softmax(self.log_weights.to(log_density) + log_density, dim=1)
        resp = resp.to(scores.dtype).reshape(resp.shape + (1,) * (scores.ndim - 2))
        return (resp * scores).sum(dim=1)

    def leaves(self) -> Iterator[DiffusionModel]:
        for p in self.parts:
            yield from p.leaves()

    def describe(self) -> str:
        inner = ", ".join(f"{p.describe()}:{w:.3g}" for p, w in zip(self.parts, self.weights))
        return f"mix({inner})"


class Superposition(DiffusionModel):
    """SuperDiff's AND of two diffusion models (build with :func:`superpose`): reverse
    diffusion with the score ``s_b + κ(s_a − s_b)``, ``κ`` solved per chain and step so that the
    tracked log-densities of ``a`` and ``b`` stay equal, clipped to ``kappa_range``
    (:mod:`recompose.samplers.tracking`). Not a density: its score and energy raise; only
    ``"reverse"`` samples it, and it composes no further."""

    marginal = False
    has_energy = False

    def __init__(self, parts: Sequence[DiffusionModel],
                 kappa_range: tuple[float, float] = (-1.0, 2.0)) -> None:
        super().__init__()
        parts = list(parts)
        _check_compatible(parts, "a superposition")
        if len(parts) != 2:
            raise CompositionError(f"superpose(..., mode='and') takes two models, got "
                                   f"{len(parts)}")
        _check_tracked_parts(parts, "a superposition")
        lo, hi = (float(v) for v in kappa_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= 0.0 and hi >= 1.0):
            raise CompositionError(f"kappa_range must be finite and contain [0, 1], got "
                                   f"{tuple(kappa_range)}")
        self.parts = nn.ModuleList(parts)
        self.kappa_range = (lo, hi)
        self.schedule = parts[0].schedule
        self.event_shape = tuple(parts[0].event_shape)

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        raise _tracking_error(self)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        raise _tracking_error(self)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        raise _tracking_error(self)

    def leaves(self) -> Iterator[DiffusionModel]:
        for p in self.parts:
            yield from p.leaves()

    def describe(self) -> str:
        return f"superpose({', '.join(p.describe() for p in self.parts)}, mode='and')"


def _tracking_error(model: DiffusionModel) -> CapabilityError:
    if isinstance(model, Superposition):
        return CapabilityError(
            f"{model.describe()} is a sampling procedure, not a density: its score needs each "
            "part's log-density tracked along the chain; sample it with 'reverse'")
    return CapabilityError(
        f"{model.describe()} has score-only parts: its score needs each part's log-density "
        f"tracked along the chain; sample it with {TRACKING_SAMPLERS}, or use "
        "energy-parameterised models")


def _check_tracked_parts(parts: Sequence[DiffusionModel], what: str) -> None:
    """The parts of a tracked composite: diffusion marginals with scores of their own."""
    for p in parts:
        if needs_tracking(p) or not p.marginal:
            raise CapabilityError(
                f"{what} tracks each part's log-density along the chain, which needs each "
                f"part to be one diffusion model (a leaf, a prompt's view, an energy mixture); "
                f"{p.describe()} is a composite ({type(p).__name__}) whose log-density is not "
                "normalised; mix or superpose the models themselves")


def is_tracked(model: DiffusionModel) -> bool:
    """Whether ``model`` itself is a tracked mixture or a superposition (module docstring)."""
    return (isinstance(model, Mixture) and model.tracked) or isinstance(model, Superposition)


def needs_tracking(model: DiffusionModel) -> bool:
    """Whether ``model`` is or holds a tracked mixture or a superposition (module docstring)."""
    return any(is_tracked(m) for m in model.modules())


def part_scores(parts: Sequence[DiffusionModel], x: Tensor, t: float | Tensor) -> Tensor:
    """``(B, K, *D)``: each part's own score at ``(x, t)``; views of one network (two or more)
    share one batched network call (``view_scores``)."""
    out: list[Tensor | None] = [None] * len(parts)
    alone, shared = _by_network(parts)
    for k in alone:
        out[k] = parts[k].score(x, t)
    for network, members in shared:
        stacked = network.stacked([parts[k].batch_slot.condition for k in members],
                                  [1.0] * len(members))
        for k, s in zip(members, stacked.view_scores(x, t)):
            out[k] = s
    return torch.stack(out, dim=1)


# ------------------------------------------------------------------------ factors
def factor_scores(model: DiffusionModel, x: Tensor, t: float | Tensor
                  ) -> list[tuple[float, bool, Tensor]]:
    """``[(w_k, marginal_k, s_k(x, t))]`` for ``model = ∏_k p_k^{w_k}``: each factor's own score
    (not multiplied by ``w_k``) and whether it is a diffusion marginal. Views of one network
    keep their one batched call (``view_scores`` of the stacked group)."""
    if isinstance(model, Power):
        return [(model.exponent * w, m, s) for w, m, s in factor_scores(model.base, x, t)]
    if not isinstance(model, Product):
        return [(1.0, model.marginal, model.score(x, t))]
    out = [term for m in model._single for term in factor_scores(m, x, t)]
    for group in model._groups:
        out += [(w, True, s) for w, s in zip(group.weights, group.view_scores(x, t))]
    return out


def factor_weights(model: DiffusionModel) -> list[tuple[float, bool]]:
    """``[(w_k, marginal_k)]`` of :func:`factor_scores`, in its order, without evaluating."""
    if isinstance(model, Power):
        return [(model.exponent * w, m) for w, m in factor_weights(model.base)]
    if not isinstance(model, Product):
        return [(1.0, model.marginal)]
    out = [term for m in model._single for term in factor_weights(m)]
    for group in model._groups:
        out += [(w, True) for w in group.weights]
    return out


# ------------------------------------------------------------------------ builders
def factors(model: DiffusionModel) -> list[tuple[DiffusionModel, float]]:
    """The canonical factors ``[(base, w)]`` of ``model = ∏ base^w``, bases neither products
    nor powers (a non-product model is its own single factor with ``w = 1``)."""
    if isinstance(model, Product):
        return [pair for f in model.factors for pair in factors(f)]
    if isinstance(model, Power):
        return [(b, w * model.exponent) for b, w in factors(model.base)]
    return [(model, 1.0)]


def _build(pairs: list[tuple[DiffusionModel, float]]) -> DiffusionModel:
    merged: dict[int, list] = {}
    for base, w in pairs:  # merge equal bases (by identity), keeping first-seen order
        if id(base) in merged:
            merged[id(base)][1] += w
        else:
            merged[id(base)] = [base, w]
    factors = [b if w == 1.0 else Power(b, w) for b, w in merged.values()]
    return factors[0] if len(factors) == 1 else Product(factors)


def product(models: Sequence[DiffusionModel]) -> DiffusionModel:
    """The product ``∏ᵢ pᵢ`` (AND), flattened and with equal factors merged."""
    models = list(models)
    _check_compatible(models, "a product", [f"factor {i + 1}" for i in range(len(models))])
    return _build([pair for m in models for pair in factors(m)])


def power(model: DiffusionModel, exponent: float) -> DiffusionModel:
    """``p^w`` (``w`` real; ``w < 0`` negates). ``power(m, 1)`` is ``m``."""
    _check_compatible([model], "a power")
    exponent = _check_weight(exponent, "an exponent")
    return _build([(b, w * exponent) for b, w in factors(model)])


def mixture(models: Sequence[DiffusionModel], weights: Sequence[float] | None = None) -> Mixture:
    """The weighted mixture ``Σᵢ wᵢ pᵢ`` (OR); weights are normalised, default equal.

    Nested mixtures are flattened (their weights multiply). With a score-only part the mixture
    is tracked (module docstring): sample it with ``"fkc"`` or ``"reverse"``.
    """
    models = list(models)
    weights = [1.0] * len(models) if weights is None else list(weights)
    _check_weights(weights, len(models), "models")
    total = sum(weights)
    parts: list[DiffusionModel] = []
    flat: list[float] = []
    for m, w in zip(models, weights):
        if isinstance(m, Mixture):
            parts.extend(m.parts)
            flat.extend(w / total * v for v in m.weights)
        else:
            parts.append(m)
            flat.append(w / total)
    forced = any(isinstance(m, Mixture) and m.tracked for m in models)
    return Mixture(parts, flat, tracked=True if forced else None)


def superpose(models: Sequence[DiffusionModel], mode: str = "and",
              weights: Sequence[float] | None = None,
              kappa_range: tuple[float, float] = (-1.0, 2.0)) -> DiffusionModel:
    """SuperDiff's superposition of diffusion models from their scores (module docstring).

    ``mode="or"``: the mixture ``Σᵢ wᵢ pᵢ`` with responsibilities from the tracked
    log-densities, for any parts (energy models too: their energies are not used) — a tracked
    :class:`Mixture`. ``mode="and"``: two models, ``κ`` per chain and step keeping their tracked
    log-densities equal (:class:`Superposition`; ``weights`` do not apply). Sample with
    ``"reverse"`` (OR also ``"fkc"``).
    """
    models = list(models)
    if mode == "or":
        weights = [1.0] * len(models) if weights is None else list(weights)
        return Mixture(models, _check_weights(weights, len(models), "models"), tracked=True)
    if mode != "and":
        raise ValueError(f"mode must be 'and' or 'or', got {mode!r}")
    if weights is not None:
        raise TypeError("weights do not apply to superpose(..., mode='and') (κ is solved per "
                        "step); use mode='or' for a weighted mixture")
    return Superposition(models, kappa_range)


def cfg(cond: DiffusionModel, uncond: DiffusionModel, scale: float) -> DiffusionModel:
    """Classifier-free guidance ``p(x) · (p(x|y)/p(x))^w = p(x)^{1−w} p(x|y)^w``.

    With ``cond = A.given(y)`` and ``uncond = A`` (one network trained with label dropout) the
    two terms are evaluated in one batched call. ``scale = 1`` is ``cond`` itself.

    Raises:
        CompositionError: ``cond`` and ``uncond`` differ in data shape or noise schedule (the
            message names the argument), or ``scale`` is not finite.
    """
    _check_compatible([cond, uncond], "classifier-free guidance", ["cond", "uncond"])
    _check_weight(scale, "the guidance scale")
    return product([uncond, power(product([cond, power(uncond, -1.0)]), scale)])


def guide(model: DiffusionModel, likelihood: DiffusionModel, scale: float) -> DiffusionModel:
    """Classifier guidance ``p_t(x) · p_t(y|x)^λ``; ``likelihood`` is a classifier factor
    (see :class:`recompose.models.classifier.ClassifierFactor`)."""
    _check_compatible([model, likelihood], "classifier guidance", ["model", "likelihood"])
    _check_weight(scale, "the guidance scale")
    return product([model, power(likelihood, scale)])


def conjunction(model: DiffusionModel, conditions: Sequence[object], plain: bool = False,
                names: Sequence[str] | None = None) -> DiffusionModel:
    """``p(x | c₁ ∧ … ∧ c_K) ∝ p(x)^{1−K} ∏_k p(x | c_k)`` for conditions that are independent
    given ``x`` (R3 §4, Composable Diffusion): each ``p(x|c_k)/p(x)`` is a likelihood ratio and
    the prior counts once. ``plain=True`` gives ``∏_k p(x | c_k)`` without the prior's power.

    ``model`` is a conditional model (its ``given`` view is ``p(x | c)``); each condition is
    one value or one per chain. All views of one network run as one batched call.
    """
    conditions = list(conditions)
    if not conditions:
        raise CompositionError("a conjunction needs at least one condition")
    if names is not None and len(names) != len(conditions):
        raise CompositionError(f"got {len(names)} names for {len(conditions)} conditions")
    factors = [model.given(c, name=None if names is None else names[k])
               for k, c in enumerate(conditions)]
    if not plain and len(factors) > 1:
        factors.append(power(model, 1.0 - len(factors)))
    return product(factors)


# ------------------------------------------------------------------------ operators
# A number where a model is expected is refused (diffusers: fail loudly rather than guess).
def _mul(self: DiffusionModel, other: object) -> DiffusionModel:
    """``a * b``: the product (a reward factor of either side tilts the product)."""
    if isinstance(other, DiffusionModel):
        (a, ra), (b, rb) = split_rewards(self), split_rewards(other)
        if ra or rb:
            return Tilted(product([a, b]), ra + rb)
        return product([self, other])
    if isinstance(other, Real):
        raise TypeError("multiplying a model by a number is ambiguous: use `model ** w` for a "
                        "guidance strength or `recompose.mixture([a, b], weights=[...])` for "
                        "weights")
    return NotImplemented


def _truediv(self: DiffusionModel, other: object) -> DiffusionModel:
    """``a / b``: the quotient ``a · b^{−1}``."""
    if isinstance(other, DiffusionModel):
        if isinstance(self, Tilted) and not isinstance(other, Tilted):
            return Tilted(product([self.base, power(other, -1.0)]), self.rewards)
        return product([self, power(other, -1.0)])
    if isinstance(other, Real):
        raise TypeError("dividing a model by a number is ambiguous: use `model ** w`")
    return NotImplemented


def _pow(self: DiffusionModel, w: object) -> DiffusionModel:
    """``a ** w``: the power (``w`` a real number or a 0-d tensor)."""
    if isinstance(w, Real) or (isinstance(w, Tensor) and w.ndim == 0):
        return power(self, float(w))
    return NotImplemented


def _add(self: DiffusionModel, other: object) -> DiffusionModel:
    """``a + b``: the equal-weight mixture."""
    if isinstance(other, DiffusionModel):
        return mixture([self, other])
    if isinstance(other, Reward):
        return NotImplemented  # the reward's own message
    raise TypeError("adding a number to a model is meaningless; `a + b` is the equal-weight "
                    "mixture")


DiffusionModel.__mul__ = DiffusionModel.__rmul__ = _mul
DiffusionModel.__truediv__ = _truediv
DiffusionModel.__pow__ = _pow
DiffusionModel.__add__ = DiffusionModel.__radd__ = _add
