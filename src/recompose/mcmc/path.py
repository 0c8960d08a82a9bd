r"""Energy differences from scores alone: quadrature of the score along the proposal path
(Sjöberg et al. 2023, "MCMC-correction of score-based diffusion models for model composition").

A score model gives ``s = −∇E`` but not ``E``. Along any path ``γ`` from ``x`` to ``x'``::

    E(x') − E(x) = −∫₀¹ s(γ(u)) · γ'(u) du

so a Metropolis–Hastings test needs only scores on the path. On the straight segment
``γ(u) = x + u·d``, ``d = x' − x``:

    trapezoid:  ΔE ≈ −½ (s(x) + s(x')) · d                          (no extra evaluation)
    Simpson:    ΔE ≈ −⅙ (s(x) + 4 s(x + d/2) + s(x')) · d           (one at the midpoint)

The integrand ``s(γ(u))·d`` is a polynomial of degree ``k − 1`` for an energy polynomial of
degree ``k``: the trapezoid rule is exact for quadratic energies (Gaussians), Simpson's for
energies up to quartic. Otherwise the error per segment is ``O(‖d‖³)`` (trapezoid) or
``O(‖d‖⁵)`` (Simpson), times the energy's third (fifth) derivatives. Both estimates change
sign when the segment is reversed, so the corrected chain is reversible for the estimated
energy differences; it is exact where the quadrature is, and slightly biased elsewhere (MH
then targets a nearby density; the bias vanishes as the step size does).

**Leapfrog trajectories.** HMC's trajectory is piecewise linear, ``x_{k+1} = x_k + h M⁻¹
v_{k+½}``, and the score is known at every node, so the trapezoid rule on each segment costs no
evaluation. Summed with the kinetic energy, the estimated Hamiltonian error telescopes: with
``v_{k+½} = v_k + (h/2) s_k`` and ``v_{k+1} = v_{k+½} + (h/2) s_{k+1}``,

    ΔE_k = −½ (s_k + s_{k+1})ᵀ h M⁻¹ v_{k+½}
    ΔK_k = ½ (v_{k+1} + v_k)ᵀ M⁻¹ (v_{k+1} − v_k) = −ΔE_k + (h²/8)(‖s_{k+1}‖² − ‖s_k‖²)_{M⁻¹}

so ``ΔH ≈ (h²/8)(‖s_L‖²_{M⁻¹} − ‖s_0‖²_{M⁻¹})`` over the ``L`` steps: the end scores suffice.
:func:`leapfrog_trapezoid` returns the energy part ``ΔE = ΔH − ΔK``. MALA is one leapfrog step
with ``h² = 2η`` and gives the same formula with ``η/4``.

Shapes: ``x``, ``s``, ``d`` ``(B, *D)``; step sizes ``(B, 1, …)`` (per chain) or floats;
results ``(B,)`` in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import batch_sum
from .mass import kinetic_energy

__all__ = ["ENERGY_MODES", "QUADRATURES", "trapezoid", "simpson", "leapfrog_trapezoid",
           "check_energy_mode", "check_quadrature"]

ENERGY_MODES = ("exact", "path")  # energies from the model, or score quadrature on the path
QUADRATURES = ("trapezoid", "simpson")


def check_energy_mode(energy: str, kernel: str) -> str:
    """``energy`` if it is one of :data:`ENERGY_MODES` (``"exact"``, ``"path"``), else a
    ``ValueError`` naming ``kernel``."""
    if energy not in ENERGY_MODES:
        raise ValueError(f"{kernel}: energy must be 'exact' (the model's energies) or 'path' "
                         f"(score quadrature along the proposal), got {energy!r}")
    return energy


def check_quadrature(quadrature: str | None, path: bool, kernel: str) -> str | None:
    """The rule a kernel uses: Simpson's by default with ``energy="path"`` (the trapezoid
    rule's bias on non-Gaussian targets is several times larger: docs/results.md §8), none
    with exact energies."""
    if quadrature is None:
        return "simpson" if path else None
    if not path:
        raise ValueError(f"{kernel}: quadrature applies only with energy='path'")
    if quadrature not in QUADRATURES:
        raise ValueError(f"{kernel}: quadrature must be one of {', '.join(QUADRATURES)}, got "
                         f"{quadrature!r}")
    return quadrature


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return batch_sum(a.to(torch.float64) * b.to(torch.float64))


def trapezoid(x0: Tensor, x1: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """``E(x1) − E(x0) ≈ −½ (s0 + s1)·(x1 − x0)`` per chain."""
    return -0.5 * _dot(s0 + s1, x1 - x0)


def simpson(x0: Tensor, x1: Tensor, s0: Tensor, s_mid: Tensor, s1: Tensor) -> Tensor:
    """``E(x1) − E(x0) ≈ −⅙ (s0 + 4 s_mid + s1)·(x1 − x0)``; ``s_mid`` at ``(x0 + x1)/2``."""
    return -_dot(s0 + 4 * s_mid + s1, x1 - x0) / 6


def leapfrog_trapezoid(v0: Tensor, v1: Tensor, s0: Tensor, s1: Tensor, step_size: Tensor | float,
                       inv_mass: Tensor | float = 1.0) -> Tensor:
    """Trapezoid estimate of ``E(x_L) − E(x_0)`` along a leapfrog trajectory from its end
    momenta and scores (module docstring):
    ``(h²/8)(‖s_L‖² − ‖s_0‖²)_{M⁻¹} − (K(v_L) − K(v_0))``."""
    h = torch.as_tensor(step_size, dtype=torch.float64, device=v0.device)
    h2 = (h**2).reshape(1) if h.ndim == 0 else (h**2).reshape(h.shape[0], -1)[:, 0]
    ds = kinetic_energy(s1, inv_mass) - kinetic_energy(s0, inv_mass)  # ½(‖s_L‖² − ‖s_0‖²)
    return h2 / 4 * ds - (kinetic_energy(v1, inv_mass) - kinetic_energy(v0, inv_mass))
