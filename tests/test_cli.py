"""The command line: every listed bad input gets one line and the right exit code."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import recompose as rc
from conftest import one_line_error, run
from recompose.cli.main import cli
from recompose.cli.sample import build_model
from recompose.io import read_model_file


# --------------------------------------------------------------------- commands
def test_help_of_every_command_shows_an_example():
    for cmd in ("", "demo", "sample", "train", "list", "bench"):
        r = run(*([cmd] if cmd else []), "--help")
        assert r.exit_code == 0 and "Example" in r.output, cmd


def test_list():
    r = run("list")
    assert r.exit_code == 0 and "ring" in r.output and "digits-noisy-clf" in r.output
    assert "experiments/README.md" in r.output


def test_bench_prints_one_row_per_family_and_batch():
    r = run("bench", "-f", "2d", "-f", "clevr", "-b", "4", "--threads", "1", "--repeats", "1",
            "--no-compiled")
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| network") and len(rows) == 3
    assert rows[1].startswith("| 2D MLP | 4 | 1 | ")
    assert rows[2].startswith("| position UNet | 4 | 1 | ")


def test_sample_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    r = run("--quiet", "sample", "--model", "A=ring", "--model", "B=bar:energy", "--expr",
            "A * B", "--sampler", "hmc", "--levels", "4", "--mcmc-steps", "2", "--n", "50",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["expr"] == "A * B" and config["seed"] == 0 and config["n"] == 50
    assert np.load(out / "samples.npz")["x"].shape == (50, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["sampling"]["acceptance"]) == 4
    for fig in ("samples.png", "acceptance.png", "target_levels.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    # the same config reruns to the same samples
    out2 = tmp_path / "run2"
    run("--quiet", "sample", "--model", "A=ring", "--model", "B=bar:energy", "--expr",
        "A * B", "--sampler", "hmc", "--levels", "4", "--mcmc-steps", "2", "--n", "50",
        "--out", str(out2))
    assert np.array_equal(np.load(out / "samples.npz")["x"], np.load(out2 / "samples.npz")["x"])


def test_sample_with_smc_records_its_particles(tmp_path):
    out = tmp_path / "smc"
    r = run("sample", "--model", "A=ring", "--model", "B=bar", "--expr", "A * B", "--sampler",
            "smc", "--moves", "mala", "--levels", "5", "--mcmc-steps", "1", "--n", "40",
            "--ess-threshold", "1", "--resampling", "residual", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "log evidence" in r.output
    info = json.loads((out / "metrics.json").read_text())["sampling"]
    assert info["sampler"] == "smc" and info["resampled"] == [0, 1, 2, 3, 4]
    assert info["settings"]["moves"] == "mala" and info["settings"]["resampling"] == "residual"
    config = json.loads((out / "config.json").read_text())
    # what was given, and what the sampler used (its defaults included)
    assert config["options"] == {"--mcmc-steps": 1, "--moves": "mala", "--ess-threshold": 1.0,
                                 "--resampling": "residual"}
    assert config["sampler_settings"]["ess_threshold"] == 1.0
    assert config["sampler_settings"]["proposal"] == "ais"
    assert (out / "figures" / "ess.png").stat().st_size > 1000
    r = run("sample", "--model", "A=ring:score", "--model", "B=bar", "--expr", "A * B",
            "--sampler", "smc", "--out", str(tmp_path / "score"))
    assert r.exit_code == 2 and "energies" in r.output  # a capability error is a usage error


def test_sample_with_fkc_needs_only_scores(tmp_path):
    out = tmp_path / "fkc"
    r = run("sample", "--model", "A=ring:score", "--model", "B=bar:score", "--expr", "A * B",
            "--sampler", "fkc", "--levels", "6", "--n", "40", "--ess-threshold", "1",
            "--out", str(out))
    assert r.exit_code == 0, r.output
    info = json.loads((out / "metrics.json").read_text())["sampling"]
    assert info["sampler"] == "fkc" and info["resampled"] == list(range(6))
    assert info["network_energy_evals"] == 0 and info["settings"]["moves"] is None
    assert (out / "figures" / "ess.png").stat().st_size > 1000


def _sample(tmp_path, *extra, expr="A * B", models=("A=ring", "B=bar")):
    args = ["sample", "--expr", expr, "--levels", "3", "--mcmc-steps", "1", "--n", "20",
            "--out", str(tmp_path / "out")]
    for m in models:
        args += ["--model", m]
    return run(*args, *extra)


def test_unknown_model_name(tmp_path):
    line = one_line_error(_sample(tmp_path, models=("A=rnig", "B=bar")), 2)
    assert "unknown model 'rnig'" in line and "recompose list" in line


def test_bad_expression(tmp_path):
    r = _sample(tmp_path, expr="A * (B")
    assert r.exit_code == 2 and "column 5" in r.output and "Traceback" not in r.output
    assert "never closed" in r.output and "\n      ^" in r.output  # caret under the '('


# --------------------------------------------------------------------- one expression language
PYTHON = {  # text -> the same model spelled with the Python operators
    "A": lambda a, b: a,
    "A * B": lambda a, b: a * b,
    "A / B": lambda a, b: a / b,
    "A ** 0.5": lambda a, b: a ** 0.5,
    "A * B**-0.3": lambda a, b: a * b ** -0.3,
    "A / B / A ** 2 ** -1": lambda a, b: (a / b) / a ** 0.5,
    "A + B": lambda a, b: rc.mixture([a, b]),
    "mix(A, B, weights=[0.3, 0.7])": lambda a, b: rc.mixture([a, b], weights=[0.3, 0.7]),
    "cfg(A, B, 2.5)": lambda a, b: rc.cfg(a, b, 2.5),
    "mix(normalize(A, grid=16, num_times=3), normalize(B, grid=16, num_times=3), "
    "weights=[0.3, 0.7])": lambda a, b: rc.mixture(
        [rc.normalize(a, grid=16, num_times=3), rc.normalize(b, grid=16, num_times=3)],
        weights=[0.3, 0.7]),
}


@pytest.mark.parametrize("text", list(PYTHON))
def test_cli_builds_what_parse_and_the_python_operators_build(text):
    import torch

    cli_model = build_model(("A=left_bar", "B=right_bar:energy"), text, "energy")
    env = {"A": rc.pretrained("left_bar", "energy"), "B": rc.pretrained("right_bar", "energy")}
    x = torch.tensor([[0.3, -0.2], [-0.5, 0.1], [0.0, 0.8]])
    for model in (rc.parse(text, env), PYTHON[text](env["A"], env["B"])):
        assert cli_model.describe() == model.describe()
        for t in (0.1, 0.7):
            assert torch.equal(cli_model.energy(x, t), model.energy(x, t))
            assert torch.equal(cli_model.score(x, t), model.score(x, t))


def test_the_cli_does_not_normalise_behind_the_back():
    mix = build_model(("A=left_bar", "B=right_bar"), "mix(A, B, weights=[0.3, 0.7])", "energy")
    assert [p.describe() for p in mix.parts] == ["left_bar", "right_bar"]
    mix = build_model(("A=left_bar", "B=right_bar"), "mix(normalize(A, num_times=3), B)",
                      "energy")
    assert [p.describe() for p in mix.parts] == ["normalize(left_bar)", "right_bar"]


def test_sample_a_normalised_mixture_end_to_end(tmp_path):
    text = ("mix(normalize(A, grid=16, num_times=3), normalize(B, grid=16, num_times=3), "
            "weights=[0.3, 0.7])")
    r = _sample(tmp_path, "--sampler", "mala", expr=text, models=("A=left_bar", "B=right_bar"))
    assert r.exit_code == 0, r.output
    expected = rc.parse(text, {"A": rc.pretrained("left_bar"), "B": rc.pretrained("right_bar")})
    assert f"samples of {expected.describe()} with mala" in r.output
    assert expected.describe() == "mix(normalize(left_bar):0.3, normalize(right_bar):0.7)"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["expr"] == text


def test_sample_help_shows_the_expression_language():
    out = run("sample", "--help").output
    assert '--expr "mix(normalize(A), normalize(B), weights=[0.3, 0.7])"' in out
    assert "cfg(C, U, w)" in " ".join(out.split()) and "A:0.3" not in out


def test_syntax_errors_come_before_loading_models(tmp_path):
    line = one_line_error(_sample(tmp_path, expr="A.energy", models=("A=no_such_model",)), 2)
    assert "bad expression: attribute access" in line


def test_unknown_variable(tmp_path):
    r = _sample(tmp_path, expr="A * C")
    assert r.exit_code == 2 and "unknown name 'C'" in r.output and "--model C=" in r.output


def test_mixture_over_score_only_models(tmp_path):
    """mix(...) of score models tracks their log-densities: fkc samples it (each model's
    log-density per sample in samples.npz), a sampler that cannot track is one line naming
    those that can."""
    line = one_line_error(_sample(tmp_path, "--sampler", "ula",
                                  expr="mix(A, B, weights=[0.3, 0.7])",
                                  models=("A=left_bar:score", "B=right_bar:score")), 2)
    assert "ula cannot sample mix(" in line and "use 'fkc' (without moves) or 'reverse'" in line
    r = run("sample", "--model", "A=left_bar:score", "--model", "B=right_bar:score", "--expr",
            "mix(A, B, weights=[0.3, 0.7])", "--sampler", "fkc", "--levels", "20", "--n", "60",
            "--seed", "0", "--out", str(tmp_path / "ok"))
    assert r.exit_code == 0, r.output
    saved = np.load(tmp_path / "ok" / "samples.npz")
    assert saved["log_density[left_bar]"].shape == (60,) and saved["x"].shape == (60, 2)


def test_mh_sampler_on_score_only_composite(tmp_path):
    line = one_line_error(_sample(tmp_path, "--sampler", "mala",
                                  models=("A=ring:score", "B=bar:score")), 2)
    assert "needs energies" in line and "ula" in line


def test_nan_during_sampling(tmp_path):
    line = one_line_error(_sample(tmp_path, "--sampler", "ula", "--step-size", "1e15",
                                  "--step-power", "0"), 1)
    assert "level" in line and "chains" in line and "smaller step" in line
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a checkpoint")
    line = one_line_error(_sample(tmp_path, models=(f"A={bad}", "B=bar")), 1)
    assert "cannot read checkpoint" in line


def test_mismatched_checkpoint(tmp_path):
    from importlib import resources

    import torch
    from safetensors.torch import save_file

    from recompose.io import read_model_file, save_model_file

    shipped = resources.files("recompose") / "pretrained" / "ring-energy.safetensors"
    tensors, config = read_model_file(shipped)
    config["network"]["width"] = 64  # weights no longer fit the architecture
    path = tmp_path / "other.safetensors"
    save_model_file(path, tensors, config)
    line = one_line_error(_sample(tmp_path, models=(f"A={path}", "B=bar")), 1)
    assert "do not match" in line
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    line = one_line_error(_sample(tmp_path, models=(f"A={plain}", "B=bar")), 1)
    assert "not a recompose model" in line


@pytest.mark.parametrize("n", ["0", "-5"])
def test_non_positive_n(tmp_path, n):
    r = run("sample", "--model", "A=ring", "--expr", "A", "--n", n, "--out",
            str(tmp_path / "o"))
    line = one_line_error(r, 2)
    assert (f"Invalid value for '--n' / '--num-samples': {n} is not in the range "
            "1<=x<=1000000") in line


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(run("sample", "--model", "A=ring", "--expr", "A", "--n", "5",
                              "--levels", "2", "--out", str(blocker / "sub")), 2)
    assert f"cannot create {blocker / 'sub'}: {blocker} is a file" in line


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    line = one_line_error(_sample(tmp_path), 2)
    assert "--overwrite" in line and (tmp_path / "out" / "keep.txt").exists()


def test_debug_shows_the_traceback(tmp_path):
    r = CliRunner().invoke(cli, ["--debug", "sample", "--model", "A=ring:score", "--model",
                                 "B=bar:score", "--expr", "A*B", "--sampler", "hmc", "--n",
                                 "5", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and r.exc_info is not None


def strict_json(text):
    """``json.loads`` that refuses NaN and ±Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_demo_writes_table_and_figure(tmp_path, monkeypatch):
    import torch

    import recompose.cli.demo as demo

    # exact W2 (an assignment, seconds each at this tiny budget's far-off samples) is
    # tested in test_metrics; a cheap distance keeps this test about the outputs
    monkeypatch.setattr(demo, "wasserstein2", lambda x, y: float(
        torch.cdist(torch.as_tensor(x).double(), torch.as_tensor(y).double()).mean()))
    out = tmp_path / "demo"
    r = run("--quiet", "demo", "--n", "40", "--levels", "4", "--mcmc-steps", "1", "--out",
            str(out))
    assert r.exit_code == 0, r.output
    for comp in ("product", "mixture", "negation"):
        assert comp in r.output
    assert (out / "demo.png").stat().st_size > 5000
    # valid JSON although some samples of this tiny budget leave the window (LL = −inf)
    metrics = strict_json((out / "metrics.json").read_text())
    assert set(metrics) == {f"{c}/{s}" for c in ("product", "mixture", "negation")
                            for s in ("exact", "learned", "reverse", "hmc")}
    undefined = [m for m in metrics.values() if m["LL"] is None]
    assert undefined and all("outside the window" in m["LL_note"] for m in undefined)
    assert metrics["negation/reverse"]["acceptance"] is None
    assert metrics["product/exact"]["W2_sd"] > 0
    assert strict_json((out / "config.json").read_text())["n"] == 40
    # the table explains itself: an out-of-window column, LL −inf, W2's spread, where to read
    head, *rows = r.output.splitlines()
    assert "out of window" in head
    assert "-inf*" in r.output and "LL -inf*" in r.output
    assert "exact target" in r.output and "learned model" in r.output and "±" in r.output
    assert "docs/results.md §2" in r.output and "python -m experiments.toy2d" in r.output
    assert (out / "table.txt").read_text().strip() in r.output


def test_reverse_sample_has_no_acceptance_figure(tmp_path):
    out = tmp_path / "rev"
    r = run("--quiet", "sample", "--model", "A=large_box", "--model", "B=small_box", "--expr",
            "A / B**0.3", "--sampler", "reverse", "--levels", "4", "--n", "30", "--out",
            str(out))
    assert r.exit_code == 0, r.output
    figs = out / "figures"
    assert (figs / "samples.png").exists() and (figs / "target_levels.png").exists()
    assert not (figs / "acceptance.png").exists()  # no MCMC steps: no acceptance to plot


def test_reverse_sample_metrics_are_strict_json(tmp_path):
    out = tmp_path / "rev"
    r = run("--quiet", "sample", "--model", "A=ring", "--model", "B=bar", "--expr", "A * B",
            "--sampler", "reverse", "--levels", "4", "--n", "30", "--out", str(out))
    assert r.exit_code == 0, r.output
    metrics = strict_json((out / "metrics.json").read_text())["sampling"]
    assert metrics["acceptance"] is None and metrics["step_size"] is None
    assert "no MCMC steps" in metrics["notes"]["acceptance"]
    strict_json((out / "config.json").read_text())


def test_train_command_and_resume(tmp_path):
    out = tmp_path / "t"
    args = ["train", "--data", "bar", "--parameterization", "score", "--steps", "6",
            "--batch-size", "64", "--checkpoint-every", "3", "--out", str(out)]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert (out / "checkpoint" / "model.safetensors").exists()
    r = run(*args)  # same settings: resumes at the end and does nothing more
    assert r.exit_code == 0 and "resuming from step 6" in r.output
    args[args.index("--steps") + 1] = "9"  # more steps, same settings: trains longer
    r = run(*args)
    assert r.exit_code == 0 and "resuming from step 6" in r.output
    assert read_model_file(out / "checkpoint" / "model.safetensors")[1]["step"] == 9
    line = one_line_error(run(*args, "--lr", "5e-4"), 1)  # other settings: refused, kept
    assert "different settings" in line
    assert read_model_file(out / "checkpoint" / "model.safetensors")[1]["step"] == 9


def test_ctrl_c_leaves_no_half_written_files(tmp_path, monkeypatch):
    import recompose

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recompose, "sample", interrupted)
    r = _sample(tmp_path)
    assert r.exit_code == 130 and "interrupted" in r.output
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_every_option_has_help_and_counts_show_their_range():
    import click

    for name, command in [("", cli), *cli.commands.items()]:
        for p in command.params:
            if isinstance(p, click.Option):
                assert p.help, f"{name} {p.opts[0]} has no help text"
                if p.name in ("n", "levels", "mcmc_steps", "leapfrog", "steps", "batch_size",
                              "checkpoint_every"):
                    assert isinstance(p.type, click.IntRange), f"{name} {p.opts[0]}"


@pytest.mark.parametrize("sampler,flags,named", [
    ("reverse", ["--mcmc-steps", "3"], "--mcmc-steps does not apply to --sampler reverse"),
    ("ode", ["--moves", "ula"], "--moves does not apply to --sampler ode"),
    ("hmc", ["--moves", "ula"], "--moves does not apply to --sampler hmc"),
    ("hmc", ["--ess-threshold", "0.3"], "--ess-threshold does not apply to --sampler hmc"),
    ("hmc", ["--resampling", "residual"], "--resampling does not apply to --sampler hmc"),
    ("ula", ["--leapfrog", "4"], "--leapfrog does not apply to --sampler ula"),
    ("reverse", ["--energy", "exact"], "--energy does not apply to --sampler reverse"),
    ("smc", ["--method", "heun"], "--method does not apply to --sampler smc"),
    ("fkc", ["--damping", "0.3"], "--damping does not apply to --sampler fkc (with --moves none)"),
    ("smc", ["--moves", "mala", "--leapfrog", "2"],
     "--leapfrog does not apply to --sampler smc (with --moves mala)"),
    ("reverse", ["--no-predictor"], "--predictor/--no-predictor does not apply to --sampler "
                                    "reverse"),
])
def test_an_option_that_does_not_apply_is_a_usage_error(tmp_path, sampler, flags, named):
    """The sampler object decides what applies; the command line names the flag and the
    sampler in one line, exits 2 before any work, and writes nothing."""
    out = tmp_path / "o"
    r = run("sample", "--model", "A=ring", "--model", "B=bar", "--expr", "A * B", "--sampler",
            sampler, *flags, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert [line for line in r.output.splitlines() if line.startswith("Error:")] == \
        [f"Error: {named}"]
    assert not out.exists()


def test_config_records_what_was_given_and_what_the_sampler_used(tmp_path):
    out = tmp_path / "o"
    r = run("--quiet", "sample", "--model", "A=ring", "--expr", "A", "--sampler", "hmc",
            "--levels", "3", "--n", "20", "--leapfrog", "2", "--out", str(out))
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"] == {"--leapfrog": 2}  # only what was given, nothing dropped
    used = config["sampler_settings"]
    assert used["num_leapfrog_steps"] == 2 and used["num_steps"] == 10 and used["damping"] == 0.5
    assert "ess_threshold" not in used and "moves" not in used
