r"""Unadjusted (underdamped) HMC with partial momentum refresh — R3's "U-HMC" / "UHA".

One transition with step ``h``, ``L`` leapfrog steps, damping ``d`` and diagonal mass ``M``::

    v' = d·v + √(1 − d²) √M ⊙ ξ                       partial refresh (N(0, M) invariant)
    (x, v) ← leapfrog_L(x, v')                          no accept/reject

``d`` (``damping``) is the fraction of momentum kept (:mod:`.mass`). This discretises
underdamped Langevin dynamics; it needs scores only and is biased at finite ``h`` (the bias
shrinks as ``h → 0``). One transition costs ``L`` score evaluations: the gradient at the end of
one leapfrog step is reused by the next (the R3 code spent ``2L``).

Across noise levels the momentum is carried (R3 notebook): ``init(x, target, generator,
previous)`` takes ``previous.momentum``. ``init`` draws a fresh ``v ~ N(0, M)`` in every case
and discards it when a momentum is carried, so the random stream, hence every seeded result, is
the same as in earlier versions. A transition is divergent where its end point is not finite.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import Tensor

from ..utils import per_chain
from .base import HamiltonianState, Info, Kernel, Target, ones_info
from .integrators import check_num_leapfrog_steps, leapfrog
from .mass import check_damping, inverse_mass, level_momentum, mass_record, refresh_momentum

__all__ = ["uhmc"]


def uhmc(num_leapfrog_steps: int = 3, damping: float = 0.5, mass: Tensor | float = 1.0) -> Kernel:
    """Unadjusted HMC kernel (R3 defaults: ``L = 3``, ``d = 0.5``, ``M = I``).

    Args:
        num_leapfrog_steps: leapfrog steps ``L`` per transition (≥ 1).
        damping: fraction ``d ∈ [0, 1)`` of the momentum kept at each refresh.
        mass: diagonal mass ``M``, a positive float or tensor broadcastable to one event.
    """
    check_num_leapfrog_steps(num_leapfrog_steps)
    check_damping(damping)
    inv_mass = inverse_mass(mass)

    def init(x: Tensor, target: Target, generator: torch.Generator | None = None,
             previous: HamiltonianState | None = None) -> HamiltonianState:
        momentum = level_momentum(x, mass, generator, previous)
        return HamiltonianState(x, momentum, None, target.score(x))

    def step(state: HamiltonianState, target: Target, step_size: Tensor | float,
             generator: torch.Generator | None = None) -> tuple[HamiltonianState, Info]:
        h = per_chain(step_size, state.x)
        v = refresh_momentum(state.momentum, damping, mass, generator)
        x, v, _, score = leapfrog(state.x, v, state.score, target.score, h, num_leapfrog_steps,
                                  inv_mass)
        info = ones_info(x, score, score_evals=num_leapfrog_steps)
        return HamiltonianState(x, v, None, score), info

    params = {"num_leapfrog_steps": num_leapfrog_steps, "damping": float(damping),
              "mass": mass_record(mass)}
    return Kernel("uhmc", init, step, needs_energy=False, params=MappingProxyType(params),
                  step_size=0.1, step_power=1.0)

