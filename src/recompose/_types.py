"""Conventions shared by every module.

Signs and shapes, fixed once for the whole library:

* ``x`` has shape ``(B, *D)``: ``(B, 2)`` for 2D points, ``(B, C, H, W)`` for images.
* ``t`` is continuous in ``[0, 1]``; a tensor of shape ``()`` or ``(B,)`` (or a float).
* Energy ``E(x, t)`` has shape ``(B,)`` and ``p_t(x) ∝ exp(-E(x, t))``: it is the negative
  log-density of the time-``t`` marginal, up to a constant ``c(t)`` (exact for analytic models).
* Score ``s(x, t) = ∇ₓ log p_t(x) = -∇ₓ E(x, t)`` has the shape of ``x``.
* Noise prediction relates by ``s = -ε / σ_t`` and Tweedie gives ``x̂₀ = (x + σ_t² s) / α_t``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = ["EnergyFn", "ScoreFn", "EnergyScoreFn"]

ScoreFn = Callable[[Tensor], Tensor]
EnergyFn = Callable[[Tensor], Tensor]
EnergyScoreFn = Callable[[Tensor], tuple[Tensor, Tensor]]
