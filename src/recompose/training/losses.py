r"""Denoising score matching (Ho et al. 2020; R3 trains both parameterisations with it), in
the model's own prediction (:mod:`recompose.models.predictions`)::

    L(θ) = E_{t ~ U(t_min, t_max), x₀, ε ~ N(0, I)} mean_d (p̂_θ(α_t x₀ + σ_t ε, t) − p_t)²

with ``p_t = A_t x₀ + C_t ε`` the prediction's target: ``ε`` for ε-prediction (and for every
energy model, whose ``∇ₓU_θ`` is ``ε̂``), ``α̇ x₀ + σ̇ ε`` for a flow-matching velocity,
``α ε − σ x₀`` for ``v``, ``x₀`` for ``x0``. For an energy model the loss differentiates
through a gradient (double backprop, ``create_graph=True``): about twice the cost of a score
model step. ``t_max`` is the schedule's (1, or 0.999 for rectified flow). Returns the
per-sample loss, shape ``(B,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import DiffusionModel
from ..models.parameterization import training_output
from ..schedules import q_sample
from ..utils import batch_sum

__all__ = ["dsm_loss", "dsm_terms", "noised"]


def noised(x0: Tensor, model: DiffusionModel, generator: torch.Generator | None = None,
           t_min: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, t, ε)``: ``t ~ U(t_min, t_max)`` per sample, then ``x_t = α_t x₀ + σ_t ε``."""
    b = x0.shape[0]
    t_max = model.schedule.t_max
    t = t_min + (t_max - t_min) * torch.rand(b, generator=generator, device=x0.device,
                                             dtype=x0.dtype)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return q_sample(x0, t, model.schedule, noise), t, noise


def dsm_loss(
    model: DiffusionModel, x0: Tensor, generator: torch.Generator | None = None,
    t_min: float = 1e-3, c: Tensor | None = None,
) -> Tensor:
    """Per-sample DSM loss at drawn ``t``; all randomness from ``generator``."""
    xt, t, noise = noised(x0, model, generator, t_min)
    return dsm_terms(model, xt, t, noise, c, x0)


def dsm_terms(model: DiffusionModel, xt: Tensor, t: Tensor, noise: Tensor,
              c: Tensor | None = None, x0: Tensor | None = None) -> Tensor:
    """Per-sample DSM loss at given noised inputs ``(x_t, t, ε)`` (from :func:`noised`);
    ``x0`` is needed by predictions whose target involves the data (not by ``ε``)."""
    out, prediction = training_output(model, xt, t, c)
    if prediction.name == "epsilon":
        target = noise
    elif x0 is None:
        raise ValueError(f"the {prediction.name} prediction's target needs x0")
    else:
        target = prediction.target(x0, noise, t, model.schedule)
    return batch_sum((out - target) ** 2) / xt[0].numel()
