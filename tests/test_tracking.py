"""Log-densities tracked along the trajectory (the Itô density estimator), score-only mixtures
(OR) and SuperDiff's AND, on the exact oracle behind a score-only wrapper: exactness where it
is exact, the estimator's error against the oracle and its shrinking with T, mode masses within
MCSE, the AND's equal log-densities, the batched views, and the refusals."""

import math

import numpy as np
import pytest
import torch

import recompose as rc
from conftest import CallCounter, ScoreOnly, class_model
from experiments.superdiff import exact_left, oracle, tracked_run
from recompose.errors import CapabilityError
from recompose.samplers.tracking import Tracker

PATHS = {"vp": rc.CosineSchedule, "rf": rc.RectifiedFlowSchedule}
W = (0.3, 0.7)


def _score_mix(p, q, weights=W):
    return rc.mixture([ScoreOnly(p, "P"), ScoreOnly(q, "Q")], weights)


# ---------------------------------------------------------------- exact checks
@pytest.mark.parametrize("path", list(PATHS))
def test_tracking_is_exact_for_the_reference_gaussian_along_any_trajectory(path):
    """``N(0, (α² + σ²) I)`` (data ``N(0, I)``) is the control variate: its tracked log-density
    equals the exact one to rounding at every level, along the chains of another model."""
    schedule = PATHS[path]()
    g = rc.GaussianMixture([[0.0, 0.0]], 1.0, schedule=schedule, name="G")
    p, q = oracle(schedule)
    r, x = tracked_run(rc.mixture([ScoreOnly(g, "G"), ScoreOnly(p, "P")], [0.5, 0.5]), 200, 30, 0)
    torch.testing.assert_close(r.log_density["G"], g.log_prob(x, r.info.t[0]), rtol=0,
                               atol=1e-9)


def _ito(s, x, x_new, f, b):
    """The left-point Itô sum ``⟨s, dx⟩ + d F + F⟨x, s⟩ − ½ B |s|²`` (2D), per model."""
    return ((s * (x_new - x)[:, None]).sum(-1) + 2 * f + f * (s * x[:, None]).sum(-1)
            - 0.5 * b * (s**2).sum(-1))


def test_the_increment_is_the_ito_sum_with_the_gaussian_control_variate():
    """One step by hand: the Itô sum of each model's score, minus that of the reference
    Gaussian ``G = N(0, v I)`` (score ``−x/v_i``), plus ``G``'s exact change
    ``log G_{i−1}(x') − log G_i(x)``."""
    schedule = rc.RectifiedFlowSchedule()
    p, q = oracle(schedule)
    tracker = Tracker(_score_mix(p, q))
    levels = schedule.levels(20)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    x_new = x + 0.1 * torch.randn(7, 2, generator=gen, dtype=torch.float64)
    s = torch.stack([p.score(x, levels.t[5]), q.score(x, levels.t[5])], 1)
    ell = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    f = math.log(float(levels.alpha[5] / levels.alpha[4]))
    b = levels.g2_integral(5)
    v = [float(levels.alpha[i] ** 2 + levels.sigma[i] ** 2) for i in (4, 5)]

    def log_g(y, var):
        return -0.5 * (y**2).sum(-1) / var - math.log(2 * math.pi * var)

    ref = (-x / v[1])[:, None].expand(-1, 2, -1)
    by_hand = (ell + _ito(s, x, x_new, f, b) - _ito(ref, x, x_new, f, b)
               + (log_g(x_new, v[0]) - log_g(x, v[1]))[:, None])
    torch.testing.assert_close(tracker.advance(ell, x, x_new, s, levels, 5), by_hand,
                               rtol=1e-12, atol=1e-12)


def test_the_and_step_makes_the_tracked_log_densities_equal():
    """With an unclipped range, κ solved after drawing z makes ``ℓ_A = ℓ_B`` after the step,
    to rounding, from any start."""
    p, q = oracle(rc.CosineSchedule())
    sup = rc.superpose([ScoreOnly(p, "P"), ScoreOnly(q, "Q")], kappa_range=(-1e9, 1e9))
    tracker, levels = Tracker(sup), rc.CosineSchedule().levels(50)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    for i in (40, 10, 1):
        s = torch.stack([p.score(x, levels.t[i]), q.score(x, levels.t[i])], 1)
        ell = torch.randn(64, 2, generator=gen, dtype=torch.float64)
        x_new, kappa = tracker.and_step(levels, x, s, ell, i, gen, None)
        after = tracker.advance(ell, x, x_new, s, levels, i)
        torch.testing.assert_close(after[:, 0], after[:, 1], rtol=0, atol=1e-8)
        assert torch.isfinite(kappa).all()


# ---------------------------------------------------------------- the estimator's error
@pytest.mark.parametrize("path", list(PATHS))
def test_tracked_differences_between_chains_match_the_oracle_and_shrink_with_levels(path):
    """``ℓ_k − log q^k_{t_0}(x)`` over the chains each model holds (500 chains, seed 0): its
    spread is the error of the differences between chains. First-order Itô sum: the spread
    falls like ``T^{−1/2}`` (measured from T = 50 to 200: ×0.55 / ×0.52 for P, ×0.47 for Q on
    VP / rectified flow; docs/results.md §13), so the tolerance is ``c/√T`` with ``c`` 1.3× the
    largest measured constant: ``c = 5`` for P (stds 0.15, 0.3; measured 3.8 / 3.5),
    ``c = 1.8`` for Q (0.6, 0.4; measured 1.3 / 1.4)."""
    p, q = oracle(PATHS[path]())
    spreads = {}
    for T in (50, 200):
        r, x = tracked_run(_score_mix(p, q), 500, T, 0)
        t0 = r.info.t[0]
        own = {"P": x[:, 0] < 0, "Q": x[:, 0] >= 0}
        spreads[T] = {k: float((r.log_density[k] - m.log_prob(x, t0))[own[k]].std())
                      for k, m in (("P", p), ("Q", q))}
    for k, c in (("P", 5.0), ("Q", 1.8)):
        assert spreads[200][k] <= c / math.sqrt(200), (k, spreads)
        assert spreads[200][k] <= spreads[50][k] / 1.5, (k, spreads)  # T^-1/2 predicts ÷2


@pytest.mark.parametrize("path", list(PATHS))
def test_a_score_only_mixture_gets_each_sides_mass(path):
    """0.3/0.7 of two mixtures of unequal widths (stds 0.25, 0.4 against 0.7, 0.5), 8 seeds ×
    1,000 chains at T = 200: the tracked score-only mixture ("fkc") within 4 MCSE of the exact
    mass on ``x₁ < 0`` (MCSE from the spread over seeds), and on VP the energy mixture of the
    same exact models too ("reverse": the same expression, the same density). The mass error
    falls like 1/T (docs/results.md §13: −0.018 at T = 100, −0.009 at T = 200, of which
    reverse diffusion's own discretisation, with exact energies, is −0.013 and −0.006)."""
    p, q = oracle(PATHS[path](), narrow=False)
    exact = exact_left([p, q], W)
    cases = [(_score_mix(p, q), "fkc")] + ([(rc.mixture([p, q], W), "reverse")]
                                           if path == "vp" else [])
    for model, sampler in cases:
        left = np.array([float((rc.sample(model, 1000, sampler, num_levels=200, seed=s).x[:, 0]
                                < 0).double().mean()) for s in range(8)])
        mcse = left.std(ddof=1) / math.sqrt(len(left))
        assert abs(left.mean() - exact) <= 4 * mcse, (sampler, left.mean(), exact, mcse)


@pytest.mark.parametrize("path", list(PATHS))
def test_the_and_ends_with_equal_log_densities(path):
    """SuperDiff's AND (default κ ∈ [−1, 2], T = 200, 500 chains): the exact log-densities of
    the two models at the samples differ by a median of under 0.35 nats (measured 0.22 on VP,
    0.26 on rectified flow; the tracked ones by 0.12 / 0.15, where κ clips). With κ unclipped
    the tracked ones are equal to rounding, and the exact ones differ by the estimator's error
    (median 0.43: the extreme κ it takes make large steps). Samples of the product ``A·B``
    (FKC) differ by 1.5–1.7."""
    schedule = PATHS[path]()
    a = rc.GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], [0.3, 0.3], schedule=schedule)
    b = rc.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], [0.5, 0.2], schedule=schedule)
    sa, sb = ScoreOnly(a, "A"), ScoreOnly(b, "B")
    r, x = tracked_run(rc.superpose([sa, sb]), 500, 200, 0)
    t0 = r.info.t[0]
    exact = (a.log_prob(x, t0) - b.log_prob(x, t0)).abs()
    assert float(exact.median()) < 0.35, float(exact.median())
    wide, x = tracked_run(rc.superpose([sa, sb], kappa_range=(-1e6, 1e6)), 500, 200, 0)
    tracked = (wide.log_density["A"] - wide.log_density["B"]).abs()
    assert float(tracked.quantile(0.95)) < 1e-6
    prod = rc.sample(sa * sb, 500, "fkc", num_levels=200, seed=0).x
    assert float((a.log_prob(prod, t0) - b.log_prob(prod, t0)).abs().median()) > 1.0


def test_a_mixture_inside_a_product_gets_feynman_kac_weights():
    """§12's oracle with its two-mode factor as a score-only mixture: ``mix(P, Q) · B`` with
    ``P = N((−2, 0), 0.2²)``, ``Q = N((2, 0), 1)`` (weights ½, ½) and ``B = N(0, 0.5²)``. FKC
    weighs the tracked mixture as a marginal factor: the exact product's mass on ``x₁ < 0``
    (0.2028) within 4 MCSE (6 seeds × 1,000 particles, T = 200), where reverse diffusion's
    summed score puts about half the mass there."""
    p = ScoreOnly(rc.GaussianMixture([[-2.0, 0.0]], 0.2), "P")
    q = ScoreOnly(rc.GaussianMixture([[2.0, 0.0]], 1.0), "Q")
    b = rc.GaussianMixture([[0.0, 0.0]], 0.5)
    model = rc.mixture([p, q]) * ScoreOnly(b, "B")
    exact = exact_left([rc.gmm_product(rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]],
                                                           [0.2, 1.0]), b)], (1.0,))
    assert abs(exact - 0.2028) < 1e-4
    fkc = np.array([float((rc.sample(model, 1000, "fkc", num_levels=200, seed=s).x[:, 0] < 0)
                          .double().mean()) for s in range(6)])
    mcse = fkc.std(ddof=1) / math.sqrt(len(fkc))
    assert abs(fkc.mean() - exact) <= 4 * mcse, (fkc.mean(), exact, mcse)
    rev = float((rc.sample(model, 1000, "reverse", num_levels=200, seed=0).x[:, 0] < 0)
                .double().mean())
    assert rev - exact > 0.2, (rev, exact)


# ---------------------------------------------------------------- plumbing
def test_fkc_on_a_mixture_alone_is_reverse_diffusion_with_tracking():
    """A mixture is one marginal factor: FKC's weights are all 1, nothing is resampled, and
    samples and tracked log-densities are reverse diffusion's bit for bit; both models are
    evaluated at every level."""
    p, q = oracle(rc.CosineSchedule())
    a = rc.sample(_score_mix(p, q), 300, "fkc", num_levels=40, seed=3)
    b = rc.sample(_score_mix(p, q), 300, "reverse", num_levels=40, seed=3)
    assert torch.equal(a.x, b.x) and a.info.resampled == []
    assert set(a.log_density) == {"P", "Q"} and a.log_density["P"].shape == (300,)
    assert all(torch.equal(a.log_density[k], b.log_density[k]) for k in ("P", "Q"))
    assert a.info.network_score_evals == b.info.network_score_evals == 80
    assert a.log_density["P"].dtype == torch.float64


def test_superpose_or_is_the_tracked_mixture_and_energy_mixtures_are_unchanged():
    p, q = oracle(rc.CosineSchedule())
    energy = rc.mixture([p, q], W)
    assert not energy.tracked and energy.has_energy
    r = rc.sample(energy, 50, "reverse", num_levels=10, seed=0)
    assert r.log_density is None
    forced = rc.sample(rc.superpose([p, q], mode="or", weights=W), 100, "reverse",
                       num_levels=20, seed=1)
    score_only = rc.sample(_score_mix(p, q), 100, "reverse", num_levels=20, seed=1)
    assert torch.equal(forced.x, score_only.x)
    with pytest.raises(TypeError, match="weights"):
        rc.superpose([p, q], mode="and", weights=W)


def test_sharded_runs_carry_the_log_densities_of_every_block():
    p, q = oracle(rc.CosineSchedule())
    for sampler in ("reverse", "fkc"):
        r = rc.sample(_score_mix(p, q), 300, sampler, num_levels=10, seed=0, shard=True)
        assert {k: v.shape for k, v in r.log_density.items()} == {"P": (300,), "Q": (300,)}


def test_views_of_one_network_are_one_stacked_call():
    """A mixture of two prompts of one conditional network: one network call per level for
    both parts, whose scores equal the views' own."""
    model = class_model("score")
    mix = rc.mixture([model.given(1), model.given(7)], W)
    counter = CallCounter(model.net)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    raw = Tracker(mix).evaluate(x, 0.4)
    assert counter.calls == 1
    torch.testing.assert_close(raw[:, 1], model.given(7).score(x, 0.4))
    counter.calls = 0
    r = rc.sample(mix, 6, "reverse", num_levels=8, seed=0, clip=(-1.0, 1.0))
    assert counter.calls == 8 and r.info.network_score_evals == 16
    assert set(r.log_density) == {"A|1", "A|7"}


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("sampler", ["ode", "ula", "uhmc", "mala", "hmc", "smc"])
def test_samplers_that_cannot_track_refuse_before_any_work(sampler):
    p, q = oracle(rc.CosineSchedule())
    with pytest.raises(CapabilityError, match="use 'fkc' \\(without moves\\) or 'reverse'"):
        rc.sample(_score_mix(p, q), 10, sampler, num_levels=5, seed=0)
    with pytest.raises(CapabilityError, match="use 'reverse'$"):
        rc.sample(rc.superpose([ScoreOnly(p, "P"), ScoreOnly(q, "Q")]), 10, sampler,
                  num_levels=5, seed=0)


def test_what_tracking_cannot_do_is_refused_with_advice():
    p, q = oracle(rc.CosineSchedule())
    mix, sup = _score_mix(p, q), rc.superpose([ScoreOnly(p, "P"), ScoreOnly(q, "Q")])
    with pytest.raises(CapabilityError, match="fkc without moves"):
        rc.sample(mix, 10, "fkc", moves="uhmc", num_levels=5, seed=0)
    with pytest.raises(CapabilityError, match="not a density.*'reverse'"):
        rc.sample(sup, 10, "fkc", num_levels=5, seed=0)
    with pytest.raises(CapabilityError, match="sample it alone"):
        rc.sample(sup * p, 10, "reverse", num_levels=5, seed=0)
    with pytest.raises(CapabilityError, match="one diffusion model"):
        rc.mixture([mix * p, q])
    with pytest.raises(CapabilityError, match="'fkc' \\(without moves\\) or 'reverse'"):
        mix.score(torch.zeros(2, 2), 0.5)
    with pytest.raises(rc.CompositionError, match="two models"):
        rc.superpose([p, q, p])
