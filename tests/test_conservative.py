"""The Jacobian-asymmetry test of whether a field is a gradient (recompose.conservative)."""

import pytest
import torch

import recompose as rc
from recompose.conservative import (
    asymmetry_ratio,
    asymmetry_terms,
    jacobian_asymmetry,
    score_field,
)
from recompose.data import get_dataset
from recompose.models.loading import pretrained


def _linear_field(dim: int, seed: int, scale_anti: float):
    """F(x) = (S + A) x with known ‖A‖²/‖S‖², float64."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    s, a = s + s.T, scale_anti * (a - a.T)
    return (lambda x: x @ (s + a).T), float((a ** 2).sum() / (s ** 2).sum()), s + a


def test_the_probe_products_are_the_jacobians_bilinear_forms():
    """The per-row sums equal (uᵀJv ∓ vᵀJu)² computed with J itself, same probes."""
    field, _, jac = _linear_field(5, 0, 0.4)
    x = torch.randn(7, 5, dtype=torch.float64)
    anti, sym = asymmetry_terms(field, x, torch.Generator().manual_seed(3), probes=2)
    g = torch.Generator().manual_seed(3)
    want_anti = want_sym = 0
    for _ in range(2):
        u, v = (torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(2))
        ujv, vju = (u * (v @ jac.T)).sum(1), (v * (u @ jac.T)).sum(1)
        want_anti, want_sym = want_anti + (ujv - vju) ** 2, want_sym + (ujv + vju) ** 2
    torch.testing.assert_close(anti, want_anti, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sym, want_sym, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale_anti", [0.1, 0.5, 1.0])
def test_the_estimate_finds_the_known_ratio_within_its_standard_error(scale_anti):
    field, exact, _ = _linear_field(6, 1, scale_anti)
    x = torch.randn(400, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    anti, sym = asymmetry_terms(field, x, torch.Generator().manual_seed(1), probes=4)
    rho = float(anti.sum() / sym.sum())
    n = len(anti)
    se = float(((anti - rho * sym) ** 2).sum().sqrt() * (n / (n - 1)) ** 0.5 / sym.sum())
    assert abs(rho - exact) < 4 * se, (rho, exact, se)
    assert rho == pytest.approx(jacobian_asymmetry(field, x, torch.Generator().manual_seed(1),
                                                   probes=4))
    assert asymmetry_ratio(anti, sym) == pytest.approx((rho, se))


def test_gradient_fields_have_no_asymmetry_and_score_networks_some():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    mix = rc.GaussianMixture([[-1.0, 0.0], [1.5, 0.5]], [0.3, 0.6])
    assert jacobian_asymmetry(score_field(mix, 0.2), x.double(), probes=2) < 1e-12
    for name in ("ring", "bar"):
        energy = jacobian_asymmetry(score_field(pretrained(name, "energy"), 0.3), x,
                                    torch.Generator().manual_seed(1), probes=2)
        score = jacobian_asymmetry(score_field(pretrained(name, "score"), 0.3), x,
                                   torch.Generator().manual_seed(1), probes=2)
        assert energy < 1e-10 and score > 1e-6, (name, energy, score)  # roundoff vs learned


def test_the_condition_contrast_of_a_model_is_measured_as_a_model():
    """``m.given(c) / m`` has score s(c) − s(∅): a gradient for the energy model, not for the
    score teacher, whose contrast is much less of a gradient than either of its views."""
    x0, labels = get_dataset("digits").sample(32, torch.Generator().manual_seed(0))
    teacher, energy = pretrained("digits-cond", "score"), pretrained("digits-cond", "energy")
    alpha, sigma = teacher.schedule(torch.tensor(0.3))
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    rho = {name: jacobian_asymmetry(score_field(m, 0.3), xt, torch.Generator().manual_seed(2),
                                    probes=2)
           for name, m in [("energy", energy.given(labels) / energy),
                           ("null", teacher), ("contrast", teacher.given(labels) / teacher)]}
    assert rho["energy"] < 1e-8
    assert rho["contrast"] > 5 * rho["null"] > 0, rho


def test_bad_fields_are_refused_in_one_line():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="no graph to x.*score_field"):
        jacobian_asymmetry(lambda z: z.detach() * 2, x)
    with pytest.raises(ValueError, match="shape of x"):
        jacobian_asymmetry(lambda z: z.sum(1), x)
    with pytest.raises(ValueError, match="probes must be"):
        jacobian_asymmetry(lambda z: 2 * z, x, probes=0)
    with pytest.raises(ValueError, match="Jacobian is zero"):
        jacobian_asymmetry(lambda z: 0 * z + 1, x)


def test_score_field_of_an_energy_model_works_without_grad_on_x():
    model = pretrained("ring", "energy")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        s = score_field(model, 0.4)(x)
    torch.testing.assert_close(s, model.score(x, 0.4), rtol=1e-5, atol=1e-6)
