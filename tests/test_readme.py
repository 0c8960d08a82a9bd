"""The Python examples of the README and of the documentation pages run as written, and say
what they claim (the pages' other examples only run: tests/test_doc_examples.py)."""

import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the pages the README's examples moved to (issue #36), relative to the repository
INDEX = "docs/index.md"
ALGEBRA = "docs/concepts/algebra.md"
SAMPLERS = "docs/concepts/samplers.md"
ENERGIES = "docs/concepts/energies-and-scores.md"
PATHS = "docs/concepts/paths-and-predictions.md"
DIFFUSERS = "docs/how-to/diffusers.md"

#: (page, marker) of every block a test below runs; test_doc_examples.py skips these
CHECKED = [("README.md", "modes = torch.tensor([[0.0, 0.5], [0.0, -0.5]])"),
           (INDEX, "smc.info.evidence_t"),
           (SAMPLERS, "rc.samplers.Annealed(rc.mcmc.hmc(num_leapfrog_steps=5"),
           (PATHS, "rc.RectifiedFlowSchedule(), rc.VESchedule"),
           (ALGEBRA, 'rc.pretrained("digits-cond")'),
           (ENERGIES, "# 1. an energy network distilled"),
           (DIFFUSERS, "stable-diffusion-2-1-base"),
           (ALGEBRA, "rc.tapestry"),
           (ENERGIES, "compile_gradient"),
           (ENERGIES, "jacobian_asymmetry"),
           (ALGEBRA, 'rc.superpose([ring, bar], mode="and")'),
           (DIFFUSERS, "stable-diffusion-3.5-medium"),
           ("README.md", "black-forest-labs/FLUX.1-dev"),
           ("README.md", "right = rc.reward(")]


def _block(page, marker):
    """The one Python block of ``page`` containing ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{page} has {len(found)} python blocks with {marker!r}"
    return found[0]


def _run(page, marker, env=None):
    exec(compile(_block(page, marker), page, "exec"), {} if env is None else env)


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    for command in ('pip install torch==2.13.0 -e . && recompose demo',
                    'pip install torch==2.13.0 -e ".[test]" && python -m pytest'):
        assert command in text, command


def test_readme_example_runs(capsys):
    """The README's claim: annealed HMC and SMC put far more samples on the product's two
    modes than reverse diffusion with summed scores (0.87 vs 0.96 / 1.00 at seed 0)."""
    _run("README.md", CHECKED[0][1])
    shares = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert set(shares) == {"reverse", "hmc", "smc"}
    assert float(shares["hmc"]) > float(shares["reverse"]) + 0.05
    assert float(shares["smc"]) > float(shares["reverse"]) + 0.05


def test_quickstart_runs(capsys):
    env: dict = {}
    _run(INDEX, "smc.info.evidence_t", env)
    lines = capsys.readouterr().out.strip().splitlines()
    rev, hmc = map(float, lines[1].split())  # the energy distances
    assert hmc < rev  # the page's claim: HMC is closer to the exact product
    # SMC's evidence is log ∫ ring_t · two_t at t_0, in closed form; over seeds 0–2 its error
    # was 0.018 / −0.013 / 0.044 (sd 0.03): 5 sd of margin
    from gaussian_integrals import log_integral

    smc, ring, two = env["smc"], env["ring"], env["two"]
    exact = log_integral([(ring, 1), (two, 1)], smc.info.evidence_t)
    assert list(map(float, lines[2].split())) == [smc.info.log_evidence, smc.info.evidence_t]
    assert abs(smc.info.log_evidence - exact) < 0.15


def test_sampler_objects_example_runs(capsys):
    env: dict = {}
    _run(SAMPLERS, "rc.samplers.Annealed(rc.mcmc.hmc(num_leapfrog_steps=5", env)
    import torch

    assert torch.equal(env["a"].x, env["b"].x)  # the object and its shortcut: the same run
    settings = capsys.readouterr().out.strip().splitlines()
    assert len(settings) == 4 and "'moves': 'mala'" in settings[0]
    assert "'method': 'heun'" in settings[1] and "'moves': 'uhmc'" in settings[2]


def test_paths_example_runs(capsys):
    _run(PATHS, "rc.RectifiedFlowSchedule(), rc.VESchedule")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["CosineSchedule", "RectifiedFlowSchedule",
                                                   "VESchedule"]
    for line in lines:  # the exact product's mass on x₁ < 0 is 0.203 (docs/results.md §12)
        assert abs(float(line.split()[1]) - 0.203) < 0.06, line


def test_image_example_runs(capsys):
    _run(ALGEBRA, 'rc.pretrained("digits-cond")')
    out = capsys.readouterr().out
    assert "torch.Size([20, 1, 8, 8])" in out and "torch.Size([4, 3, 16, 16])" in out
    assert out.split()[-1] == "4"


def test_energy_example_runs(capsys):
    env: dict = {}
    _run(ENERGIES, "# 1. an energy network distilled", env)
    log_z, acceptance, energy_evals = capsys.readouterr().out.split()
    assert math.isfinite(float(log_z)) and 0.3 < float(acceptance) < 1
    assert energy_evals == "0" and env["path"].info.settings["energy"] == "path"


def test_diffusers_example_runs_on_a_local_pipeline(tmp_path):
    """The hub example, with a tiny local pipeline folder in place of the hub id (offline)."""
    import pytest

    pytest.importorskip("diffusers")
    from test_diffusers import tiny_pipeline

    folder = tiny_pipeline(tmp_path)
    block = _block(DIFFUSERS, "stable-diffusion-2-1-base")
    block = block.replace('"stabilityai/stable-diffusion-2-1-base"', repr(str(folder)))
    block = block.replace('device="cuda"', 'device="cpu"')
    env: dict = {}
    exec(compile(block, DIFFUSERS, "exec"), env)
    assert env["images"].shape == (4, 3, 16, 16) and env["images"].abs().max() <= 1


def test_tapestry_example_runs(capsys):
    env: dict = {}
    _run(ALGEBRA, "rc.tapestry", env)
    assert capsys.readouterr().out.split() == ["torch.Size([4,", "3,", "16,", "40])", "12"]
    assert all(len(w.factors) == 3 for w in env["canvas"].models)  # S**-1 · S|p · S|p per window


def test_speed_example_runs():
    env: dict = {}
    _run(ENERGIES, "compile_gradient", env)
    assert env["energy"].shape == (1000,) and env["score"].shape == (1000, 2)
    assert env["fast"]._gradient is not None  # the compiled path, not autograd


def test_conservative_example_runs(capsys):
    _run(ENERGIES, "jacobian_asymmetry")
    (_, model), (_, contrast) = (line.split() for line in
                                 capsys.readouterr().out.strip().splitlines())
    # the page's claim: the contrast is much less of a gradient than the model's field
    assert 0 < float(model) < 0.05 and float(contrast) > 5 * float(model)


def test_score_only_or_and_example_runs(capsys):
    """The OR share is the weight within 4 binomial standard errors plus the 400-level bias
    (−0.004, docs/results.md §13); the AND's tracked log-densities end equal (κ rarely clips
    on ring and bar)."""
    _run(ALGEBRA, 'rc.superpose([ring, bar], mode="and")')
    lines = capsys.readouterr().out.strip().splitlines()
    assert abs(float(lines[0]) - 0.3) < 4 * math.sqrt(0.21 / 1000) + 0.004, lines[0]
    assert float(lines[-1]) < 0.05, lines[-1]


def test_flow_transformer_example_runs_on_local_pipelines(tmp_path):
    """The SD3 / FLUX hub example, with tiny local pipeline folders in place of the hub ids
    (offline), at 16×16 pixels and on the CPU; FLUX-dev's negative prompt warns."""
    import pytest
    import torch

    pytest.importorskip("diffusers")
    import experiments.tiny_pipelines as tiny
    import recompose as rc

    folders = {}
    for kind, build in (("sd3", tiny.sd3_pipeline), ("flux", tiny.flux_pipeline)):
        folders[kind] = tmp_path / kind
        tiny.save(build(), folders[kind])
    block = _block(DIFFUSERS, "stable-diffusion-3.5-medium")
    block = block.replace('"stabilityai/stable-diffusion-3.5-medium"', repr(str(folders["sd3"])))
    block = block.replace('"black-forest-labs/FLUX.1-dev"', repr(str(folders["flux"])))
    block = block.replace('device="cuda"', 'device="cpu"').replace("1024", "16")
    env: dict = {}
    with pytest.warns(rc.ApproximationWarning, match="guidance-distilled"):
        exec(compile(block, DIFFUSERS, "exec"), env)
    assert env["images"].shape == (4, 3, 16, 16) and torch.isfinite(env["images"]).all()
    assert env["sd3"].decode(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 16, 16)


def test_readme_flux_example_runs_on_a_local_pipeline(tmp_path):
    """The README's FLUX hub example with a tiny local FLUX folder in place of the hub id."""
    import pytest
    import torch

    pytest.importorskip("diffusers")
    import experiments.tiny_pipelines as tiny
    import recompose as rc

    tiny.save(tiny.flux_pipeline(), tmp_path / "flux")
    block = _block("README.md", "black-forest-labs/FLUX.1-dev")
    block = block.replace('"black-forest-labs/FLUX.1-dev"', repr(str(tmp_path / "flux")))
    block = block.replace('device="cuda"', 'device="cpu"').replace("1024", "16")
    env: dict = {}
    with pytest.warns(rc.ApproximationWarning, match="guidance-distilled"):
        exec(compile(block, "README.md", "exec"), env)
    assert env["images"].shape == (4, 3, 16, 16) and torch.isfinite(env["images"]).all()


def test_readme_reward_example_runs(capsys):
    """The README's claim: an indicator reward tilts the mixture's right mode from 0.30 to the
    exact ``e²·p/(1 − p + e²·p)`` (p the right-hand mass), within 4 standard errors of the
    weighted draws (their effective size is about half of n here)."""
    import torch
    from torch.distributions import Normal

    _run("README.md", "right = rc.reward(")
    frac = float(capsys.readouterr().out.strip().splitlines()[-1])
    p = 0.7 * (1 - float(Normal(-2.0, 0.5).cdf(torch.tensor(0.0)))) + 0.3 * (
        1 - float(Normal(2.0, 0.5).cdf(torch.tensor(0.0))))
    exact = math.e**2 * p / (1 - p + math.e**2 * p)
    assert abs(frac - exact) < 4 * math.sqrt(exact * (1 - exact) / 1000), (frac, exact)
