r"""Adapters from networks to the model contract: score (ε) and energy parameterisations.

Both wrap a network ``f_θ(x, t)`` with the shape of ``x``; ``σ_t`` comes from the schedule.

* :class:`ScoreModel` (ε-prediction): ``ε̂ = f_θ(x, t)``, ``s = −ε̂ / σ_t``. No energy.
* :class:`EnergyModel` (R3 §3): a scalar ``U_θ(x, t)`` per sample whose gradient is the
  ε-prediction, ``ε̂ = ∇ₓ U_θ``. Then ``s = −∇ₓU_θ/σ_t``, so the model's energy is
  ``E(x, t) = U_θ(x, t) / σ_t`` (``p_t ∝ e^{−E}``, up to an unknown ``c(t)``). Forms:

  - ``"ae"`` (default; the R3 2D notebook): ``U_θ = ‖f_θ(x, t) − x‖²`` (no ½);
  - ``"l2"`` (the R3 PyTorch code at HEAD): ``U_θ = ½‖f_θ(x, t)‖²``.

:func:`epsilon_prediction` gives ``ε̂`` for training (with ``create_graph`` for the energy model,
since the DSM loss differentiates through ``∇ₓU_θ``).

Conditional networks (``net(x, t, c)``, see :mod:`.networks`): every method takes an optional
encoded condition batch ``c`` (``None`` = the null condition, i.e. the unconditional model the
network learned through label dropout), and :meth:`~_Learned.given` fixes a condition, giving
the leaf model ``p_t(x | c)`` (:class:`~.conditional.Conditioned`).
"""

from __future__ import annotations

from enum import Enum

from torch import Tensor, nn

from ..errors import CapabilityError
from ..schedules import Schedule
from ..utils import append_dims, as_time, batch_sum, energy_and_score_autograd
from .base import DiffusionModel

__all__ = ["Parameterization", "ScoreModel", "EnergyModel", "epsilon_prediction"]


class Parameterization(str, Enum):
    SCORE = "score"
    ENERGY = "energy"


class _Learned(DiffusionModel):
    """What score and energy models share: the network call with an optional condition."""

    net: nn.Module

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.net, "conditional", False))

    def _net(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        if c is None and not self.conditional:
            return self.net(x, t)
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")
        return self.net(x, t, c)

    def given(self, value: object, name: str | None = None) -> DiffusionModel:
        """``p_t(x | c = value)`` as a leaf model; ``value`` is one condition or one per chain."""
        if not self.conditional:
            raise CapabilityError(
                f"{self.describe()} was not trained with conditions; load a conditional model "
                "(trained with label dropout) to use .given()"
            )
        from .conditional import Conditioned

        return Conditioned(self, value, name=name)


class ScoreModel(_Learned):
    """ε-prediction network as a score-only model."""

    has_energy = False
    parameterization = Parameterization.SCORE

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 name: str | None = None) -> None:
        super().__init__()
        self.net, self.schedule, self.event_shape, self.name = net, schedule, event_shape, name

    def epsilon(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        return self._net(x, as_time(t, x.shape[0], x), c)

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return -self.epsilon(x, t, c) / append_dims(sigma, x.ndim)


class EnergyModel(_Learned):
    """Energy-parameterised model, ``E(x, t) = U_θ(x, t)/σ_t`` with ``∇ₓU_θ = ε̂``."""

    has_energy = True
    parameterization = Parameterization.ENERGY

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 form: str = "ae", name: str | None = None) -> None:
        super().__init__()
        if form not in ("ae", "l2"):
            raise ValueError(f"energy form must be 'ae' or 'l2', got {form!r}")
        self.net, self.schedule, self.event_shape = net, schedule, event_shape
        self.form, self.name = form, name

    def potential(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        """``U_θ(x, t)``, shape ``(B,)`` (ε-scale; the energy divides it by ``σ_t``)."""
        out = self._net(x, as_time(t, x.shape[0], x), c)
        if self.form == "ae":
            return batch_sum((out - x) ** 2)
        return 0.5 * batch_sum(out**2)

    def energy(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return self.potential(x, t, c) / sigma

    def energy_and_score(self, x: Tensor, t: float | Tensor,
                         c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return energy_and_score_autograd(lambda z: self.energy(z, t, c), x)

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        return self.energy_and_score(x, t, c)[1]

    def epsilon(self, x: Tensor, t: float | Tensor, create_graph: bool = False,
                c: Tensor | None = None) -> Tensor:
        _, grad = energy_and_score_autograd(lambda z: self.potential(z, t, c), x, create_graph)
        return -grad


def epsilon_prediction(model: DiffusionModel, x: Tensor, t: Tensor,
                       c: Tensor | None = None) -> Tensor:
    """``ε̂(x, t[, c])`` with a graph to the parameters (for the DSM training loss)."""
    extra = {} if c is None else {"c": c}
    if isinstance(model, EnergyModel):
        return model.epsilon(x, t, create_graph=True, **extra)
    if isinstance(model, ScoreModel):
        return model.epsilon(x, t, **extra)
    raise TypeError(
        f"cannot train a {type(model).__name__}; wrap a network in a Score/EnergyModel"
    )
