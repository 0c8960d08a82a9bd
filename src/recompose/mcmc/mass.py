r"""The mass matrix of Hamiltonian kernels: momentum draws, partial refresh, kinetic energy.

With a diagonal mass ``M`` (a float, or a tensor broadcastable to one event ``D``), the momentum
``v`` has the Gaussian law ``N(0, M)`` and the Hamiltonian is ``H(x, v) = E(x) + K(v)`` with::

    K(v) = ½ vᵀ M⁻¹ v                        kinetic energy, per chain, shape (B,)
    v ~ N(0, M):  v = √M ⊙ ξ,  ξ ~ N(0, I)   momentum draw
    v' = d·v + √(1 − d²) √M ⊙ ξ              partial refresh (Horowitz 1991); N(0, M) invariant

``d`` (``damping``) is the **fraction of momentum kept**: ``d = 0`` is a full refresh
(standard HMC), ``d → 1`` keeps the trajectory going (underdamped Langevin). The leapfrog
integrator only receives ``M⁻¹`` (blackjax's ``metrics.py``; :mod:`recompose.metrics` is
sample quality).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import batch_sum

__all__ = ["inverse_mass", "check_damping", "sample_momentum", "level_momentum",
           "refresh_momentum", "kinetic_energy", "mass_record"]


def inverse_mass(mass: Tensor | float) -> Tensor | float:
    """``M⁻¹`` for a diagonal mass; refuses non-positive entries."""
    if not bool(torch.all(torch.as_tensor(mass) > 0)):
        raise ValueError(f"mass must be positive, got {mass}")
    return 1.0 / mass


def check_damping(damping: float) -> float:
    """Refuse a damping outside ``[0, 1)`` (``d = 1`` would never refresh the momentum)."""
    if isinstance(damping, bool) or not 0.0 <= damping < 1.0:
        raise ValueError(f"damping (the fraction of momentum kept) must lie in [0, 1), "
                         f"got {damping!r}")
    return float(damping)


def sample_momentum(x: Tensor, mass: Tensor | float,
                    generator: torch.Generator | None = None) -> Tensor:
    """Draw ``v ~ N(0, M)`` with the shape, dtype and device of ``x`` (one ``randn`` call)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.sqrt(torch.as_tensor(mass)) * noise


def level_momentum(x: Tensor, mass: Tensor | float, generator: torch.Generator | None,
                   previous: object | None) -> Tensor:
    """The momentum a Hamiltonian kernel starts a level with: the previous level's (carried
    across levels, as in the R3 notebook) or, at the first level, a draw from ``N(0, M)``. The
    draw is made either way, so the random stream does not depend on ``previous``."""
    momentum = sample_momentum(x, mass, generator)
    return momentum if previous is None else previous.momentum


def refresh_momentum(v: Tensor, damping: float, mass: Tensor | float,
                     generator: torch.Generator | None = None) -> Tensor:
    r"""Partial refresh ``v' = d·v + √(1 − d²)·√M ⊙ ξ``; ``d = damping`` is the fraction kept."""
    noise = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    return damping * v + math.sqrt(1.0 - damping**2) * torch.sqrt(torch.as_tensor(mass)) * noise


def kinetic_energy(v: Tensor, inv_mass: Tensor | float) -> Tensor:
    """``½ vᵀ M⁻¹ v`` per chain, in float64, shape ``(B,)``."""
    return 0.5 * batch_sum((v.to(torch.float64) ** 2) * inv_mass)


def mass_record(mass: Tensor | float) -> float | list:
    """The mass as a JSON-ready value for a kernel's ``params`` (the run record)."""
    return mass.tolist() if torch.is_tensor(mass) else float(mass)
