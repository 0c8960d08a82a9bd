"""Forward (noising) process: ``x_t = α_t x_0 + σ_t ε``; shapes ``(B, *D)``, ``t`` ``(B,)``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..schedules import Schedule
from ..utils import append_dims, as_time

__all__ = ["q_sample"]


def q_sample(
    x0: Tensor, t: float | Tensor, schedule: Schedule, noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``x_t ~ q(x_t | x_0)``; ``noise`` (shape of ``x0``) may be given."""
    t = as_time(t, x0.shape[0], x0)
    alpha, sigma = schedule(t)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return append_dims(alpha, x0.ndim) * x0 + append_dims(sigma, x0.ndim) * noise
