r"""What a network predicts, and the conversions between predictions on any Gaussian path.

With ``x_t = α x₀ + σ ε`` (``α, σ`` and their time derivatives ``α̇, σ̇`` from the path,
:mod:`recompose.schedules`), every prediction is an affine function of ``(x₀, ε)``:
``p = A_t x₀ + C_t ε``.

==============  =======================================  ===============  ===============
name            meaning                                  ``A_t``          ``C_t``
==============  =======================================  ===============  ===============
``epsilon``     the noise ``ε``                          0                1
``x0``          the data ``x₀`` (Tweedie's ``x̂₀``)       1                0
``v``           ``α ε − σ x₀`` (Salimans & Ho 2022)      ``−σ``           ``α``
``velocity``    ``dx_t/dt = α̇ x₀ + σ̇ ε`` (flow matching)  ``α̇``           ``σ̇``
``flow``        ``ε − x₀`` (SD3 / FLUX / diffusers'         −1              1
                flow matching: ``dx/dσ`` on ``α = 1 − σ``)
``score``       ``∇log p_t = −ε/σ``                      0                ``−1/σ``
==============  =======================================  ===============  ===============

Given ``x`` and ``p``, the two equations ``x = α x₀ + σ ε`` and ``p = A x₀ + C ε`` give::

    ε̂ = (α p − A x) / (α C − A σ),        x̂₀ = (C x − σ p) / (α C − A σ)

e.g. flow matching ``ε̂ = (α u − α̇ x)/(α σ̇ − α̇ σ)``; rectified flow (``α = 1 − t, σ = t``):
``ε̂ = x + (1 − t) u``, ``x̂₀ = x − t u``. The score is ``s = −ε̂/σ`` (shape of ``x``), and an
energy network's ``E = U/σ`` stays in :mod:`.parameterization`. ``x̂₀`` is taken from the
output directly (:meth:`Prediction.to_x0`), not through ``ε̂``: at a flow's pure noise
(``α = 0``) ``ε̂ = x`` carries nothing of the data, but ``x̂₀ = x − p`` does.

The training target of a prediction is ``A x₀ + C ε`` at the drawn ``(x₀, ε)``
(:meth:`Prediction.target`); the loss is the mean square error against it.

**A new prediction type** is one :class:`Prediction` with its coefficients, added to
:data:`PREDICTIONS` (or passed as an object wherever a name is accepted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..errors import CapabilityError
from ..schedules import Schedule
from ..utils import append_dims

__all__ = ["Prediction", "PREDICTIONS", "get_prediction", "score_from_epsilon",
           "epsilon_from_score", "denoised_from_epsilon"]

# (α, σ, α̇, σ̇) at t -> (A, C), each (B,) float64
Coefficients = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Prediction:
    """A network output ``p = A_t x₀ + C_t ε`` (module docstring); ``coefficients(α, σ, α̇,
    σ̇) -> (A, C)``; ``needs_derivatives``: whether they use ``α̇, σ̇``."""

    name: str
    coefficients: Coefficients
    needs_derivatives: bool = False

    def _terms(self, t: Tensor, schedule: Schedule) -> tuple[Tensor, ...]:
        t64 = t.double()
        alpha, sigma = schedule.alpha_sigma(t64)
        if self.needs_derivatives:
            da, ds = schedule.derivatives(t64)
        else:
            da = ds = None
        a, c = self.coefficients(alpha, sigma, da, ds)
        return alpha, sigma, a, c

    def to_epsilon(self, output: Tensor, x: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
        """``ε̂`` from the network's ``output`` at ``(x, t)`` (``t`` of shape ``(B,)``)."""
        alpha, sigma, a, c = self._terms(t, schedule)
        den = alpha * c - a * sigma
        k_out, k_x = (append_dims((v / den).to(x.dtype), x.ndim) for v in (alpha, a))
        return k_out * output - k_x * x

    def to_x0(self, output: Tensor, x: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
        """``x̂₀ = (C x − σ p)/(α C − A σ)`` from the network's ``output`` at ``(x, t)``
        (defined at ``α = 0`` when ``A ≠ 0``: x₀-, v-, velocity and flow predictions)."""
        alpha, sigma, a, c = self._terms(t, schedule)
        den = alpha * c - a * sigma
        if bool((den == 0).any()):
            raise CapabilityError(f"a {self.name} prediction gives no x̂₀ at pure noise "
                                  "(α = 0); start below it (levels without t = 1)")
        k_x, k_out = (append_dims((v / den).to(x.dtype), x.ndim) for v in (c, sigma))
        return k_x * x - k_out * output

    def from_epsilon(self, epsilon: Tensor, x: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
        """The prediction that corresponds to ``ε̂`` at ``(x, t)``: ``A (x − σ ε̂)/α + C ε̂``."""
        alpha, sigma, a, c = self._terms(t, schedule)
        k_x, k_eps = (append_dims(v.to(x.dtype), x.ndim) for v in (a / alpha,
                                                                   c - a * sigma / alpha))
        return k_x * x + k_eps * epsilon

    def target(self, x0: Tensor, noise: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
        """The regression target ``A x₀ + C ε`` (training)."""
        _, _, a, c = self._terms(t, schedule)
        return (append_dims(a.to(x0.dtype), x0.ndim) * x0
                + append_dims(c.to(x0.dtype), x0.ndim) * noise)


def _zeros_ones(alpha: Tensor) -> tuple[Tensor, Tensor]:
    return alpha * 0, alpha * 0 + 1


PREDICTIONS: dict[str, Prediction] = {p.name: p for p in (
    Prediction("epsilon", lambda al, si, da, ds: _zeros_ones(al)),
    Prediction("x0", lambda al, si, da, ds: _zeros_ones(al)[::-1]),
    Prediction("v", lambda al, si, da, ds: (-si, al)),
    Prediction("velocity", lambda al, si, da, ds: (da, ds), needs_derivatives=True),
    Prediction("score", lambda al, si, da, ds: (al * 0, -1 / si)),
    Prediction("flow", lambda al, si, da, ds: (al * 0 - 1, al * 0 + 1)),
)}


def get_prediction(prediction: str | Prediction) -> Prediction:
    """A :class:`Prediction` by name (or the object itself)."""
    if isinstance(prediction, Prediction):
        return prediction
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of "
                         f"{', '.join(PREDICTIONS)}")
    return PREDICTIONS[prediction]


def score_from_epsilon(epsilon: Tensor, sigma: Tensor) -> Tensor:
    """``s = −ε̂ / σ_t`` (Tweedie): ``(B, *D)`` noise prediction, ``(B,)`` noise levels."""
    return -epsilon / append_dims(sigma, epsilon.ndim)


def epsilon_from_score(score: Tensor, sigma: Tensor) -> Tensor:
    """``ε̂ = −σ_t s``."""
    return -append_dims(sigma, score.ndim) * score


def denoised_from_epsilon(epsilon: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie's ``x̂₀ = (x − σ ε̂)/α``."""
    return (x - append_dims(sigma, x.ndim) * epsilon) / append_dims(alpha, x.ndim)
