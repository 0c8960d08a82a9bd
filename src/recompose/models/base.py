r"""The model contract shared by learned, analytic and composite models.

A :class:`DiffusionModel` describes a family of time-``t`` marginal densities ``p_t(x)``,
``t ∈ [0, 1]``, of a diffusion on a Gaussian path ``(α_t, σ_t)`` (:mod:`recompose.schedules`:
variance preserving, rectified flow, variance exploding, or a user's family):

* ``energy(x, t) -> (B,)``  with ``p_t(x) ∝ exp(−E(x, t))`` (only when ``has_energy``);
* ``score(x, t)  -> (B, *D)`` equal to ``∇ₓ log p_t(x) = −∇ₓ E(x, t)``;
* ``energy_and_score(x, t)`` both at once (one forward + one backward for a network);
* ``at(t)`` freezes time and returns an MCMC :class:`~recompose.mcmc.base.Target`.

The operators ``a * b``, ``a / b``, ``a ** w`` and ``a + b`` (product, quotient, power, equal-
weight mixture; a model times a *number* is refused) are installed by :mod:`recompose.compose`.

**Shared network calls.** A leaf that is one of several views of one network (the conditions
of a conditional network, :mod:`.parameterization`) names it in :attr:`~DiffusionModel.batch_slot`;
that model evaluates a weighted product of its views in one call (:meth:`~DiffusionModel.stacked`),
so ``∏_k p_t(x | c_k)^{w_k}`` costs one network call on ``K·B`` inputs; views applied to
*different* inputs (the crops of a :mod:`~recompose.tapestry`) use :meth:`~DiffusionModel.rows`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import CapabilityError
from ..mcmc.base import Target
from ..schedules import Schedule
from ..utils import append_dims, as_time, energy_and_score_autograd

__all__ = ["BatchSlot", "DiffusionModel", "model_device_dtype"]


class BatchSlot(NamedTuple):
    """A leaf's place in a network call shared with other views of the same network: leaves
    naming the same ``network`` are evaluated together by ``network.stacked(conditions, weights)``.
    """

    network: DiffusionModel  # the model that owns the network and evaluates the stacked batch
    condition: Tensor | None  # this leaf's encoded condition; None = the null condition


class DiffusionModel(nn.Module):
    """Base class of every model. Subclasses set ``schedule``, ``event_shape``, ``has_energy``.

    A subclass with energies implements :meth:`energy` (the score then comes from autograd);
    a score-only subclass implements :meth:`score`. Closed forms may override both.
    """

    schedule: Schedule
    event_shape: tuple[int, ...]
    has_energy: bool = False
    #: the density is one diffusion's time-``t`` marginal, so it obeys that diffusion's
    #: Fokker–Planck equation (leaves, and mixtures of them); ``False`` for products, powers
    #: and factors such as a classifier's ``p_t(y | x)`` (:mod:`recompose.samplers.fkc`)
    marginal: bool = True

    # ----------------------------------------------------------------- contract
    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Energy ``E(x, t)`` of shape ``(B,)`` (negative log-density up to a constant)."""
        raise CapabilityError(f"{self.describe()} has no energy (score-only); train or load an "
                              "energy-parameterised model to use mixtures or Metropolis-corrected "
                              "samplers")

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

    def denoised(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Tweedie's ``x̂₀ = E[x₀ | x_t = x] = (x + σ_t² s)/α_t`` (shape of ``x``).

        At a flow's pure noise (``α = 0``) the score says nothing of the data, but a network
        that predicts ``x₀``, a velocity or ``v`` still gives ``x̂₀``; so do compositions whose
        exponents sum to 1 (guidance, ``a * b / U``), as ``Σ_k w_k x̂₀_k``
        (:meth:`denoised_terms`). Other models raise :class:`CapabilityError` there."""
        t = as_time(t, x.shape[0], x)
        weight, terms = self.denoised_terms(x, t)
        if abs(weight - 1.0) < 1e-12:
            return terms
        alpha = self.schedule(t)[0]
        if bool((alpha == 0).any()):
            raise CapabilityError(
                f"{self.describe()}: its exponents sum to {weight:g}, not 1, so it has no x̂₀ at "
                "pure noise (α = 0); start below it (levels without t = 1, e.g. num_levels=T)")
        return terms + (1.0 - weight) * x / append_dims(alpha, x.ndim)

    def denoised_terms(self, x: Tensor, t: Tensor) -> tuple[float, Tensor]:
        """``(W, S)`` with ``x̂₀ = S + (1 − W) x/α``: for a product of powers of models,
        ``W = Σ_k w_k`` and ``S = Σ_k w_k x̂₀_k`` (``t`` of shape ``(B,)``). By default
        ``(1, Tweedie's x̂₀ from the score)``, which needs ``α > 0``."""
        alpha, sigma = self.schedule(t)
        if bool((alpha == 0).any()):
            raise CapabilityError(
                f"{self.describe()}: x̂₀ at pure noise (α = 0) needs a network that predicts "
                "x₀, a velocity or v (Tweedie's formula from a score divides by α); start "
                "below it (levels without t = 1, e.g. num_levels=T)")
        x0 = (x + append_dims(sigma, x.ndim) ** 2 * self.score(x, t)) / append_dims(alpha,
                                                                                    x.ndim)
        return 1.0, x0

    def at(self, t: float | Tensor) -> Target:
        """Freeze time: the static density ``p_t`` as an MCMC target."""
        if self.has_energy:
            return Target(score=lambda x: self.score(x, t), energy=lambda x: self.energy(x, t),
                          energy_and_score=lambda x: self.energy_and_score(x, t))
        return Target(score=lambda x: self.score(x, t))

    # --------------------------------------------------------------- structure
    def leaves(self) -> Iterator[DiffusionModel]:
        """The distinct non-composite models inside (itself for a leaf)."""
        yield self

    @property
    def per_chain(self) -> bool:
        """Whether the density differs between chains (a condition given per chain); a
        composite is per chain when one of its leaves is."""
        return any(leaf.per_chain for leaf in self.leaves() if leaf is not self)

    @property
    def num_networks(self) -> int:
        """Network (leaf) evaluations made by one evaluation of this model."""
        return sum(1 for _ in self.leaves())

    def describe(self) -> str:
        """Short human-readable name used in error messages and plots."""
        return getattr(self, "name", None) or type(self).__name__

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, has_energy={self.has_energy}"

    # --------------------------------------------------------- shared network calls
    @property
    def batch_slot(self) -> BatchSlot | None:
        """Where this leaf joins a batched call shared with other views of its network (``None``,
        the default: it is evaluated on its own)."""
        return None

    def stacked(self, conditions: Sequence[Tensor | None], weights: Sequence[float]
                ) -> DiffusionModel:
        """``∏_k p_t(x | c_k)^{w_k}`` over this model's conditions (for models that appear as
        ``batch_slot.network``): its methods on ``(B, *D)`` inputs call the network once on
        ``K·B`` inputs and equal ``Σ_k w_k`` of the separately evaluated terms."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate stacked conditions")

    def rows(self, conditions: Sequence[Tensor | None], batch: int) -> DiffusionModel:
        """This network on ``K·batch`` rows, block ``k`` under condition ``k`` (for models that
        appear as ``batch_slot.network``): views of the network at different inputs, one call."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate conditions per row")

    # --------------------------------------------------------------- operators
    if TYPE_CHECKING:  # installed by recompose.compose (see the module docstring)

        def __mul__(self, other: object) -> DiffusionModel: ...
        def __rmul__(self, other: object) -> DiffusionModel: ...
        def __truediv__(self, other: object) -> DiffusionModel: ...
        def __pow__(self, w: object) -> DiffusionModel: ...
        def __add__(self, other: object) -> DiffusionModel: ...
        def __radd__(self, other: object) -> DiffusionModel: ...

    # nn.Module defines __hash__/__eq__ by identity, which the algebra relies on.


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's first parameter or buffer (CPU/float32 if none):
    the samplers' device and dtype. Half-precision weights (fp16 / bf16) give float32: the
    networks run in their own dtype, the samplers' arithmetic does not."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            half = tensor.dtype in (torch.float16, torch.bfloat16)
            return tensor.device, torch.float32 if half else tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()
