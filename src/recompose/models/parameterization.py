r"""Adapters from networks to the model contract: score (ε) and energy parameterisations.

Both wrap a network ``f_θ(x, t)`` with the shape of ``x``; ``σ_t`` comes from the schedule.

* :class:`ScoreModel` (ε-prediction): ``ε̂ = f_θ(x, t)``, ``s = −ε̂ / σ_t``
  (:func:`score_from_epsilon`). No energy.
* :class:`EnergyModel` (R3 §3): a scalar ``U_θ(x, t)`` per sample whose gradient is the
  ε-prediction, ``ε̂ = ∇ₓ U_θ``. Then ``s = −∇ₓU_θ/σ_t``, so the model's energy is
  ``E(x, t) = U_θ(x, t) / σ_t`` (:func:`energy_from_potential`; ``p_t ∝ e^{−E}``, up to an
  unknown ``c(t)``), and its score is ``s = −∇ₓE`` by autograd. Forms:

  - ``"ae"`` (default; the R3 2D notebook): ``U_θ = ‖f_θ(x, t) − x‖²`` (no ½);
  - ``"l2"`` (the R3 PyTorch code at HEAD): ``U_θ = ½‖f_θ(x, t)‖²``.

:func:`epsilon_prediction` gives ``ε̂`` for training (with ``create_graph`` for the energy model,
since the DSM loss differentiates through ``∇ₓU_θ``).

Conditional networks (``net(x, t, c)``, see :mod:`.networks`): every method takes an optional
encoded condition batch ``c`` (``None`` = the null condition, i.e. the unconditional model the
network learned through label dropout), and :meth:`~_Learned.given` fixes a condition, giving
the leaf model ``p_t(x | c)`` (:class:`~.conditional.Conditioned`). Both conversions are
linear in the network output (``U_θ`` or ``ε̂``), so a weighted product of ``K`` conditions of
one network, ``∏_k p_t(x | c_k)^{w_k}``, is the conversion of ``Σ_k w_k U_θ(x, t, c_k)`` (or of
``Σ_k w_k ε̂``), computed from one network call on ``K·B`` stacked inputs
(:meth:`EnergyModel.stacked`, :meth:`ScoreModel.stacked`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import CapabilityError
from ..schedules import Schedule
from ..utils import append_dims, as_time, batch_sum, check_event_shape, energy_and_score_autograd
from .base import BatchSlot, DiffusionModel
from .conditional import Conditioned, stack_copies, weighted_sum

__all__ = ["ScoreModel", "EnergyModel", "epsilon_prediction", "energy_from_potential",
           "score_from_epsilon"]


def energy_from_potential(potential: Tensor, sigma: Tensor) -> Tensor:
    """``E = U_θ / σ_t`` from ``(B,)`` potentials ``U_θ(x, t)`` and ``(B,)`` noise levels ``σ_t``;
    returns ``(B,)`` energies."""
    return potential / sigma


def score_from_epsilon(epsilon: Tensor, sigma: Tensor) -> Tensor:
    """``s = −ε̂ / σ_t`` (Tweedie) from a ``(B, *D)`` noise prediction and ``(B,)`` noise levels
    ``σ_t``; returns the ``(B, *D)`` score."""
    return -epsilon / append_dims(sigma, epsilon.ndim)


class _Learned(DiffusionModel):
    """What score and energy models share: the network call with an optional condition."""

    net: nn.Module

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.net, "conditional", False))

    def _net(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        check_event_shape(x, self.event_shape, self.describe())
        if c is None and not self.conditional:
            return self.net(x, t)
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")
        return self.net(x, t, c)

    def given(self, value: object, name: str | None = None) -> DiffusionModel:
        """``p_t(x | c = value)`` as a leaf model; ``value`` is one condition or one per chain."""
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} was not trained with conditions; load a "
                                  "conditional model (trained with label dropout) to use .given()")
        return Conditioned(self, value, name=name)

    @property
    def batch_slot(self) -> BatchSlot | None:
        """A conditional network's null-condition view (``p_t(x)``) shares its calls with the
        views ``self.given(c)``; an unconditional network has nothing to share with."""
        return BatchSlot(self, None) if self.conditional else None

    def _check_stack(self, conditions: Sequence[Tensor | None], weights: Sequence[float]
                     ) -> None:
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")
        if len(conditions) != len(weights) or not conditions:
            raise ValueError(f"stacking {self.describe()} needs one weight per condition, got "
                             f"{len(conditions)} conditions and {len(weights)} weights")


class ScoreModel(_Learned):
    """ε-prediction network as a score-only model."""

    has_energy = False

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 name: str | None = None) -> None:
        super().__init__()
        self.net, self.schedule, self.event_shape, self.name = net, schedule, event_shape, name

    def epsilon(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        return self._net(x, as_time(t, x.shape[0], x), c)

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return score_from_epsilon(self.epsilon(x, t, c), sigma)

    def stacked(self, conditions: Sequence[Tensor | None], weights: Sequence[float]
                ) -> DiffusionModel:
        """``∏_k p_t(x | c_k)^{w_k}``: score ``−(Σ_k w_k ε̂(x, t, c_k)) / σ_t``, one call."""
        self._check_stack(conditions, weights)
        return _StackedScore(self, conditions, weights)


class EnergyModel(_Learned):
    """Energy-parameterised model, ``E(x, t) = U_θ(x, t)/σ_t`` with ``∇ₓU_θ = ε̂``."""

    has_energy = True

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 form: str = "ae", name: str | None = None) -> None:
        super().__init__()
        if form not in ("ae", "l2"):
            raise ValueError(f"energy form must be 'ae' or 'l2', got {form!r}")
        self.net, self.schedule, self.event_shape, self.name = net, schedule, event_shape, name
        self.form = form

    def potential(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        """``U_θ(x, t)``, shape ``(B,)`` (ε-scale; the energy divides it by ``σ_t``)."""
        out = self._net(x, as_time(t, x.shape[0], x), c)
        if self.form == "ae":
            return batch_sum((out - x) ** 2)
        return 0.5 * batch_sum(out**2)

    def energy(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return energy_from_potential(self.potential(x, t, c), sigma)

    def energy_and_score(self, x: Tensor, t: float | Tensor,
                         c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return energy_and_score_autograd(lambda z: self.energy(z, t, c), x)

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        return self.energy_and_score(x, t, c)[1]

    def epsilon(self, x: Tensor, t: float | Tensor, create_graph: bool = False,
                c: Tensor | None = None) -> Tensor:
        _, grad = energy_and_score_autograd(lambda z: self.potential(z, t, c), x, create_graph)
        return -grad

    def stacked(self, conditions: Sequence[Tensor | None], weights: Sequence[float]
                ) -> DiffusionModel:
        """``∏_k p_t(x | c_k)^{w_k}``: energy ``(Σ_k w_k U_θ(x, t, c_k)) / σ_t``, one call."""
        self._check_stack(conditions, weights)
        return _StackedEnergy(self, conditions, weights)


class _Stacked(DiffusionModel):
    """``∏_k p_t(x | c_k)^{w_k}`` over conditions of one network (built by ``model.stacked``);
    held by a :class:`~recompose.compose.Product` beside its factors, not as a submodule."""

    def __init__(self, network: _Learned, conditions: Sequence[Tensor | None],
                 weights: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.conditions = list(conditions)
        self.weights = [float(w) for w in weights]
        self.schedule = network.schedule
        self.event_shape = tuple(network.event_shape)
        self.has_energy = network.has_energy

    def describe(self) -> str:
        return f"stacked({self.network.describe()}, K={len(self.conditions)})"


class _StackedEnergy(_Stacked):
    """Energy ``(Σ_k w_k U_θ(x, t, c_k)) / σ_t``; the score is its autograd (base class)."""

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        xs, ts, cs = stack_copies(self.network, x, t, self.conditions)
        potential = weighted_sum(self.network.potential(xs, ts, cs), self.weights)
        return energy_from_potential(potential, sigma)


class _StackedScore(_Stacked):
    """Score ``−(Σ_k w_k ε̂(x, t, c_k)) / σ_t``; no energy."""

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        xs, ts, cs = stack_copies(self.network, x, t, self.conditions)
        return score_from_epsilon(weighted_sum(self.network.epsilon(xs, ts, cs), self.weights),
                                  sigma)


def epsilon_prediction(model: DiffusionModel, x: Tensor, t: Tensor,
                       c: Tensor | None = None) -> Tensor:
    """``ε̂(x, t[, c])`` with a graph to the parameters (for the DSM training loss)."""
    extra = {} if c is None else {"c": c}
    if isinstance(model, EnergyModel):
        return model.epsilon(x, t, create_graph=True, **extra)
    if isinstance(model, ScoreModel):
        return model.epsilon(x, t, **extra)
    raise TypeError(f"cannot train a {type(model).__name__}; wrap a network in a "
                    "Score/EnergyModel")
