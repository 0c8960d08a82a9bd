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
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import per_chain
from .base import HamiltonianState, Info, Kernel, Target, require_energy
from .integrators import kinetic_energy, leapfrog, refresh_momentum
from .proposal import metropolis_hastings, select
from .uhmc import _check, init_momentum

__all__ = ["hmc"]


def hmc(num_leapfrog_steps: int = 3, damping: float = 0.5, mass: Tensor | float = 1.0) -> Kernel:
    """Metropolis-corrected HMC kernel (needs energies). R3 defaults: ``L = 3``, ``d = 0.5``."""
    _check(num_leapfrog_steps, damping)
    inv_mass = 1.0 / mass

    def init(
        x: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> HamiltonianState:
        require_energy(target, "HMC")
        energy, score = target.energy_and_score(x)
        return HamiltonianState(x, init_momentum(x, mass, generator), energy, score)

    def step(
        state: HamiltonianState,
        target: Target,
        step_size: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> tuple[HamiltonianState, Info]:
        x0 = state.x
        h = per_chain(step_size, x0)
        v0 = refresh_momentum(state.momentum, damping, mass, generator)
        x1, v1, e1, s1 = leapfrog(
            x0, v0, state.score, target.score, h, num_leapfrog_steps, inv_mass,
            final_fn=target.energy_and_score,
        )
        h0 = state.energy.to(torch.float64) + kinetic_energy(v0, inv_mass)
        h1 = e1.to(torch.float64) + kinetic_energy(v1, inv_mass)
        accepted, accept_prob = metropolis_hastings(h0 - h1, generator)
        new = HamiltonianState(
            x=select(accepted, x1, x0),
            momentum=select(accepted, v1, -v0),
            energy=torch.where(accepted, e1, state.energy),
            score=select(accepted, s1, state.score),
        )
        info = Info(accept_prob.to(x0.dtype), accepted, num_leapfrog_steps, 1)
        return new, info

    return Kernel(name="hmc", init=init, step=step, needs_energy=True)
