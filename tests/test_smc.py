"""SMC against the exact oracle: evidence, mode weights, invariances, costs and API errors."""

import math

import numpy as np
import pytest
import torch

import recompose as rc
from conftest import CallCounter, ScoreOnly
from gaussian_integrals import log_integral
from recompose.errors import CapabilityError
from recompose.models.base import DiffusionModel

# Two modes of different widths times a broad Gaussian: the product's mass split at t = 0
# differs from that of the time-t products, which unweighted annealing follows.
A = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
B = rc.GaussianMixture([[0.0, 0.0]], 0.5, name="B")
G = rc.GaussianMixture([[0.5, 0.0]], 1.5, name="G")


def _evidence_runs(model, parts, n, seeds, levels=40, **options):
    """Ẑ / Z and log Ẑ − log Z over seeded runs."""
    ratio, err = [], []
    for seed in seeds:
        r = rc.sample(model, n, "smc", num_levels=levels, seed=seed, **options)
        exact = log_integral(parts, r.info.evidence_t)
        err.append(r.info.log_evidence - exact)
        ratio.append(math.exp(err[-1]))
    return np.array(ratio), np.array(err)


@pytest.mark.parametrize("case", ["product", "ratio"])
def test_evidence_is_unbiased_and_its_variance_falls_with_n(case):
    """E[Ẑ] = Z: the mean of Ẑ/Z over 24 seeds is within 4 MCSE of 1, at n = 64 and n = 512;
    Var(log Ẑ) falls roughly as 1/n (8× more particles: at least 2× smaller, a margin that an
    F(23, 23) fluctuation crosses with probability < 0.1 %)."""
    model, parts = (A * B, [(A, 1), (B, 1)]) if case == "product" else (
        A / G**0.3, [(A, 1), (G, -0.3)])
    seeds = range(24)
    variances = []
    for n in (64, 512):
        ratio, err = _evidence_runs(model, parts, n, seeds)
        mcse = ratio.std(ddof=1) / math.sqrt(len(ratio))
        assert abs(ratio.mean() - 1) <= 4 * mcse + 1e-3, (n, ratio.mean(), mcse)
        variances.append(err.var(ddof=1))
    assert variances[1] < variances[0] / 2, variances


def _left(x):
    return (x[:, 0] < 0).double().mean().item()


def _exact_left():
    """P(x₁ < 0) under the exact product A·B at t = 0 (a Gaussian mixture)."""
    prod = rc.gmm_product(A, B)
    w, mu = prod.log_weights.exp(), prod.means[:, 0]
    sd = prod.covariances()[:, 0, 0].sqrt()
    return float((w * torch.distributions.Normal(0.0, 1.0).cdf(-mu / sd)).sum())


def test_mode_weights_match_the_exact_product_where_annealed_hmc_does_not():
    """Over 6 seeds (n = 1,000, T = 50): SMC's mass on x₁ < 0 is within 4 MCSE of the exact
    value, annealed HMC's is more than 8 MCSE away (its bias, measured: about +0.09)."""
    exact = _exact_left()
    for sampler, within in (("smc", True), ("hmc", False)):
        left = np.array([_left(rc.sample(A * B, 1000, sampler, num_levels=50, seed=s).x)
                         for s in range(6)])
        mcse = max(left.std(ddof=1), math.sqrt(exact * (1 - exact) / 1000)) / math.sqrt(6)
        gap = abs(left.mean() - exact)
        assert (gap <= 4 * mcse) if within else (gap > 8 * mcse), (sampler, left, exact)


class _Shifted(DiffusionModel):
    """``E(x, t) + c(t)``: the same density at every level, another normaliser."""

    has_energy = True

    def __init__(self, inner):
        super().__init__()
        self.inner, self.schedule, self.event_shape = inner, inner.schedule, inner.event_shape

    @staticmethod
    def shift(t):
        return 40.0 * float(t) ** 2 - 7.0

    def energy(self, x, t):
        return self.inner.energy(x, t) + self.shift(t)

    def energy_and_score(self, x, t):
        e, s = self.inner.energy_and_score(x, t)
        return e + self.shift(t), s

    def score(self, x, t):
        return self.inner.score(x, t)


def test_a_constant_shift_of_the_energies_changes_only_the_evidence():
    base = rc.sample(A * B, 300, "smc", num_levels=30, seed=4, resampling="multinomial")
    shifted = rc.sample(_Shifted(A) * B, 300, "smc", num_levels=30, seed=4,
                        resampling="multinomial")
    assert torch.allclose(base.x, shifted.x, atol=1e-5)
    assert torch.allclose(base.log_weights, shifted.log_weights, atol=1e-6)
    assert base.info.resampled == shifted.info.resampled
    t0 = base.info.evidence_t
    assert shifted.info.log_evidence == pytest.approx(
        base.info.log_evidence - _Shifted.shift(t0), abs=1e-6)


def test_uniform_weights_never_resample_and_the_evidence_is_exact():
    """Data N(0, I) diffuses to N(0, I) at every t: every AIS increment is 0, the weights stay
    uniform, nothing is resampled, and log Ẑ = log 1 = 0 to rounding. The first level is exact
    too: γ_{T−1} = N(0, I) is the initial distribution."""
    unit = rc.GaussianMixture([[0.0, 0.0]], 1.0)
    r = rc.sample(unit, 256, "smc", num_levels=20, seed=0)
    assert r.info.resampled == []
    assert r.info.ess == pytest.approx([256.0] * 20)
    assert abs(r.info.log_evidence) < 1e-9
    assert torch.allclose(r.log_weights, torch.full((256,), -math.log(256), dtype=torch.float64))


def test_every_level_and_never_thresholds():
    model = A * B
    every = rc.sample(model, 200, "smc", num_levels=12, seed=1, ess_threshold=1.0)
    never = rc.sample(model, 200, "smc", num_levels=12, seed=1, ess_threshold=0.0)
    assert every.info.resampled == list(range(12))
    assert never.info.resampled == [0]  # only the last level's, which equalises the weights
    # the returned weights are those before the last resampling: unequal, normalised
    assert float(never.log_weights.max() - never.log_weights.min()) > 0.1
    assert float(torch.logsumexp(never.log_weights, 0)) == pytest.approx(0.0, abs=1e-12)
    # the last level's moves separate the copies that resampling made
    assert torch.unique(never.x, dim=0).shape[0] == 200


def test_ddpm_proposal_form_is_consistent_on_a_single_diffusion():
    """With the DDPM step as proposal on one normalised model, Ẑ/Z = 1 (Z = 1) within 4 MCSE
    over 16 seeds; no MCMC moves are needed."""
    ratios = []
    for seed in range(16):
        r = rc.sample(A, 256, "smc", num_levels=60, seed=seed, proposal="ddpm", num_steps=0)
        ratios.append(math.exp(r.info.log_evidence))
        assert r.info.settings["num_steps"] == 0
    ratios = np.array(ratios)
    assert abs(ratios.mean() - 1) <= 4 * ratios.std(ddof=1) / 4


def test_costs_are_counted_from_real_network_calls():
    """score_evals = T (one energy_and_score per level, reused by the moves' first step) +
    T·K·L (HMC moves); checked against the calls the leaf networks actually receive."""
    net = rc.pretrained("ring", "energy")
    counter = CallCounter(net.net)
    levels, k, leap = 6, 2, 3
    r = rc.sample(net, 16, "smc", num_levels=levels, num_steps=k, num_leapfrog_steps=leap,
                  seed=0)
    assert r.info.score_evals == levels + levels * k * leap
    assert r.info.energy_evals == levels + levels * k
    # one network forward per energy_and_score evaluation; +1: Tweedie's step reuses the score
    assert counter.calls == r.info.score_evals


def test_diagnostics_and_settings():
    r = rc.sample(A * B, 100, "smc", num_levels=10, seed=0, moves="mala", num_steps=1,
                  resampling="residual")
    info = r.info
    assert info.sampler == "smc" and len(info.ess) == 10 and len(info.acceptance) == 10
    assert info.settings["moves"] == "mala" and info.settings["resampling"] == "residual"
    assert info.evidence_t == pytest.approx(0.1)
    assert r.log_weights.shape == (100,) and r.log_weights.dtype == torch.float64
    assert 0 < min(info.ess) <= max(info.ess) <= 100 + 1e-9
    d = info.to_dict()
    assert d["log_evidence"] == info.log_evidence and d["resampled"] == info.resampled


def test_smc_refuses_what_does_not_apply():
    m = A * B
    with pytest.raises(CapabilityError, match="score-only"):
        rc.sample(ScoreOnly(A) * B, 10, "smc")
    with pytest.raises(TypeError, match="kernel does not apply to sampler 'smc'"):
        rc.sample(m, 10, "smc", kernel=rc.mcmc.hmc())
    with pytest.raises(TypeError, match="x_init"):
        rc.sample(m, 10, "smc", x_init=torch.zeros(10, 2))
    with pytest.raises(ValueError, match="num_steps"):
        rc.sample(m, 10, "smc", num_steps=0)
    with pytest.raises(ValueError, match="proposal"):
        rc.sample(m, 10, "smc", proposal="bogus")
    with pytest.raises(ValueError, match="ess_threshold"):
        rc.sample(m, 10, "smc", ess_threshold=1.5)
    with pytest.raises(ValueError, match="systematic"):
        rc.sample(m, 10, "smc", resampling="bogus")
    with pytest.raises(ValueError, match="MCMC kernel"):
        rc.sample(m, 10, "smc", moves="reverse")
    with pytest.raises(TypeError, match="damping does not apply"):
        rc.sample(m, 10, "smc", moves="mala", damping=0.3)
    with pytest.raises(TypeError, match="ess_threshold does not apply to sampler 'hmc'"):
        rc.sample(m, 10, "hmc", ess_threshold=0.3)
    with pytest.raises(TypeError, match="moves does not apply to sampler 'hmc'"):
        rc.sample(m, 10, moves="hmc")
    with pytest.raises(TypeError, match="num_leapfrog_steps cannot be combined with a kernel"):
        rc.sample(m, 10, "smc", moves=rc.mcmc.hmc(), num_leapfrog_steps=2)
    # kernel objects and their options reach the moves
    r = rc.sample(m, 10, "smc", moves=rc.mcmc.hmc(num_leapfrog_steps=2), num_levels=3, seed=0)
    assert r.info.settings["num_leapfrog_steps"] == 2


def test_collapsed_weights_warn():
    """The DDPM proposal on a product collapses the weights near t = 1 (docs/results.md §7):
    the run finishes but says so, and records it."""
    with pytest.warns(rc.samplers.SamplingWarning, match="collapsed onto ESS"):
        r = rc.sample(A * B, 400, "smc", num_levels=100, seed=0, proposal="ddpm",
                      num_steps=0)
    assert any("collapsed" in w for w in r.info.warnings)
    assert min(r.info.ess) < 0.01 * 400


def test_the_ddpm_proposal_weight_is_the_path_density_ratio():
    """One DDPM-proposal step, recomputed with torch.distributions: log w = log γ_i(x') +
    log L(x | x') − log γ_{i+1}(x) − log q(x' | x), L the forward noising step N(a x', β I)
    and q the DDPM step N(μ, β̃ I)."""
    from torch.distributions import Independent, Normal

    from recompose.samplers.base import Run
    from recompose.samplers.particles import Particles

    model, levels, i = A * B, (A * B).schedule.levels(20), 7
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e, s = model.energy_and_score(x, levels.t[i + 1])
    run = Run(model, model, levels, x, torch.Generator().manual_seed(1), None, None,
              lambda fn, y: fn(y))
    smc = rc.samplers.SMC(moves=None, num_steps=0, proposal="ddpm")
    new, log_w = smc.arrive(run, None, Particles(x, e, s), i)
    mean, var = levels.posterior(x, s, i + 1)
    a = float(levels.alpha[i + 1] / levels.alpha[i])
    q = Independent(Normal(mean, var**0.5), 1).log_prob(new.x)
    back = Independent(Normal(a * new.x, (1 - a**2) ** 0.5), 1).log_prob(x)
    expected = -model.energy(new.x, levels.t[i]) + back + e - q
    assert torch.allclose(log_w, expected, atol=1e-8)


def test_resampling_every_level_keeps_the_evidence_unbiased():
    """After a resampling the weights restart equal; carrying the old ones as well would count
    them twice and bias Ẑ. Mean of Ẑ/Z over 24 seeds within 4 MCSE of 1."""
    ratio, _ = _evidence_runs(A * B, [(A, 1), (B, 1)], 128, range(24), levels=30,
                              ess_threshold=1.0)
    mcse = ratio.std(ddof=1) / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) <= 4 * mcse + 1e-3
