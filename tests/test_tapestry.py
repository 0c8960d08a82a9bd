"""Tapestries: the canvas energy and score are the sums over crops, one network call per network,
the documented per-pixel exponents, every sampler, and the refusals."""

import math

import numpy as np
import pytest
import torch

import recompose as rc
from conftest import CallCounter, class_model
from recompose.errors import CapabilityError, CompositionError
from recompose.schedules import LinearSchedule

CANVAS = (1, 4, 10)
OFFSETS = [(0, 0), (0, 3), (0, 6)]  # columns 0-3, 3-6, 6-9: coverage 1,1,1,2,1,1,2,1,1,1
COVERAGE = torch.tensor([1, 1, 1, 2, 1, 1, 2, 1, 1, 1], dtype=torch.float64).expand(4, 10)


def _gmm(seed, shape=(1, 4, 4)):
    gen = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    means = torch.randn(2, d, generator=gen, dtype=torch.float64)
    stds = 0.3 + torch.rand(2, d, generator=gen, dtype=torch.float64)
    return rc.GaussianMixture(means, stds, event_shape=shape, name=f"g{seed}")


def _crop(x, offset, size=(4, 4)):
    return x[:, :, offset[0]:offset[0] + size[0], offset[1]:offset[1] + size[1]]


def _canvas(b=6, seed=1, shape=CANVAS):
    return torch.randn((b,) + shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("t", [0.05, 0.5, torch.tensor([0.1, 0.2, 0.4, 0.6, 0.8, 0.95])])
def test_energy_and_score_are_the_sums_over_crops(t):
    """E = Σ_k E_k(P_k x); the score equals −∇ₓ of that sum by autograd on the canvas."""
    models = [_gmm(k) for k in range(3)]
    tap = rc.tapestry(CANVAS, list(zip(OFFSETS, models)))
    x = _canvas().requires_grad_(True)
    direct = sum(m.energy(_crop(x, o), t) for o, m in zip(OFFSETS, models))
    (grad,) = torch.autograd.grad(direct.sum(), x)
    x = x.detach()
    e, s = tap.energy_and_score(x, t)
    torch.testing.assert_close(tap.energy(x, t), direct.detach(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(e, direct.detach(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(s, -grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tap.score(x, t), -grad, rtol=1e-10, atol=1e-10)


def test_one_crop_covering_the_canvas_is_the_model():
    m = _gmm(3, CANVAS)
    tap = rc.tapestry(CANVAS, [((0, 0), m)])
    x = _canvas()
    for t in (0.02, 0.7):
        torch.testing.assert_close(tap.energy(x, t), m.energy(x, t), rtol=1e-14, atol=0)
        torch.testing.assert_close(tap.score(x, t), m.score(x, t), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("overlap", ["product", "average"])
def test_each_pixel_gets_the_documented_exponent(overlap):
    """Crops N(0, I) (a VP diffusion keeps them N(0, I) at every t): a pixel covered n(p) times
    has score −n(p)·x_p under the product and −x_p under the average."""
    normal = rc.GaussianMixture(torch.zeros(1, 16, dtype=torch.float64), 1.0,
                                event_shape=(1, 4, 4))
    tap = rc.tapestry(CANVAS, [(o, normal) for o in OFFSETS], overlap=overlap)
    x = _canvas()
    exponent = COVERAGE if overlap == "product" else torch.ones_like(COVERAGE)
    torch.testing.assert_close(tap.score(x, 0.3), -exponent * x, rtol=1e-12, atol=1e-12)
    assert tap.has_energy == (overlap == "product")


def test_average_is_the_per_pixel_geometric_mean_for_factorised_crops():
    """For crops that factorise over pixels (diagonal Gaussians), the averaged score is the
    gradient of Σ_p (1/n(p)) Σ_{k∋p} log f_{k,p}(x_p), the documented density."""
    means = [torch.randn(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
             for k in range(3)]
    stds = [0.5 + 0.2 * k for k in range(3)]
    models = [rc.GaussianMixture(mu, sd, event_shape=(1, 4, 4)) for mu, sd in zip(means, stds)]
    tap = rc.tapestry(CANVAS, list(zip(OFFSETS, models)), overlap="average")
    t = 0.4
    x = _canvas().requires_grad_(True)
    alpha, sigma = models[0].schedule(torch.tensor(t, dtype=torch.float64))
    log_f = torch.zeros_like(x)  # per pixel, Σ over covering crops of log N(x_p; α μ, C)
    for o, mu, sd in zip(OFFSETS, means, stds):
        var = alpha**2 * sd**2 + sigma**2
        pad = torch.zeros_like(x)
        y = _crop(x, o) - alpha * mu.reshape(1, 1, 4, 4)
        pad[:, :, :, o[1]:o[1] + 4] = -0.5 * y**2 / var
        log_f = log_f + pad
    (grad,) = torch.autograd.grad((log_f / COVERAGE).sum(), x)
    torch.testing.assert_close(tap.score(x.detach(), t), grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["energy", "score"])
def test_crops_of_one_network_make_one_call(kind):
    """Three crops, each cfg(A.given(y_k), A, 2) with per-chain labels (9 terms of one network):
    one network call per evaluation, equal to the separately evaluated and placed crops."""
    a = class_model(kind)
    b, offsets = 5, [(0, 0), (0, 6), (0, 12)]
    labels = [torch.tensor([0, 3, 7, 9, 2]), torch.tensor([4, 4, 1, 8, 6]), torch.tensor(5)]
    crops = [rc.cfg(a.given(y), a, 2.0) for y in labels]
    tap = rc.tapestry((1, 8, 20), list(zip(offsets, crops)))
    x = _canvas(b, 2, (1, 8, 20))
    t = torch.linspace(0.1, 0.9, b, dtype=torch.float64)
    counter = CallCounter(a.net)
    score = tap.score(x, t)
    assert counter.calls == 1
    expected = torch.zeros_like(x)
    for o, m in zip(offsets, crops):
        expected[:, :, :, o[1]:o[1] + 8] += m.score(_crop(x, o, (8, 8)), t)
    torch.testing.assert_close(score, expected, rtol=1e-10, atol=1e-10)
    if kind == "energy":
        counter.calls = 0
        e, s = tap.energy_and_score(x, t)
        assert counter.calls == 1
        direct = sum(m.energy(_crop(x, o, (8, 8)), t) for o, m in zip(offsets, crops))
        torch.testing.assert_close(e, direct, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s, expected, rtol=1e-10, atol=1e-10)


def test_a_tapestry_composes_further():
    """A tapestry times a canvas-wide factor, and a mixture of tapestries, are models."""
    models = [_gmm(k) for k in range(3)]
    tap = rc.tapestry(CANVAS, list(zip(OFFSETS, models)))
    other = rc.tapestry(CANVAS, [((0, 0), models[2]), ((0, 6), models[0]), ((0, 3), models[1])])
    factor = _gmm(9, CANVAS)
    x, t = _canvas(), 0.3
    torch.testing.assert_close((tap * factor**0.5).energy(x, t),
                               tap.energy(x, t) + 0.5 * factor.energy(x, t))
    mix = tap + other
    expected = -torch.logaddexp(-tap.energy(x, t), -other.energy(x, t)) + math.log(2)
    torch.testing.assert_close(mix.energy(x, t), expected)
    assert tap.num_networks == 3


def _normal_tapestry():
    normal = rc.GaussianMixture(torch.zeros(1, 16), 1.0, event_shape=(1, 4, 4))
    return rc.tapestry(CANVAS, [(o, normal) for o in OFFSETS])


@pytest.mark.parametrize("sampler", rc.SAMPLERS)
def test_every_sampler_runs_on_a_tapestry(sampler):
    if sampler == "fkc":  # its weights need every crop factor's score: refused when built
        with pytest.raises(rc.CapabilityError, match="cannot see"):
            rc.sample(_normal_tapestry(), 8, "fkc", num_levels=4, seed=0)
        return
    steps = {} if sampler in ("reverse", "ode") else {"num_steps": 2}
    r = rc.sample(_normal_tapestry(), 8, sampler, num_levels=4, seed=0, **steps)
    assert r.x.shape == (8,) + CANVAS and torch.isfinite(r.x).all()


@pytest.mark.parametrize("sampler", ["hmc", "smc"])
def test_samples_have_the_product_variances(sampler):
    """Standard-normal crops: the composed density is N(0, diag(1/n(p))) at every t, so pixels
    covered once have variance 1 and pixels covered twice ½. Pooled per coverage class, the
    sample variance is within 5 standard errors (SE = v·√(2/(N−1)), N = chains only: a
    conservative bound, since pixels are independent)."""
    n = 2000
    r = rc.sample(_normal_tapestry(), n, sampler, num_levels=10, num_steps=3, seed=0)
    var = r.x.double().var(0)[0]
    for cover in (1, 2):
        v = var[COVERAGE == cover].mean().item()
        se = (1 / cover) * math.sqrt(2 / (n - 1))
        assert abs(v - 1 / cover) < 5 * se, (sampler, cover, v)


def test_smc_evidence_of_a_tapestry():
    """∫ Π_k N(P_k x; 0, I) dx = Π_p (2π)^{−(n(p)−1)/2} n(p)^{−1/2}: Ẑ/Z over 8 seeds has mean
    within 4 Monte-Carlo standard errors of 1."""
    n_p = COVERAGE.flatten()
    log_z = float((-(n_p - 1) / 2 * math.log(2 * math.pi) - 0.5 * torch.log(n_p)).sum())
    ratios = np.array([math.exp(rc.sample(_normal_tapestry(), 256, "smc", num_levels=10,
                                          num_steps=2, seed=s).info.log_evidence - log_z)
                       for s in range(8)])
    mcse = ratios.std(ddof=1) / math.sqrt(len(ratios))
    assert abs(ratios.mean() - 1) <= 4 * mcse + 1e-3, (ratios.mean(), mcse)


def test_refusals_name_the_problem():
    g = _gmm(0)
    with pytest.raises(CompositionError, match=r"\[0, 4\] \(and 7 more\) lies in no region"):
        rc.tapestry(CANVAS, [((0, 0), g), ((0, 5), g)])
    with pytest.raises(CompositionError, match="reaches outside the canvas"):
        rc.tapestry(CANVAS, [((0, 7), g)])
    with pytest.raises(CompositionError, match="must have the canvas's 3 channels"):
        rc.tapestry((3, 4, 10), [((0, 0), g)])
    with pytest.raises(CompositionError, match="offset must be 2 integers"):
        rc.tapestry(CANVAS, [((0,), g)])
    with pytest.raises(CompositionError, match="offset must be 2 integers"):
        rc.tapestry(CANVAS, [((0, 0.5), g)])
    with pytest.raises(CompositionError, match="overlap must be one of"):
        rc.tapestry(CANVAS, [((0, 0), g)], overlap="mean")
    other = rc.GaussianMixture(torch.zeros(1, 16), 1.0, event_shape=(1, 4, 4),
                               schedule=LinearSchedule())
    with pytest.raises(CompositionError, match="region 2"):
        rc.tapestry(CANVAS, [((0, 0), g), ((0, 6), other), ((0, 3), g)])
    with pytest.raises(ValueError, match=r"takes x of shape \(B, 1, 4, 10\)"):
        rc.tapestry(CANVAS, [(o, g) for o in OFFSETS]).score(torch.zeros(2, 1, 4, 9), 0.5)


def test_average_tapestry_refuses_energies():
    avg = rc.tapestry(CANVAS, [(o, _gmm(0)) for o in OFFSETS], overlap="average")
    with pytest.raises(CapabilityError, match="overlap='product'"):
        avg.energy(_canvas(), 0.5)
    with pytest.raises(CapabilityError):
        rc.sample(avg, 4, "mala", num_levels=3)
    with pytest.raises(CapabilityError):
        avg + avg


class _ViewWithoutRows(rc.DiffusionModel):
    """A view naming a shared network that has no per-row hook (``rows``)."""

    has_energy = True

    def __init__(self, inner, owner):
        super().__init__()
        self.inner, self.owner = inner, [owner]  # a list: not a submodule
        self.schedule, self.event_shape = inner.schedule, inner.event_shape

    @property
    def batch_slot(self):
        from recompose.models.base import BatchSlot

        return BatchSlot(self.owner[0], None)

    def energy(self, x, t):
        return self.inner.energy(x, t)


def test_views_of_a_network_without_rows_are_called_one_by_one():
    owner = _gmm(7)
    views = [_ViewWithoutRows(_gmm(k), owner) for k in range(3)]
    tap = rc.tapestry(CANVAS, list(zip(OFFSETS, views)))
    x = _canvas()
    direct = sum(v.energy(_crop(x, o), 0.4) for o, v in zip(OFFSETS, views))
    torch.testing.assert_close(tap.energy(x, 0.4), direct, rtol=1e-12, atol=1e-10)


def test_a_tapestry_times_a_classifier_factor():
    """The issue's example: rc.guide(tapestry, p_t(y | canvas), λ) has energy E_tap − λ log p,
    and every sampler that needs energies runs on it."""
    from conftest import randomise
    from recompose.models.classifier import ClassifierFactor
    from recompose.models.networks import TimeClassifier

    tap = rc.tapestry(CANVAS, [(o, _gmm(k)) for k, o in enumerate(OFFSETS)])
    clf = randomise(TimeClassifier(dim=40, num_classes=3, width=16, num_blocks=1, emb_dim=8))
    factor = ClassifierFactor(clf.double(), torch.tensor(1), tap.schedule, CANVAS)
    guided = rc.guide(tap, factor, 2.0)
    x, t = _canvas(), 0.3
    torch.testing.assert_close(guided.energy(x, t), tap.energy(x, t) + 2.0 * factor.energy(x, t))
    r = rc.sample(guided, 6, "mala", num_levels=3, num_steps=1, seed=0)
    assert torch.isfinite(r.x).all()


def test_batch_size_may_change_between_calls():
    """Per-row network views are reused per batch size, never across sizes."""
    a = class_model("score")
    crops = [rc.cfg(a.given(y), a, 2.0) for y in (1, 7)]
    tap = rc.tapestry((1, 8, 14), [((0, 0), crops[0]), ((0, 6), crops[1])])
    for b in (4, 2, 4):
        x = _canvas(b, b, (1, 8, 14))
        expected = torch.zeros_like(x)
        for o, m in zip([(0, 0), (0, 6)], crops):
            expected[:, :, :, o[1]:o[1] + 8] += m.score(_crop(x, o, (8, 8)), 0.5)
        torch.testing.assert_close(tap.score(x, 0.5), expected, rtol=1e-10, atol=1e-10)
