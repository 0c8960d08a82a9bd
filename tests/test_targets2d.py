"""The exact composed 2D targets: normalised, and their samplers agree with their densities."""

import pytest
import torch

from recompose.data.targets2d import TARGETS


@pytest.mark.parametrize("name", list(TARGETS))
def test_targets_are_normalised_and_sampled_exactly(name):
    target = TARGETS[name]()
    h = 2.2 / 880
    ax = -1.1 + h * (torch.arange(880, dtype=torch.float64) + 0.5)
    xx = torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)
    p = target.log_prob(xx).exp()
    assert float(p.sum() * h * h) == pytest.approx(1.0, abs=2e-3)
    # sampler vs density: the mass of the support region, from both
    x = target.sample(40000, torch.Generator().manual_seed(0))
    from_samples = float(target.in_support(x).double().mean())
    from_density = float((p * target.in_support(xx)).sum() * h * h)
    se = (from_density * (1 - from_density) / 40000) ** 0.5
    assert abs(from_samples - from_density) < 4 * se + 2e-3


def test_product_exact_draws_match_the_reference_floor():
    target = TARGETS["product"]()
    x = target.sample(20000, torch.Generator().manual_seed(1))
    assert float(target.log_prob(x).mean()) == pytest.approx(3.45, abs=0.05)
