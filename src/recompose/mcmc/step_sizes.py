r"""Step sizes per noise level, and optional adaptation toward a target acceptance rate.

Rule: ``step_i = c · σ_{t_i}^p``. The width of every diffused density at level ``t`` is at
least of order ``σ_t`` (each mixture component has covariance ``α²Σ + σ²I``), so a Langevin
step (``η``, a variance: ``p = 2``) or a leapfrog step (``h``, a length: ``p = 1``) that follows
``σ_t`` keeps the proposals on the scale of the target from pure noise down to data. ``p = 0``
is a constant step (the R3 2D notebook: ULA/MALA 0.001, HMC 0.03).

Defaults: each kernel carries its own (:class:`~recompose.mcmc.base.Kernel`).

Adaptation (beyond the paper; R3 defines ``update_step_sizes`` toward 0.57 but never calls it):
after each MH step, ``log c ← log c + γ (ā − a*)`` with ``ā`` the mean acceptance probability
over chains. ``c`` is carried from level to level, so it learns the multiplier on ``σ_t^p``.
Adapting from the chains' own history makes each level's chain only approximately invariant;
with thousands of chains ``ā`` is nearly deterministic and the effect is small (measured in
``docs/results.md``). Target rates: 0.574 for MALA (Roberts & Rosenthal 1998), 0.65 for HMC
(Beskos et al. 2013).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["StepSizeRule", "AcceptanceAdapter"]

# Each kernel carries its defaults (Kernel.step_size, .step_power, .target_accept), fixed a
# priori as conservative fractions of σ_t (not tuned on any benchmark): ULA / MALA c = 0.05,
# p = 2; U-HMC / HMC c = 0.1, p = 1; MALA / HMC then adapt c toward their target acceptance.


@dataclass(frozen=True)
class StepSizeRule:
    """``step(σ) = scale · σ^power``."""

    scale: float
    power: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.power):
            raise ValueError(f"step power must be a finite number, got {self.power}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"step size must be a positive finite number, got {self.scale}")

    def __call__(self, sigma: Tensor | float) -> Tensor:
        return self.scale * torch.as_tensor(sigma, dtype=torch.float64) ** self.power


class AcceptanceAdapter:
    """Stochastic-approximation adaptation of ``log c`` toward ``target`` acceptance.

    State is a 0-d tensor on the chains' device so adapting never synchronises with the host.
    """

    def __init__(self, target: float, gain: float = 0.5,
                 device: torch.device | None = None) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target acceptance must lie in (0, 1), got {target}")
        self.target = target
        self.gain = gain
        self.log_multiplier = torch.zeros((), dtype=torch.float64, device=device)

    def multiplier(self) -> Tensor:
        """The current factor on the step size, ``exp(log_multiplier)`` (a 0-d tensor)."""
        return self.log_multiplier.exp()

    def update(self, accept_prob: Tensor) -> None:
        """One adaptation step from a kernel step's ``accept_prob`` ``(B,)``:
        ``log_multiplier ← log_multiplier + gain · (mean acceptance − target)``."""
        mean = accept_prob.to(torch.float64).mean()
        self.log_multiplier = self.log_multiplier + self.gain * (mean - self.target)
