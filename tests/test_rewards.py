"""Reward factors (``model * rc.reward(...)``): exact bookkeeping, the oracle's tilted mode
weights, best-of-N's selection, guidance gradients and the refusals."""

import math

import pytest
import torch
from torch.distributions import Normal

import recompose as rc
from conftest import ScoreOnly
from recompose.errors import CapabilityError, CompositionError
from recompose.expression import ExpressionError
from recompose.resampling import normalize_log_weights
from recompose.rewards import reward_levels, tilt_update

MEANS, STD, WEIGHTS = [[-2.0, 0.0], [2.0, 0.0]], 0.5, [0.7, 0.3]


def oracle() -> rc.GaussianMixture:
    return rc.GaussianMixture(MEANS, stds=STD, weights=WEIGHTS, name="oracle")


def p_right() -> float:
    """``P(x₁ > 0)`` under the oracle."""
    return sum(w * (1 - float(Normal(m[0], STD).cdf(torch.tensor(0.0))))
               for w, m in zip(WEIGHTS, MEANS))


def right(x: torch.Tensor) -> torch.Tensor:
    """An indicator: not differentiable, only weights can use it."""
    return (x[:, 0] > 0).to(torch.float64)


class Recorder:
    """A reward that records every call's input and output."""

    def __init__(self, fn=right):
        self.fn, self.inputs, self.outputs = fn, [], []
        self.__name__ = "recorded"

    def __call__(self, x):
        value = self.fn(x)
        self.inputs.append(x.clone())
        self.outputs.append(value.clone())
        return value


# ------------------------------------------------------------------ the oracle (statistical)
@pytest.mark.parametrize("potential,interval", [("difference", 1), ("max", 1), ("sum", 20),
                                                ("difference", 1000)])
def test_indicator_reward_gives_the_exactly_tilted_mode_weights(potential, interval):
    """π ∝ p · exp(1[x₁ > 0]/λ): ``P_π(x₁ > 0) = e^{1/λ} p/(1 − p + e^{1/λ} p)``, within 4
    Monte-Carlo standard errors over independent seeded runs, whatever the intermediate
    potentials (the last level corrects to the reward itself)."""
    lam, p = 0.5, p_right()
    exact = math.exp(1 / lam) * p / (1 - p + math.exp(1 / lam) * p)
    tilted = oracle() * rc.reward(right, temperature=lam, potential=potential,
                                  interval=interval)
    fractions = []
    for seed in range(8):
        r = rc.sample(tilted, 1000, "fkc", num_levels=60, seed=seed)
        fractions.append(float((r.x[:, 0] > 0).double().mean()))
    f = torch.tensor(fractions, dtype=torch.float64)
    mcse = float(f.std() / len(f) ** 0.5)
    assert abs(float(f.mean()) - exact) < 4 * mcse, (float(f.mean()), exact, mcse)
    assert abs(exact - p) > 20 * mcse  # the test can tell tilted from untilted


def test_evidence_is_the_tilted_normaliser():
    """For the normalised oracle, ``log Ẑ`` estimates ``log ∫ p e^{r/λ} = log(1 − p + e^{1/λ}
    p)``."""
    lam, p = 0.5, p_right()
    exact = math.log(1 - p + math.exp(1 / lam) * p)
    tilted = oracle() * rc.reward(right, temperature=lam)
    values = torch.tensor([rc.sample(tilted, 1000, "fkc", num_levels=60, seed=s
                                     ).info.log_evidence for s in range(8)])
    mcse = float(values.std() / len(values) ** 0.5)
    assert abs(float(values.mean()) - exact) < 4 * mcse + 0.01, (values, exact)


def test_best_of_n_with_an_indicator_keeps_a_right_sample_if_any():
    """Best-of-N on an indicator: ``P(x₁ > 0) = 1 − (1 − p)^N`` (the candidates are independent
    draws), within 4 MCSE; it selects, so the temperature does not matter."""
    n_cand, p = 3, p_right()
    exact = 1 - (1 - p) ** n_cand
    tilted = oracle() * rc.reward(right, temperature=100.0)
    r = rc.sample(tilted, 4000, rc.samplers.BestOf("reverse", n_cand), num_levels=60, seed=0)
    frac = float((r.x[:, 0] > 0).double().mean())
    assert abs(frac - exact) < 4 * math.sqrt(exact * (1 - exact) / 4000)


# ------------------------------------------------------------------ exact bookkeeping
@pytest.mark.parametrize("potential", ["difference", "max", "sum"])
def test_weights_telescope_to_the_final_reward(potential):
    """Without resampling before the end, every potential's increments add up to ``r(x₀)/λ``
    on exactly the returned samples: the final log-weights are the normalised final reward.
    For a single model FKC's own weights are 1 (h = 0), so nothing else enters."""
    rec = Recorder(lambda x: torch.sin(3 * x[:, 0]).double() + x[:, 1].double())
    lam = 0.7
    tilted = oracle() * rc.reward(rec, temperature=lam, potential=potential)
    r = rc.sample(tilted, 64, "fkc", num_levels=12, seed=3, ess_threshold=0.0)
    final = rec.outputs[-1] / lam
    expected, _ = normalize_log_weights(final)
    torch.testing.assert_close(r.log_weights, expected, rtol=0, atol=1e-12)
    # the returned samples are rows of the points the last reward was read at
    rows = [int(torch.nonzero((rec.inputs[-1] == x).all(1))[0]) for x in r.x]
    assert torch.equal(rec.inputs[-1][rows], r.x)


def test_reward_is_read_only_where_needed_on_all_particles():
    """``interval=k``: one call on all ``n`` particles at every k-th level and at level 0;
    ``info.reward_evals`` counts them per chain."""
    rec = Recorder()
    n, levels, k = 32, 10, 4
    tilted = oracle() * rc.reward(rec, temperature=1.0, interval=k)
    r = rc.sample(tilted, n, "fkc", num_levels=levels, seed=0)
    assert reward_levels(tilted.rewards[0], levels) == [0, 4, 8]
    assert [x.shape[0] for x in rec.inputs] == [n, n, n]
    assert r.info.reward_evals == 3
    assert r.info.settings["rewards"][0] == {"name": "recorded", "temperature": 1.0,
                                             "differentiable": False,
                                             "potential": "difference", "interval": 4}


def test_first_reading_is_the_reward_itself_then_the_increments():
    """The increment at the first reading is ``ρ`` (A was 0), then ``A_i − A_{i+1}``; the
    potentials' updates are exact."""
    rho = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    prev = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    for potential, want in [("difference", rho), ("max", torch.tensor([1.0, -1.0, 3.0])),
                            ("sum", prev + rho)]:
        r = rc.reward(right, potential=potential)
        assert torch.equal(tilt_update(r, None, rho), rho)
        assert torch.equal(tilt_update(r, prev, rho), want.to(torch.float64))


def test_best_of_returns_each_rows_highest_reward_candidate():
    """Candidate ``k`` of chain ``j`` sits on row ``j``; the returned row is the first
    candidate with the highest reward; all candidates are counted."""
    rec = Recorder(lambda x: x[:, 0].double().round())  # ties happen
    tilted = oracle() * rc.reward(rec, temperature=2.0)
    n, n_cand, levels = 50, 4, 8
    r = rc.sample(tilted, n, rc.samplers.BestOf("reverse", n_cand), num_levels=levels, seed=1)
    scores = torch.stack(rec.outputs)  # (N, n), one call per candidate
    assert scores.shape == (n_cand, n)
    best = scores.argmax(0)
    for j in range(n):
        assert torch.equal(r.x[j], rec.inputs[int(best[j])][j])
        assert scores[int(best[j]), j] == scores[:, j].max()
        first = int(torch.nonzero(scores[:, j] == scores[:, j].max())[0])
        assert int(best[j]) == first
    plain = rc.sample(oracle(), n, "reverse", num_levels=levels, seed=1)
    assert r.info.score_evals == n_cand * plain.info.score_evals
    assert r.info.reward_evals == n_cand
    assert r.info.settings["candidates"] == n_cand


def test_reward_in_groups_is_per_chain():
    """A reward that depends on the chain's row (a condition per chain) with groups: particles
    stay in their group, so row ``j`` always reads its group's condition."""
    n = 40
    groups = torch.arange(n) // 10
    target = torch.where(groups % 2 == 0, 1.0, -1.0).to(torch.float64)

    def side(x):  # group 0, 2: right; 1, 3: left
        return (torch.sign(x[:, 0]).double() == target).double()

    r = rc.sample(oracle() * rc.reward(side, temperature=0.05), n, "fkc", num_levels=30,
                  seed=0, groups=groups)
    assert bool((torch.sign(r.x[:, 0]).double() == target).all())


@pytest.mark.parametrize("potential", ["difference", "max", "sum"])
def test_minus_infinity_kills_a_particle_for_good_without_nan(potential):
    """Rows 0 and 1 read −inf once (the first reading for ``max``, the third otherwise), then
    finite rewards: they keep weight zero, the run finishes, and no returned sample comes from
    them while others have weight."""
    calls = []

    def spiky(x):
        calls.append(None)
        value = torch.zeros(x.shape[0], dtype=torch.float64)
        if len(calls) == (1 if potential == "max" else 3):
            value[:2] = -math.inf
        return value

    tilted = oracle() * rc.reward(spiky, potential=potential)
    r = rc.sample(tilted, 64, "fkc", num_levels=10, seed=0, ess_threshold=0.0)
    assert torch.isfinite(r.x).all()
    assert torch.isneginf(r.log_weights[:2]).all() and torch.isfinite(r.log_weights[2:]).all()


# ------------------------------------------------------------------ guidance (gradients)
def test_tilted_score_is_the_base_score_plus_the_tilts_gradient():
    """Reward guidance differentiates through x̂₀ (and the network in it): against central
    finite differences of ``r(x̂₀(x))/λ``, on an energy model and on a score-only one."""
    lam = 0.5

    def quad(x):
        return -((x[:, 0] - 1.0) ** 2 + 0.5 * x[:, 1] ** 2)

    x = torch.tensor([[0.3, 0.1], [-1.0, 0.5], [2.5, -0.4]], dtype=torch.float64)
    for base in (oracle(), ScoreOnly(oracle())):
        tilted = base * rc.reward(quad, temperature=lam, differentiable=True)
        for t in (0.1, 0.5, 0.9):
            grad = tilted.score(x, t) - base.score(x, t)
            eps, fd = 1e-6, []
            for e in torch.eye(2, dtype=torch.float64):
                up = quad(oracle().denoised(x + eps * e, t)) / lam
                down = quad(oracle().denoised(x - eps * e, t)) / lam
                fd.append((up - down) / (2 * eps))
            torch.testing.assert_close(grad, torch.stack(fd, 1), rtol=1e-6, atol=1e-7)
    tilted = oracle() * rc.reward(quad, temperature=lam, differentiable=True)
    torch.testing.assert_close(tilted.energy(x, 0.5),
                               oracle().energy(x, 0.5) - quad(oracle().denoised(x, 0.5)) / lam)
    energy, score = tilted.energy_and_score(x, 0.5)
    torch.testing.assert_close(energy, tilted.energy(x, 0.5))
    torch.testing.assert_close(score, tilted.score(x, 0.5))


class Quartic(rc.DiffusionModel):
    """An energy-only model (its score comes from autograd of the energy)."""

    has_energy = True

    def __init__(self):
        super().__init__()
        self.schedule, self.event_shape = rc.CosineSchedule(), (2,)

    def energy(self, x, t):
        return (x**4).sum(1) / 4 + 0.3 * x[:, 0] * x[:, 1]


def test_guidance_differentiates_energy_parts_inside_a_score_only_composite():
    """In ``energy_part * score_part * reward`` the composite is score-only, but the energy
    part's score still carries its graph, so the tilt's gradient includes its Jacobian."""
    lam, t = 0.5, 0.4

    def quad(x):
        return -(x**2).sum(1)

    q, g = Quartic(), ScoreOnly(oracle())
    base = q * g
    tilted = base * rc.reward(quad, temperature=lam, differentiable=True)
    x = torch.tensor([[0.3, 0.1], [-1.0, 0.5]], dtype=torch.float64)
    alpha, sigma = (float(v) for v in base.schedule(torch.tensor(t)))

    def tilt(z):
        score = q.score(z, t) + g.score(z, t)
        return quad((z + sigma**2 * score) / alpha) / lam

    eps, fd = 1e-6, []
    for e in torch.eye(2, dtype=torch.float64):
        fd.append((tilt(x + eps * e) - tilt(x - eps * e)) / (2 * eps))
    torch.testing.assert_close(tilted.score(x, t) - base.score(x, t), torch.stack(fd, 1),
                               rtol=1e-6, atol=1e-6)


def test_guidance_counts_one_call_per_reward():
    two = [rc.reward(lambda x: -x[:, 0] ** 2, differentiable=True, name=f"r{i}")
           for i in range(2)]
    r = rc.sample(oracle() * two[0] * two[1], 16, "reverse", num_levels=7, seed=0)
    w = rc.sample(oracle() * rc.reward(right) * rc.reward(right), 16, "fkc", num_levels=7,
                  seed=0)
    assert r.info.reward_evals == w.info.reward_evals == 14


def test_gradient_samplers_follow_a_differentiable_reward():
    """Guided reverse diffusion moves mass toward the reward (a smoke check of the wiring: the
    tilted score reaches the sampler) and counts the reward's calls."""
    quad = rc.reward(lambda x: -4 * (x[:, 0] - 2.0) ** 2, differentiable=True)
    plain = rc.sample(oracle(), 400, "reverse", num_levels=30, seed=0)
    guided = rc.sample(oracle() * quad, 400, "reverse", num_levels=30, seed=0)
    assert float((guided.x[:, 0] > 0).double().mean()) > float(
        (plain.x[:, 0] > 0).double().mean()) + 0.3
    assert guided.info.reward_evals == 30


# ------------------------------------------------------------------ refusals, in one line
def test_gradient_samplers_refuse_a_reward_without_gradient():
    tilted = oracle() * rc.reward(right)
    for name in ("reverse", "ode", "ula", "uhmc", "mala", "hmc"):
        with pytest.raises(CapabilityError, match="not differentiable; use it in weights"):
            rc.sample(tilted, 4, name, num_levels=5)
    with pytest.raises(CapabilityError, match="not differentiable"):
        tilted.score(torch.zeros(2, 2), 0.5)


def test_reward_guidance_on_a_tracked_mixture_is_refused_but_weights_work():
    a = ScoreOnly(rc.GaussianMixture([[-2.0, 0.0]], stds=0.5), name="a")
    b = ScoreOnly(rc.GaussianMixture([[2.0, 0.0]], stds=0.5), name="b")
    near = rc.reward(lambda x: -x[:, 0].abs(), differentiable=True)
    with pytest.raises(CapabilityError, match="use the reward in weights"):
        rc.sample((a + b) * near, 4, "reverse", num_levels=5)
    r = rc.sample((a + b) * rc.reward(right, temperature=0.5), 2000, "fkc", num_levels=60,
                  seed=0)
    assert r.info.reward_evals == 60 and r.log_density is not None
    exact = math.e**2 / (1 + math.e**2)  # equal halves, the right one tilted by e²
    frac = float((r.x[:, 0] > 0).double().mean())
    assert abs(frac - exact) < 4 * math.sqrt(exact * (1 - exact) / 1000), (frac, exact)


def test_moves_are_refused_with_a_reward():
    tilted = oracle() * rc.reward(right)
    with pytest.raises(CapabilityError, match="proposal='ddpm'"):
        rc.sample(tilted, 4, "smc", num_levels=5)
    with pytest.raises(CapabilityError, match="moves=None"):
        rc.sample(tilted, 4, "fkc", moves="uhmc", num_levels=5)
    r = rc.sample(tilted, 8, "smc", proposal="ddpm", moves=None, num_levels=5, seed=0)
    assert r.info.reward_evals == 5


def test_reward_factor_algebra():
    a, b = oracle(), rc.GaussianMixture([[0.0, 1.0]], stds=1.0)
    r1, r2 = rc.reward(right, name="one"), rc.reward(right, name="two")
    t = a * r1 * b * r2
    assert isinstance(t, rc.Tilted) and t.rewards == (r1, r2)
    assert isinstance(t.base, rc.Product)
    assert (r1 * a).rewards == (r1,)
    assert isinstance((a * r1 / b).base, rc.Product)
    with pytest.raises(CompositionError, match="apply it last"):
        rc.mixture([a * r1, b])
    with pytest.raises(CompositionError, match="apply it last"):
        (a * r1) ** 2
    with pytest.raises(CompositionError, match="temperature"):
        r1 ** 2
    with pytest.raises(CompositionError, match="not a density"):
        a + r1
    with pytest.raises(CompositionError):
        b / (a * r1)


def test_parse_binds_a_reward_by_name():
    a = oracle()
    r1 = rc.reward(right, name="right")
    model = rc.parse("A * R", {"A": a, "R": r1})
    assert isinstance(model, rc.Tilted) and model.base is a
    with pytest.raises(ExpressionError, match="reward factor alone"):
        rc.parse("R", {"R": r1})
    with pytest.raises(CompositionError, match="temperature"):
        rc.parse("A * R ** 2", {"A": a, "R": r1})


@pytest.mark.parametrize("kwargs,match", [({"temperature": 0.0}, "temperature"),
                                          ({"temperature": math.nan}, "temperature"),
                                          ({"potential": "mean"}, "potential"),
                                          ({"interval": 0}, "interval")])
def test_bad_reward_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rc.reward(right, **kwargs)


def test_bad_reward_values_stop_the_run():
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        rc.sample(oracle() * rc.reward(lambda x: x), 8, "fkc", num_levels=4, seed=0)
    with pytest.raises(FloatingPointError, match="NaN"):
        rc.sample(oracle() * rc.reward(lambda x: x[:, 0] * math.nan), 8, "fkc",
                  num_levels=4, seed=0)
    with pytest.raises(CapabilityError, match="model \\* rc.reward"):
        rc.sample(oracle(), 8, rc.samplers.BestOf("reverse", 2), num_levels=4, seed=0)
