r"""MCMC building blocks: a static target density, kernel states, per-step diagnostics.

A :class:`Target` is ``π(x) ∝ exp(−E(x))`` at one frozen noise level. Kernels follow the
blackjax pattern of pure functions of explicit state::

    state = kernel.init(x, target)
    state, info = kernel.step(state, target, step_size, generator)

* ``state.x`` has shape ``(B, *D)``; ``state.energy`` ``(B,)`` (or ``None`` for score-only
  kernels); ``state.score`` the shape of ``x``. States cache energy and score at ``x`` so a
  step never re-evaluates the current point.
* ``info.accept_prob`` and ``info.accepted`` are ``(B,)``: one decision per chain. Unadjusted
  kernels report ones, so downstream code never branches.
* ``info.score_evals`` / ``info.energy_evals`` count target evaluations made by the step (per
  chain). An ``energy_and_score`` call counts once in each.
* Inputs are never modified in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .._types import EnergyFn, EnergyScoreFn, ScoreFn
from ..errors import CapabilityError
from ..utils import energy_and_score_autograd

__all__ = ["Target", "Kernel", "Info", "LangevinState", "HamiltonianState", "require_energy"]


class Target(NamedTuple):
    """A static target density for MCMC. ``energy``/``energy_and_score`` are ``None`` when
    only the score is known."""

    score: ScoreFn
    energy: EnergyFn | None = None
    energy_and_score: EnergyScoreFn | None = None

    @property
    def has_energy(self) -> bool:
        return self.energy is not None

    @classmethod
    def from_energy(cls, energy: EnergyFn) -> Target:
        """A target from an energy function alone; the score comes from autograd."""

        def both(x: Tensor) -> tuple[Tensor, Tensor]:
            return energy_and_score_autograd(energy, x)

        return cls(score=lambda x: both(x)[1], energy=energy, energy_and_score=both)


class Info(NamedTuple):
    """Diagnostics of one kernel step (never part of the state)."""

    accept_prob: Tensor  # (B,)
    accepted: Tensor  # (B,) bool
    score_evals: int
    energy_evals: int


class LangevinState(NamedTuple):
    """State of ULA / MALA: position and cached energy (``None`` for ULA) and score."""

    x: Tensor
    energy: Tensor | None
    score: Tensor


class HamiltonianState(NamedTuple):
    """State of U-HMC / HMC: position, momentum (carried across steps) and cached terms."""

    x: Tensor
    momentum: Tensor
    energy: Tensor | None
    score: Tensor


class Kernel(NamedTuple):
    """A transition kernel: ``init(x, target, generator=None) -> state`` and
    ``step(state, target, step_size, generator) -> (state, info)``."""

    name: str
    init: Callable[..., NamedTuple]
    step: Callable[..., tuple[NamedTuple, Info]]
    needs_energy: bool


def require_energy(target: Target, kernel: str) -> None:
    """Refuse a Metropolis-corrected kernel on a score-only target, saying what to do."""
    if not target.has_energy:
        raise CapabilityError(
            f"{kernel} needs energies for its Metropolis-Hastings test but the target is "
            "score-only; use an energy-parameterised model, or an unadjusted sampler "
            "(ula, uhmc) or reverse diffusion"
        )


def ones_info(x: Tensor, score_evals: int, energy_evals: int = 0) -> Info:
    """Info for unadjusted kernels: every proposal is 'accepted'."""
    b = x.shape[0]
    return Info(
        accept_prob=torch.ones(b, device=x.device, dtype=x.dtype),
        accepted=torch.ones(b, device=x.device, dtype=torch.bool),
        score_evals=score_evals,
        energy_evals=energy_evals,
    )
