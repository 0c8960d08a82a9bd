"""On a CUDA device (skipped without one): every sampler runs there, agrees with the CPU in
distribution, and a network evaluation never synchronises the device with the host."""

import math

import pytest
import torch

import recompose as rc

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SAMPLERS = ["reverse", "ula", "uhmc", "mala", "hmc", "smc", "fkc"]


def _product(device):
    return (rc.pretrained("ring", "energy") * rc.pretrained("bar", "energy")).to(device)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_on_cuda_match_the_cpu_in_distribution(sampler):
    """Same sampler, same settings, n = 2,000 on each device (different random streams): the
    means agree within 5 standard errors of their difference, the stds within 10 % (6 standard
    errors of a std at this n)."""
    n = 2000
    options = {} if sampler in ("reverse", "smc", "fkc") else {"num_steps": 3}
    out = {}
    for device in ("cpu", "cuda"):
        g = torch.Generator(device=device).manual_seed(0)
        r = rc.sample(_product(device), n, sampler, num_levels=20, generator=g, **options)
        assert r.x.device.type == device and bool(torch.isfinite(r.x).all())
        out[device] = r.x.double().cpu()
    a, b = out["cpu"], out["cuda"]
    se = torch.sqrt(a.var(0) / n + b.var(0) / n)
    assert torch.all((a.mean(0) - b.mean(0)).abs() <= 5 * se), (a.mean(0), b.mean(0), se)
    assert torch.allclose(a.std(0), b.std(0), rtol=0.1)


def test_smc_evidence_on_cuda_matches_the_cpu():
    ev = {}
    for device in ("cpu", "cuda"):
        runs = [rc.sample(_product(device), 1000, "smc", num_levels=20,
                          generator=torch.Generator(device=device).manual_seed(s)
                          ).info.log_evidence for s in range(4)]
        ev[device] = torch.tensor(runs, dtype=torch.float64)
    spread = math.sqrt(float(ev["cpu"].var() + ev["cuda"].var()) / 4) + 1e-3
    assert abs(float(ev["cpu"].mean() - ev["cuda"].mean())) <= 5 * spread, ev


@pytest.mark.parametrize("name", ["ring", "digits"])
def test_a_network_evaluation_never_waits_for_the_device(name):
    """``set_sync_debug_mode("error")`` turns any device→host synchronisation into an error."""
    model = rc.pretrained(name, "energy").to("cuda")
    x = torch.randn(64, *model.event_shape, device="cuda")
    t = torch.tensor(0.5, device="cuda")
    model.energy_and_score(x, t)  # warm-up (lazy initialisation may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        energy, score = model.energy_and_score(x, t)
        model.score(x, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert energy.shape == (64,) and score.shape == x.shape


def test_the_compiled_gradient_on_cuda_equals_autograd():
    ref = rc.pretrained("ring", "energy").cuda()
    fast = rc.pretrained("ring", "energy").cuda().compile_gradient()
    x = torch.randn(256, 2, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    e_ref, s_ref = ref.energy_and_score(x, 0.3)
    e, s = fast.energy_and_score(x, 0.3)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4 * float(s_ref.abs().max()))
    torch.testing.assert_close(e, e_ref, rtol=1e-4, atol=1e-4 * float(e_ref.abs().max()))
