import pytest
import torch

import recompose as rc
from conftest import ScoreOnly, ring_gmm, skewed_gmm
from recompose.compose import Mixture, Power, Product
from recompose.models.classifier import ClassifierFactor
from recompose.utils import energy_and_score_autograd


def gauss(mean, std, name=None):
    return rc.GaussianMixture([mean], std, name=name)


def test_product_of_gaussians_is_the_closed_form_at_t0(generator):
    a, b = gauss([0.0, 1.0], 0.5), gauss([1.0, -1.0], [[0.3, 0.8]])
    prod = a * b
    # closed form: precisions add, means precision-weighted
    f64 = dict(dtype=torch.float64)
    pa, pb = 1 / torch.tensor([0.25, 0.25], **f64), 1 / torch.tensor([0.09, 0.64], **f64)
    var = 1 / (pa + pb)
    mean = var * (pa * torch.tensor([0.0, 1.0], **f64) + pb * torch.tensor([1.0, -1.0], **f64))
    closed = rc.GaussianMixture([mean.tolist()], var.sqrt()[None])
    x = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    diff = prod.energy(x, 0.0) - closed.energy(x, 0.0)
    torch.testing.assert_close(diff, diff[0].expand(50))  # equal up to log Z
    torch.testing.assert_close(prod.score(x, 0.0), closed.score(x, 0.0))


def test_product_of_marginals_is_not_the_marginal_of_the_product(generator):
    """Why MCMC is needed (R3 §3): at t > 0 the composed score is not the diffused one."""
    a, b = gauss([0.0, 1.0], 0.5), gauss([1.0, -1.0], 0.3)
    exact = rc.gmm_product(a, b)  # the product at t = 0, diffused exactly by the oracle
    x = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close((a * b).score(x, 0.0), exact.score(x, 0.0))
    gap = ((a * b).score(x, 0.5) - exact.score(x, 0.5)).abs().max()
    assert float(gap) > 0.1


def test_power_laws():
    a = skewed_gmm()
    p = (a**2.0) ** -0.5
    assert isinstance(p, Power) and p.base is a and p.exponent == pytest.approx(-1.0)
    assert a**1 is a
    x = torch.randn(10, 2, dtype=torch.float64)
    torch.testing.assert_close(((a**0.3) ** 4.0).energy(x, 0.2), (a**1.2).energy(x, 0.2))


def test_flattening_and_merging():
    a, b, c = gauss([0.0, 0.0], 1.0, "a"), gauss([1.0, 0.0], 1.0, "b"), gauss([0.0, 1.0], 1.0, "c")
    p = (a * b) * (c * a)
    assert isinstance(p, Product) and len(p.factors) == 3
    assert isinstance(p.factors[0], Power) and p.factors[0].exponent == 2.0
    q = a / b**0.3
    assert [type(f) for f in q.factors] == [type(a), Power]
    assert q.factors[1].exponent == pytest.approx(-0.3)
    x = torch.randn(7, 2, dtype=torch.float64)
    torch.testing.assert_close((a / a).score(x, 0.3), torch.zeros_like(x))
    torch.testing.assert_close(
        (a * b).energy(x, 0.3), a.energy(x, 0.3) + b.energy(x, 0.3))


def test_mixture_reproduces_exact_mixture_density(generator):
    a, b = skewed_gmm(), ring_gmm(std=0.2)
    mix = rc.mixture([a, b], weights=[0.3, 0.7])
    x = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    for t in (0.0, 0.4):
        expect = torch.log(0.3 * a.log_prob(x, t).exp() + 0.7 * b.log_prob(x, t).exp())
        torch.testing.assert_close(-mix.energy(x, t), expect)
    # weights are normalised; a + b is the equal mixture; nested mixtures flatten
    assert rc.mixture([a, b], [3, 7]).weights == pytest.approx((0.3, 0.7))
    assert (a + b).weights == pytest.approx((0.5, 0.5))
    nested = rc.mixture([a + b, ring_gmm()], [0.5, 0.5])
    assert len(nested.parts) == 3 and nested.weights == pytest.approx((0.25, 0.25, 0.5))


def _composites():
    a, b, c = skewed_gmm(), ring_gmm(std=0.2), gauss([0.2, 0.1], 0.7)
    lin = torch.nn.Linear(2, 3).double()
    torch.nn.init.normal_(lin.weight, generator=torch.Generator().manual_seed(0))
    clf = ClassifierFactor(lambda x, t: lin(x) * (1 - t[:, None]), y=1, schedule=a.schedule,
                           event_shape=(2,))
    return {
        "product": a * b,
        "power": a**-0.7,
        "quotient": a / b**0.3,
        "mixture": rc.mixture([a, b, c], [0.2, 0.5, 0.3]),
        "nested": (a + b) * c**2 / rc.mixture([b, c]) ** 0.5,
        "cfg": rc.cfg(a, c, 3.0),
        "guide": rc.guide(b, clf, 2.0),
    }


@pytest.mark.parametrize("name", list(_composites()))
def test_score_is_minus_autograd_energy_for_every_composite(name, generator):
    model = _composites()[name]
    assert isinstance(model, rc.DiffusionModel) and model.has_energy
    x = torch.randn(32, 2, generator=generator, dtype=torch.float64)
    for t in (0.05, 0.5):
        e_auto, s_auto = energy_and_score_autograd(lambda z, t=t: model.energy(z, t), x)
        e, s = model.energy_and_score(x, t)
        torch.testing.assert_close(s, s_auto)
        torch.testing.assert_close(e, e_auto)
        torch.testing.assert_close(model.score(x, t), s_auto)


def test_cfg_formula(generator):
    cond, uncond = skewed_gmm(), gauss([0.0, 0.0], 1.0)
    w = 3.0
    model = rc.cfg(cond, uncond, w)
    x = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    expect = uncond.score(x, 0.3) + w * (cond.score(x, 0.3) - uncond.score(x, 0.3))
    torch.testing.assert_close(model.score(x, 0.3), expect)
    assert len(model.factors) == 2  # uncond^(1-w) · cond^w: each network evaluated once


def test_composites_nest_and_compose_again():
    a, b = skewed_gmm(), ring_gmm()
    m = ((a * b) + (a / b**0.5)) ** 0.5 * a
    assert isinstance(m, Product) and isinstance(m.factors[0], Power)
    assert isinstance(m.factors[0].base, Mixture)
    assert m.num_networks == 5


def test_refusals_at_construction():
    a = skewed_gmm()
    s = ScoreOnly(ring_gmm(), name="scorey")
    tracked = rc.mixture([a, s])  # a score-only part: tracked, no score at a point alone
    assert tracked.tracked and not tracked.has_energy and (a + s).tracked
    with pytest.raises(rc.CapabilityError, match="sample it with 'fkc'"):
        tracked.score(torch.zeros(1, 2, dtype=torch.float64), 0.5)
    with pytest.raises(rc.CompositionError, match="schedules differ"):
        _ = a * rc.GaussianMixture([[0.0, 0.0]], 1.0, schedule=rc.LinearSchedule())
    with pytest.raises(rc.CompositionError, match="data shapes differ"):
        _ = a * rc.GaussianMixture([[0.0, 0.0, 0.0]], 1.0)
    with pytest.raises(rc.CompositionError, match="positive"):
        rc.mixture([a, a], [1.0, -1.0])
    with pytest.raises(rc.CompositionError, match="finite"):
        rc.mixture([a, a], [1.0, float("inf")])
    with pytest.raises(rc.CompositionError, match="finite"):
        _ = a ** float("nan")
    with pytest.raises(TypeError, match="ambiguous"):
        _ = 2.0 * a
    with pytest.raises(TypeError, match="ambiguous"):
        _ = a * 0.5
    with pytest.raises(rc.CapabilityError, match="score-only"):
        s.energy(torch.zeros(1, 2), 0.5)
    # a product with a score-only part has a score but no energy
    p = a * s
    assert not p.has_energy
    p.score(torch.zeros(3, 2, dtype=torch.float64), 0.5)


def test_a_mixture_of_score_only_models_is_tracked_and_refused_by_samplers_that_cannot():
    """Score-only parts make a tracked mixture (tests/test_tracking.py): no energy, no score at
    a point alone, and a one-line refusal from every sampler but reverse and fkc."""
    s1, s2 = ScoreOnly(ring_gmm(), name="s1"), ScoreOnly(skewed_gmm(), name="s2")
    for m in (Mixture([s1, s2], [0.5, 0.5]), rc.mixture([s1, s2]), skewed_gmm() + s2):
        assert m.tracked and not m.has_energy and m.marginal
        with pytest.raises(rc.CapabilityError, match="has score-only parts"):
            m.energy(torch.zeros(1, 2, dtype=torch.float64), 0.5)
    with pytest.raises(rc.CapabilityError, match="hmc cannot sample mix"):
        rc.sample(rc.mixture([s1, s2]), 4, "hmc", num_levels=3, seed=0)


def test_cfg_and_guide_name_the_part_that_does_not_match():
    cond, wide = gauss([0.0, 0.0], 1.0, "c"), rc.GaussianMixture([[0.0, 0.0, 0.0]], 1.0, name="w")
    linear = rc.GaussianMixture([[0.0, 0.0]], 1.0, schedule=rc.LinearSchedule(), name="lin")
    shapes = r"classifier-free guidance: data shapes differ, {} \({}\) has \({}\) but {} \({}\)"
    with pytest.raises(rc.CompositionError, match=shapes.format("uncond", "w", "3,", "cond", "c")):
        rc.cfg(cond, wide, 3.0)
    with pytest.raises(rc.CompositionError, match=shapes.format("uncond", "c", "2,", "cond", "w")):
        rc.cfg(wide, cond, 3.0)
    with pytest.raises(rc.CompositionError,
                       match=r"noise schedules differ, uncond \(lin\) uses .* but cond \(c\)"):
        rc.cfg(cond, linear, 3.0)
    with pytest.raises(TypeError, match="uncond is a Tensor"):
        rc.cfg(cond, torch.zeros(2), 3.0)
    with pytest.raises(rc.CompositionError, match="guidance scale must be finite"):
        rc.cfg(cond, gauss([1.0, 0.0], 1.0), float("nan"))
    with pytest.raises(rc.CompositionError,
                       match=r"classifier guidance: data shapes differ, likelihood \(w\)"):
        rc.guide(cond, wide, 2.0)
    with pytest.raises(rc.CompositionError, match=r"product: data shapes differ, factor 2 \(w\)"):
        _ = cond * wide
