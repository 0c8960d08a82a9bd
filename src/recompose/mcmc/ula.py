r"""Unadjusted Langevin algorithm (ULA).

Euler–Maruyama discretisation of the Langevin diffusion ``dx = ∇log π dt + √2 dW`` with step η
(the proposal of :mod:`.langevin`)::

    x' = x + η s(x) + √(2η) ξ,   ξ ~ N(0, I)

No accept/reject: the chain is biased at finite η (on ``N(0, s²)`` its stationary variance is
``s² / (1 − η/(2s²))``) but needs only scores, so it works on score-parameterised models.
One step costs one score evaluation. Nothing is carried across noise levels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..utils import per_chain
from .base import Info, Kernel, LangevinState, Target, ones_info
from .langevin import langevin_proposal

__all__ = ["ula"]


def _init(x: Tensor, target: Target, generator: torch.Generator | None = None,
          previous: NamedTuple | None = None) -> LangevinState:
    return LangevinState(x=x, energy=None, score=target.score(x))


def _step(state: LangevinState, target: Target, step_size: Tensor | float,
          generator: torch.Generator | None = None) -> tuple[LangevinState, Info]:
    eta = per_chain(step_size, state.x)
    x_new = langevin_proposal(state.x, state.score, eta, generator)
    new = LangevinState(x=x_new, energy=None, score=target.score(x_new))
    return new, ones_info(new.x, new.score, score_evals=1)


def ula() -> Kernel:
    """The unadjusted Langevin kernel (scores only; no settings)."""
    return Kernel(name="ula", init=_init, step=_step, needs_energy=False, step_size=0.05,
                  step_power=2.0)
