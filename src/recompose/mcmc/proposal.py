r"""The Metropolis–Hastings accept/reject step, shared by every corrected kernel.

Given ``log r = log π(x')q(x|x') − log π(x)q(x'|x)`` per chain (shape ``(B,)``), accept with
probability ``min(1, r)``: draw **one uniform per chain** (never one coin for the batch, a bug
of the R3 PyTorch code) and keep each chain's own decision. Log-ratios are handled in float64;
a NaN log-ratio is a rejection, so a diverging proposal never enters the state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import append_dims

__all__ = ["metropolis_hastings", "select"]


def metropolis_hastings(log_ratio: Tensor, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor]:
    """Per-chain MH decision. Returns ``(accepted (B,) bool, accept_prob (B,) float64)``."""
    log_ratio = torch.nan_to_num(log_ratio.to(torch.float64), nan=-torch.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    u = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device,
                   dtype=torch.float64)
    accepted = torch.log(u) < log_ratio
    return accepted, accept_prob


def select(accepted: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Row-wise choice: ``new[b]`` where ``accepted[b]`` else ``old[b]``; any shape ``(B, …)``."""
    return torch.where(append_dims(accepted, new.ndim), new, old)
