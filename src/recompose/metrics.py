r"""Sample-quality metrics against a target (shapes: samples ``(N, *D)``, flattened to ``(N, D)``).

* :func:`energy_distance` (Székely & Rizzo 2013), the V-statistic
  ``D² = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖`` (≥ 0, zero iff equal laws); returns ``D²``.
* :func:`wasserstein2` — exact empirical 2-Wasserstein distance between two equal-size point
  sets by linear assignment on squared distances (scipy's ``linear_sum_assignment``),
  ``W2 = sqrt(mean ‖x_i − y_π(i)‖²)``. Cost ``O(N³)``: keep ``N ≤ ~3000``.
* :func:`mean_log_prob` — mean exact log-density of the samples under a target with a
  ``log_prob`` method.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["energy_distance", "wasserstein2", "mean_log_prob"]


def _flat(x: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x.reshape(x.shape[0], -1).cpu()


def energy_distance(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Squared energy distance ``D²(x, y)`` (V-statistic)."""
    x, y = _flat(x), _flat(y)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def wasserstein2(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Exact empirical W2 between equal-size point sets."""
    x, y = _flat(x), _flat(y)
    if x.shape != y.shape:
        raise ValueError(f"W2 needs equal-size sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    cost = (torch.cdist(x, y) ** 2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def mean_log_prob(samples: Tensor, target: object) -> float:
    """Mean of ``target.log_prob(samples)`` (exact log-density of the target)."""
    return float(target.log_prob(samples).to(torch.float64).mean())
