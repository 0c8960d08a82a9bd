import math

import pytest
import torch

from recompose.schedules import CosineSchedule, LinearSchedule, get_schedule


@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule()])
def test_variance_preserving_and_monotone(schedule):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha, sigma = schedule(t)
    assert alpha.dtype == torch.float64
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), rtol=0, atol=1e-12)
    assert float(alpha[0]) == pytest.approx(1.0, abs=1e-12)
    snr = alpha**2 / sigma.clamp_min(1e-300) ** 2
    assert bool((snr[1:] < snr[:-1]).all()), "SNR must decrease with t"
    assert float(alpha[-1]) < 0.01


def test_cosine_matches_formula_and_floor():
    s = 0.008
    sched = CosineSchedule(s=s)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    alpha, _ = sched(t)
    torch.testing.assert_close(alpha**2, f(t) / f(torch.tensor(0.0, dtype=torch.float64)))
    a1, s1 = sched(1.0)
    assert float(a1) ** 2 == pytest.approx(1e-6) and float(s1) < 1.0


def test_shapes_and_dtype_follow_t():
    sched = CosineSchedule()
    a, s = sched(torch.rand(7))
    assert a.shape == (7,) and a.dtype == torch.float32
    a, s = sched(0.3)
    assert a.shape == ()


def test_levels_match_ddpm_indexing():
    sched = CosineSchedule()
    lv = sched.levels(100)
    assert len(lv) == 100 and lv.t[0] == pytest.approx(0.01) and lv.t[-1] == 1.0
    abar = lv.alpha**2
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    torch.testing.assert_close(1 - lv.beta, abar / prev)
    assert bool((lv.beta > 0).all()) and bool((lv.beta < 1).all())


def test_bad_input():
    with pytest.raises(ValueError):
        CosineSchedule()(1.5)
    with pytest.raises(ValueError):
        CosineSchedule().levels(0)
    with pytest.raises(ValueError):
        get_schedule("nope")


def test_config_round_trip_and_equality():
    a = CosineSchedule()
    b = get_schedule(a.config())
    assert a == b and a != LinearSchedule() and hash(a) == hash(b)


# ---------------------------------------------------------------- exact discretisations
def _cosine_abar(u, s=0.008):
    """Nichol & Dhariwal (2021) eq. 17, by hand with the math module."""
    f = lambda v: math.cos((v + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(0.0)


@pytest.mark.parametrize("num_levels", [1, 10, 100, 1000])
@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule()], ids=["cos", "lin"])
def test_levels_grid_and_products(schedule, num_levels):
    lv = schedule.levels(num_levels)
    expected_t = torch.tensor([(i + 1) / num_levels for i in range(num_levels)],
                              dtype=torch.float64)
    assert torch.equal(lv.t, expected_t)
    assert lv.t.dtype == lv.alpha.dtype == lv.beta.dtype == torch.float64
    # ᾱ_i = ∏_{j ≤ i} (1 − β_j): the DDPM product, accumulated by hand
    abar, prod = lv.alpha**2, 1.0
    for i in range(num_levels):
        prod *= 1.0 - float(lv.beta[i])
        assert prod == pytest.approx(float(abar[i]), rel=1e-9, abs=1e-15)
    torch.testing.assert_close(lv.alpha**2 + lv.sigma**2, torch.ones(num_levels,
                                                                      dtype=torch.float64),
                               rtol=0, atol=1e-15)
    # the levels are the continuous schedule at their t
    alpha, sigma = schedule(lv.t)
    torch.testing.assert_close(lv.alpha, alpha, rtol=0, atol=1e-15)
    torch.testing.assert_close(lv.sigma, sigma, rtol=0, atol=1e-15)
    if num_levels > 1:
        assert bool((lv.alpha[1:] < lv.alpha[:-1]).all())
        assert bool((lv.sigma[1:] > lv.sigma[:-1]).all())


def test_cosine_levels_match_nichol_dhariwal_by_hand():
    lv = CosineSchedule().levels(100)
    for i in range(100):
        expected = max(_cosine_abar((i + 1) / 100), 1e-6)  # the floor replaces β-clipping
        assert float(lv.alpha[i] ** 2) == pytest.approx(expected, rel=1e-12), i
    assert float(lv.alpha[-1] ** 2) == pytest.approx(1e-6, rel=1e-12)  # ᾱ(1) floored
    assert float(lv.beta[-1]) == pytest.approx(1 - 1e-6 / _cosine_abar(0.99), rel=1e-12)
    assert float(lv.beta[0]) == pytest.approx(1 - _cosine_abar(0.01), rel=1e-12)
    # Nichol & Dhariwal clip β at 0.999; with the floor at 1e-6 no level comes near it
    assert float(lv.beta.max()) < 0.999


def test_cosine_floor_and_ceiling():
    sched = CosineSchedule(min_alpha_sq=1e-3)
    t = torch.tensor([0.0, 0.97, 0.99, 1.0], dtype=torch.float64)
    a2 = sched.alpha_sq(t)
    assert float(a2[0]) == 1.0  # f(0)/f(0), clamped at 1
    assert _cosine_abar(0.97) > 1e-3 and float(a2[1]) == pytest.approx(_cosine_abar(0.97))
    assert _cosine_abar(0.99) < 1e-3 and float(a2[2]) == 1e-3 and float(a2[3]) == 1e-3
    assert float(CosineSchedule(s=0.1).alpha_sq(t)[1]) == pytest.approx(
        _cosine_abar(0.97, s=0.1), rel=1e-12)


def test_linear_is_the_exact_integral_of_beta():
    """ᾱ(t) = exp(−T₀ ∫₀ᵗ β(u) du), β(u) = β₀ + u (β₁ − β₀), T₀ = 1000, by hand."""
    b0, b1 = 1e-4, 0.02
    sched = LinearSchedule()
    for t in (0.0, 0.1, 0.37, 0.5, 1.0):
        expected = math.exp(-1000 * (b0 * t + 0.5 * (b1 - b0) * t * t))
        a2 = float(sched.alpha_sq(torch.tensor(t, dtype=torch.float64)))
        assert a2 == pytest.approx(expected, rel=1e-12), t
    other = LinearSchedule(beta_min=1e-3, beta_max=0.05, steps=200)
    expected = math.exp(-200 * (1e-3 * 0.6 + 0.5 * (0.05 - 1e-3) * 0.36))
    assert float(other.alpha_sq(torch.tensor(0.6, dtype=torch.float64))) == pytest.approx(
        expected, rel=1e-12)


def test_linear_levels_match_ho_et_al_discrete_betas():
    """At T = 1000 levels the per-level β equal DDPM's ``linspace(1e-4, 0.02, 1000)`` up to
    the continuous-time error: ``β_i = 1 − exp(−b_i)`` with ``b_i`` the integral of β over
    level ``i``, and ``|1 − e^{−b} − b| ≤ b²/2``, ``|b_i − β_i^{Ho}| ≤ (β₁ − β₀)/999``;
    and ᾱ (their cumulative product) within the summed bound."""
    b0, b1, n = 1e-4, 0.02, 1000
    lv = LinearSchedule().levels(n)
    ho = [b0 + (b1 - b0) * j / (n - 1) for j in range(n)]
    bound = b1**2 / 2 + (b1 - b0) / (n - 1)
    assert max(abs(float(lv.beta[j]) - ho[j]) for j in range(n)) < bound
    # the exact per-level β of the continuous schedule
    integral = lambda t: b0 * t + 0.5 * (b1 - b0) * t * t  # noqa: E731
    for j in (0, 1, 499, 998, 999):
        b = n * (integral((j + 1) / n) - integral(j / n))
        assert float(lv.beta[j]) == pytest.approx(1 - math.exp(-b), rel=1e-9), j
    abar_ho = 1.0
    for j in range(n):
        abar_ho *= 1 - ho[j]
    # log ᾱ differs by at most the summed per-level bound
    assert abs(math.log(float(lv.alpha[-1] ** 2)) - math.log(abar_ho)) < 0.1
    assert float(lv.alpha[-1] ** 2) == pytest.approx(math.exp(-1000 * integral(1.0)), rel=1e-12)


def test_time_validation_without_host_sync_on_cpu_inputs():
    sched = LinearSchedule()
    for bad in (-0.01, 1.01, torch.tensor([0.5, 1.2]), torch.tensor([-1e-9, 0.5],
                                                                    dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            sched(bad)
    a, s = sched(torch.tensor([0.0, 1.0]))
    assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(s).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an accelerator")
def test_out_of_range_time_on_an_accelerator_is_nan_not_a_sync():
    t = torch.tensor([0.5, 1.5, -0.5], device="cuda")
    a, s = CosineSchedule()(t)
    assert a.device.type == "cuda"
    ok = torch.isfinite(a).cpu().tolist()
    assert ok == [True, False, False]
    torch.testing.assert_close(a[0].cpu(), CosineSchedule()(torch.tensor(0.5))[0])
