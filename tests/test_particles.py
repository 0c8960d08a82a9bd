"""The weighted samplers' bookkeeping, exactly: per-group ESS, weight increments recomputed
from the particles' own positions, the Feynman–Kac step for W ≠ 1, evaluation counts.

Statistical tests (test_smc.py, test_fkc.py, test_paths.py) check that the samplers are right
on average; these check each number a run reports against an independent computation, so that
a bookkeeping slip that moves results by less than the Monte-Carlo error is still caught."""

import math

import torch

import recompose as rc
from recompose.samplers.fkc import FeynmanKac

A = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
B = rc.GaussianMixture([[0.0, 0.0]], 0.5, name="B")


def _ess(log_w):
    w = torch.softmax(log_w, 0)
    return float(1 / (w**2).sum())


def test_fkc_increments_recomputed_from_the_particles_positions():
    """FKC on ``A·B`` (W = 2) with no resampling before the last level: at every level the
    recorded ESS is that of the cumulative weights ``Σ ½(ĝ_{j+1} + ĝ_j) B_{j+1}`` recomputed
    here from the positions the callback reports and the Fokker–Planck rate; and the first
    level's particles are the prior's draws scaled by ``1/√W``."""
    model, levels, n = A * B, A.schedule.levels(12), 200
    seen = {}
    r = rc.sample(model, n, "fkc", num_levels=12, seed=3, ess_threshold=0.0,
                  callback=lambda d: seen.__setitem__(d["level"], d["x"].clone()))
    fk = FeynmanKac(model)
    prior = levels.prior(n, (2,), torch.Generator().manual_seed(3), torch.device("cpu"),
                         torch.float64)
    torch.testing.assert_close(seen[11], prior / math.sqrt(2), rtol=1e-15, atol=1e-15)
    rates = {i: fk.score_and_rate(seen[i], levels.t[i], levels.drift_ratio(i))[1]
             for i in range(1, 12)}
    log_w = torch.zeros(n, dtype=torch.float64)
    for i in reversed(range(1, 12)):
        if i < 11:
            log_w = log_w + 0.5 * (rates[i + 1] + rates[i]) * levels.g2_integral(i + 1)
        assert r.info.ess[i] == _ess_pytest_approx(_ess(log_w)), i
    assert r.info.resampled == [0]


def _ess_pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-9)


def test_the_feynman_kac_step_for_w_not_one_is_the_ou_step_written_out():
    """One step of FKC's exponential integrator on a rectified-flow path (so ``v = α² + σ²``
    and ``κ = −2f/g²`` are not 1), against the formula written here, same noise."""
    path = rc.RectifiedFlowSchedule(shift=2.0)
    a = rc.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], 0.4, schedule=path)
    b = rc.GaussianMixture([[0.0, 0.0]], 0.7, schedule=path)
    model = a * b**0.5  # W = 1.5
    fk = FeynmanKac(model)
    assert fk.total_weight == 1.5
    levels = path.levels(10)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in (9, 5, 1):
        score = model.score(x, levels.t[i])
        got = fk.step(x, score, levels, i, torch.Generator().manual_seed(i), None)
        alpha, sigma = float(levels.alpha[i]), float(levels.sigma[i])
        t = levels.t[i : i + 1]
        f, g2 = (float(v[0]) for v in path.drift_diffusion(t))
        v, kappa = alpha**2 + sigma**2, -2 * f / g2
        lam = 1.5 * (1 / v - kappa / 2)
        big_b = levels.g2_integral(i)
        phi = math.exp(-lam * big_b)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype)
        expected = (phi * x + (1 - phi) / lam * (score + 1.5 / v * x)
                    + math.sqrt((1 - phi**2) / (2 * lam)) * z)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_grouped_runs_record_the_worst_groups_ess():
    """With two groups the recorded ESS at the cleanest level is ``n · min_g ESS_g / n_g`` of the
    returned (pre-resampling) weights, normalised within each group."""
    groups = torch.arange(90) % 3
    groups[groups == 2] = 1  # groups of 30 and 60 particles
    for sampler in ("smc", "fkc"):
        r = rc.sample(A * B, 90, sampler, num_levels=8, seed=1, groups=groups)
        fractions = []
        for g in (0, 1):
            log_w = r.log_weights[groups == g]
            assert float(torch.logsumexp(log_w, 0)) == _ess_pytest_approx(0.0)
            fractions.append(_ess(log_w) / len(log_w))
        assert r.info.ess[0] == _ess_pytest_approx(90 * min(fractions)), sampler
        assert len(r.info.log_evidence) == 2


def test_unadjusted_moves_cost_one_energy_per_level_beyond_their_steps():
    """SMC with ULA moves: per level one ``energy_and_score`` (the weight), K ULA scores, and
    one energy at the moved points for the next weight; network counts × leaves."""
    T, K = 6, 3
    r = rc.sample(A * B, 20, "smc", num_levels=T, seed=0, moves="ula", num_steps=K)
    assert r.info.score_evals == T * (1 + K) and r.info.energy_evals == T * 2
    assert r.info.network_energy_evals == 2 * r.info.energy_evals
    assert r.info.network_score_evals == 2 * r.info.score_evals
    hmc = rc.sample(A * B, 20, "hmc", num_levels=T, num_steps=K, seed=0)
    assert hmc.info.network_energy_evals == 2 * hmc.info.energy_evals == 2 * T * (1 + K)


def test_no_moves_is_a_choice_not_the_default():
    """``moves=None`` means no moves (the DDPM proposal alone); leaving it out means HMC."""
    none = rc.sample(A * B, 20, "smc", num_levels=4, seed=0, moves=None, proposal="ddpm")
    assert none.info.settings["moves"] is None and none.info.settings["num_steps"] == 0
    default = rc.sample(A * B, 20, "smc", num_levels=4, seed=0)
    assert default.info.settings["moves"] == "hmc" and default.info.settings["num_steps"] == 2


def test_resampling_leaves_equal_weights_in_the_resampled_groups_only():
    """After resampling, a resampled group's particles weigh exactly ``1/n_g`` each and descend
    from its own members; a group that was not resampled keeps its weights and particles."""
    from recompose.samplers.particles import Populations

    gen = torch.Generator().manual_seed(0)
    log_w = torch.log_softmax(torch.randn(12, generator=gen, dtype=torch.float64), 0)
    one = Populations(None, 12, torch.device("cpu"))
    index, after = one.resample(log_w, torch.tensor([True]), "systematic", gen)
    assert torch.equal(after, torch.full((12,), -math.log(12), dtype=torch.float64))
    assert index.shape == (12,) and bool(((index >= 0) & (index < 12)).all())

    groups = torch.tensor([0, 1] * 6)
    pops = Populations(groups, 12, torch.device("cpu"))
    log_w, _ = pops.normalize(log_w)
    index, after = pops.resample(log_w, torch.tensor([False, True]), "multinomial", gen)
    kept, moved = groups == 0, groups == 1
    assert torch.equal(after[kept], log_w[kept])
    assert torch.equal(index[kept], torch.nonzero(kept).flatten())
    assert torch.equal(after[moved], torch.full((6,), -math.log(6), dtype=torch.float64))
    assert bool((groups[index[moved]] == 1).all())
