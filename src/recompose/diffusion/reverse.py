r"""Reverse diffusion: the DDPM ancestral step (Ho et al. 2020) on any model or composite.

From level ``i`` (``α_i, σ_i``) to level ``i − 1`` (``α_{−1} = 1, σ_{−1} = 0``: clean data),
with ``a = α_i/α_{i−1}``, ``β = 1 − a²`` and score ``s = s(x, t_i)``::

    x_{i−1} = (x + β s) / a + √β̃ z,     β̃ = β σ²_{i−1} / σ²_i,   z ~ N(0, I)

which is DDPM's ``(x − β ε / σ_i) / √(1−β)`` with ``ε = −σ_i s`` and its posterior variance β̃
(zero on the last step, which is then Tweedie's ``x̂₀``). On a composite, ``s`` is the composed
score; that this does **not** sample the composition is the point of R3 §3: the product of
time-``t`` marginals is not the diffusion of the product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..schedules import Levels

__all__ = ["ddpm_step"]


def ddpm_step(
    x: Tensor, score: Tensor, levels: Levels, i: int, generator: torch.Generator | None = None
) -> Tensor:
    """One ancestral step from level ``i`` to ``i − 1`` given the score at ``(x, t_i)``."""
    alpha_prev = levels.alpha[i - 1] if i > 0 else torch.ones((), dtype=torch.float64)
    sigma_prev = levels.sigma[i - 1] if i > 0 else torch.zeros((), dtype=torch.float64)
    a = float(levels.alpha[i] / alpha_prev)
    beta = 1.0 - a**2
    mean = (x + beta * score) / a
    if i == 0:
        return mean
    var = beta * float(sigma_prev**2 / levels.sigma[i] ** 2)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return mean + var**0.5 * z
