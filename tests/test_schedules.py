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
