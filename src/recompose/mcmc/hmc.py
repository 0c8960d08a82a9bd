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

With ``energy="path"`` the energy difference ``E(x_L) − E(x)`` is a quadrature of the score
along the leapfrog trajectory (:mod:`.path`), so HMC runs on score-only models: the trapezoid
rule uses the trajectory's own scores (no extra evaluation; exact for Gaussians), Simpson's
one more score per leapfrog step (exact up to quartic energies). The final call is then a
score, not ``energy_and_score``.
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
from .path import check_energy_mode, check_quadrature, leapfrog_trapezoid, simpson
from .proposal import metropolis_hastings, select

__all__ = ["hmc"]


def hmc(num_leapfrog_steps: int = 3, damping: float = 0.5, mass: Tensor | float = 1.0,
        energy: str = "exact", quadrature: str | None = None) -> Kernel:
    """Metropolis-corrected HMC kernel. R3 defaults: ``L = 3``, ``d = 0.5``.

    Args:
        num_leapfrog_steps: leapfrog steps ``L`` per transition (≥ 1).
        damping: fraction ``d ∈ [0, 1)`` of the momentum kept at each refresh (0: standard HMC).
        mass: diagonal mass ``M``, a positive float or tensor broadcastable to one event.
        energy: ``"exact"`` (the model's energies; needs an energy model) or ``"path"``
            (quadrature of the trajectory's scores: works on score-only models).
        quadrature: for ``"path"``: ``"simpson"`` (default; one more score per leapfrog step,
            at each segment's midpoint) or ``"trapezoid"`` (free: the trajectory's own scores;
            larger bias).
    """
    check_num_leapfrog_steps(num_leapfrog_steps)
    check_damping(damping)
    inv_mass = inverse_mass(mass)
    path = check_energy_mode(energy, "HMC") == "path"
    quadrature = check_quadrature(quadrature, path, "HMC")
    simpson_rule = quadrature == "simpson"

    def init(x: Tensor, target: Target, generator: torch.Generator | None = None,
             previous: HamiltonianState | None = None) -> HamiltonianState:
        if path:
            e, s = None, target.score(x)
        else:
            require_energy(target, "HMC")
            e, s = target.energy_and_score(x)
        return HamiltonianState(x, level_momentum(x, mass, generator, previous), e, s)

    def step(state: HamiltonianState, target: Target, step_size: Tensor | float,
             generator: torch.Generator | None = None) -> tuple[HamiltonianState, Info]:
        x0 = state.x
        h = per_chain(step_size, x0)
        v0 = refresh_momentum(state.momentum, damping, mass, generator)
        segments: list[Tensor] = []

        def simpson_segment(xa: Tensor, xb: Tensor, sa: Tensor, sb: Tensor) -> None:
            segments.append(simpson(xa, xb, sa, target.score(0.5 * (xa + xb)), sb))

        x1, v1, e1, s1 = leapfrog(x0, v0, state.score, target.score, h, num_leapfrog_steps,
                                  inv_mass, final_fn=None if path else target.energy_and_score,
                                  segment_fn=simpson_segment if simpson_rule else None)
        if path:  # ΔH from the trajectory's scores; the energies stay unknown
            delta_e = (torch.stack(segments).sum(0) if simpson_rule
                       else leapfrog_trapezoid(v0, v1, state.score, s1, h, inv_mass))
            h0 = torch.zeros_like(delta_e)
            h1 = delta_e + kinetic_energy(v1, inv_mass) - kinetic_energy(v0, inv_mass)
        else:
            h0 = state.energy.to(torch.float64) + kinetic_energy(v0, inv_mass)
            h1 = e1.to(torch.float64) + kinetic_energy(v1, inv_mass)
        accepted, accept_prob = metropolis_hastings(h0 - h1, generator)
        new = HamiltonianState(
            x=select(accepted, x1, x0),
            momentum=select(accepted, v1, -v0),
            energy=None if path else torch.where(accepted, e1, state.energy),
            score=select(accepted, s1, state.score),
        )
        divergent = not_finite(x1, s1, h1) | (h1 - h0 > DIVERGENCE_THRESHOLD)
        info = Info(accept_prob.to(x0.dtype), accepted, divergent,
                    num_leapfrog_steps * (2 if simpson_rule else 1), 0 if path else 1)
        return new, info

    params = {"num_leapfrog_steps": num_leapfrog_steps, "damping": float(damping),
              "mass": mass_record(mass), "energy": energy}
    if path:
        params["quadrature"] = quadrature
    return Kernel("hmc", init, step, needs_energy=not path, params=MappingProxyType(params),
                  step_size=0.1, step_power=1.0, target_accept=0.65,
                  metropolis=True)
