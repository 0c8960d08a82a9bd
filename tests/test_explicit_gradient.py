"""The hand-derived ``(U, ∇ₓU)`` of residual-MLP energies equals autograd's, eager and compiled."""

import pytest
import torch

import recompose as rc
from conftest import randomise
from recompose.errors import CapabilityError
from recompose.models.explicit_gradient import resmlp_potential_and_gradient
from recompose.models.networks import ResMLP
from recompose.models.parameterization import EnergyModel
from recompose.utils import as_time, energy_and_score_autograd


@pytest.mark.parametrize("form", ["ae", "l2"])
@pytest.mark.parametrize("dim, width, widen, classes, blocks", [
    (2, 16, 1, 0, 3),    # D < width: the last block folds into the output layer
    (3, 8, 2, 4, 3),     # conditional, inner width 16
    (12, 8, 1, 0, 3),    # D > width: no fold
    (2, 16, 1, 0, 0),    # no blocks: nothing to fold
])
@pytest.mark.parametrize("shared", [True, False])
def test_explicit_gradient_equals_autograd(form, dim, width, widen, classes, blocks, shared):
    net = randomise(ResMLP(dim, width=width, num_blocks=blocks, emb_dim=8, widen=widen,
                           num_classes=classes).double(), seed=dim)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(7, dim, generator=gen, dtype=torch.float64)
    t = as_time(0.4, 7, x) if shared else torch.rand(7, generator=gen, dtype=torch.float64)
    c = torch.arange(7) % (classes + 1) if classes else None  # label `classes` is the null one
    model = EnergyModel(net, rc.CosineSchedule(), (dim,), form=form)
    u, grad = resmlp_potential_and_gradient(net, form, x, t, c)
    u_ref, minus_grad = energy_and_score_autograd(lambda z: model.potential(z, t, c), x)
    torch.testing.assert_close(u, u_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, -minus_grad, rtol=1e-10, atol=1e-10)


def test_compiled_gradient_matches_the_autograd_path_on_the_shipped_ring():
    """float32, the shipped 2D energy: the compiled path changes values only by rounding."""
    ref = rc.pretrained("ring", parameterization="energy")
    fast = rc.pretrained("ring", parameterization="energy").compile_gradient()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    for t in (0.05, 0.6):
        e_ref, s_ref = ref.energy_and_score(x, t)
        e, s = fast.energy_and_score(x, t)
        torch.testing.assert_close(e, e_ref, rtol=1e-5, atol=1e-5 * float(e_ref.abs().max()))
        torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5 * float(s_ref.abs().max()))
    assert sorted(fast.state_dict()) == sorted(ref.state_dict())  # nothing new to save


def test_compile_gradient_refuses_networks_it_was_not_written_for():
    with pytest.raises(CapabilityError, match="residual MLP"):
        rc.pretrained("clevr", parameterization="energy").compile_gradient()
