import math

import pytest
import torch

from recompose.mcmc import kinetic_energy, leapfrog, refresh_momentum, sample_momentum
from recompose.mcmc.mass import inverse_mass


def _gauss_score(x):  # N(0, I): E = ½|x|², s = −x
    return -x


def test_harmonic_oscillator_matches_analytic_trajectory():
    x0, v0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]],
                                                                           dtype=torch.float64)
    h, n = 1e-3, 1000  # integrate to time 1
    x, v, _, _ = leapfrog(x0, v0, _gauss_score(x0), _gauss_score, h, n)
    tt = h * n
    exact_x = x0 * math.cos(tt) + v0 * math.sin(tt)
    exact_v = -x0 * math.sin(tt) + v0 * math.cos(tt)
    torch.testing.assert_close(x, exact_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(v, exact_v, atol=1e-6, rtol=0)


def test_energy_error_scales_as_h_squared():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(500, 2, generator=g, dtype=torch.float64)
    v0 = torch.randn(500, 2, generator=g, dtype=torch.float64)

    def max_error(h):
        x, v, _, _ = leapfrog(x0, v0, _gauss_score(x0), _gauss_score, h, round(1.0 / h))
        h0 = 0.5 * (x0**2).sum(1) + kinetic_energy(v0, 1.0)
        h1 = 0.5 * (x**2).sum(1) + kinetic_energy(v, 1.0)
        return float((h1 - h0).abs().max())

    ratio = max_error(0.1) / max_error(0.05)
    assert 3.5 < ratio < 4.5, ratio  # halving h quarters the error


def test_reversible_and_does_not_mutate_inputs():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(10, 2, generator=g, dtype=torch.float64)
    v0 = torch.randn(10, 2, generator=g, dtype=torch.float64)
    xc, vc = x0.clone(), v0.clone()
    s0 = _gauss_score(x0)
    x1, v1, _, s1 = leapfrog(x0, v0, s0, _gauss_score, 0.3, 5)
    assert torch.equal(x0, xc) and torch.equal(v0, vc)  # the R3 code aliased these
    assert x1 is not x0 and v1 is not v0
    x2, v2, _, _ = leapfrog(x1, -v1, s1, _gauss_score, 0.3, 5)
    torch.testing.assert_close(x2, x0)
    torch.testing.assert_close(-v2, v0)


def test_harmonic_oscillator_with_a_diagonal_mass():
    """E = ½ Σ k_d x_d², mass m_d: x(t) = x₀ cos ωt + p₀/(mω) sin ωt, p(t) = −mω x₀ sin ωt
    + p₀ cos ωt with ω = √(k/m). Catches M⁻¹ applied to the wrong update (or M for M⁻¹)."""
    k = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    m = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
    p0 = torch.tensor([[0.2, 1.0, -0.7]], dtype=torch.float64)

    def score(x):
        return -k * x

    h, n = 1e-3, 1000
    x, p, _, s = leapfrog(x0, p0, score(x0), score, h, n, inverse_mass(m))
    omega, tt = torch.sqrt(k / m), h * n
    exact_x = x0 * torch.cos(omega * tt) + p0 / (m * omega) * torch.sin(omega * tt)
    exact_p = -m * omega * x0 * torch.sin(omega * tt) + p0 * torch.cos(omega * tt)
    torch.testing.assert_close(x, exact_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(p, exact_p, atol=1e-6, rtol=0)
    torch.testing.assert_close(s, score(x))  # the returned score is the score at x_L
    # the Hamiltonian with this mass is conserved to O(h²)
    h0 = 0.5 * (k * x0**2).sum(1) + kinetic_energy(p0, inverse_mass(m))
    h1 = 0.5 * (k * x**2).sum(1) + kinetic_energy(p, inverse_mass(m))
    assert float((h1 - h0).abs().max()) < 1e-6


def test_momentum_draws_have_covariance_m_and_refresh_keeps_it():
    m = torch.tensor([4.0, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    like = torch.zeros(40_000, 2, dtype=torch.float64)
    v = sample_momentum(like, m, g)
    se = math.sqrt(2 / v.shape[0])  # relative MCSE of a variance estimate
    assert bool(((v.var(0) / m - 1).abs() < 4 * se).all()), v.var(0)
    w = refresh_momentum(v, 0.8, m, g)
    assert bool(((w.var(0) / m - 1).abs() < 4 * se).all()), w.var(0)
    corr = ((v * w).mean(0) / m)  # E[v w] = d·M: the fraction kept is d
    assert bool(((corr - 0.8).abs() < 0.02).all()), corr
    # kinetic energy ½ vᵀM⁻¹v has mean D/2
    assert abs(float(kinetic_energy(v, inverse_mass(m)).mean()) - 1.0) < 0.03


def test_leapfrog_refuses_zero_steps():
    with pytest.raises(ValueError, match="num_leapfrog_steps"):
        leapfrog(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), _gauss_score, 0.1, 0)
