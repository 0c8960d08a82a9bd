"""Gaussian paths other than VP (rectified flow, VE, a family defined here): the exact oracle
on each, the path's formulas against independent computations, every sampler, the weighted
samplers' evidence and mode weights, and the deterministic (ODE) sampler's order."""

import math

import numpy as np
import pytest
import torch

import recompose as rc
from gaussian_integrals import log_integral
from recompose.schedules import Schedule

PATHS = {"rectified flow": rc.RectifiedFlowSchedule(),
         "rectified flow, shift 3": rc.RectifiedFlowSchedule(shift=3.0),
         "VE": rc.VESchedule(0.01, 20.0)}


def _tables():
    """Trained models' noise tables: Karras-style VE sigmas and a flow's sigmas up to 1."""
    karras = (0.002 ** (1 / 7) + torch.linspace(0, 1, 100, dtype=torch.float64)
              * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    return {"VE table (Karras)": rc.SigmaSchedule(karras, "ve"),
            "flow table": rc.SigmaSchedule(torch.linspace(0.01, 1.0, 100), "rectified_flow")}


class TrigFlow(Schedule):
    """A path family written in this test file: α = cos(πt/2), σ = sin(πt/2)."""

    name = "trig"
    t_max = 0.999  # α(1) = 0

    def alpha_sigma(self, t):
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def _mixture(schedule, weights=(0.3, 0.7)):
    covs = torch.tensor([[[0.09, 0.03], [0.03, 0.04]], [[0.25, 0.0], [0.0, 0.16]]],
                        dtype=torch.float64)
    return rc.GaussianMixture([[-1.0, 0.5], [1.0, -0.2]], covs=covs, weights=list(weights),
                              schedule=schedule)


def _independent_log_density(x, t, alpha, sigma):
    """``log Σ_k w_k N(x; α μ_k, α² Σ_k + σ² I)`` with torch.distributions."""
    means = torch.tensor([[-1.0, 0.5], [1.0, -0.2]], dtype=torch.float64)
    covs = torch.tensor([[[0.09, 0.03], [0.03, 0.04]], [[0.25, 0.0], [0.0, 0.16]]],
                        dtype=torch.float64)
    comps = torch.distributions.MultivariateNormal(alpha * means,
                                                   alpha**2 * covs + sigma**2 * torch.eye(
                                                       2, dtype=torch.float64))
    log_w = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))
    return torch.logsumexp(comps.log_prob(x[:, None, :]) + log_w, dim=1)


@pytest.mark.parametrize("path", list(PATHS) + ["trig (test-defined)"] + list(_tables()))
def test_the_oracle_is_the_diffused_mixture_on_each_path(path):
    """Energy and score at t equal the mixture with means α_t μ and covariances
    α_t² Σ + σ_t² I, written independently (float64, 1e-10)."""
    schedule = {**PATHS, **_tables()}.get(path, TrigFlow())
    model = _mixture(schedule)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.02, 0.3, 0.7, 0.99):
        tt = torch.tensor(t, dtype=torch.float64)
        alpha, sigma = schedule.alpha_sigma(tt)
        xg = x.clone().requires_grad_(True)
        logp = _independent_log_density(xg, t, alpha, sigma)
        (score,) = torch.autograd.grad(logp.sum(), xg)
        energy, ours = model.energy_and_score(x, t)
        torch.testing.assert_close(energy, -logp.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(ours, score, rtol=0, atol=1e-10)


@pytest.mark.parametrize("path", list(PATHS) + ["cosine VP"])
def test_the_paths_formulas_against_independent_computations(path):
    schedule = PATHS.get(path, rc.CosineSchedule())
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    # derivatives: closed forms against central differences
    h = 1e-6
    da, ds = schedule.derivatives(t)
    ap, sp = schedule.alpha_sigma(t + h)
    am, sm = schedule.alpha_sigma(t - h)
    torch.testing.assert_close(da, (ap - am) / (2 * h), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ds, (sp - sm) / (2 * h), rtol=1e-6, atol=1e-7)
    # the SDE: f = dlogα/dt, g² = dσ²/dt − 2fσ²; κ = −2f/g²
    alpha, sigma = schedule.alpha_sigma(t)
    f, g2 = schedule.drift_diffusion(t)
    torch.testing.assert_close(f, da / alpha)
    torch.testing.assert_close(g2, 2 * sigma * ds - 2 * (da / alpha) * sigma**2)
    torch.testing.assert_close(schedule.drift_ratio(t), -2 * f / g2, rtol=1e-9, atol=1e-9)
    # ∫ g² dt over a step: against adaptive quadrature of g²
    from scipy.integrate import quad

    def g2(u):
        return float(schedule.drift_diffusion(torch.tensor([u], dtype=torch.float64))[1][0])

    levels = schedule.levels(20)
    for i in (19, 10, 1):
        fine = quad(g2, float(levels.t[i - 1]), float(levels.t[i]), epsabs=0, epsrel=1e-11)[0]
        assert levels.g2_integral(i) == pytest.approx(fine, rel=1e-8)
    # transitions: x_t | x_s ~ N(a x_s, v I), a = α_t/α_s, v = σ_t² − a² σ_s²
    for i in (19, 7, 0):
        a, v = levels.transition(i)
        t_s, alpha_s, sigma_s = levels.below(i)
        assert a == pytest.approx(float(levels.alpha[i]) / alpha_s, rel=1e-14)
        assert v == pytest.approx(float(levels.sigma[i]) ** 2 - a**2 * sigma_s**2, rel=1e-12)
        assert float(levels.beta[i]) == pytest.approx(v, rel=1e-9)


@pytest.mark.parametrize("path", list(PATHS) + ["cosine VP"])
def test_the_posterior_step_is_the_gaussian_posterior(path):
    """The posterior ``x_s | x_t, x̂₀`` of the forward transitions, both written forms, against
    the product of Gaussians computed here (and clip leaves an in-range x̂₀ alone)."""
    schedule = PATHS.get(path, rc.CosineSchedule())
    levels = schedule.levels(10)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    score = torch.randn(7, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in (9, 4, 1):
        alpha_t, sigma_t = float(levels.alpha[i]), float(levels.sigma[i])
        _, alpha_s, sigma_s = levels.below(i)
        x0 = (x + sigma_t**2 * score) / alpha_t
        a, v = alpha_t / alpha_s, sigma_t**2 - (alpha_t / alpha_s) ** 2 * sigma_s**2
        # N(x_s; α_s x0, σ_s²) · N(x_t; a x_s, v): precision and mean of x_s
        prec = 1 / sigma_s**2 + a**2 / v
        mean = (alpha_s * x0 / sigma_s**2 + a * x / v) / prec
        ours, var = levels.posterior(x, score, i)
        torch.testing.assert_close(ours, mean, rtol=1e-9, atol=1e-9)
        assert var == pytest.approx(1 / prec, rel=1e-9)
        wide, _ = levels.posterior(x, score, i, clip=(-1e9, 1e9))
        torch.testing.assert_close(wide, mean, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler", rc.SAMPLERS)
@pytest.mark.parametrize("path", list(PATHS) + ["trig (test-defined)"] + list(_tables()))
def test_every_sampler_runs_on_every_path(path, sampler):
    """A product of two oracles, points and 4×4 images: finite samples of the right shape."""
    schedule = {**PATHS, **_tables()}.get(path, TrigFlow())
    model = _mixture(schedule) * _mixture(schedule, (0.6, 0.4))
    r = rc.sample(model, 16, sampler, num_levels=6, seed=0)
    assert r.x.shape == (16, 2) and bool(torch.isfinite(r.x).all())
    image = rc.GaussianMixture(torch.zeros(2, 16, dtype=torch.float64) + 0.3, 0.5,
                               schedule=schedule, event_shape=(1, 4, 4))
    r = rc.sample(image * image**0.5, 4, sampler, num_levels=4, seed=0)
    assert r.x.shape == (4, 1, 4, 4) and bool(torch.isfinite(r.x).all())


def test_a_table_of_sigmas_puts_the_levels_on_its_timesteps():
    """Timestep k at t = (k + 1)/N: T dividing N lands on table entries exactly; a flow's
    σ = 1 entry (α = 0) stays out of the levels; the family fixes α; the config round-trips."""
    tables = _tables()
    karras = tables["VE table (Karras)"]
    lv = karras.levels(50)
    torch.testing.assert_close(lv.sigma, karras.sigmas[1::2], rtol=1e-13, atol=0)
    assert torch.equal(lv.alpha, torch.ones(50, dtype=torch.float64))
    flow = tables["flow table"]
    assert flow.t_max == pytest.approx(0.99)
    lv = flow.levels(99)
    torch.testing.assert_close(lv.sigma, flow.sigmas[:99], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(lv.alpha, 1 - lv.sigma)
    assert rc.get_schedule(flow.config()) == flow and rc.get_schedule(karras.config()) == karras
    with pytest.raises(ValueError, match="increase"):
        rc.SigmaSchedule([0.5, 0.4], "ve")
    with pytest.raises(ValueError, match="family"):
        rc.SigmaSchedule([0.1, 0.4], "edm")


def _left(x):
    return float((x[:, 0] < 0).double().mean())


@pytest.mark.parametrize("path", list(PATHS) + ["trig (test-defined)"])
def test_a_single_oracle_is_sampled_right_by_every_sampler_on_its_path(path):
    """One mixture (its mass on ``x₁ < 0`` is 0.3 exactly, up to its tail): every sampler's
    draws (4,000 chains, T = 100) within 4 binomial standard errors, plus the discretisation's
    allowance of 0.02 for the unadjusted samplers."""
    schedule = PATHS.get(path, TrigFlow())
    model = _mixture(schedule)
    ref = _left(model.sample(200_000, torch.Generator().manual_seed(9)))
    se = math.sqrt(ref * (1 - ref) / 4000)
    for sampler in rc.SAMPLERS:
        steps = {} if sampler in ("reverse", "ode", "fkc") else {"num_steps": 2}
        got = _left(rc.sample(model, 4000, sampler, num_levels=100, seed=1, **steps).x)
        slack = 0.0 if sampler in ("mala", "hmc", "smc") else 0.02
        assert abs(got - ref) <= 4 * se + slack, (sampler, got, ref)


# ------------------------------------------------------------------ weighted samplers
A_MEANS, A_STDS = [[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0]


def _pair(schedule):
    a = rc.GaussianMixture(A_MEANS, A_STDS, schedule=schedule, name="A")
    b = rc.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name="B")
    return a, b


@pytest.mark.parametrize("path", list(PATHS))
def test_smc_evidence_is_unbiased_on_each_path(path):
    """E[Ẑ] = Z for a product against the closed-form normaliser: the mean of Ẑ/Z over 16
    seeds (256 particles, T = 40) within 4 MCSE of 1."""
    a, b = _pair(PATHS[path])
    ratio = []
    for seed in range(16):
        r = rc.sample(a * b, 256, "smc", num_levels=40, seed=seed)
        ratio.append(math.exp(r.info.log_evidence - log_integral([(a, 1), (b, 1)],
                                                                 r.info.evidence_t)))
    ratio = np.array(ratio)
    mcse = ratio.std(ddof=1) / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) <= 4 * mcse + 1e-3, (ratio.mean(), mcse)


def _exact_left(a, b):
    prod = rc.gmm_product(a, b)
    w, mu = prod.log_weights.exp(), prod.means[:, 0]
    sd = prod.covariances()[:, 0, 0].sqrt()
    return float((w * torch.distributions.Normal(0.0, 1.0).cdf(-mu / sd)).sum())


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("sampler,levels", [("smc", 50), ("fkc", 400)])
def test_weighted_samplers_get_a_products_mode_weights_on_each_path(path, sampler, levels):
    """The product's mass on ``x₁ < 0`` over 6 seeds × 1,000 particles within 4 MCSE of the
    exact value (FKC's weights are exact only as T grows: T = 400)."""
    a, b = _pair(PATHS[path])
    exact = _exact_left(a, b)
    left = np.array([_left(rc.sample(a * b, 1000, sampler, num_levels=levels, seed=s).x)
                     for s in range(6)])
    mcse = max(left.std(ddof=1), math.sqrt(exact * (1 - exact) / 1000)) / math.sqrt(6)
    assert abs(left.mean() - exact) <= 4 * mcse, (left, exact, mcse)


# ------------------------------------------------------------------ the ODE sampler
def _ode_error(schedule, levels, method, denoise=False):
    """Max error of the deterministic map from fixed prior draws to the cleanest level (or to
    the data) for one Gaussian ``N(μ, c²)``: its probability-flow map keeps the standardised
    coordinate ``(x − α μ)/√(α² c² + σ²)`` fixed."""
    mu, c = 0.7, 0.5
    model = rc.GaussianMixture([[mu]], c, schedule=schedule)
    x_init = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)[:, None] * schedule.prior_std()
    r = rc.sample(model, 11, rc.samplers.ODE(method, denoise=denoise), num_levels=levels,
                  x_init=x_init, seed=0)
    lv = schedule.levels(levels)

    def spread(i):
        return math.sqrt(float(lv.alpha[i]) ** 2 * c**2 + float(lv.sigma[i]) ** 2)

    z = (x_init - float(lv.alpha[-1]) * mu) / spread(-1)
    exact = mu + c * z if denoise else float(lv.alpha[0]) * mu + spread(0) * z
    return float((r.x - exact).abs().max())


@pytest.mark.parametrize("path", ["cosine VP", "rectified flow", "VE"])
@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_the_ode_sampler_converges_at_its_order(path, method, order):
    """Error of the map from the prior to the cleanest level at T = 100, 200, 400, 800: the
    fitted slope of log error against log T is within 0.3 of −1 (Euler) and −2 (Heun). (The
    last jump to the data adds ``O(σ_0²)``: see the next test.)"""
    schedule = {"cosine VP": rc.CosineSchedule(), **PATHS}[path]
    ts = [100, 200, 400, 800]
    errors = [_ode_error(schedule, t, method) for t in ts]
    slope = np.polyfit(np.log(ts), np.log(errors), 1)[0]
    assert abs(slope + order) <= 0.3, (errors, slope)


def test_the_last_jump_to_the_data_costs_the_cleanest_levels_variance():
    """With the final DDIM jump (x̂₀ at the cleanest level) the error on rectified flow keeps
    Heun's order 2 (σ_0² = 1/T²) but on cosine VP falls only as 1/T (σ_0² ∝ 1/T): slopes
    within 0.3 of −2 and −1 at T = 100 … 800."""
    ts = [100, 200, 400, 800]
    for schedule, order in ((rc.RectifiedFlowSchedule(), 2), (rc.CosineSchedule(), 1)):
        errors = [_ode_error(schedule, t, "heun", denoise=True) for t in ts]
        slope = np.polyfit(np.log(ts), np.log(errors), 1)[0]
        assert abs(slope + order) <= 0.3, (schedule, errors, slope)


def test_the_euler_ode_on_cosine_vp_is_ddim_written_out():
    """DDIM (η = 0) with ᾱ from the cosine formula, the model's ε̂ = −σ s, step by step."""
    schedule = rc.CosineSchedule()
    model = _mixture(schedule)
    T = 30
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = rc.sample(model, 64, "ode", num_levels=T, x_init=x.clone(), seed=0).x

    def abar(t):
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return max(f(t) / f(0.0), 1e-6)

    for i in reversed(range(T)):
        t = (i + 1) / T
        a_t, a_prev = abar(t), (abar(i / T) if i > 0 else 1.0)
        eps = -math.sqrt(1 - a_t) * model.score(x, t)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)


def test_the_ode_is_deterministic_and_counts_its_evaluations():
    model = _mixture(rc.CosineSchedule())
    a = rc.sample(model, 10, "ode", num_levels=12, seed=0)
    x_init = rc.CosineSchedule().levels(12).prior(10, (2,), torch.Generator().manual_seed(0),
                                                  torch.device("cpu"), torch.float64)
    b = rc.sample(model, 10, "ode", num_levels=12, x_init=x_init)
    assert torch.equal(a.x, b.x) and a.info.score_evals == 12
    heun = rc.sample(model, 10, rc.samplers.ODE("heun"), num_levels=12, seed=0)
    assert heun.info.score_evals == 2 * 12 - 1
    with pytest.raises(ValueError, match="method"):
        rc.samplers.ODE("rk4")


# ------------------------------------------------------------------ Feynman–Kac on any path
def _direct_rate(model, w_total, schedule, x, t, h=1e-5):
    """``g = ∂_τ log p̃ − L*p̃/p̃`` for ``dx = (−f W x + g² s) dτ + g dW`` with ``∂_τ log p̃`` by
    central differences of the composite's energy, ``s = −∇E`` and ``∇·s`` by autograd (2D)."""
    f, g2 = (float(v) for v in schedule.drift_diffusion(torch.tensor([t], dtype=torch.float64)))
    x = x.clone().requires_grad_(True)
    s = -torch.autograd.grad(model.energy(x, t).sum(), x, create_graph=True)[0]
    div = sum(torch.autograd.grad(s[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(2))
    with torch.no_grad():
        dtau_log_p = (model.energy(x, t + h) - model.energy(x, t - h)) / (2 * h)
        b = -f * w_total * x + g2 * s
        div_b = -f * w_total * 2 + g2 * div
        return dtau_log_p + div_b + (b * s).sum(1) - 0.5 * g2 * (div + (s * s).sum(1)), g2


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", ["product (W = 2)", "power (W = 0.7)", "ratio (W = 1)"])
def test_the_feynman_kac_rate_is_the_fokker_planck_rate_on_each_path(path, case):
    """``g²·ĝ`` from scores alone equals ``∂_τ log p̃ − L*p̃/p̃`` computed with divergences and
    time derivatives (the definition), on each path's drift and diffusion."""
    from recompose.samplers.fkc import FeynmanKac

    schedule = PATHS[path]
    a, b = _pair(schedule)
    g = rc.GaussianMixture([[0.5, 0.0]], 1.5, schedule=schedule)
    model = {"product (W = 2)": a * b, "power (W = 0.7)": a / g**0.3,
             "ratio (W = 1)": a * b / g}[case]
    fk = FeynmanKac(model)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    for t in (0.05, 0.3, 0.7, 0.95):
        kappa = float(schedule.drift_ratio(torch.tensor([t], dtype=torch.float64))[0])
        _, rate = fk.score_and_rate(x, t, kappa)
        expected, g2 = _direct_rate(model, fk.total_weight, schedule, x, t)
        torch.testing.assert_close(g2 * rate, expected, rtol=1e-4,
                                   atol=1e-5 * (1 + expected.abs().max().item()))


def test_the_clipped_euler_ode_on_cosine_vp_is_clipped_ddim_written_out():
    """With ``clip`` the step clamps ``x̂₀`` and recomputes ``ε̂ = (x − √ᾱ x̂₀)/√(1 − ᾱ)`` from
    the clamped value (DDIM with ``clip_denoised``), step by step."""
    schedule = rc.CosineSchedule()
    model = _mixture(schedule)
    T, lo, hi = 20, -0.6, 0.6
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = rc.sample(model, 64, "ode", num_levels=T, x_init=x.clone(), clip=(lo, hi)).x
    levels = schedule.levels(T)
    clamped = 0
    for i in reversed(range(T)):
        a_t = float(levels.alpha[i]) ** 2
        a_prev = float(levels.alpha[i - 1]) ** 2 if i > 0 else 1.0
        eps = -math.sqrt(1 - a_t) * model.score(x, levels.t[i])
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        clamped += int(((x0 < lo) | (x0 > hi)).sum())
        x0 = x0.clamp(lo, hi)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    assert clamped > 100  # the clamp really acts
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-9)
