r"""MCMC building blocks: a static target density, kernel states, per-step diagnostics.

A :class:`Target` is ``π(x) ∝ exp(−E(x))`` at one frozen noise level. Kernels follow the
blackjax pattern of pure functions of explicit state::

    state = kernel.init(x, target, generator, previous=None)
    state, info = kernel.step(state, target, step_size, generator)

* ``state.x`` has shape ``(B, *D)``; ``state.energy`` ``(B,)`` (or ``None`` for score-only
  kernels); ``state.score`` the shape of ``x``. States cache energy and score at ``x`` so a
  step never re-evaluates the current point.
* ``previous`` is the kernel's last state at the previous noise level (annealing). Each kernel
  decides what it carries over: U-HMC/HMC carry the momentum, ULA/MALA carry nothing.
* ``info.accept_prob`` and ``info.accepted`` are ``(B,)``: one decision per chain. Unadjusted
  kernels report ones, so downstream code never branches.
* ``info.is_divergent`` ``(B,)`` bool flags a transition whose proposal is not finite
  (position, score or energy), or, for HMC, whose energy error ``H(x_L, v_L) − H(x, v)``
  exceeds :data:`DIVERGENCE_THRESHOLD` (one-sided, as blackjax and Stan).
* ``info.score_evals`` / ``info.energy_evals`` count target evaluations made by the step (per
  chain). An ``energy_and_score`` call counts once in each.
* Inputs are never modified in place.
* A :class:`Kernel` is built by a factory (:func:`~recompose.mcmc.hmc` …) and carries its own
  settings in ``params`` (JSON-ready, for the run record).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import Tensor

from .._types import EnergyFn, EnergyScoreFn, ScoreFn
from ..errors import CapabilityError
from ..utils import energy_and_score_autograd

__all__ = ["Target", "Kernel", "Info", "LangevinState", "HamiltonianState", "require_energy",
           "not_finite", "DIVERGENCE_THRESHOLD"]

# A transition is divergent when its energy error H_new − H_old exceeds this many nats: the
# acceptance probability is then below e^−1000, i.e. zero in float64. Same value as blackjax's
# ``divergence_threshold`` and Stan's (Betancourt 2017, "A Conceptual Introduction to HMC" §6.2).
DIVERGENCE_THRESHOLD = 1000.0


class Target(NamedTuple):
    """A static target density for MCMC (``energy``/``energy_and_score`` ``None``: score only)."""

    score: ScoreFn
    energy: EnergyFn | None = None
    energy_and_score: EnergyScoreFn | None = None

    @property
    def has_energy(self) -> bool:
        """Whether the target has an energy (Metropolis–Hastings tests need one)."""
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
    is_divergent: Tensor  # (B,) bool: non-finite proposal, or |ΔH| > DIVERGENCE_THRESHOLD
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
    """A transition kernel: ``init``/``step`` as in the module docstring; ``needs_energy``: it
    evaluates the target's energy; ``params``: the factory's arguments, JSON-ready;
    ``metropolis``: it has a Metropolis–Hastings test (with exact or path-estimated energies,
    :mod:`.path`). Its defaults for the annealed samplers: the step rule ``step_size ·
    σ_t^step_power`` (:mod:`.step_sizes`) and, for Metropolis kernels, the acceptance rate that
    adaptation aims at (``None``: no default; the sampler then needs them given)."""

    name: str
    init: Callable[..., NamedTuple]
    step: Callable[..., tuple[NamedTuple, Info]]
    needs_energy: bool
    params: Mapping[str, object] = MappingProxyType({})
    metropolis: bool = False
    step_size: float | None = None
    step_power: float | None = None
    target_accept: float | None = None


def require_energy(target: Target, kernel: str) -> None:
    """Refuse a Metropolis-corrected kernel on a score-only target, saying what to do."""
    if not target.has_energy:
        raise CapabilityError(f"{kernel} needs energies for its Metropolis-Hastings test but "
                              "the target is score-only; use an energy-parameterised model, "
                              "energy='path' (energy differences from the scores), or an "
                              "unadjusted sampler (ula, uhmc) or reverse diffusion")


def not_finite(*tensors: Tensor) -> Tensor:
    """``(B,)`` bool: rows of any of ``tensors`` (each ``(B, …)``) holding a NaN or an inf."""
    bad = [~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1) for t in tensors]
    return torch.stack(bad).any(dim=0)


def ones_info(x: Tensor, score: Tensor, score_evals: int, energy_evals: int = 0) -> Info:
    """Info for unadjusted kernels at the new point ``(x, score)``: every proposal is
    'accepted'; divergent where the new point is not finite."""
    b = x.shape[0]
    return Info(torch.ones(b, device=x.device, dtype=x.dtype),
                torch.ones(b, device=x.device, dtype=torch.bool), not_finite(x, score),
                score_evals, energy_evals)
