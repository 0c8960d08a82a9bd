"""The README's Python quickstart runs as written."""

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    env: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), env)
    lines = capsys.readouterr().out.strip().splitlines()
    rev, hmc = map(float, lines[1].split())  # the energy distances
    assert hmc < rev  # the README's claim: HMC is closer to the exact product
    # SMC's evidence is log ∫ ring_t · two_t at t_0, in closed form; over seeds 0–2 its error
    # was 0.018 / −0.013 / 0.044 (sd 0.03): 5 sd of margin
    from gaussian_integrals import log_integral

    smc, ring, two = env["smc"], env["ring"], env["two"]
    exact = log_integral([(ring, 1), (two, 1)], smc.info.evidence_t)
    assert list(map(float, lines[2].split())) == [smc.info.log_evidence, smc.info.evidence_t]
    assert abs(smc.info.log_evidence - exact) < 0.15


def _block(marker):
    """The README's Python block containing ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"README has {len(found)} python blocks with {marker!r}"
    return found[0]


def test_sampler_objects_example_runs(capsys):
    env: dict = {}
    exec(compile(_block("rc.samplers.Annealed(rc.mcmc.hmc(num_leapfrog_steps=5"), "README.md",
                 "exec"), env)
    import torch

    assert torch.equal(env["a"].x, env["b"].x)  # the object and its shortcut: the same run
    settings = capsys.readouterr().out.strip().splitlines()
    assert len(settings) == 4 and "'moves': 'mala'" in settings[0]
    assert "'method': 'heun'" in settings[1] and "'moves': 'uhmc'" in settings[2]


def test_paths_example_runs(capsys):
    exec(compile(_block("rc.RectifiedFlowSchedule(), rc.VESchedule"), "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["CosineSchedule", "RectifiedFlowSchedule",
                                                   "VESchedule"]
    for line in lines:  # the exact product's mass on x₁ < 0 is 0.203 (docs/results.md §12)
        assert abs(float(line.split()[1]) - 0.203) < 0.06, line


def test_image_example_runs(capsys):
    exec(compile(_block('rc.pretrained("digits-cond")'), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([20, 1, 8, 8])" in out and "torch.Size([4, 3, 16, 16])" in out
    assert out.split()[-1] == "4"


def test_energy_example_runs(capsys):
    env: dict = {}
    exec(compile(_block("# 1. an energy network distilled"), "README.md", "exec"), env)
    log_z, acceptance, energy_evals = capsys.readouterr().out.split()
    assert math.isfinite(float(log_z)) and 0.3 < float(acceptance) < 1
    assert energy_evals == "0" and env["path"].info.settings["energy"] == "path"


def test_diffusers_example_runs_on_a_local_pipeline(tmp_path):
    """The hub example, with a tiny local pipeline folder in place of the hub id (offline)."""
    import pytest

    pytest.importorskip("diffusers")
    from test_diffusers import tiny_pipeline

    folder = tiny_pipeline(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "from_pretrained" in b)
    block = block.replace('"stabilityai/stable-diffusion-2-1-base"', repr(str(folder)))
    block = block.replace('device="cuda"', 'device="cpu"')
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)
    assert env["images"].shape == (4, 3, 16, 16) and env["images"].abs().max() <= 1


def test_tapestry_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "rc.tapestry" in b)
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)
    assert capsys.readouterr().out.split() == ["torch.Size([4,", "3,", "16,", "40])", "12"]
    assert all(len(w.factors) == 3 for w in env["canvas"].models)  # S**-1 · S|p · S|p per window


def test_speed_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "compile_gradient" in b)
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)
    assert env["energy"].shape == (1000,) and env["score"].shape == (1000, 2)
    assert env["fast"]._gradient is not None  # the compiled path, not autograd


def test_conservative_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "jacobian_asymmetry" in b)
    exec(compile(block, "README.md", "exec"), {})
    (_, model), (_, contrast) = (line.split() for line in
                                 capsys.readouterr().out.strip().splitlines())
    # the README's claim: the contrast is much less of a gradient than the model's field
    assert 0 < float(model) < 0.05 and float(contrast) > 5 * float(model)


def test_score_only_or_and_example_runs(capsys):
    """The OR share is the weight within 4 binomial standard errors plus the 400-level bias
    (−0.004, docs/results.md §13); the AND's tracked log-densities end equal (κ rarely clips
    on ring and bar)."""
    exec(compile(_block('rc.superpose([ring, bar], mode="and")'), "README.md", "exec"), {})
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
    block = _block("stable-diffusion-3.5-medium")
    block = block.replace('"stabilityai/stable-diffusion-3.5-medium"', repr(str(folders["sd3"])))
    block = block.replace('"black-forest-labs/FLUX.1-dev"', repr(str(folders["flux"])))
    block = block.replace('device="cuda"', 'device="cpu"').replace("1024", "16")
    env: dict = {}
    with pytest.warns(rc.ApproximationWarning, match="guidance-distilled"):
        exec(compile(block, "README.md", "exec"), env)
    assert env["images"].shape == (4, 3, 16, 16) and torch.isfinite(env["images"]).all()
    assert env["sd3"].decode(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 16, 16)
