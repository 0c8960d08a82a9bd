r"""Unadjusted Langevin algorithm (ULA).

Euler–Maruyama discretisation of the Langevin diffusion ``dx = ∇log π dt + √2 dW`` with step η::

    x' = x + η s(x) + √(2η) ξ,   ξ ~ N(0, I)

No accept/reject: the chain is biased at finite η (on ``N(0, s²)`` its stationary variance is
``s² / (1 − η/(2s²))``) but needs only scores, so it works on score-parameterised models.
One step costs one score evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import per_chain
from .base import Info, Kernel, LangevinState, Target, ones_info

__all__ = ["ula"]


def _init(x: Tensor, target: Target, generator: torch.Generator | None = None) -> LangevinState:
    return LangevinState(x=x, energy=None, score=target.score(x))


def _step(
    state: LangevinState,
    target: Target,
    step_size: Tensor | float,
    generator: torch.Generator | None = None,
) -> tuple[LangevinState, Info]:
    x = state.x
    eta = per_chain(step_size, x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_new = x + eta * state.score + torch.sqrt(2 * eta) * noise
    new = LangevinState(x=x_new, energy=None, score=target.score(x_new))
    return new, ones_info(x, score_evals=1)


def ula() -> Kernel:
    """The unadjusted Langevin kernel (scores only)."""
    return Kernel(name="ula", init=_init, step=_step, needs_energy=False)
