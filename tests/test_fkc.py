"""Feynman–Kac weights ("fkc"): the rate against the Fokker–Planck definition, mode weights and
evidence against the exact oracle, equality with reverse diffusion, and refusals."""

import math

import numpy as np
import pytest
import torch

import recompose as rc
from conftest import ScoreOnly
from gaussian_integrals import log_integral
from recompose.errors import CapabilityError
from recompose.models.classifier import ClassifierFactor
from recompose.samplers.fkc import FeynmanKac
from recompose.samplers.particles import Populations

A = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
B = rc.GaussianMixture([[0.0, 0.0]], 0.5, name="B")
G = rc.GaussianMixture([[0.5, 0.0]], 1.5, name="G")
Q0 = rc.GaussianMixture([[-1.0, 1.0], [1.0, -1.0]], 0.4, name="Q0")
Q1 = rc.GaussianMixture([[1.0, 1.0]], [[0.3, 0.8]], name="Q1")


def _bayes_classifier():
    """``p_t(y | x)`` of the equal mixture of Q0 and Q1, exactly (logits ``log q_y,t``)."""
    def logits(x, t):
        return torch.stack([-Q0.energy(x, t), -Q1.energy(x, t)], dim=1)
    return ClassifierFactor(logits, 1, Q0.schedule, (2,), name="p(y=1|x)")


def _cases():
    mix = rc.mixture([Q0, Q1])
    return {"product (W = 2)": A * B, "ratio (W = 1)": A * B / G, "power (W = 0.7)": A / G**0.3,
            "cfg-like (W = 1)": A**3 / G**2,
            "classifier guidance": rc.guide(mix, _bayes_classifier(), 4.0)}


def _beta(schedule, t, h=1e-5):
    """``β(t) = −d log α²_t / dt`` by central differences."""
    a2 = schedule.alpha_sq(torch.tensor([t - h, t + h], dtype=torch.float64))
    return float(-(a2[1].log() - a2[0].log()) / (2 * h))


def _direct_rate(model, w_total, x, t, h=1e-5):
    """``g = ∂_τ log p̃ − L*p̃/p̃`` for ``dx = β(½W x + s) dτ + √β dW``, with ``∂_τ log p̃`` by
    central differences of the composite's energy, ``s = −∇E`` and ``∇·s`` by autograd (2D)."""
    beta = _beta(model.schedule, t)
    x = x.clone().requires_grad_(True)
    s = -torch.autograd.grad(model.energy(x, t).sum(), x, create_graph=True)[0]
    div = sum(torch.autograd.grad(s[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(2))
    with torch.no_grad():
        dtau_log_p = (model.energy(x, t + h) - model.energy(x, t - h)) / (2 * h)
        b = beta * (0.5 * w_total * x + s)
        div_b = beta * (0.5 * w_total * 2 + div)
        return dtau_log_p + div_b + (b * s).sum(1) - 0.5 * beta * (div + (s * s).sum(1))


@pytest.mark.parametrize("case", list(_cases()))
def test_the_rate_is_the_feynman_kac_rate_of_the_fokker_planck_equations(case):
    """``β·ĝ`` from scores alone equals ``∂_τ log p̃ − L*p̃/p̃`` computed with divergences and
    time derivatives (the definition), at points in and between the modes and at several t."""
    model = _cases()[case]
    fk = FeynmanKac(model)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    for t in (0.05, 0.3, 0.7, 0.95):
        _, rate = fk.score_and_rate(x, t, kappa=1.0)  # VP: κ = −2f/g² = 1
        expected = _direct_rate(model, fk.total_weight, x, t)
        torch.testing.assert_close(_beta(model.schedule, t) * rate, expected,
                                   rtol=1e-4, atol=1e-5 * (1 + expected.abs().max().item()))


def _left(x):
    return (x[:, 0] < 0).double().mean().item()


def _exact_left(model, t):
    """``P(x₁ < 0)`` under ``p̃_t`` by quadrature on a fine grid."""
    g = torch.linspace(-7, 7, 1401, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    p = torch.softmax(-model.energy(pts, t), 0)
    return float(p[pts[:, 0] < 0].sum())


@pytest.mark.parametrize("case", ["product (W = 2)", "ratio (W = 1)"])
def test_fkc_repairs_the_mode_weights_that_reverse_diffusion_gets_wrong(case):
    """Mass on ``x₁ < 0`` over 6 seeds × 1,000 particles at T = 400: FKC within 4 MCSE of the
    exact value (the spread over seeds includes the resampling's noise); reverse diffusion,
    with the same levels, more than 20 MCSE away (0.49 and 0.62 against 0.20 and 0.25)."""
    model = _cases()[case]
    exact = _exact_left(model, 1 / 400)
    fkc = np.array([_left(rc.sample(model, 1000, "fkc", num_levels=400, seed=s).x)
                    for s in range(6)])
    rev = np.array([_left(rc.sample(model, 1000, "reverse", num_levels=400, seed=s).x)
                    for s in range(6)])
    mcse = fkc.std(ddof=1) / math.sqrt(len(fkc))
    assert abs(fkc.mean() - exact) <= 4 * mcse, (fkc.mean(), exact, mcse)
    binomial = math.sqrt(exact * (1 - exact) / (1000 * 6))
    assert abs(rev.mean() - exact) > 20 * max(binomial, mcse), (rev.mean(), exact)


@pytest.mark.parametrize("case", ["product (W = 2)",
                                  pytest.param("ratio (W = 1)", marks=pytest.mark.slow)])
def test_fkc_evidence_is_unbiased_at_many_levels(case):
    """``E[Ẑ] = Z`` up to the O(1/T) discretisation: at T = 1,000 the mean of ``Ẑ/Z`` over 10
    seeds (600 particles) is within 4 MCSE of 1 (with 12 × 1,000 particles, measured:
    −0.013 ± 0.011 and −0.005 ± 0.011; at T = 200 the bias shows, +0.039 ± 0.019)."""
    model = _cases()[case]
    parts = [(A, 1), (B, 1)] + ([(G, -1)] if "ratio" in case else [])
    ratio = []
    for seed in range(10):
        r = rc.sample(model, 600, "fkc", num_levels=1000, seed=seed)
        ratio.append(math.exp(r.info.log_evidence - log_integral(parts, r.info.evidence_t)))
    ratio = np.array(ratio)
    mcse = ratio.std(ddof=1) / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) <= 4 * mcse, (ratio.mean(), mcse)


def test_on_a_single_model_fkc_is_reverse_diffusion():
    """One model: every weight is 1, nothing is resampled, and the draws are reverse
    diffusion's, bit for bit (same seed)."""
    r = rc.sample(A, 300, "fkc", num_levels=50, seed=3)
    ref = rc.sample(A, 300, "reverse", num_levels=50, seed=3)
    assert r.info.resampled == [] and r.info.sampler == "fkc"
    torch.testing.assert_close(r.x, ref.x, rtol=0, atol=0)
    assert r.info.network_score_evals == ref.info.network_score_evals == 50
    assert abs(r.info.log_evidence) < 1e-9  # a normalised model


def test_fkc_runs_on_score_only_models_and_counts_evaluations():
    model = ScoreOnly(A, "a") * ScoreOnly(B, "b")
    r = rc.sample(model, 200, "fkc", num_levels=40, seed=0, ess_threshold=1.0)
    assert r.x.shape == (200, 2) and torch.isfinite(r.x).all()
    assert r.info.resampled == list(range(40)) and len(r.info.ess) == 40
    assert r.info.network_score_evals == 80 and r.info.energy_evals == 0
    with pytest.raises(CapabilityError, match="fkc"):
        rc.sample(model, 10, "smc", num_levels=5, seed=0)


def test_fkc_refuses_what_its_weights_cannot_handle():
    clf = _bayes_classifier()
    with pytest.raises(CapabilityError, match="2 diffusion factors"):
        rc.sample(rc.guide(Q0 * Q1, clf, 2.0), 10, "fkc", seed=0)
    with pytest.raises(CapabilityError, match="W > 0"):
        rc.sample(A / B**2, 10, "fkc", seed=0)
    with pytest.raises(ValueError, match="W = 1"):
        rc.sample(A * B, 10, "fkc", seed=0, clip=(-3, 3))
    with pytest.raises(TypeError, match="num_steps"):
        rc.sample(A * B, 10, "fkc", seed=0, num_steps=2)  # no moves, no steps


def test_groups_are_weighted_and_resampled_separately():
    """Two groups of one target: each returns its own evidence, both near the oracle's; and
    resampling never moves a particle across groups."""
    n, model = 600, A * B / G
    groups = torch.arange(n) % 2
    r = rc.sample(model, n, "fkc", num_levels=300, seed=0, groups=groups, ess_threshold=1.0)
    assert isinstance(r.info.log_evidence, list) and len(r.info.log_evidence) == 2
    exact = log_integral([(A, 1), (B, 1), (G, -1)], r.info.evidence_t)
    assert all(abs(v - exact) < 0.3 for v in r.info.log_evidence), (r.info.log_evidence, exact)
    # resampling stays inside a group: group 0 (even rows) has one dominant particle, group 1
    # (odd rows) is left alone
    pops = Populations(groups, n, torch.device("cpu"))
    log_w = pops.initial()
    log_w[4] = 50.0
    log_w, _ = pops.normalize(log_w)
    index, after = pops.resample(log_w, torch.tensor([True, False]), "systematic", None)
    assert (index[groups == 0] == 4).all() and (index[groups == 1] == torch.arange(1, n, 2)).all()
    assert torch.allclose(after[groups == 0], torch.full((n // 2,), -math.log(n // 2),
                                                         dtype=torch.float64))
    with pytest.raises(ValueError, match="groups must be"):
        rc.sample(model, 10, "fkc", seed=0, groups=torch.zeros(9, dtype=torch.long))


def test_chains_with_different_conditions_need_groups():
    """A label per chain makes the chains' targets differ: particle samplers refuse to weigh
    them against each other unless told which chains share a target."""
    clf = ClassifierFactor(lambda x, t: torch.stack([-Q0.energy(x, t), -Q1.energy(x, t)], 1),
                           torch.arange(8) % 2, Q0.schedule, (2,))
    model = rc.guide(rc.mixture([Q0, Q1]), clf, 2.0)
    assert model.per_chain and not rc.guide(rc.mixture([Q0, Q1]), _bayes_classifier(),
                                            2.0).per_chain
    for sampler in ("fkc", "smc"):
        with pytest.raises(ValueError, match="groups="):
            rc.sample(model, 8, sampler, num_levels=5, seed=0)
    r = rc.sample(model, 8, "fkc", num_levels=5, seed=0, groups=torch.arange(8) % 2)
    assert len(r.info.log_evidence) == 2
    with pytest.raises(TypeError, match="groups"):
        rc.sample(model, 8, "reverse", num_levels=5, seed=0, groups=torch.arange(8) % 2)


def test_fkc_refuses_composites_whose_factors_it_cannot_see():
    canvas = rc.tapestry((1, 4, 6), [((0, 0), rc.GaussianMixture(torch.zeros(1, 16), 1.0,
                                                                  event_shape=(1, 4, 4))),
                                     ((0, 2), rc.GaussianMixture(torch.zeros(1, 16), 1.0,
                                                                  event_shape=(1, 4, 4)))])
    with pytest.raises(CapabilityError, match="cannot see"):
        rc.sample(canvas, 4, "fkc", seed=0)


def test_moves_spread_the_resampled_copies_and_keep_the_mode_weights():
    """With HMC moves after each level's resampling (invariant for ``p̃_t``) the mass on
    ``x₁ < 0`` stays within 4 MCSE of the exact value (6 seeds × 1,000 particles, T = 200), the
    returned particles are all distinct, and every move is counted."""
    exact = _exact_left(A * B, 1 / 200)
    runs = [rc.sample(A * B, 1000, "fkc", num_levels=200, seed=s, moves="hmc",
                      ess_threshold=1.0) for s in range(6)]
    left = np.array([_left(r.x) for r in runs])
    assert abs(left.mean() - exact) <= 4 * left.std(ddof=1) / math.sqrt(len(left)), left
    assert len(torch.unique(runs[0].x, dim=0)) == 1000
    # per level: the step's scores, HMC's own energy at the start, 3 leapfrog scores, the rate
    assert runs[0].info.network_score_evals == 2 * 200 * 6
    with pytest.raises(TypeError, match="predictor"):
        rc.sample(A * B, 10, "fkc", seed=0, moves="ula", predictor=True)


def test_a_total_exponent_that_rounds_off_one_is_one():
    """CFG's ``(1 − w) + w`` need not be 1.0 in floating point; it still takes the DDPM step
    (and so accepts ``clip``)."""
    model = G**0.7 * B**0.2 * A**0.1
    assert sum(w for _, w in rc.compose.factors(model)) != 1.0  # 0.9999999999999999
    fk = FeynmanKac(model)
    assert fk.total_weight == 1.0
    rc.sample(model, 8, "fkc", num_levels=4, seed=0, clip=(-5, 5))
