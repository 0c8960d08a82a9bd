r"""Sample-quality metrics against a target (shapes: samples ``(N, *D)``, flattened to ``(N, D)``).

* :func:`energy_distance` (Székely & Rizzo 2013), the V-statistic
  ``D² = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖`` (≥ 0, zero iff equal laws); returns ``D²``.
* :func:`wasserstein2` — exact empirical 2-Wasserstein distance between two point sets by
  linear assignment on squared distances (scipy's ``linear_sum_assignment``),
  ``W2 = sqrt(mean ‖x_i − y_π(i)‖²)``. Cost ``O(N³)``: keep ``N ≤ ~3000``.
* :func:`frechet_distance` — FID's formula on any feature vectors (Gaussian fits).
* :func:`mean_pairwise_distance` — mean distance between samples (diversity).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["energy_distance", "wasserstein2", "frechet_distance", "mean_pairwise_distance"]


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
    """Exact W2 between the uniform empirical measures on ``x`` (n points) and ``y`` (m).

    When ``n ≠ m`` each set is repeated up to ``lcm(n, m)`` points (≤ 6000): the optimal
    transport between uniform measures then has an optimal plan that is an assignment
    (Birkhoff), so this is exact, e.g. 1,000 samples against 2,000 target points.
    """
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError("W2 needs point sets of the same dimension")
    n = math.lcm(x.shape[0], y.shape[0])
    if n > 6000:
        raise ValueError(f"W2 by assignment needs lcm(n, m) ≤ 6000, got {n}")
    x = x.repeat_interleave(n // x.shape[0], 0)
    y = y.repeat_interleave(n // y.shape[0], 0)
    cost = (torch.cdist(x, y) ** 2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature sets ``(N, F)``, ``(M, F)``:
    ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` (as FID, in float64,
    with the matrix square roots from symmetric eigendecompositions)."""
    a, b = _flat(a).double(), _flat(b).double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 points per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def mean_pairwise_distance(x: Tensor | np.ndarray) -> float:
    """Mean Euclidean distance between distinct pairs of rows (a diversity measure)."""
    x = _flat(x).double()
    n = x.shape[0]
    if n < 2:
        raise ValueError("diversity needs at least 2 samples")
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))
