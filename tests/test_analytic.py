import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import recompose as rc
from conftest import ring_gmm, skewed_gmm
from recompose.utils import energy_and_score_autograd


def _scipy_logpdf(gmm, x, t):
    alpha, sigma = gmm.schedule(torch.tensor(t, dtype=torch.float64))
    covs = gmm.covariances().numpy()
    w = gmm.log_weights.exp().numpy()
    dens = sum(w[k] * multivariate_normal(float(alpha) * gmm.means[k].numpy(),
                                          float(alpha) ** 2 * covs[k] + float(sigma) ** 2
                                          * torch.eye(2, dtype=torch.float64).numpy()).pdf(x)
               for k in range(len(w)))
    return torch.tensor(dens).log()


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.95])
def test_energy_is_exact_negative_log_density(t, generator):
    gmm = skewed_gmm()
    x = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(-gmm.energy(x, t), _scipy_logpdf(gmm, x.numpy(), t))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9])
def test_score_is_minus_grad_energy(t, generator):
    for gmm in (skewed_gmm(), ring_gmm()):
        x = torch.randn(64, 2, generator=generator, dtype=torch.float64)
        e, s = energy_and_score_autograd(lambda z, g=gmm: g.energy(z, t), x)
        torch.testing.assert_close(gmm.score(x, t), s)
        torch.testing.assert_close(gmm.energy_and_score(x, t)[0], e)


def test_per_sample_time(generator):
    gmm = skewed_gmm()
    x = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    per = gmm.energy(x, t)
    one = torch.stack([gmm.energy(x[i:i + 1], float(t[i]))[0] for i in range(5)])
    torch.testing.assert_close(per, one)


def test_diag_and_full_cov_agree(generator):
    means = [[0.0, 1.0], [1.0, -1.0]]
    stds = torch.tensor([[0.3, 0.5], [0.2, 0.4]])
    a = rc.GaussianMixture(means, stds)
    b = rc.GaussianMixture(means, covs=torch.diag_embed(stds.double() ** 2))
    x = torch.randn(20, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(a.energy(x, 0.4), b.energy(x, 0.4))
    torch.testing.assert_close(a.score(x, 0.4), b.score(x, 0.4))


def test_exact_samples_have_the_right_moments(generator):
    gmm = skewed_gmm()
    n = 40_000
    x = gmm.sample(n, generator)
    w = gmm.log_weights.exp()
    mean = (w[:, None] * gmm.means).sum(0)
    se = x.std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mean).abs() < 4 * se).all())


def test_image_shaped_mixture_is_shape_agnostic(generator):
    gmm = rc.GaussianMixture(torch.randn(3, 16, generator=generator), 0.5,
                             event_shape=(1, 4, 4))
    x = gmm.sample(6, generator)
    assert x.shape == (6, 1, 4, 4)
    e, s = gmm.energy_and_score(x, 0.3)
    assert e.shape == (6,) and s.shape == x.shape
    _, s_auto = energy_and_score_autograd(lambda z: gmm.energy(z, 0.3), x)
    torch.testing.assert_close(s, s_auto)


def test_gmm_product_is_the_normalised_product(generator):
    a, b = ring_gmm(std=0.1), rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.2)
    p = rc.gmm_product(a, b)
    x = torch.randn(100, 2, generator=generator, dtype=torch.float64) * 0.6
    diff = p.log_prob(x) - (a.log_prob(x) + b.log_prob(x))
    torch.testing.assert_close(diff, diff[0].expand(100))  # equal up to the constant log Z
    # and p integrates to one (grid quadrature)
    g = torch.linspace(-2, 2, 401, dtype=torch.float64)
    xx = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = p.log_prob(xx).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_bad_arguments():
    with pytest.raises(rc.CompositionError):
        rc.GaussianMixture([[0.0, 0.0]], -1.0)
    with pytest.raises(rc.CompositionError):
        rc.GaussianMixture([[0.0, 0.0]], 1.0, weights=[float("nan")])
    with pytest.raises(rc.CompositionError):
        rc.GaussianMixture([0.0, 0.0], 1.0)
    with pytest.raises(ValueError):
        ring_gmm().sample(0)


# ------------------------------------------------ unequal, anisotropic covariances by hand
COVS = torch.tensor([[[0.20, 0.08], [0.08, 0.05]],
                     [[0.03, -0.01], [-0.01, 0.30]]], dtype=torch.float64)
MEANS = torch.tensor([[0.5, -0.2], [-0.4, 0.6]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.7, 0.3], dtype=torch.float64)
STDS = torch.tensor([[0.1, 0.4], [0.5, 0.2]], dtype=torch.float64)  # (K, D) diagonal


def _gaussian_logpdf(x, mean, cov):
    """log N(x; mean, cov) by hand: −½ (yᵀ C⁻¹ y + log det 2πC)."""
    y = x - mean
    sol = torch.linalg.solve(cov, y.T).T
    return -0.5 * ((y * sol).sum(1) + torch.logdet(2 * math.pi * cov))


def _diffused(t, means, covs, weights):
    """Components of p_t: N(α μ_k, α² Σ_k + σ² I) with the mixture weights."""
    alpha, sigma = rc.CosineSchedule()(torch.tensor(t, dtype=torch.float64))
    eye = torch.eye(means.shape[1], dtype=torch.float64)
    return alpha * means, alpha**2 * covs + sigma**2 * eye, weights / weights.sum()


def _hand_energy_and_score(x, t, means, covs, weights):
    m, c, w = _diffused(t, means, covs, weights)
    logn = torch.stack([_gaussian_logpdf(x, m[k], c[k]) for k in range(len(w))], 1)
    logits = logn + w.log()
    resp = torch.softmax(logits, 1)
    grads = torch.stack([-torch.linalg.solve(c[k], (x - m[k]).T).T for k in range(len(w))], 1)
    return -torch.logsumexp(logits, 1), (resp[..., None] * grads).sum(1)


@pytest.mark.parametrize("t", [0.0, 0.2, 0.6, 0.95])
@pytest.mark.parametrize("kind", ["full", "diag"])
def test_energy_and_score_match_hand_formulas(kind, t, generator):
    if kind == "full":
        gmm, covs = rc.GaussianMixture(MEANS, covs=COVS, weights=WEIGHTS), COVS
    else:
        gmm, covs = rc.GaussianMixture(MEANS, STDS, WEIGHTS), torch.diag_embed(STDS**2)
    x = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    e_hand, s_hand = _hand_energy_and_score(x, t, MEANS, covs, WEIGHTS)
    for tt in (t, torch.full((40,), t, dtype=torch.float64)):  # scalar (fast) and per-sample t
        e, s = gmm.energy_and_score(x, tt)
        torch.testing.assert_close(e, e_hand, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s, s_hand, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gmm.energy(x, tt), e_hand, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gmm.score(x, tt), s_hand, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gmm.covariances(), covs, rtol=1e-12, atol=1e-14)


def _assert_moments(x, mean, cov, n_se=4.0):
    """Sample mean and covariance within ``n_se`` Monte-Carlo standard errors (the SE of each
    covariance entry from the sample variance of the centred products)."""
    n = x.shape[0]
    xm = x.mean(0)
    assert bool(((xm - mean).abs() < n_se * x.std(0) / math.sqrt(n)).all()), (xm, mean)
    y = x - mean  # centred at the true mean: E[y yᵀ] = cov exactly
    prods = y[:, :, None] * y[:, None, :]
    se = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() < n_se * se).all()), (prods.mean(0), cov)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("kind", ["full", "diag"])
def test_diffused_samples_have_the_exact_moments(kind, t):
    covs = COVS if kind == "full" else torch.diag_embed(STDS**2)
    gmm = (rc.GaussianMixture(MEANS, covs=COVS, weights=WEIGHTS) if kind == "full"
           else rc.GaussianMixture(MEANS, STDS, WEIGHTS))
    n = 60_000
    x = gmm.sample(n, torch.Generator().manual_seed(int(10 * t) + 1), t=t)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    m, c, w = _diffused(t, MEANS, covs, WEIGHTS)
    mean = (w[:, None] * m).sum(0)
    # law of total covariance: Σ_k w_k (C_k + m_k m_kᵀ) − m mᵀ
    cov = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0) - torch.outer(mean,
                                                                                        mean)
    _assert_moments(x, mean, cov)
    # one component alone: exactly N(α μ, α² Σ + σ² I), correlation included
    one = (rc.GaussianMixture(MEANS[:1], covs=COVS[:1]) if kind == "full"
           else rc.GaussianMixture(MEANS[:1], STDS[:1]))
    _assert_moments(one.sample(n, torch.Generator().manual_seed(5), t=t), m[0], c[0])


def test_gmm_product_of_two_gaussians_by_hand():
    """Precisions add; the mean is precision-weighted: Σ = (Σ₁⁻¹ + Σ₂⁻¹)⁻¹,
    μ = Σ (Σ₁⁻¹ μ₁ + Σ₂⁻¹ μ₂). Computed with numpy, independently."""
    a = rc.GaussianMixture(MEANS[:1], covs=COVS[:1])
    b = rc.GaussianMixture(MEANS[1:], covs=COVS[1:])
    p = rc.gmm_product(a, b)
    p1, p2 = np.linalg.inv(COVS[0].numpy()), np.linalg.inv(COVS[1].numpy())
    cov = np.linalg.inv(p1 + p2)
    mean = cov @ (p1 @ MEANS[0].numpy() + p2 @ MEANS[1].numpy())
    assert p.means.shape == (1, 2)
    np.testing.assert_allclose(p.means[0].numpy(), mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.covariances()[0].numpy(), cov, rtol=1e-10, atol=1e-14)
    assert float(p.log_weights.exp()[0]) == pytest.approx(1.0)


def test_gmm_product_of_mixtures_weights_by_hand():
    """Mixtures: component (i, j) has weight ∝ w_i v_j N(μ_i; ν_j, Σ_i + Λ_j) (scipy)."""
    a = rc.GaussianMixture(MEANS, covs=COVS, weights=WEIGHTS)
    b_means = torch.tensor([[0.0, 0.0], [0.3, 0.9], [-0.8, -0.1]], dtype=torch.float64)
    b_stds = torch.tensor([[0.3, 0.2], [0.1, 0.5], [0.4, 0.4]], dtype=torch.float64)
    b_w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    b = rc.GaussianMixture(b_means, b_stds, b_w)
    p = rc.gmm_product(a, b)
    bc = torch.diag_embed(b_stds**2)
    raw = torch.tensor([[float(WEIGHTS[i] / WEIGHTS.sum() * b_w[j]) * multivariate_normal(
        b_means[j].numpy(), (COVS[i] + bc[j]).numpy()).pdf(MEANS[i].numpy())
        for j in range(3)] for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(p.log_weights.exp(), (raw / raw.sum()).reshape(-1),
                               rtol=1e-10, atol=1e-14)
    for i in range(2):
        for j in range(3):
            prec = torch.linalg.inv(COVS[i]) + torch.linalg.inv(bc[j])
            cov = torch.linalg.inv(prec)
            mean = cov @ (torch.linalg.solve(COVS[i], MEANS[i]) + torch.linalg.solve(bc[j],
                                                                                     b_means[j]))
            torch.testing.assert_close(p.means[3 * i + j], mean, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(p.covariances()[3 * i + j], cov, rtol=1e-9, atol=1e-12)


def test_diffused_samples_of_a_rotated_3d_gaussian(generator):
    """In 3D the eigenvector matrix is not symmetric (in 2D ``eigh`` may return a symmetric
    reflection, hiding a transposed rotation), so this pins the rotation of the draws."""
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    cov = a @ a.T + 0.05 * torch.eye(3, dtype=torch.float64)
    mean = torch.tensor([[0.3, -0.5, 1.0]], dtype=torch.float64)
    gmm = rc.GaussianMixture(mean, covs=cov[None])
    assert not torch.allclose(gmm.eigvecs[0], gmm.eigvecs[0].T)
    for t in (0.0, 0.4):
        m, c, _ = _diffused(t, mean, cov[None], torch.ones(1, dtype=torch.float64))
        _assert_moments(gmm.sample(60_000, generator, t=t), m[0], c[0])


def test_diffused_mixture_is_the_time_t_marginal():
    m = skewed_gmm()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.0, 0.3, 0.9):
        assert torch.allclose(m.diffused(t).energy(x, 0.0), m.energy(x, t), atol=1e-10)


def test_log_overlap_is_the_products_normaliser():
    """Two single Gaussians: ∫ N(x; m₁, s₁²I) N(x; m₂, s₂²I) dx = N(m₁; m₂, (s₁² + s₂²) I);
    mixtures: against the independent oracle of tests/gaussian_integrals.py."""
    from gaussian_integrals import log_integral
    from recompose.models.analytic import gmm_log_overlap

    a = rc.GaussianMixture([[0.3, -0.2]], 0.4)
    b = rc.GaussianMixture([[1.0, 0.5]], 0.7)
    v = 0.4**2 + 0.7**2
    expected = -((0.7**2 + 0.7**2) / (2 * v)) - math.log(2 * math.pi * v)
    assert gmm_log_overlap(a, b) == pytest.approx(expected, abs=1e-12)
    ring, skew = ring_gmm(), skewed_gmm()
    for t in (0.01, 0.5):
        assert gmm_log_overlap(ring.diffused(t), skew.diffused(t)) == pytest.approx(
            log_integral([(ring, 1), (skew, 1)], t), abs=1e-9)
