r"""Leapfrog (velocity Verlet) integration of Hamiltonian dynamics.

For ``H(x, v) = E(x) + ½ vᵀ M⁻¹ v`` with diagonal mass ``M`` and score ``s = −∇E``, one
leapfrog step of size ``h`` is (Neal 2011, "MCMC using Hamiltonian dynamics", eq. 5.18–5.20)::

    v ← v + (h/2) s(x)
    x ← x + h M⁻¹ v
    v ← v + (h/2) s(x)

The scores at the end of one step are the scores at the start of the next, so ``L`` steps cost
``L`` new score evaluations (the start score is cached in the kernel state). The map is
volume-preserving and time-reversible; its energy error over a fixed time is ``O(h²)``.
The mass matrix itself (momentum draws, kinetic energy) lives in :mod:`.mass`; the
integrator only needs ``M⁻¹``. Every update creates new tensors: the R3 PyTorch code updated
``x``/``v`` in place, so its acceptance test compared a tensor with itself and lost the kinetic
energy.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._types import ScoreFn

__all__ = ["leapfrog", "check_num_leapfrog_steps"]


def check_num_leapfrog_steps(num_leapfrog_steps: int) -> int:
    """Refuse a leapfrog count that is not an integer ≥ 1."""
    if isinstance(num_leapfrog_steps, bool) or not isinstance(num_leapfrog_steps, int) \
            or num_leapfrog_steps < 1:
        raise ValueError(f"num_leapfrog_steps must be an integer ≥ 1, got {num_leapfrog_steps!r}")
    return num_leapfrog_steps


def leapfrog(
    x: Tensor, v: Tensor, score: Tensor, score_fn: ScoreFn, step_size: Tensor | float,
    num_leapfrog_steps: int, inv_mass: Tensor | float = 1.0,
    final_fn: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    segment_fn: Callable[[Tensor, Tensor, Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Run ``num_leapfrog_steps`` leapfrog steps from ``(x, v)`` whose score is ``score``.

    ``step_size`` is a float or a tensor broadcastable to ``x`` (use ``append_dims`` for
    per-chain sizes). ``final_fn`` (optional) returns ``(energy, score)`` and is used at the last
    position instead of ``score_fn``, so an MH kernel gets the final energy from the same call.
    ``segment_fn`` (optional) sees each position update ``(x_k, x_{k+1}, s_k, s_{k+1})`` (path
    quadrature of the energy, :mod:`.path`).

    Returns ``(x_L, v_L, energy_L or None, score_L)``; the inputs are untouched.
    """
    check_num_leapfrog_steps(num_leapfrog_steps)
    energy = None
    for i in range(num_leapfrog_steps):
        v = v + 0.5 * step_size * score
        x_old, score_old = x, score
        x = x + step_size * inv_mass * v
        if final_fn is not None and i == num_leapfrog_steps - 1:
            energy, score = final_fn(x)
        else:
            score = score_fn(x)
        if segment_fn is not None:
            segment_fn(x_old, x, score_old, score)
        v = v + 0.5 * step_size * score
    return x, v, energy, score

