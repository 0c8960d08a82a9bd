r"""Unadjusted (underdamped) HMC with partial momentum refresh — R3's "U-HMC" / "UHA".

One transition with step ``h``, ``L`` leapfrog steps, damping ``d`` and diagonal mass ``M``::

    v' = d·v + √(1 − d²) √M ⊙ ξ                       partial refresh (N(0, M) invariant)
    (x, v) ← leapfrog_L(x, v')                          no accept/reject
    momentum v is carried to the next transition (and across noise levels)

This discretises underdamped Langevin dynamics; it needs scores only and is biased at finite
``h`` (the bias shrinks as ``h → 0``). One transition costs ``L`` score evaluations: the
gradient at the end of one leapfrog step is reused by the next (the R3 code spent ``2L``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import per_chain
from .base import HamiltonianState, Info, Kernel, Target, ones_info
from .integrators import leapfrog, refresh_momentum

__all__ = ["uhmc"]


def _check(num_leapfrog_steps: int, damping: float) -> None:
    if num_leapfrog_steps < 1:
        raise ValueError(f"num_leapfrog_steps must be ≥ 1, got {num_leapfrog_steps}")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping must lie in [0, 1), got {damping}")


def init_momentum(x: Tensor, mass: Tensor | float, generator: torch.Generator | None) -> Tensor:
    """Draw ``v ~ N(0, M)``."""
    return refresh_momentum(torch.zeros_like(x), 0.0, mass, generator)


def uhmc(num_leapfrog_steps: int = 3, damping: float = 0.5, mass: Tensor | float = 1.0) -> Kernel:
    """Unadjusted HMC kernel (R3 defaults: ``L = 3``, ``d = 0.5``, ``M = I``)."""
    _check(num_leapfrog_steps, damping)
    inv_mass = 1.0 / mass

    def init(
        x: Tensor, target: Target, generator: torch.Generator | None = None
    ) -> HamiltonianState:
        return HamiltonianState(x, init_momentum(x, mass, generator), None, target.score(x))

    def step(
        state: HamiltonianState,
        target: Target,
        step_size: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> tuple[HamiltonianState, Info]:
        h = per_chain(step_size, state.x)
        v = refresh_momentum(state.momentum, damping, mass, generator)
        x, v, _, score = leapfrog(
            state.x, v, state.score, target.score, h, num_leapfrog_steps, inv_mass
        )
        return HamiltonianState(x, v, None, score), ones_info(x, score_evals=num_leapfrog_steps)

    return Kernel(name="uhmc", init=init, step=step, needs_energy=False)
