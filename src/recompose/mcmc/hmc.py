r"""Metropolis-corrected HMC with partial momentum refresh (generalised HMC; Horowitz 1991).

As :mod:`~recompose.mcmc.uhmc`, followed by a Metropolis–Hastings test on the joint energy
``H(x, v) = E(x) + ½ vᵀM⁻¹v``::

    v' = d·v + √(1 − d²) √M ⊙ ξ
    (x_L, v_L) = leapfrog_L(x, v')
    log r = H(x, v') − H(x_L, v_L)
    accept (per chain):  (x, v) ← (x_L, v_L)
    reject:              (x, v) ← (x, −v')          momentum flip

The flip makes the kernel reversible, so partial-refresh HMC leaves ``π(x) N(v; 0, M)`` exactly
invariant (the R3 code kept ``v'`` without flipping). With ``d = 0`` this is standard HMC.
Cost per transition: ``L`` score evaluations, the last one together with its energy.
A transition is divergent where ``H(x_L, v_L)`` or ``x_L`` is not finite or the energy error
``H(x_L, v_L) − H(x, v') > 1000`` (:data:`~recompose.mcmc.base.DIVERGENCE_THRESHOLD`). The test
is one-sided, as in blackjax and Stan: a large energy *drop* is accepted and leaves the chain
valid (it happens to chains far out in the tail, e.g. after a coarse predictor step).
Across noise levels the momentum is carried exactly as in U-HMC (``init(..., previous)``).
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import Tensor

from ..utils import per_chain
from .base import (
    DIVERGENCE_THRESHOLD,
    HamiltonianState,
    Info,
    Kernel,
    Target,
    not_finite,
    require_energy,
)
from .integrators import check_num_leapfrog_steps, leapfrog
from .mass import (
    check_damping,
    inverse_mass,
    kinetic_energy,
    level_momentum,
    mass_record,
    refresh_momentum,
)
from .proposal import metropolis_hastings, select

__all__ = ["hmc"]


def hmc(num_leapfrog_steps: int = 3, damping: float = 0.5, mass: Tensor | float = 1.0) -> Kernel:
    """Metropolis-corrected HMC kernel (needs energies). R3 defaults: ``L = 3``, ``d = 0.5``.

    Args:
        num_leapfrog_steps: leapfrog steps ``L`` per transition (≥ 1).
        damping: fraction ``d ∈ [0, 1)`` of the momentum kept at each refresh (0: standard HMC).
        mass: diagonal mass ``M``, a positive float or tensor broadcastable to one event.
    """
    check_num_leapfrog_steps(num_leapfrog_steps)
    check_damping(damping)
    inv_mass = inverse_mass(mass)

    def init(x: Tensor, target: Target, generator: torch.Generator | None = None,
             previous: HamiltonianState | None = None) -> HamiltonianState:
        require_energy(target, "HMC")
        energy, score = target.energy_and_score(x)
        return HamiltonianState(x, level_momentum(x, mass, generator, previous), energy, score)

    def step(state: HamiltonianState, target: Target, step_size: Tensor | float,
             generator: torch.Generator | None = None) -> tuple[HamiltonianState, Info]:
        x0 = state.x
        h = per_chain(step_size, x0)
        v0 = refresh_momentum(state.momentum, damping, mass, generator)
        x1, v1, e1, s1 = leapfrog(x0, v0, state.score, target.score, h, num_leapfrog_steps,
                                  inv_mass, final_fn=target.energy_and_score)
        h0 = state.energy.to(torch.float64) + kinetic_energy(v0, inv_mass)
        h1 = e1.to(torch.float64) + kinetic_energy(v1, inv_mass)
        accepted, accept_prob = metropolis_hastings(h0 - h1, generator)
        new = HamiltonianState(
            x=select(accepted, x1, x0),
            momentum=select(accepted, v1, -v0),
            energy=torch.where(accepted, e1, state.energy),
            score=select(accepted, s1, state.score),
        )
        divergent = not_finite(x1, h1) | (h1 - h0 > DIVERGENCE_THRESHOLD)
        info = Info(accept_prob.to(x0.dtype), accepted, divergent, num_leapfrog_steps, 1)
        return new, info

    params = {"num_leapfrog_steps": num_leapfrog_steps, "damping": float(damping),
              "mass": mass_record(mass)}
    return Kernel("hmc", init, step, needs_energy=True, params=MappingProxyType(params))
