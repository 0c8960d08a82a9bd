r"""Denoising score matching in ε-prediction form (Ho et al. 2020; R3 trains both
parameterisations with it)::

    L(θ) = E_{t ~ U(t_min, 1), x₀, ε ~ N(0, I)} mean_d (ε̂_θ(α_t x₀ + σ_t ε, t) − ε)²

For an energy model ``ε̂ = ∇ₓU_θ``, so the loss differentiates through a gradient
(double backprop, ``create_graph=True``): about twice the cost of a score model step.
Returns the per-sample loss, shape ``(B,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.forward import q_sample
from ..models.base import DiffusionModel
from ..models.parameterization import epsilon_prediction
from ..utils import batch_sum

__all__ = ["dsm_loss", "dsm_terms", "noised"]


def noised(x0: Tensor, model: DiffusionModel, generator: torch.Generator | None = None,
           t_min: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, t, ε)``: ``t ~ U(t_min, 1)`` per sample, then ``x_t = α_t x₀ + σ_t ε``."""
    b = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(b, generator=generator, device=x0.device,
                                         dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return q_sample(x0, t, model.schedule, noise), t, noise


def dsm_loss(
    model: DiffusionModel, x0: Tensor, generator: torch.Generator | None = None,
    t_min: float = 1e-3, c: Tensor | None = None,
) -> Tensor:
    """Per-sample ε-MSE at uniformly drawn ``t``; all randomness from ``generator``."""
    return dsm_terms(model, *noised(x0, model, generator, t_min), c)


def dsm_terms(model: DiffusionModel, xt: Tensor, t: Tensor, noise: Tensor,
              c: Tensor | None = None) -> Tensor:
    """Per-sample ε-MSE at given noised inputs ``(x_t, t, ε)`` (from :func:`noised`)."""
    eps = epsilon_prediction(model, xt, t, c)
    return batch_sum((eps - noise) ** 2) / xt[0].numel()
