r"""Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996).

Proposal as ULA (:mod:`.langevin`), then a Metropolis–Hastings test that makes ``π`` exactly
invariant::

    x' = x + η s(x) + √(2η) ξ
    log q(x' | x) = −‖x' − x − η s(x)‖² / (4η)            (noise variance 2η ⇒ 4η, not 2η²)
    log r = −E(x') + E(x) + log q(x | x') − log q(x' | x)

Accept per chain with probability ``min(1, r)``; on rejection keep ``x``. Needs energies.
One step costs one ``energy_and_score`` evaluation (at ``x'``). A proposal whose energy or
position is not finite is divergent (and rejected). Nothing is carried across noise levels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..utils import per_chain
from .base import Info, Kernel, LangevinState, Target, not_finite, require_energy
from .langevin import langevin_log_q, langevin_proposal
from .proposal import metropolis_hastings, select

__all__ = ["mala"]


def _init(x: Tensor, target: Target, generator: torch.Generator | None = None,
          previous: NamedTuple | None = None) -> LangevinState:
    require_energy(target, "MALA")
    energy, score = target.energy_and_score(x)
    return LangevinState(x=x, energy=energy, score=score)


def _step(state: LangevinState, target: Target, step_size: Tensor | float,
          generator: torch.Generator | None = None) -> tuple[LangevinState, Info]:
    x = state.x
    eta = per_chain(step_size, x)
    x_prop = langevin_proposal(x, state.score, eta, generator)
    e_prop, s_prop = target.energy_and_score(x_prop)
    log_ratio = (state.energy.to(torch.float64) - e_prop.to(torch.float64)
                 + langevin_log_q(x, x_prop, s_prop, eta)
                 - langevin_log_q(x_prop, x, state.score, eta))
    accepted, accept_prob = metropolis_hastings(log_ratio, generator)
    new = LangevinState(
        x=select(accepted, x_prop, x),
        energy=torch.where(accepted, e_prop, state.energy),
        score=select(accepted, s_prop, state.score),
    )
    divergent = not_finite(x_prop, e_prop, s_prop)
    info = Info(accept_prob.to(x.dtype), accepted, divergent, score_evals=1, energy_evals=1)
    return new, info


def mala() -> Kernel:
    """The Metropolis-adjusted Langevin kernel (needs energies; no settings)."""
    return Kernel(name="mala", init=_init, step=_step, needs_energy=True)
