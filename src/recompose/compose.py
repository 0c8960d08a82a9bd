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

A mixture needs each part's energy *including* its normaliser: ``Σ wᵢ p^i_t`` is only right
when every ``Eᵢ`` is the exact ``−log p^i_t`` (analytic models) or the parts share the same
unknown constant. Learned energies are defined up to ``c_i(t)``; see :mod:`recompose.models`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from .errors import CapabilityError, CompositionError
from .models.base import DiffusionModel
from .models.conditional import Conditioned, shared_network_terms

__all__ = ["Product", "Power", "Mixture", "product", "power", "mixture", "cfg", "guide"]


def _check_compatible(parts: Sequence[DiffusionModel], what: str) -> None:
    if not parts:
        raise CompositionError(f"a {what} needs at least one model")
    for p in parts:
        if not isinstance(p, DiffusionModel):
            raise TypeError(f"cannot compose {type(p).__name__}: expected a DiffusionModel")
    first = parts[0]
    for p in parts[1:]:
        if p.schedule != first.schedule:
            raise CompositionError(
                f"cannot form a {what} of {first.describe()} and {p.describe()}: their noise "
                f"schedules differ ({first.schedule} vs {p.schedule}); compose models trained "
                "with the same schedule"
            )
        if tuple(p.event_shape) != tuple(first.event_shape):
            raise CompositionError(
                f"cannot form a {what} of {first.describe()} and {p.describe()}: data shapes "
                f"differ ({tuple(first.event_shape)} vs {tuple(p.event_shape)})"
            )


def _check_weight(w: float, what: str) -> float:
    w = float(w)
    if not math.isfinite(w):
        raise CompositionError(f"{what} must be finite, got {w}")
    return w


class Power(DiffusionModel):
    """``p^w``: energy ``w·E``, score ``w·s``. ``w`` may be negative (negation)."""

    def __init__(self, base: DiffusionModel, exponent: float) -> None:
        super().__init__()
        self.base = base
        self.exponent = _check_weight(exponent, "an exponent")
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

    def leaves(self) -> Iterator[DiffusionModel]:
        yield from self.base.leaves()

    def describe(self) -> str:
        return f"{self.base.describe()}**{self.exponent:g}"


def _shared_network(model: DiffusionModel) -> tuple[DiffusionModel, Tensor | None] | None:
    """``(conditional parent, encoded condition)`` if ``model`` is a view of a conditional
    network (``None`` condition = the parent itself), else ``None``."""
    if isinstance(model, Conditioned):
        return model.parent, model.cond
    if getattr(model, "conditional", False):
        return model, None
    return None


class Product(DiffusionModel):
    """``∏ᵢ pᵢ``: energies and scores add. Build with :func:`product` or ``a * b``.

    Factors that are views of one conditional network (``A.given(c₁) * A.given(c₂) …``, or
    ``A.given(y)**w * A**(1−w)``) are evaluated together in one batched network call
    (:func:`~recompose.models.conditional.shared_network_terms`).
    """

    def __init__(self, factors: Sequence[DiffusionModel]) -> None:
        super().__init__()
        _check_compatible(factors, "product")
        self.factors = nn.ModuleList(factors)
        self.schedule = factors[0].schedule
        self.event_shape = tuple(factors[0].event_shape)
        self.has_energy = all(f.has_energy for f in factors)
        self._plan_groups()

    def _plan_groups(self) -> None:
        groups: dict[int, list] = {}
        self._single: list[DiffusionModel] = []
        for f in self.factors:
            base, w = (f.base, f.exponent) if isinstance(f, Power) else (f, 1.0)
            shared = _shared_network(base)
            if shared is None:
                self._single.append(f)
            else:
                groups.setdefault(id(shared[0]), [shared[0], [], [], []])
                groups[id(shared[0])][1].append(shared[1])
                groups[id(shared[0])][2].append(w)
                groups[id(shared[0])][3].append(f)
        self._groups = []
        for parent, conds, weights, members in groups.values():
            if len(members) == 1:
                self._single.extend(members)
            else:
                self._groups.append((parent, conds, weights))

    def _terms(self, x: Tensor, t: float | Tensor, need: str) -> tuple[Tensor, Tensor]:
        energies, scores = [], []
        for f in self._single:
            if need == "energy":
                energies.append(f.energy(x, t))
            elif need == "score":
                scores.append(f.score(x, t))
            else:
                e, s = f.energy_and_score(x, t)
                energies.append(e)
                scores.append(s)
        for parent, conds, weights in self._groups:
            e, s = shared_network_terms(parent, x, t, conds, weights, need)
            energies.append(e)
            scores.append(s)
        return (sum(energies) if need != "score" else None,
                sum(scores) if need != "energy" else None)

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)
        return self._terms(x, t, "energy")[0]

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self._terms(x, t, "score")[1]

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_energy:
            return super().energy_and_score(x, t)
        return self._terms(x, t, "both")

    def leaves(self) -> Iterator[DiffusionModel]:
        for f in self.factors:
            yield from f.leaves()

    def describe(self) -> str:
        return " * ".join(f.describe() for f in self.factors)


class Mixture(DiffusionModel):
    """``Σᵢ wᵢ pᵢ`` of energy models. Build with :func:`mixture` or ``a + b``."""

    def __init__(self, parts: Sequence[DiffusionModel], weights: Sequence[float]) -> None:
        super().__init__()
        _check_compatible(parts, "mixture")
        for p in parts:
            if not p.has_energy:
                raise CapabilityError(
                    f"a mixture needs each part's energy (an unnormalised density), but "
                    f"{p.describe()} is score-only; use energy-parameterised models"
                )
        if len(weights) != len(parts):
            raise CompositionError(f"got {len(weights)} weights for {len(parts)} parts")
        w = [_check_weight(v, "a mixture weight") for v in weights]
        if any(v <= 0 for v in w):
            raise CompositionError(f"mixture weights must be positive, got {w}")
        total = sum(w)
        self.parts = nn.ModuleList(parts)
        self.weights = tuple(v / total for v in w)
        self.register_buffer(
            "log_weights", torch.log(torch.tensor(self.weights, dtype=torch.float64)),
            persistent=False,
        )
        self.schedule = parts[0].schedule
        self.event_shape = tuple(parts[0].event_shape)
        self.has_energy = True

    def _logits(self, energies: list[Tensor]) -> Tensor:
        e = torch.stack(energies, dim=1)  # (B, n)
        return self.log_weights.to(e.dtype) - e

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        return -torch.logsumexp(self._logits([p.energy(x, t) for p in self.parts]), dim=1)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        pairs = [p.energy_and_score(x, t) for p in self.parts]
        logits = self._logits([e for e, _ in pairs])
        resp = torch.softmax(logits, dim=1)  # (B, n) responsibilities
        scores = torch.stack([s for _, s in pairs], dim=1)  # (B, n, *D)
        resp = resp.reshape(resp.shape + (1,) * (scores.ndim - 2))
        return -torch.logsumexp(logits, dim=1), (resp * scores).sum(dim=1)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.energy_and_score(x, t)[1]

    def leaves(self) -> Iterator[DiffusionModel]:
        for p in self.parts:
            yield from p.leaves()

    def describe(self) -> str:
        inner = ", ".join(f"{p.describe()}:{w:.3g}" for p, w in zip(self.parts, self.weights))
        return f"mix({inner})"


# ------------------------------------------------------------------------ builders
def _factors(model: DiffusionModel) -> list[tuple[DiffusionModel, float]]:
    """``model`` as a list of ``(base, exponent)`` with bases neither products nor powers."""
    if isinstance(model, Product):
        return [pair for f in model.factors for pair in _factors(f)]
    if isinstance(model, Power):
        return [(b, w * model.exponent) for b, w in _factors(model.base)]
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
    _check_compatible(list(models), "product")
    return _build([pair for m in models for pair in _factors(m)])


def power(model: DiffusionModel, exponent: float) -> DiffusionModel:
    """``p^w`` (``w`` real; ``w < 0`` negates). ``power(m, 1)`` is ``m``."""
    _check_compatible([model], "power")
    exponent = _check_weight(exponent, "an exponent")
    return _build([(b, w * exponent) for b, w in _factors(model)])


def mixture(models: Sequence[DiffusionModel], weights: Sequence[float] | None = None) -> Mixture:
    """The weighted mixture ``Σᵢ wᵢ pᵢ`` (OR); weights are normalised, default equal.

    Nested mixtures are flattened (their weights multiply).
    """
    models = list(models)
    weights = [1.0] * len(models) if weights is None else list(weights)
    if len(weights) != len(models):
        raise CompositionError(f"got {len(weights)} weights for {len(models)} models")
    for w in weights:
        _check_weight(w, "a mixture weight")
    if any(w <= 0 for w in weights):
        raise CompositionError(f"mixture weights must be positive, got {weights}")
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
    return Mixture(parts, flat)


def cfg(cond: DiffusionModel, uncond: DiffusionModel, scale: float) -> DiffusionModel:
    """Classifier-free guidance ``p(x) · (p(x|y)/p(x))^w = p(x)^{1−w} p(x|y)^w``.

    With ``cond = A.given(y)`` and ``uncond = A`` (one network trained with label dropout) the
    two terms are evaluated in one batched call. ``scale = 1`` is ``cond`` itself.
    """
    return product([uncond, power(product([cond, power(uncond, -1.0)]), scale)])


def guide(model: DiffusionModel, likelihood: DiffusionModel, scale: float) -> DiffusionModel:
    """Classifier guidance ``p_t(x) · p_t(y|x)^λ``; ``likelihood`` is a classifier factor
    (see :class:`recompose.models.classifier.ClassifierFactor`)."""
    return product([model, power(likelihood, scale)])
