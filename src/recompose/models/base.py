r"""The model contract shared by learned, analytic and composite models.

A :class:`DiffusionModel` describes a family of time-``t`` marginal densities ``p_t(x)``,
``t ∈ [0, 1]``, of a variance-preserving diffusion with schedule ``(α_t, σ_t)``:

* ``energy(x, t) -> (B,)``  with ``p_t(x) ∝ exp(−E(x, t))`` (only when ``has_energy``);
* ``score(x, t)  -> (B, *D)`` equal to ``∇ₓ log p_t(x) = −∇ₓ E(x, t)``;
* ``energy_and_score(x, t)`` both at once (one forward + one backward for a network);
* ``at(t)`` freezes time and returns an MCMC :class:`~recompose.mcmc.base.Target`.

Operators act on densities exactly as on numbers (see :mod:`recompose.compose`)::

    a * b        product           a ** w      power (w real, negative allowed)
    a / b        quotient          a + b       equal-weight mixture

Multiplying a model by a *number* is refused: say ``a ** w`` for a guidance strength or
``recompose.mixture([a, b], weights=[...])`` for mixture weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Real
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import CapabilityError
from ..schedules import Schedule
from ..utils import energy_and_score_autograd

if TYPE_CHECKING:
    from ..mcmc.base import Target

__all__ = ["DiffusionModel", "model_device_dtype"]


class DiffusionModel(nn.Module):
    """Base class of every model. Subclasses set ``schedule``, ``event_shape``, ``has_energy``.

    A subclass with energies implements :meth:`energy` (the score then comes from autograd);
    a score-only subclass implements :meth:`score`. Closed forms may override both.
    """

    schedule: Schedule
    event_shape: tuple[int, ...]
    has_energy: bool = False

    # ----------------------------------------------------------------- contract
    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Energy ``E(x, t)`` of shape ``(B,)`` (negative log-density up to a constant)."""
        raise CapabilityError(
            f"{self.describe()} has no energy (score-only); train or load an energy-"
            "parameterised model to use mixtures or Metropolis-corrected samplers"
        )

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Score ``∇ₓ log p_t(x)``, shape of ``x``."""
        if not self.has_energy:
            raise NotImplementedError(f"{type(self).__name__} must implement score()")
        return self.energy_and_score(x, t)[1]

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(E(x, t), −∇ₓE(x, t))``; by default through autograd of :meth:`energy`."""
        if not self.has_energy:
            self.energy(x, t)  # raises the CapabilityError with its message
        return energy_and_score_autograd(lambda z: self.energy(z, t), x)

    def at(self, t: float | Tensor) -> Target:
        """Freeze time: the static density ``p_t`` as an MCMC target."""
        from ..mcmc.base import Target

        if self.has_energy:
            return Target(
                score=lambda x: self.score(x, t),
                energy=lambda x: self.energy(x, t),
                energy_and_score=lambda x: self.energy_and_score(x, t),
            )
        return Target(score=lambda x: self.score(x, t))

    # --------------------------------------------------------------- structure
    def leaves(self) -> Iterator[DiffusionModel]:
        """The distinct non-composite models inside (itself for a leaf)."""
        yield self

    @property
    def num_networks(self) -> int:
        """Network (leaf) evaluations made by one evaluation of this model."""
        return sum(1 for _ in self.leaves())

    def describe(self) -> str:
        """Short human-readable name used in error messages and plots."""
        return getattr(self, "name", None) or type(self).__name__

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, has_energy={self.has_energy}"

    # --------------------------------------------------------------- operators
    def __mul__(self, other: object) -> DiffusionModel:
        from ..compose import product

        if isinstance(other, DiffusionModel):
            return product([self, other])
        if isinstance(other, Real):
            raise TypeError(
                "multiplying a model by a number is ambiguous: use `model ** w` for a "
                "guidance strength or `recompose.mixture([a, b], weights=[...])` for weights"
            )
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> DiffusionModel:
        from ..compose import power, product

        if isinstance(other, DiffusionModel):
            return product([self, power(other, -1.0)])
        if isinstance(other, Real):
            raise TypeError("dividing a model by a number is ambiguous: use `model ** w`")
        return NotImplemented

    def __pow__(self, w: object) -> DiffusionModel:
        from ..compose import power

        if isinstance(w, Real) or (isinstance(w, Tensor) and w.ndim == 0):
            return power(self, float(w))
        return NotImplemented

    def __add__(self, other: object) -> DiffusionModel:
        from ..compose import mixture

        if isinstance(other, DiffusionModel):
            return mixture([self, other])
        raise TypeError(
            "adding a number to a model is meaningless; `a + b` is the equal-weight mixture"
        )

    __radd__ = __add__

    # nn.Module defines __hash__/__eq__ by identity, which the algebra relies on.


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's first parameter or buffer (CPU/float32 if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()
