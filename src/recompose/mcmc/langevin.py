r"""The overdamped Langevin proposal shared by ULA and MALA.

One Euler–Maruyama step of ``dx = ∇log π(x) dt + √2 dW`` with step ``η`` (a variance)::

    x' = x + η s(x) + √(2η) ξ,          ξ ~ N(0, I)
    log q(x' | x) = −‖x' − x − η s(x)‖² / (4η)  + const

The noise variance is ``2η``, so the Gaussian exponent divides by ``2·(2η) = 4η`` (the R3 code
used ``2η²``, which breaks MALA's invariance). Shapes: ``x``, ``s`` ``(B, *D)``; ``η``
broadcastable to ``x`` (``(B, 1, …)`` via :func:`~recompose.utils.per_chain`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import batch_sum

__all__ = ["langevin_proposal", "langevin_log_q"]


def langevin_proposal(x: Tensor, score: Tensor, eta: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
    """``x' = x + η s(x) + √(2η) ξ`` with one ``randn`` draw; the inputs are untouched."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + eta * score + torch.sqrt(2 * eta) * noise


def langevin_log_q(x_to: Tensor, x_from: Tensor, score_from: Tensor, eta: Tensor) -> Tensor:
    """``log q(x_to | x_from)`` up to a constant, in float64, shape ``(B,)``."""
    diff = (x_to - x_from - eta * score_from).to(torch.float64)
    return -batch_sum(diff**2) / (4 * eta.to(torch.float64).reshape(-1))
