"""Kernels: exact invariance (moments within 4 Monte-Carlo standard errors), per-chain
decisions, acceptance → 1 as the step → 0, unadjusted bias, and the R3 pitfalls."""

import math

import pytest
import torch

import recompose as rc
from conftest import ScoreOnly, skewed_gmm
from recompose.mcmc import Target, hmc, mala, metropolis_hastings, uhmc, ula

N_CHAINS = 20_000


def exact_moments(gmm):
    w = gmm.log_weights.exp()
    mean = (w[:, None] * gmm.means).sum(0)
    second = (w[:, None, None] * (gmm.covariances() + gmm.means[:, :, None]
                                  * gmm.means[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None]


def moment_z_scores(x, mean, cov):
    """|estimate − exact| / MCSE for the 2 means and 3 covariance entries (iid chains)."""
    n = x.shape[0]
    d = x - x.mean(0)
    z = [(x.mean(0) - mean) / (x.std(0) / math.sqrt(n))]
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = d[:, i] * d[:, j]
        z.append(((prod.mean() - cov[i, j]) / (prod.std() / math.sqrt(n)))[None])
    return torch.cat(z).abs()


def run_kernel(kernel, target, x, step, k, gen):
    state = kernel.init(x, target, gen)
    accept = []
    for _ in range(k):
        state, info = kernel.step(state, target, step, gen)
        accept.append(info.accept_prob.mean())
    return state, float(torch.stack(accept).mean())


KERNELS = {"mala": (mala(), 0.05), "hmc": (hmc(num_leapfrog_steps=3, damping=0.5), 0.25)}


@pytest.mark.parametrize("name", list(KERNELS))
def test_invariance_on_a_non_gaussian_mixture(name):
    kernel, step = KERNELS[name]
    gmm = skewed_gmm()
    gen = torch.Generator().manual_seed(7)
    x0 = gmm.sample(N_CHAINS, gen)
    mean, cov = exact_moments(gmm)
    state, acc = run_kernel(kernel, gmm.at(0.0), x0, step, 10, gen)
    assert 0.3 < acc < 0.99  # the chains really move
    assert float((state.x - x0).abs().mean()) > 0.05
    z = moment_z_scores(state.x, mean, cov)
    assert bool((z < 4).all()), z


@pytest.mark.parametrize("name", list(KERNELS))
def test_invariance_test_detects_a_wrong_target(name):
    kernel, step = KERNELS[name]
    gmm = skewed_gmm()
    wrong = rc.GaussianMixture(gmm.means, covs=gmm.covariances() * 1.5,
                               weights=gmm.log_weights.exp())
    gen = torch.Generator().manual_seed(7)
    x0 = gmm.sample(N_CHAINS, gen)
    mean, cov = exact_moments(gmm)
    state, _ = run_kernel(kernel, wrong.at(0.0), x0, step, 10, gen)
    assert bool((moment_z_scores(state.x, mean, cov) > 4).any())


def _gaussian_target(var=1.0):
    return Target.from_energy(lambda x: 0.5 * (x**2).sum(1) / var)


@pytest.mark.parametrize("kernel", [mala(), hmc(damping=0.5)])
def test_per_chain_decisions(kernel):
    """Chain 0 sits at the mode (tiny move, accepted); chain 1 far out with a huge step
    overshoots (rejected). A batch-wide coin could not separate them."""
    target = _gaussian_target(0.01)
    x = torch.tensor([[0.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(x, target, gen)
    step = torch.tensor([1e-6, 0.5], dtype=torch.float64)
    _, info = kernel.step(state, target, step, gen)
    assert info.accept_prob.shape == (2,)
    assert bool(info.accepted[0]) and not bool(info.accepted[1])
    assert float(info.accept_prob[0]) > 0.99 and float(info.accept_prob[1]) < 1e-6


def test_one_uniform_per_chain():
    """Regression (R3 pitfall 1): with accept prob 0.5 everywhere, about half the chains
    accept; a single coin for the batch would accept all or none."""
    n = 10_000
    accepted, prob = metropolis_hastings(torch.full((n,), math.log(0.5)),
                                         torch.Generator().manual_seed(3))
    assert torch.allclose(prob, torch.full_like(prob, 0.5))
    frac = accepted.double().mean()
    assert abs(float(frac) - 0.5) < 4 * math.sqrt(0.25 / n)


def test_nan_proposals_are_rejected():
    accepted, prob = metropolis_hastings(torch.tensor([float("nan"), 0.0]),
                                         torch.Generator().manual_seed(0))
    assert not bool(accepted[0]) and float(prob[0]) == 0.0 and bool(accepted[1])


@pytest.mark.parametrize("kernel,steps", [(mala(), [0.1, 0.01, 0.001]),
                                          (hmc(damping=0.0), [0.5, 0.1, 0.02])])
def test_acceptance_tends_to_one_as_step_shrinks(kernel, steps):
    gmm = skewed_gmm()
    gen = torch.Generator().manual_seed(5)
    x0 = gmm.sample(2000, gen)
    rates = [run_kernel(kernel, gmm.at(0.0), x0, s, 3, gen)[1] for s in steps]
    assert rates[0] < rates[1] < rates[2] and rates[2] > 0.99, rates


def _stationary_variance(kernel, step, n=20_000, k=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    state, _ = run_kernel(kernel, _gaussian_target(), x0, step, k, gen)
    return float(state.x.var()), math.sqrt(2 / n)  # var and its MCSE at var ≈ 1


def test_ula_bias_matches_theory_and_shrinks_with_step():
    for h in (0.2, 0.05):
        var, se = _stationary_variance(ula(), h)
        expect = 1 / (1 - h / 2)  # s²/(1 − h/(2s²)) on N(0, 1)
        assert abs(var - expect) < 4 * se * expect, (h, var, expect)
    big, _ = _stationary_variance(ula(), 0.2)
    small, se = _stationary_variance(ula(), 0.05)
    assert abs(small - 1) < abs(big - 1) - 4 * se


def test_uhmc_bias_shrinks_with_step():
    big, se = _stationary_variance(uhmc(num_leapfrog_steps=3, damping=0.5), 1.2)
    small, _ = _stationary_variance(uhmc(num_leapfrog_steps=3, damping=0.5), 0.3)
    assert abs(big - 1) > 10 * se  # visibly biased at a large step
    assert abs(small - 1) < abs(big - 1) - 4 * se


@pytest.mark.parametrize("step", [0.2, 0.5])
def test_mala_uses_the_right_proposal_density(step):
    """Regression (R3 pitfall 2): with /(2η²) instead of /(4η) the stationary variance is
    0.65 at η = 0.2 and 1.31 at η = 0.5; ours must be 1."""
    var, se = _stationary_variance(mala(), step)
    assert abs(var - 1) < 4 * se, var


@pytest.mark.parametrize("step", [0.3, 0.8])
def test_hmc_keeps_the_kinetic_energy_in_its_test(step):
    """Regression (R3 pitfall 3): in-place leapfrog aliasing gave variance 0.50 / 0.53."""
    var, se = _stationary_variance(hmc(num_leapfrog_steps=3, damping=0.0), step)
    assert abs(var - 1) < 4 * se, var


def test_hmc_flips_momentum_on_rejection():
    """Regression (R3 pitfall 4): on rejection v ← −v' (the refreshed momentum)."""
    d = 0.9
    kernel = hmc(num_leapfrog_steps=2, damping=d)
    target = _gaussian_target(1e-4)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(torch.full((4, 2), 0.5, dtype=torch.float64), target, gen)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(gen.get_state())
    noise = torch.randn(state.momentum.shape, generator=replay, dtype=torch.float64)
    v_refreshed = d * state.momentum + math.sqrt(1 - d**2) * noise
    new, info = kernel.step(state, target, 5.0, gen)
    assert not bool(info.accepted.any())
    torch.testing.assert_close(new.momentum, -v_refreshed)
    torch.testing.assert_close(new.x, state.x)


@pytest.mark.parametrize("kernel", [ula(), mala(), uhmc(), hmc()], ids=lambda k: k.name)
def test_no_kernel_mutates_its_input(kernel):
    gmm = skewed_gmm()
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(gmm.sample(50, gen), gmm.at(0.0), gen)
    copies = [v.clone() if torch.is_tensor(v) else v for v in state]
    new, _ = kernel.step(state, gmm.at(0.0), 0.1, gen)
    for before, after in zip(copies, state):
        if torch.is_tensor(before):
            assert torch.equal(before, after)
    assert not torch.equal(new.x, state.x)


@pytest.mark.parametrize("kernel", [mala(), hmc()], ids=lambda k: k.name)
def test_mh_kernels_refuse_score_only_targets(kernel):
    target = ScoreOnly(skewed_gmm()).at(0.0)
    with pytest.raises(rc.CapabilityError, match="needs energies"):
        kernel.init(torch.zeros(3, 2), target)


@pytest.mark.parametrize("mass", [4.0, torch.tensor([0.25], dtype=torch.float64)])
def test_hmc_with_a_mass_stays_exact(mass):
    """N(0, 1) stays invariant for M ≠ 1: M⁻¹ in the drift and the kinetic energy, √M in the
    momentum draw must agree (swap any one and the variance moves by many MCSEs)."""
    var, se = _stationary_variance(hmc(num_leapfrog_steps=3, damping=0.5, mass=mass), 0.5)
    assert abs(var - 1) < 4 * se, var


def _nan_outside(radius, inverted=False):
    """Energy ±½|x|², NaN outside ``radius`` (the score there stays finite)."""
    sign = -1.0 if inverted else 1.0

    def energy(x):
        e = sign * 0.5 * (x**2).sum(1)
        return torch.where(x.norm(dim=1) > radius, torch.full_like(e, float("nan")), e)

    return Target.from_energy(energy)


@pytest.mark.parametrize("kernel", [mala(), hmc(damping=0.0)], ids=lambda k: k.name)
def test_a_nan_energy_proposal_is_divergent_and_rejected(kernel):
    """Chain 0 at the origin with a tiny step stays inside; chain 1 near the edge of an
    inverted (outward-pushing) well with a large step lands where the energy is NaN."""
    target = _nan_outside(3.0, inverted=True)
    x = torch.tensor([[0.0, 0.0], [2.99, 0.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(x, target, gen)
    new, info = kernel.step(state, target, torch.tensor([1e-6, 2.0], dtype=torch.float64), gen)
    assert info.is_divergent.dtype == torch.bool and info.is_divergent.shape == (2,)
    assert info.is_divergent.tolist() == [False, True]
    assert not bool(info.accepted[1]) and torch.equal(new.x[1], x[1])


@pytest.mark.parametrize("kernel", [ula(), uhmc()], ids=lambda k: k.name)
def test_unadjusted_kernels_flag_non_finite_moves(kernel):
    target = Target(score=lambda x: torch.where(x.abs() > 3, float("nan"), x))  # pushes out
    x = torch.tensor([[0.0, 0.0], [2.99, 0.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(x, target, gen)
    _, info = kernel.step(state, target, torch.tensor([1e-8, 2.0], dtype=torch.float64), gen)
    assert info.is_divergent.tolist() == [False, True]


def test_hmc_flags_a_large_finite_energy_error():
    """ΔH > 1000 is divergent even when everything is finite (blackjax/Stan threshold)."""
    target = _gaussian_target(1e-4)
    x = torch.full((2, 2), 0.01, dtype=torch.float64)
    kernel = hmc(num_leapfrog_steps=3, damping=0.0)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(x, target, gen)
    # E = ½|x|²/s² with s = 0.01: leapfrog is unstable for h > 2s and grows ~(h/s)² per step,
    # so h = 0.2 gives |ΔH| ~ 1e7 nats, while h = 1e-5 conserves H
    _, info = kernel.step(state, target, torch.tensor([1e-5, 0.2], dtype=torch.float64), gen)
    assert info.is_divergent.tolist() == [False, True]
    assert float(info.accept_prob[1]) == 0.0 and rc.mcmc.DIVERGENCE_THRESHOLD == 1000.0


def test_a_large_energy_drop_is_not_divergent():
    """One-sided threshold (blackjax, Stan): from x = 100σ one leapfrog step of h = √2·σ lands
    near the mode, ΔH ≈ −2500; the move is accepted and not flagged."""
    target = _gaussian_target(1e-4)
    x = torch.tensor([[1.0]], dtype=torch.float64)
    kernel = hmc(num_leapfrog_steps=1, damping=0.0)
    gen = torch.Generator().manual_seed(0)
    state = kernel.init(x, target, gen)
    new, info = kernel.step(state, target, math.sqrt(2) * 0.01, gen)
    assert float(new.energy) < float(state.energy) - 1000
    assert bool(info.accepted[0]) and not bool(info.is_divergent[0])


@pytest.mark.parametrize("factory", [uhmc, hmc])
def test_hamiltonian_init_carries_the_previous_momentum(factory):
    """``init(..., previous=state)`` takes the momentum of ``state`` (and still draws one, so
    the random stream is the same with or without a previous state)."""
    kernel = factory()
    target = _gaussian_target()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    fresh = kernel.init(x, target, g1)
    previous = fresh._replace(momentum=torch.full_like(x, 7.0))
    carried = kernel.init(x + 1, target, g2, previous=previous)
    assert torch.equal(carried.momentum, previous.momentum)
    assert torch.equal(carried.x, x + 1)
    assert torch.equal(g1.get_state(), g2.get_state())  # same number of draws


@pytest.mark.parametrize("factory", [ula, mala])
def test_langevin_init_carries_nothing(factory):
    kernel = factory()
    target = _gaussian_target()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    previous = kernel.init(x - 3, target)
    state = kernel.init(x, target, None, previous=previous)
    assert torch.equal(state.x, x) and torch.equal(state.score, -x)


def test_ula_and_mala_share_one_langevin_proposal():
    """Same generator state, same step: the MALA proposal is the ULA move (η = 0.3)."""
    target = _gaussian_target()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ula_state, _ = ula().step(ula().init(x, target), target, 0.3,
                              torch.Generator().manual_seed(4))
    eta = torch.tensor(0.3, dtype=torch.float64)
    expected = x + eta * (-x) + torch.sqrt(2 * eta) * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(ula_state.x, expected, rtol=0, atol=0)
    mala_state, info = mala().step(mala().init(x, target), target, 0.3,
                                   torch.Generator().manual_seed(4))
    torch.testing.assert_close(mala_state.x[info.accepted], expected[info.accepted],
                               rtol=0, atol=0)


def test_factories_record_their_settings_and_refuse_bad_ones():
    k = hmc(num_leapfrog_steps=4, damping=0.25, mass=2.0)
    assert (k.name, k.needs_energy) == ("hmc", True)
    assert dict(k.params) == {"num_leapfrog_steps": 4, "damping": 0.25, "mass": 2.0,
                              "energy": "exact"}
    assert dict(uhmc().params) == {"num_leapfrog_steps": 3, "damping": 0.5, "mass": 1.0}
    assert dict(ula().params) == {} and dict(mala().params) == {"energy": "exact"}
    assert dict(mala(energy="path", quadrature="simpson").params) == {
        "energy": "path", "quadrature": "simpson"}
    assert hmc(energy="path").metropolis and not hmc(energy="path").needs_energy
    with pytest.raises(ValueError, match="energy must be"):
        hmc(energy="exactly")
    with pytest.raises(ValueError, match="quadrature applies only"):
        mala(quadrature="simpson")
    with pytest.raises(ValueError, match="num_leapfrog_steps"):
        hmc(num_leapfrog_steps=0)
    with pytest.raises(ValueError, match="damping"):
        uhmc(damping=1.0)
    with pytest.raises(ValueError, match="mass"):
        hmc(mass=0.0)
