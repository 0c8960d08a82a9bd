import math

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
