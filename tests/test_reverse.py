"""The DDPM ancestral step against DDPM's closed form (Ho et al. 2020, eqs. 6-7), in float64.

Everything expected here is computed independently from ``ᾱ`` (the schedule's ``alpha_sq``
at ``t_i = (i+1)/T``), not from :class:`~recompose.schedules.Levels`::

    β_i = 1 − ᾱ_i/ᾱ_{i−1},   x̂₀ = (x + (1 − ᾱ_i) s)/√ᾱ_i,   β̃_i = β_i (1 − ᾱ_{i−1})/(1 − ᾱ_i)
    μ̃ = √ᾱ_{i−1} β_i/(1 − ᾱ_i) · x̂₀ + √(1 − β_i) (1 − ᾱ_{i−1})/(1 − ᾱ_i) · x
"""

import math

import pytest
import torch

from recompose.schedules import CosineSchedule, LinearSchedule

T = 10
SCHEDULES = [CosineSchedule(), LinearSchedule()]


def closed_form(schedule, i, x, score):
    """``(x̂₀, μ̃, β̃)`` of DDPM's posterior ``q(x_{i−1} | x_i, x̂₀)``, from ``ᾱ`` alone."""
    abar = float(schedule.alpha_sq(torch.tensor((i + 1) / T, dtype=torch.float64)))
    abar_prev = 1.0 if i == 0 else float(
        schedule.alpha_sq(torch.tensor(i / T, dtype=torch.float64)))
    beta = 1 - abar / abar_prev
    x0 = (x + (1 - abar) * score) / math.sqrt(abar)
    mean = (math.sqrt(abar_prev) * beta / (1 - abar) * x0
            + math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x)
    var = beta * (1 - abar_prev) / (1 - abar)
    return x0, mean, var


def point_mass_score(schedule, i, x, mu):
    """Exact score of the diffused point mass at ``mu``: ``−(x − α_i μ)/σ_i²``."""
    alpha, sigma = schedule(torch.tensor((i + 1) / T, dtype=torch.float64))
    return -(x - alpha * mu) / sigma**2


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("i", [T - 1, 5, 1])
def test_step_is_the_posterior_mean_plus_posterior_noise(schedule, i):
    g = torch.Generator().manual_seed(i)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    score = torch.randn(64, 3, generator=g, dtype=torch.float64)
    _, mean, var = closed_form(schedule, i, x, score)
    out = schedule.levels(T).posterior_step(x, score, i,
                                            generator=torch.Generator().manual_seed(7))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(out, mean + math.sqrt(var) * z, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("i", [T - 1, 4])
def test_step_variance_is_beta_tilde(i):
    """Statistical version (independent of how the noise is drawn): many steps from one
    ``x``; the sample mean and variance per coordinate agree with ``μ̃`` and ``β̃`` within
    4 Monte-Carlo standard errors."""
    schedule, n = CosineSchedule(), 40_000
    x = torch.tensor([[0.3, -1.2]], dtype=torch.float64).expand(n, 2)
    score = torch.tensor([[-0.5, 2.0]], dtype=torch.float64).expand(n, 2)
    _, mean, var = closed_form(schedule, i, x[:1], score[:1])
    out = schedule.levels(T).posterior_step(x, score, i,
                                            generator=torch.Generator().manual_seed(3))
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2 / (n - 1))
    assert bool(((out.mean(0) - mean[0]).abs() < 4 * se_mean).all())
    assert bool(((out.var(0) - var).abs() < 4 * se_var).all())


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("i", [T - 1, 3, 0])
def test_point_mass_tweedie_is_exact(schedule, i):
    """Data = a point mass at ``μ``: with its exact score, ``x̂₀ = μ`` for every ``x``, and the
    (clip-form) step mean is ``α_{i−1}β/σ_i² μ + a σ²_{i−1}/σ_i² x``, the exact posterior."""
    mu = torch.tensor([0.4, -0.7], dtype=torch.float64)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = point_mass_score(schedule, i, x, mu)
    x0, mean, var = closed_form(schedule, i, x, score)
    torch.testing.assert_close(x0, mu.expand(32, 2), rtol=0, atol=1e-9)
    levels = schedule.levels(T)
    for clip in (None, (-1.0, 1.0)):
        out = levels.posterior_step(x, score, i, generator=torch.Generator().manual_seed(5),
                                    clip=clip)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        expected = mean if i == 0 else mean + math.sqrt(var) * z
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_point_mass_marginals_are_preserved(schedule):
    """Starting exactly from ``q(x_i) = N(α_i μ, σ_i² I)`` with the exact score, one step
    lands exactly on ``q(x_{i−1}) = N(α_{i−1} μ, σ_{i−1}² I)``: moments within 4·MCSE."""
    mu = torch.tensor([0.4, -0.7], dtype=torch.float64)
    levels, n, g = schedule.levels(T), 40_000, torch.Generator().manual_seed(11)
    for i in (T - 1, 6, 2):
        x = levels.alpha[i] * mu + levels.sigma[i] * torch.randn(n, 2, generator=g,
                                                                  dtype=torch.float64)
        out = levels.posterior_step(x, point_mass_score(schedule, i, x, mu), i, generator=g)
        m, v = levels.alpha[i - 1] * mu, levels.sigma[i - 1] ** 2
        assert bool(((out.mean(0) - m).abs() < 4 * math.sqrt(v / n)).all()), i
        assert bool(((out.var(0) - v).abs() < 4 * v * math.sqrt(2 / (n - 1))).all()), i


@pytest.mark.parametrize("i", [T - 1, 5, 0])
def test_clip_branch_equals_plain_branch_when_nothing_is_clipped(i):
    schedule, levels = CosineSchedule(), CosineSchedule().levels(T)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64)
    score = torch.randn(16, 1, 4, 4, generator=g, dtype=torch.float64)
    plain = levels.posterior_step(x, score, i, generator=torch.Generator().manual_seed(2))
    box = levels.posterior_step(x, score, i, generator=torch.Generator().manual_seed(2),
                                clip=(-1e6, 1e6))
    torch.testing.assert_close(box, plain, rtol=1e-9, atol=1e-9)
    x0, _, _ = closed_form(schedule, i, x, score)
    assert float(x0.abs().max()) > 1  # the box (−1, 1) would clip here: the branches differ
    clipped = levels.posterior_step(x, score, i, generator=torch.Generator().manual_seed(2),
                                    clip=(-1.0, 1.0))
    assert not torch.allclose(clipped, plain)


@pytest.mark.parametrize("i", [T - 1, 5, 0])
def test_clip_clamps_the_denoised_estimate(i):
    """With the box active, the step is DDPM's posterior with ``x̂₀`` clamped to the box."""
    schedule, levels = CosineSchedule(), CosineSchedule().levels(T)
    g = torch.Generator().manual_seed(4)
    x = 2 * torch.randn(32, 2, generator=g, dtype=torch.float64)
    score = torch.randn(32, 2, generator=g, dtype=torch.float64)
    x0, _, var = closed_form(schedule, i, x, score)
    lo, hi = -0.5, 0.8
    assert bool((x0 < lo).any()) and bool((x0 > hi).any())
    # DDPM's posterior mean with x̂₀ replaced by its clamp: x̂₀ enters linearly.
    _, mean_clamped, _ = closed_form(schedule, i, x, score)
    abar = float(schedule.alpha_sq(torch.tensor((i + 1) / T, dtype=torch.float64)))
    abar_prev = 1.0 if i == 0 else float(
        schedule.alpha_sq(torch.tensor(i / T, dtype=torch.float64)))
    coef = math.sqrt(abar_prev) * (1 - abar / abar_prev) / (1 - abar)
    mean_clamped = mean_clamped + coef * (x0.clamp(lo, hi) - x0)
    out = levels.posterior_step(x, score, i, generator=torch.Generator().manual_seed(9),
                                clip=(lo, hi))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    expected = mean_clamped if i == 0 else mean_clamped + math.sqrt(var) * z
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    if i == 0:  # the last step returns the clamped Tweedie estimate itself
        torch.testing.assert_close(out, x0.clamp(lo, hi), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_last_step_is_deterministic_tweedie(schedule):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64)
    score = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x0, _, var = closed_form(schedule, 0, x, score)
    assert var == 0.0  # β̃_0 = 0: σ_{−1} = 0
    gen = torch.Generator().manual_seed(123)
    state = gen.get_state()
    out = schedule.levels(T).posterior_step(x, score, 0, generator=gen)
    torch.testing.assert_close(out, x0, rtol=1e-12, atol=1e-12)
    assert torch.equal(gen.get_state(), state), "the last step must not draw noise"


def test_step_keeps_dtype_and_shape():
    levels = CosineSchedule().levels(T)
    x = torch.randn(4, 3, 8, 8)
    out = levels.posterior_step(x, torch.zeros_like(x), 5, generator=torch.Generator())
    assert out.shape == x.shape and out.dtype == torch.float32
