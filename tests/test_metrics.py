"""Metrics against closed forms and hand-computed cases."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from recompose.metrics import (
    energy_distance,
    frechet_distance,
    mean_pairwise_distance,
    wasserstein2,
)


def _frechet_scipy(a, b):
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}), with scipy's sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    r1 = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross.real))


def _anisotropic(n, dim, seed, scale):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim)) * scale
    return rng.normal(size=(n, dim)) @ mix + rng.normal(size=dim)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_frechet_matches_the_closed_form(dim):
    a = _anisotropic(200, dim, 0, 1.0)
    b = _anisotropic(150, dim, 1, 0.5) + 0.5
    expected = _frechet_scipy(a, b)
    assert expected > 0.1
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected,
                                                                               rel=1e-9)


def test_frechet_is_symmetric_and_zero_on_identical_sets():
    a = _anisotropic(100, 4, 2, 1.0)
    b = _anisotropic(80, 4, 3, 2.0)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)
    assert abs(frechet_distance(a, a)) < 1e-10
    assert abs(frechet_distance(b, b)) < 1e-10
    # images (N, C, H, W) are flattened to feature vectors
    x = torch.tensor(a[:, :4]).reshape(100, 1, 2, 2)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_frechet_of_shifted_copy_is_the_squared_shift():
    a = _anisotropic(50, 3, 4, 1.0)
    shift = np.array([0.5, -1.0, 2.0])
    assert frechet_distance(a, a + shift) == pytest.approx((shift**2).sum(), rel=1e-9)


def test_w2_on_an_obvious_matching():
    """Squared costs 1, 4, 9 under the obvious matching (a permutation of y):
    W2 = sqrt((1 + 4 + 9)/3), not the mean distance 2 nor sqrt of the sum."""
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.tensor([[0.0, 13.0], [1.0, 0.0], [10.0, 2.0]])
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(14 / 3), rel=1e-12)
    assert wasserstein2(y, x) == pytest.approx(math.sqrt(14 / 3), rel=1e-12)
    assert wasserstein2(x, x[[2, 0, 1]]) == 0.0
    # the same measure with every point twice
    assert wasserstein2(x, y.repeat(2, 1)) == pytest.approx(math.sqrt(14 / 3), rel=1e-12)


def test_w2_between_unequal_sizes_is_the_quantile_coupling():
    """1D, {0, 3} (mass 1/2 each) vs {0, 1, 2} (1/3 each): the monotone coupling moves
    1/3 by 0, 1/6 by 1, 1/6 by 2, 1/3 by 1, so W2² = (0 + 1/6 + 4/6 + 2/6) = 7/6."""
    x = torch.tensor([[3.0], [0.0]])
    y = torch.tensor([[0.0], [2.0], [1.0]])
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(7 / 6), rel=1e-12)
    with pytest.raises(ValueError):
        wasserstein2(x, torch.zeros(3, 2))


def test_energy_distance_by_hand():
    """x = {(0,0), (1,0)}, y = {(0,1), (1,1)}: E‖X−Y‖ = (1 + √2)/2, and the V-statistic
    E‖X−X'‖ = E‖Y−Y'‖ = 1/2 (the zero diagonal counts), so D² = 1 + √2 − 1 = √2."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert energy_distance(x, y) == pytest.approx(math.sqrt(2), rel=1e-12)
    assert energy_distance(y, x) == pytest.approx(math.sqrt(2), rel=1e-12)
    assert energy_distance(x, x) == 0.0
    # unequal sizes, 1D: x = {0}, y = {1, 3}: 2·2 − 0 − (0 + 2 + 2 + 0)/4 = 3
    assert energy_distance(torch.tensor([[0.0]]), torch.tensor([[1.0], [3.0]])) == 3.0


def test_mean_pairwise_distance_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # sides 3, 4, 5
    assert mean_pairwise_distance(x) == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(ValueError):
        mean_pairwise_distance(x[:1])
