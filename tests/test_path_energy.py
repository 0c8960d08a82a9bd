"""Score-only Metropolis tests: energy differences by quadrature of the score along the path
(recompose.mcmc.path), in MALA and HMC, against exact energies."""

import math

import pytest
import torch

import recompose as rc
from conftest import ScoreOnly
from recompose.errors import CapabilityError
from recompose.mcmc import Target, hmc, leapfrog, mala
from recompose.mcmc.path import leapfrog_trapezoid, simpson, trapezoid

A = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
B = rc.GaussianMixture([[0.0, 0.0]], 0.5, name="B")


def _polynomial(coeffs):
    """Separable energy Σ_d Σ_k c_k x_d^k and its score, float64."""
    def energy(x):
        return sum(c * x**k for k, c in enumerate(coeffs)).sum(1)
    return Target.from_energy(energy), energy


def test_trapezoid_is_exact_for_quadratics_and_simpson_for_quartics():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    quad, e_quad = _polynomial([0.0, -0.7, 1.3])
    quart, e_quart = _polynomial([0.0, 0.4, -1.0, 0.3, 0.5])
    exact = e_quad(x1) - e_quad(x0)
    torch.testing.assert_close(trapezoid(x0, x1, quad.score(x0), quad.score(x1)), exact,
                               rtol=1e-12, atol=1e-12)
    exact = e_quart(x1) - e_quart(x0)
    mid = quart.score(0.5 * (x0 + x1))
    torch.testing.assert_close(simpson(x0, x1, quart.score(x0), mid, quart.score(x1)), exact,
                               rtol=1e-12, atol=1e-12)
    # and the trapezoid rule is not exact there (the check above has power)
    assert (trapezoid(x0, x1, quart.score(x0), quart.score(x1)) - exact).abs().max() > 0.1


def test_the_leapfrog_formula_equals_the_sum_over_its_segments():
    """(h²/8)(‖s_L‖² − ‖s_0‖²)_{M⁻¹} − ΔK is the trapezoid rule summed over the leapfrog's
    segments, on a non-Gaussian target with per-chain steps and a diagonal mass."""
    target = A.at(0.2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    v = torch.randn(32, 2, generator=g, dtype=torch.float64)
    h = (0.05 + 0.2 * torch.rand(32, generator=g, dtype=torch.float64))[:, None]
    inv_mass = torch.tensor([1.0, 0.5], dtype=torch.float64)
    segments = []
    s0 = target.score(x)
    def segment(a, b, sa, sb):
        segments.append(trapezoid(a, b, sa, sb))

    _, v1, _, s1 = leapfrog(x, v, s0, target.score, h, 5, inv_mass, segment_fn=segment)
    assert len(segments) == 5
    torch.testing.assert_close(leapfrog_trapezoid(v, v1, s0, s1, h, inv_mass),
                               torch.stack(segments).sum(0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_path_mh_equals_exact_mh_on_a_gaussian(kernel):
    """For a Gaussian the trapezoid rule is exact: path and exact MH make the same decisions
    from the same random numbers, so the chains coincide (float64)."""
    gauss = rc.GaussianMixture([[0.5, -1.0]], [0.7])
    target = gauss.at(0.1)
    score_only = Target(score=target.score)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    make = mala if kernel == "mala" else hmc
    exact, path = make(), make(energy="path")
    gens = [torch.Generator().manual_seed(3) for _ in range(2)]
    states = [k.init(x, t, gn) for k, t, gn in ((exact, target, gens[0]),
                                                 (path, score_only, gens[1]))]
    rates = []
    for _ in range(20):
        (a, ia), (b, ib) = (k.step(st, t, 0.4, gn) for k, st, t, gn in zip(
            (exact, path), states, (target, score_only), gens))
        assert torch.equal(ia.accepted, ib.accepted)
        torch.testing.assert_close(ia.accept_prob, ib.accept_prob, rtol=1e-9, atol=1e-12)
        states = [a, b]
        rates.append(ia.accept_prob.mean().item())
    torch.testing.assert_close(states[0].x, states[1].x, rtol=0, atol=1e-12)
    assert 0.3 < sum(rates) / len(rates) < 0.99  # the test sees rejections


@pytest.mark.parametrize("kernel, step", [("hmc", 0.8), ("mala", 0.3)])
def test_score_only_mh_matches_exact_mh_on_the_oracle_product(kernel, step):
    """Annealed HMC / MALA on A·B from the score alone (Simpson's rule, the default) against
    the same sampler with exact energies, same seed and step sizes (no adaptation), n = 3,000:
    acceptance within 0.02 at every level, and the mass on x₁ < 0 equal within 4 paired MCSE,
    with 4 MCSE ≤ 0.01 (a gap of 0.01 would fail)."""
    n = 3000
    options = {"num_levels": 30, "seed": 5, "adapt": False, "step_size": step}
    exact = rc.sample(A * B, n, kernel, **options)
    path = rc.sample(ScoreOnly(A * B), n, kernel, energy="path", **options)
    gap = max(abs(a - b) for a, b in zip(exact.info.acceptance, path.info.acceptance))
    assert gap <= 0.02, gap
    assert 0.5 < sum(exact.info.acceptance) / 30 < 0.97  # steps large enough to reject
    d = (path.x[:, 0] < 0).double() - (exact.x[:, 0] < 0).double()
    mcse = max(d.std().item(), 1 / n) / math.sqrt(n)
    assert abs(d.mean().item()) <= 4 * mcse <= 0.01, (d.mean().item(), mcse)


def test_costs_and_records():
    """HMC's trapezoid rule costs no evaluation beyond exact HMC's scores; Simpson's (the
    default) one score per leapfrog step; MALA's trapezoid nothing, Simpson's one score per
    step."""
    so = ScoreOnly(A * B)
    options = {"num_levels": 5, "num_steps": 4, "seed": 0}
    exact = rc.sample(A * B, 10, "hmc", **options).info
    trap = rc.sample(so, 10, "hmc", energy="path", quadrature="trapezoid", **options).info
    simp = rc.sample(so, 10, "hmc", energy="path", **options).info
    assert trap.score_evals == exact.score_evals and trap.energy_evals == 0
    assert simp.score_evals == exact.score_evals + 5 * 4 * 3
    assert trap.settings["energy"] == "path" and trap.settings["metropolis"]
    assert simp.settings["quadrature"] == "simpson" and trap.settings["quadrature"] == "trapezoid"
    m_exact = rc.sample(A * B, 10, "mala", **options).info
    m_trap = rc.sample(so, 10, "mala", energy="path", quadrature="trapezoid", **options).info
    m_simp = rc.sample(so, 10, "mala", energy="path", **options).info
    assert m_trap.score_evals == m_exact.score_evals and m_trap.energy_evals == 0
    assert m_simp.score_evals == m_exact.score_evals + 5 * 4


def test_score_only_models_need_the_path_option_and_the_error_says_so():
    so = ScoreOnly(A * B)
    for kernel in ("mala", "hmc"):
        with pytest.raises(CapabilityError, match="energy='path'"):
            rc.sample(so, 4, kernel, num_levels=3)
    with pytest.raises(ValueError, match="quadrature applies only"):
        rc.sample(A * B, 4, "hmc", num_levels=3, quadrature="simpson")
    with pytest.raises(ValueError, match="energy must be"):
        rc.sample(A * B, 4, "mala", num_levels=3, energy="score")


def test_smc_moves_may_use_path_kernels():
    """SMC's weights need energies, its moves need not: path-MH moves on an energy model."""
    r = rc.sample(A * B, 64, "smc", num_levels=10, seed=0, moves=hmc(energy="path"))
    assert torch.isfinite(r.x).all() and r.info.settings["moves"] == "hmc"
