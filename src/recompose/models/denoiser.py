r"""Any denoiser ``D(x, σ[, c]) ≈ E[x₀ | x_σ = x]`` as a model on the variance-exploding path.

EDM (Karras et al. 2022) and k-diffusion wrap their networks as preconditioned denoisers on
``x_σ = x₀ + σ ε``: ``D(x, σ) = c_skip x + c_out F(c_in x, c_noise)``. Such a callable is all a
model needs: on the VE path (:class:`~recompose.schedules.VESchedule`, ``α = 1``) Tweedie gives

    s(x, σ) = (D(x, σ) − x) / σ²                 (shape of ``x``)

and ``x̂₀ = D`` (an ``"x0"`` prediction, :mod:`.predictions`). ``t`` maps to
``σ_t = σ_min (σ_max/σ_min)^t``; the prior is ``N(0, (σ_data² + σ_max²) I)``.

``D`` is called with ``x`` of shape ``(B, *D)``, ``σ`` of shape ``(B,)`` (the dtype of ``x``) and,
for a conditional denoiser, the conditions ``(B, …)``; it returns ``x̂₀`` of the shape of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..schedules import VESchedule
from .parameterization import ScoreModel

__all__ = ["from_denoiser", "DenoiserNet"]

Denoiser = Callable[..., Tensor]


class DenoiserNet(nn.Module):
    """``(x, t[, c]) -> D(x, σ_t[, c])``: a denoiser as an ``"x0"``-predicting network; with
    ``null_condition`` it is conditional (``model.given(c)``; the null view passes it)."""

    def __init__(self, denoiser: Denoiser, schedule: VESchedule,
                 null_condition: Tensor | None = None) -> None:
        super().__init__()
        self.denoiser, self.schedule = denoiser, schedule
        if isinstance(denoiser, nn.Module):
            self.module = denoiser  # registered, so .to(device) and the dtype follow it
        self.conditional = null_condition is not None
        self.register_buffer("null", None if null_condition is None
                             else torch.as_tensor(null_condition), False)
        self.condition_ndim = 0 if null_condition is None else self.null.ndim

    def encode_condition(self, value: object) -> Tensor:
        """A user condition as a tensor in the null condition's dtype (the denoiser's own
        encoding)."""
        return torch.as_tensor(value, dtype=self.null.dtype)

    def null_condition(self, n: int) -> Tensor:
        """The null condition repeated for ``n`` chains."""
        return self.null.expand((n,) + tuple(self.null.shape))

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        sigma = self.schedule.alpha_sigma(t.to(torch.float64))[1].to(x.dtype)
        if not self.conditional:
            return self.denoiser(x, sigma)
        return self.denoiser(x, sigma, self.null_condition(x.shape[0]) if c is None else c)


def from_denoiser(denoiser: Denoiser, sigma_min: float, sigma_max: float, *,
                  event_shape: tuple[int, ...], sigma_data: float = 0.5,
                  null_condition: Tensor | None = None, name: str | None = None) -> ScoreModel:
    """A denoiser ``D(x, σ[, c])`` (EDM's preconditioned network, a k-diffusion wrapper, any
    callable) as a score model on the VE path ``σ ∈ [sigma_min, sigma_max]`` (module docstring).

    Args:
        denoiser: ``D(x, σ)`` or, with ``null_condition``, ``D(x, σ, c)``, returning ``x̂₀``.
        sigma_min: the lowest noise level it was trained on (EDM: 0.002).
        sigma_max: the highest noise level it was trained on (EDM: 80).
        event_shape: the shape of one sample, e.g. ``(3, 64, 64)``.
        sigma_data: the data's standard deviation (EDM: 0.5): the prior's data share.
        null_condition: the condition that means "no condition", for conditional denoisers
            (``model.given(c)`` then gives ``p_t(x | c)``).
        name: shown in descriptions and plots.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable D(x, sigma[, c]), got "
                        f"{type(denoiser).__name__}")
    schedule = VESchedule(sigma_min, sigma_max, data_std=sigma_data)
    net = DenoiserNet(denoiser, schedule, null_condition)
    return ScoreModel(net, schedule, tuple(int(d) for d in event_shape),
                      name=name or getattr(denoiser, "__name__", None) or "denoiser",
                      prediction="x0")
