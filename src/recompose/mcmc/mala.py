r"""Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996).

Proposal as ULA, then a Metropolis–Hastings test that makes ``π`` exactly invariant::

    x' = x + η s(x) + √(2η) ξ
    log q(x' | x) = −‖x' − x − η s(x)‖² / (4η)            (noise variance 2η ⇒ 4η, not 2η²)
    log r = −E(x') + E(x) + log q(x | x') − log q(x' | x)

Accept per chain with probability ``min(1, r)``; on rejection keep ``x``. Needs energies.
One step costs one ``energy_and_score`` evaluation (at ``x'``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import batch_sum, per_chain
from .base import Info, Kernel, LangevinState, Target, require_energy
from .proposal import metropolis_hastings, select

__all__ = ["mala", "langevin_log_q"]


def langevin_log_q(x_to: Tensor, x_from: Tensor, score_from: Tensor, eta: Tensor) -> Tensor:
    """``log q(x_to | x_from)`` up to a constant, in float64, shape ``(B,)``."""
    diff = (x_to - x_from - eta * score_from).to(torch.float64)
    return -batch_sum(diff**2) / (4 * eta.to(torch.float64).reshape(-1))


def _init(x: Tensor, target: Target, generator: torch.Generator | None = None) -> LangevinState:
    require_energy(target, "MALA")
    energy, score = target.energy_and_score(x)
    return LangevinState(x=x, energy=energy, score=score)


def _step(
    state: LangevinState,
    target: Target,
    step_size: Tensor | float,
    generator: torch.Generator | None = None,
) -> tuple[LangevinState, Info]:
    x = state.x
    eta = per_chain(step_size, x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_prop = x + eta * state.score + torch.sqrt(2 * eta) * noise
    e_prop, s_prop = target.energy_and_score(x_prop)

    log_ratio = (
        state.energy.to(torch.float64)
        - e_prop.to(torch.float64)
        + langevin_log_q(x, x_prop, s_prop, eta)
        - langevin_log_q(x_prop, x, state.score, eta)
    )
    accepted, accept_prob = metropolis_hastings(log_ratio, generator)
    new = LangevinState(
        x=select(accepted, x_prop, x),
        energy=torch.where(accepted, e_prop, state.energy),
        score=select(accepted, s_prop, state.score),
    )
    return new, Info(accept_prob.to(x.dtype), accepted, score_evals=1, energy_evals=1)


def mala() -> Kernel:
    """The Metropolis-adjusted Langevin kernel (needs energies)."""
    return Kernel(name="mala", init=_init, step=_step, needs_energy=True)
