"""The hand-derived ResMLP energy gradient (models/fast_gradient.py) equals autograd's."""

import pytest
import torch

import recompose as rc
from recompose.models import fast_gradient
from recompose.models.networks import ResMLP
from recompose.models.parameterization import EnergyModel
from recompose.schedules import CosineSchedule
from recompose.utils import energy_and_score_autograd


def autograd_path(model, x, t, c=None):
    return energy_and_score_autograd(lambda z: model.energy(z, t, c), x)


def random_net(**kw):
    torch.manual_seed(0)
    net = ResMLP(**kw).double()
    for p in net.parameters():  # the zero-initialised layers would hide bugs
        torch.nn.init.normal_(p, std=0.3)
    return net


@pytest.mark.parametrize("form", ["ae", "l2"])
@pytest.mark.parametrize("per_row_t", [False, True])
def test_fast_gradient_equals_autograd(form, per_row_t):
    model = EnergyModel(random_net(dim=2, width=16, num_blocks=3), CosineSchedule(), (2,),
                        form=form)
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.rand(50, dtype=torch.float64) * 0.9 + 0.05 if per_row_t else 0.37
    fast = model.energy_and_score(x, t)
    slow = autograd_path(model, x, t)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-10, atol=1e-10)


def test_fast_gradient_conditional_and_images():
    net = random_net(dim=64, width=16, num_blocks=2, num_classes=10)
    model = EnergyModel(net, CosineSchedule(), (1, 8, 8))
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    for c in (None, torch.arange(12) % 10, torch.full((12,), 3)):
        fast = model.energy_and_score(x, 0.5, c)
        slow = autograd_path(model, x, 0.5, c)
        torch.testing.assert_close(fast[1], slow[1], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fast[0], slow[0], rtol=1e-12, atol=1e-12)


def test_shipped_model_uses_it_and_matches_in_float32():
    model = rc.pretrained("ring")
    assert fast_gradient.supports(model.net)
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    fast = model.energy_and_score(x, 0.2)
    slow = autograd_path(model, x, 0.2)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-5, atol=1e-5)
