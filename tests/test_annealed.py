"""The samplers end to end on exact oracles: annealed MALA/HMC sample the product of two
mixtures measurably better than reverse diffusion with summed scores."""

import statistics

import pytest
import torch

import recompose as rc
from conftest import ScoreOnly, ring_gmm, skewed_gmm
from recompose.metrics import energy_distance

N = 2000


@pytest.fixture(scope="module")
def product_problem():
    ring = ring_gmm()  # 8 modes, radius 0.5, std 0.03
    two = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1, name="two")  # on 2 ring modes
    exact = rc.gmm_product(ring, two)
    gen = torch.Generator().manual_seed(99)
    refs = [exact.sample(N, gen) for _ in range(4)]
    # exact-vs-exact baseline: the distance two independent exact draws have
    base = [energy_distance(exact.sample(N, gen), r) for r in refs]
    return ring * two, refs, statistics.mean(base), statistics.stdev(base)


def _distance(x, refs):
    return statistics.mean(energy_distance(x, r) for r in refs)


@pytest.fixture(scope="module")
def reverse_distance(product_problem):
    model, refs, _, _ = product_problem
    return _distance(rc.sample(model, N, "reverse", seed=0).x, refs)


def test_reverse_diffusion_is_measurably_wrong(product_problem, reverse_distance):
    _, _, base_mean, base_sd = product_problem
    assert reverse_distance > base_mean + 10 * base_sd


@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_annealed_mh_beats_reverse_diffusion(product_problem, reverse_distance, sampler):
    model, refs, base_mean, base_sd = product_problem
    result = rc.sample(model, N, sampler, num_levels=100, num_steps=10, seed=0)
    dist = _distance(result.x, refs)
    assert dist + 5 * base_sd < reverse_distance, (dist, reverse_distance, base_sd)
    assert 0.4 < result.info.mean_acceptance < 0.9


def test_info_and_cost_accounting():
    model = skewed_gmm() * ring_gmm(std=0.3)
    T, K, L = 7, 3, 2
    levels_seen = []
    r = rc.sample(model, 10, "hmc", num_levels=T, num_steps=K, num_leapfrog_steps=L, seed=0,
                  callback=lambda d: levels_seen.append(d["level"]))
    info = r.info
    assert levels_seen == list(reversed(range(T)))
    assert len(info.acceptance) == len(info.step_size) == len(info.t) == T
    assert info.score_evals == T * (1 + K * L) and info.energy_evals == T * (1 + K)
    assert info.network_score_evals == 2 * info.score_evals
    assert info.wall_time > 0 and info.settings["num_leapfrog_steps"] == L
    rev = rc.sample(model, 10, "reverse", num_levels=T, seed=0).info
    assert rev.score_evals == T and rev.energy_evals == 0
    mala = rc.sample(model, 10, "mala", num_levels=T, num_steps=K, seed=0).info
    assert mala.score_evals == T * (1 + K) == mala.energy_evals
    ula = rc.sample(model, 10, "ula", num_levels=T, num_steps=K, seed=0).info
    assert ula.score_evals == T * (1 + K) and ula.energy_evals == 0
    assert ula.acceptance == [1.0] * T


def test_seeded_runs_reproduce():
    model = skewed_gmm() * ring_gmm(std=0.3)
    a = rc.sample(model, 50, "hmc", num_levels=10, seed=3).x
    b = rc.sample(model, 50, "hmc", num_levels=10,
                  generator=torch.Generator().manual_seed(3)).x
    c = rc.sample(model, 50, "hmc", num_levels=10, seed=4).x
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_adaptation_reaches_the_target_acceptance():
    model = skewed_gmm() * ring_gmm(std=0.3)
    for sampler, target in (("mala", 0.574), ("hmc", 0.65)):
        info = rc.sample(model, 500, sampler, num_levels=50, seed=0).info
        assert abs(info.mean_acceptance - target) < 0.1, (sampler, info.mean_acceptance)
        fixed = rc.sample(model, 500, sampler, num_levels=50, seed=0, adapt=False,
                          step_size=1e-4).info
        assert fixed.mean_acceptance > 0.97  # tiny fixed steps: R3's ~0.997 regime


SHAPES = {"points": (2,), "images": (1, 4, 4)}


@pytest.mark.parametrize("sampler", rc.SAMPLERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_sampler_on_points_and_images(sampler, shape):
    event = SHAPES[shape]
    d = 1
    for s in event:
        d *= s
    g = torch.Generator().manual_seed(0)
    a = rc.GaussianMixture(torch.randn(3, d, generator=g), 0.3, event_shape=event)
    b = rc.GaussianMixture(torch.randn(2, d, generator=g), 0.5, event_shape=event)
    model = rc.mixture([a, b], [0.4, 0.6]) * a**0.5
    mcmc = {} if sampler in ("reverse", "ode", "fkc") else {"num_steps": 2}
    r = rc.sample(model, 6, sampler, num_levels=5, seed=0, **mcmc)
    assert r.x.shape == (6, *event) and bool(torch.isfinite(r.x).all())


def test_sample_refuses_bad_requests():
    model = skewed_gmm()
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, "):
        rc.sample(model, 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        rc.sample(model, 5, "nuts")
    with pytest.raises(rc.CapabilityError, match="score-only"):
        rc.sample(ScoreOnly(model), 5, "hmc")
    with pytest.raises(TypeError, match="such as mala and hmc adapt"):
        rc.sample(model, 5, "ula", adapt=True)
    with pytest.raises(ValueError, match="positive"):
        rc.sample(model, 5, "ula", step_size=-1.0)
    # score-only models work with the unadjusted samplers
    for s in ("reverse", "ula", "uhmc"):
        assert rc.sample(ScoreOnly(model), 5, s, num_levels=3, seed=0).x.shape == (5, 2)


def test_divergence_is_reported_with_level_and_count():
    model = skewed_gmm()
    with pytest.raises(FloatingPointError, match=r"level \d+ .* chains are not finite.*smaller"):
        rc.sample(model, 20, "ula", num_levels=5, step_size=1e6, step_power=0, seed=0)


def test_no_predictor_and_no_denoise_variants():
    model = skewed_gmm() * ring_gmm(std=0.3)
    r = rc.sample(model, 20, "hmc", num_levels=5, predictor=False, denoise=False, seed=0)
    assert r.info.settings["predictor"] is False and r.x.shape == (20, 2)


def test_clipped_ddpm_step_is_the_same_step_when_nothing_is_clipped():
    levels = rc.CosineSchedule().levels(50)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in (49, 20, 0):
        plain = levels.posterior_step(x, s, i, torch.Generator().manual_seed(2))
        wide = levels.posterior_step(x, s, i, torch.Generator().manual_seed(2),
                                     clip=(-1e9, 1e9))
        torch.testing.assert_close(plain, wide, rtol=1e-10, atol=1e-10)
    # clipping bounds the last step (Tweedie's x̂₀) to the box
    last = levels.posterior_step(10 * x, s, 0, clip=(-1.0, 1.0))
    assert float(last.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="lo < hi"):
        rc.sample(rc.GaussianMixture([[0.0, 0.0]], 1.0), 2, "reverse", clip=(1, -1))


def _model():
    return skewed_gmm() * ring_gmm(std=0.3)


@pytest.mark.parametrize("sampler", ["ula", "mala"])
@pytest.mark.parametrize("score_only", [False, True], ids=["energy", "score"])
def test_zero_mcmc_steps_is_exactly_reverse_diffusion(sampler, score_only):
    """K = 0 with a predictor step and the final denoise is DDPM ancestral sampling, bit for
    bit: the predictor at level i uses the score at t_{i+1} and step i + 1, the denoise the
    score at t_0 (an off-by-one in either, or an extra random draw, breaks equality).
    U-HMC/HMC are excluded by design: their ``init`` draws a momentum at every level (kept so
    that seeded results are unchanged), which shifts the random stream."""
    if score_only and sampler == "mala":
        pytest.skip("MALA needs energies")
    model = ScoreOnly(_model()) if score_only else _model()
    rev = rc.sample(model, 64, "reverse", num_levels=8, seed=5)
    mc = rc.sample(model, 64, sampler, num_levels=8, num_steps=0, seed=5)
    assert torch.equal(mc.x, rev.x)
    assert mc.info.divergent == [0.0] * 8


class _RecordTimes:
    """Wraps a model's score/energy so every evaluation records the ``t`` it was asked for."""

    def __init__(self, model):
        self.times = []
        score, both = model.score, model.energy_and_score
        model.score = lambda x, t: (self.times.append(float(t)), score(x, t))[1]
        model.energy_and_score = lambda x, t: (self.times.append(float(t)), both(x, t))[1]


@pytest.mark.parametrize("sampler", ["reverse", "ula", "mala", "hmc"])
def test_each_level_targets_its_time_from_noisiest_to_cleanest(sampler):
    T, K, L = 6, 2, 3
    model = _model()
    rec = _RecordTimes(model)
    seen = []
    mcmc = {} if sampler == "reverse" else {"num_steps": K}
    rc.sample(model, 8, sampler, num_levels=T, seed=0, callback=seen.append, **mcmc)
    t = model.schedule.levels(T).t
    order = list(reversed(range(T)))
    assert [p["level"] for p in seen] == order
    assert [p["t"] for p in seen] == [float(t[i]) for i in order]
    per_level = {"reverse": 1, "ula": 1 + K, "mala": 1 + K, "hmc": 1 + K * L}[sampler]
    expected = [float(t[i]) for i in order for _ in range(per_level)]
    assert rec.times == pytest.approx(expected, abs=0, rel=1e-6)
    assert len(rec.times) == T * per_level


@pytest.mark.parametrize("factory", [rc.mcmc.uhmc, rc.mcmc.hmc])
def test_momentum_is_carried_from_each_level_to_the_next(factory):
    """The state each level starts from has the momentum of the previous level's last state
    (observed by wrapping the kernel: kernels are objects, here passed as the sampler)."""
    inner = factory(num_leapfrog_steps=2, damping=0.5)
    events = []

    def init(x, target, generator=None, previous=None):
        state = inner.init(x, target, generator, previous=previous)
        events.append(("init", previous, state))
        return state

    def step(state, target, step_size, generator=None):
        new, info = inner.step(state, target, step_size, generator)
        events.append(("step", state, new))
        return new, info

    T, K = 5, 3
    rc.sample(_model(), 16, inner._replace(init=init, step=step), num_levels=T,
              num_steps=K, seed=0)
    inits = [i for i, e in enumerate(events) if e[0] == "init"]
    assert len(inits) == T and events[0][1] is None
    for i in inits[1:]:
        last = events[i - 1][2]  # the state after the previous level's last step
        _, previous, state = events[i]
        assert previous is last
        assert torch.equal(state.momentum, last.momentum)
        assert not torch.equal(state.x, last.x)  # the predictor moved x, not the momentum


def test_divergences_are_counted_per_level():
    """HMC with a huge fixed step: every proposal has ΔH ≫ 1000 (all rejected, the chains
    stay finite) and every level reports a divergent fraction of 1; with the default steps on
    a fine grid, none."""
    model = _model()
    r = rc.sample(model, 32, "hmc", num_levels=4, num_steps=2, step_size=1e4, step_power=0,
                  adapt=False, seed=0)
    assert r.info.divergent == [1.0] * 4 and r.info.acceptance == [0.0] * 4
    assert r.info.to_dict()["divergent"] == [1.0] * 4
    ok = rc.sample(model, 32, "hmc", num_levels=20, num_steps=2, seed=0).info
    assert ok.divergent == [0.0] * 20 and len(ok.divergent) == len(ok.t)
