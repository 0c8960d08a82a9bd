"""The contributor guide (docs/how-to/extend.md) works as written.

Every ``python`` block of the guide carries a marker ``<!-- test: NAME -->``. Each test runs one
section's blocks in order in one fresh namespace, as a reader would (a definition, then its
use), and checks what the guide's text claims, against the exact Gaussian-mixture oracle:

* the sampler draws the mixture (bit for bit the library's ``"reverse"``, which it restates),
  with one score evaluation per level;
* the kernel keeps exact draws of ``p_t`` distributed as ``p_t`` (moments within 4 Monte-Carlo
  standard errors), decides per chain, mutates nothing, adapts toward 0.234 and refuses a
  score-only model; annealed with it, ``rc.sample`` draws the mixture;
* the path's derivatives agree with autograd, the oracle on it is the independently written
  diffused mixture, and SMC on it draws the mixture with ``log Ẑ ≈ 0``;
* the prediction's conversions invert each other, match EDM's own ``D = c_skip y + c_out F``,
  and make a ``ScoreModel`` whose network outputs an oracle's ``F`` give the oracle's score.
"""

import math
import re
from pathlib import Path

import pytest
import torch

import recompose as rc
from conftest import ScoreOnly
from recompose.errors import CapabilityError

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "extend.md"
MARKED = re.compile(r"<!-- test: ([\w-]+) -->\n```python\n(.*?)\n```", re.S)
SECTIONS = ("sampler", "kernel", "path", "prediction")
MEANS, STD, WEIGHTS = [[-1.0, 0.0], [1.0, 0.5]], 0.2, [0.3, 0.7]  # the guide's mixture
LEFT = 0.3  # its mass on x₁ < 0 (the tail of the right mode beyond 5 std is ~1e-7)


@pytest.fixture(autouse=True)
def one_thread():
    """These runs are small: one thread is ~30× faster than two when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blocks() -> dict[str, str]:
    return dict(MARKED.findall(GUIDE.read_text(encoding="utf-8")))


def _run(section: str) -> dict:
    """Execute the section's blocks (``section``, then ``section-…``) in one namespace."""
    blocks = _blocks()
    names = [section] + [k for k in blocks if k.startswith(section + "-")]
    namespace = {"__name__": f"extend_guide_{section}"}
    for name in names:
        exec(compile(blocks[name], f"{GUIDE.name}[{name}]", "exec"), namespace)
    return namespace


def _exact_mean(alpha: float = 1.0) -> torch.Tensor:
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    return alpha * (w[:, None] * torch.tensor(MEANS, dtype=torch.float64)).sum(0)


def _check_draws(x: torch.Tensor, n_eff: float, allowance: float = 0.02) -> None:
    """Mass on x₁ < 0 within 4 binomial standard errors, the mean within 4 standard errors
    (of ``n_eff`` independent draws), plus the discretisation's ``allowance``."""
    assert x.shape == (2000, 2) and bool(torch.isfinite(x).all())
    left = float((x[:, 0] < 0).double().mean())
    assert abs(left - LEFT) < 4 * math.sqrt(LEFT * (1 - LEFT) / n_eff) + allowance, left
    w, mu = torch.tensor(WEIGHTS, dtype=torch.float64), torch.tensor(MEANS, dtype=torch.float64)
    var = (w[:, None] * (mu**2 + STD**2)).sum(0) - _exact_mean() ** 2
    err = (x.double().mean(0) - _exact_mean()).abs()
    assert bool((err < 4 * (var / n_eff).sqrt() + allowance).all()), err


def test_every_code_block_of_the_guide_is_tested():
    text = GUIDE.read_text(encoding="utf-8")
    blocks = _blocks()
    assert len(re.findall(r"^```python$", text, flags=re.M)) == len(blocks)
    for section in SECTIONS:
        assert section in blocks and f"{section}-use" in blocks, section


def test_the_guide_sampler_samples_the_mixture():
    ns = _run("sampler")
    result, model = ns["result"], ns["model"]
    _check_draws(result.x, 2000)
    assert result.info.score_evals == 100 and result.info.sampler == "ancestral"
    assert result.info.settings["denoise"] is True
    # it restates reverse diffusion: the same random stream gives the same draws
    reference = rc.sample(model, 2000, "reverse", seed=0)
    assert torch.equal(result.x, reference.x)
    # callbacks and clip= come with the protocol
    seen = []
    rc.sample(model, 8, ns["Ancestral"](), num_levels=5, seed=0, clip=(-1.0, 1.0),
              callback=lambda d: seen.append(d["level"]))
    assert seen == [4, 3, 2, 1, 0]
    # and the sharded random stream (torch.distributed's, here on one process), as the guide says
    r = rc.sample(model, 8, ns["Ancestral"](), num_levels=5, seed=0, shard=True)
    assert r.x.shape == (8, 2) and bool(torch.isfinite(r.x).all())


def test_the_guide_kernel_is_invariant_and_samples_the_mixture():
    ns = _run("kernel")
    # rc.sample with the kernel as the sampler: annealed MCMC, adapting toward 0.234
    result = ns["result"]
    _check_draws(result.x, 2000)
    settings = result.info.settings
    assert settings["kernel"] == "random_walk" and settings["adapt"] is True
    assert settings["target_accept"] == 0.234 and settings["num_steps"] == 5
    assert all(0.0 < a <= 1.0 for a in result.info.acceptance)
    # the invariance check: chains started at exact draws of p_t stay distributed as p_t
    model, state, info = ns["model"], ns["state"], ns["info"]
    alpha, sigma = (float(v) for v in model.schedule(torch.tensor(0.3, dtype=torch.float64)))
    big = model.sample(200_000, torch.Generator().manual_seed(1), t=0.3)  # the exact moments
    mean = alpha * _exact_mean()
    var = big.var(0)
    n = state.x.shape[0]
    x = state.x
    assert bool(((x.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all())
    fourth = ((big - big.mean(0)) ** 4).mean(0)
    assert bool(((x.var(0) - var).abs() < 4 * ((fourth - var**2) / n).sqrt()).all())
    # one decision per chain, and the inputs are left alone
    assert 0.0 < float(info.accepted.float().mean()) < 1.0
    kernel, target = ns["random_walk"](), ns["target"]
    x0 = model.sample(64, torch.Generator().manual_seed(2), t=0.3)
    start = kernel.init(x0, target)
    copies = [v.clone() for v in start]
    kernel.step(start, target, 0.5, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(start, copies))
    # the kernel object as the moves of the weighted samplers
    for sampler in ("smc", "fkc"):
        r = rc.sample(model, 200, sampler, moves=ns["random_walk"](), num_levels=10, seed=0)
        assert r.info.settings["moves"] == "random_walk", sampler
        assert bool(torch.isfinite(r.x).all())
    # needs_energy=True: a score-only model is refused before any work
    with pytest.raises(CapabilityError):
        rc.sample(ScoreOnly(model), 8, ns["random_walk"](), num_levels=3)


def _independent_log_density(x, alpha, sigma):
    """``log Σ_k w_k N(x; α μ_k, (α² s² + σ²) I)`` with torch.distributions."""
    means = torch.tensor(MEANS, dtype=torch.float64)
    cov = (alpha**2 * STD**2 + sigma**2) * torch.eye(2, dtype=torch.float64)
    comps = torch.distributions.MultivariateNormal(alpha * means, cov)
    log_w = torch.log(torch.tensor(WEIGHTS, dtype=torch.float64))
    return torch.logsumexp(comps.log_prob(x[:, None, :]) + log_w, dim=1)


def test_the_guide_path_runs_the_samplers_and_the_oracle_on_it():
    ns = _run("path")  # asserts the closed-form derivatives against autograd itself
    path, model, result = ns["path"], ns["model"], ns["result"]
    assert path.prior_std() == pytest.approx(1.0)  # α² + σ² = 1
    # the oracle on the new path is the diffused mixture with α = cos(πt/2), σ = sin(πt/2)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.02, 0.4, 0.9):
        alpha, sigma = math.cos(0.5 * math.pi * t), math.sin(0.5 * math.pi * t)
        torch.testing.assert_close(model.energy(x, t), -_independent_log_density(x, alpha, sigma),
                                   rtol=0, atol=1e-10)
    # SMC on it: the mixture, and the evidence of a normalised density (log Z = 0)
    _check_draws(result.x, min(result.info.ess))
    assert abs(result.info.log_evidence) < 0.1
    # and every sampler runs on it
    for sampler in rc.SAMPLERS:
        r = rc.sample(model, 200, sampler, num_levels=10, seed=0)
        assert r.x.shape == (200, 2) and bool(torch.isfinite(r.x).all()), sampler


def test_the_guide_prediction_round_trips_and_matches_edm():
    from recompose.config import TrainConfig
    from recompose.models.parameterization import ScoreModel
    from recompose.models.predictions import PREDICTIONS

    try:
        ns = _run("prediction")  # asserts to_epsilon / to_x0 / from_epsilon round trips
        edm_f, schedule = ns["edm_f"], ns["schedule"]
        x, x0, t, output = ns["x"], ns["x0"], ns["t"], ns["output"]
        # EDM's own definition (Karras et al. 2022, Table 1) on y = x/α, ρ = σ/α
        alpha, sigma = schedule(t)
        rho, sd = (sigma / alpha)[:, None], 0.5
        c_skip = sd**2 / (rho**2 + sd**2)
        c_out = rho * sd / (rho**2 + sd**2).sqrt()
        torch.testing.assert_close(c_skip * x / alpha[:, None] + c_out * output, x0)
        # a score model whose network outputs the oracle's F has the oracle's score
        oracle = rc.GaussianMixture(MEANS, STD, weights=WEIGHTS, schedule=schedule)

        class OracleF(torch.nn.Module):
            def forward(self, x, t):
                a, s = (v.to(torch.float64)[:, None] for v in schedule(t))
                x0_hat = (x + s**2 * oracle.score(x, t)) / a  # Tweedie
                r = s / a
                skip, out = sd**2 / (r**2 + sd**2), r * sd / (r**2 + sd**2).sqrt()
                return (x0_hat - skip * x / a) / out

        model = ScoreModel(OracleF(), schedule, (2,), prediction="edm_f")
        for tt in (0.05, 0.5, 0.95):
            tv = torch.full((x.shape[0],), tt, dtype=torch.float64)
            torch.testing.assert_close(model.score(x, tv), oracle.score(x, tv))
        # registered: the name works in a training config
        assert TrainConfig(parameterization="score", prediction="edm_f").prediction == "edm_f"
        assert edm_f is PREDICTIONS["edm_f"]
    finally:
        PREDICTIONS.pop("edm_f", None)  # the guide registers it; leave the registry as it was
    with pytest.raises(ValueError, match="prediction"):
        TrainConfig(parameterization="score", prediction="edm_f")
