"""The command line tells the truth and fails early (issue #32): train's messages, config and
expression checks, bounds on counts, --debug anywhere, the loss plot, usage errors under
torchrun."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import recompose as rc
from conftest import one_line_error, run
from recompose.cli.main import cli
from recompose.training.trainer import Trainer

SRC = str(Path(__file__).resolve().parents[1] / "src")
OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes"


def _train(out, *extra, steps=6):
    return ["train", "--data", "bar", "--parameterization", "score", "--steps", str(steps),
            "--batch-size", "32", "--checkpoint-every", "3", "--out", str(out), *extra]


def _fail_at(monkeypatch, step, error):
    """Make training raise ``error`` when it is about to take step ``step`` (1-based)."""
    original = Trainer.train_step

    def train_step(self):
        if self.step + 1 == step:
            raise error
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)


# ------------------------------------------------------------------ 1. train's messages
def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept(tmp_path, monkeypatch):
    _fail_at(monkeypatch, 2, KeyboardInterrupt())
    r = run("--quiet", *_train(tmp_path / "t"))
    assert r.exit_code == 130, r.output
    assert "interrupted: nothing was kept" in r.output and "first comes at step 3" in r.output
    assert "resume" not in r.output and not (tmp_path / "t" / "checkpoint").exists()


def test_ctrl_c_after_a_checkpoint_names_the_step_it_keeps(tmp_path, monkeypatch):
    _fail_at(monkeypatch, 5, KeyboardInterrupt())
    r = run("--quiet", *_train(tmp_path / "t"))
    assert r.exit_code == 130, r.output
    assert f"the checkpoint of step 3 in {tmp_path / 't' / 'checkpoint'} is kept" in r.output
    assert "rerun the same command to resume" in r.output


def test_train_errors_are_not_written_onto_the_progress_bar(tmp_path, monkeypatch):
    _fail_at(monkeypatch, 3, FloatingPointError("training loss is nan at step 2: lower --lr"))
    r = run(*_train(tmp_path / "t"))  # not --quiet: the bar is drawn
    line = one_line_error(r, 1)
    assert line == "Error: training loss is nan at step 2: lower --lr"
    assert r.output.rstrip().splitlines()[-1] == line  # nothing redrawn after it


def test_train_into_a_folder_of_other_files_does_not_suggest_overwrite(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("mine")
    line = one_line_error(run(*_train(tmp_path / "t")), 2)
    assert "--overwrite" not in line
    assert "not empty" in line and "another --out" in line and "resume" in line
    assert not (tmp_path / "t" / "checkpoint").exists()


def test_out_of_memory_names_the_commands_own_options(tmp_path, monkeypatch):
    _fail_at(monkeypatch, 1, RuntimeError(OOM))
    line = one_line_error(run("--quiet", *_train(tmp_path / "t")), 2)
    assert "not enough memory" in line and "--batch-size" in line
    assert "--n" not in line and "--levels" not in line

    def out_of_memory(*args, **kwargs):
        raise RuntimeError(OOM)

    monkeypatch.setattr(rc, "sample", out_of_memory)
    line = one_line_error(run("sample", "--model", "A=ring", "--expr", "A", "--n", "5",
                              "--out", str(tmp_path / "s")), 2)
    assert line == "Error: not enough memory for this run; use a smaller --n or --levels"


# ------------------------------------------------------------------ 2. train --config
@pytest.mark.parametrize("settings,message", [
    ({"data": "nonexistent"}, "data must be one of ring, bar"),
    ({"data": 5}, "data must be a string, got 5"),
    ({"steps": "10"}, "steps must be a whole number, got '10'"),
    ({"steps": 1.5}, "steps must be a whole number"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"seed": -1}, "seed must lie in"),
    ({"init_from": 3}, "init_from must be a string or null"),
    ({"network": 5}, "network must be a JSON object"),
    ({"network": {"arch": "nope"}}, "unknown network architecture 'nope'"),
    ({"network": {"arch": "resmlp", "dim": 2, "depth": 3}}, "unexpected keyword argument"),
    ({"data": "digits"}, "does not take 'digits' data of shape (1, 8, 8)"),
    ({"schedule": {"name": "zigzag"}}, "unknown schedule 'zigzag'"),
    ({"schedule": {"s": 0.008}}, "missing entry 'name'"),
    ({"energy_form": "l3"}, "energy_form must be 'ae' or 'l2'"),
    ([1, 2], "must hold one JSON object of training settings"),
    ({"epochs": 3}, "unknown training settings epochs"),
])
def test_bad_train_config_entries_are_usage_errors_before_any_work(tmp_path, settings,
                                                                   message):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings))
    start = time.perf_counter()
    line = one_line_error(run("--quiet", "train", "--config", str(config), "--out",
                              str(tmp_path / "t")), 2)
    assert message in line, line
    assert not (tmp_path / "t").exists()
    assert time.perf_counter() - start < 30  # no data built, no training step


# ------------------------------------------------------------------ 3. normalize(...)
@pytest.mark.parametrize("expr,message", [
    ("normalize(A, grid=0)", "grid must be a whole number from 8 to 2048, got 0"),
    ("normalize(A, grid=1e9)", "grid must be a whole number from 8 to 2048, got 1e+09"),
    ("normalize(A, num_times=0)", "num_times must be a whole number from 2 to 1000, got 0"),
    ("normalize(A, num_times=1)", "num_times must be a whole number from 2 to 1000, got 1"),
    ("normalize(A, t_min=0)", "t_min must lie strictly between 0 and 1"),
    ("normalize(A, extent=-1)", "extent must be a positive finite number"),
])
def test_bad_quadrature_settings_are_usage_errors_before_any_work(tmp_path, expr, message):
    start = time.perf_counter()
    # an unknown model too: the expression is refused before any model is looked up
    for model in ("A=left_bar", "A=no_such_model"):
        r = run("sample", "--model", model, "--expr", expr, "--levels", "2", "--n", "5",
                "--out", str(tmp_path / "o"))
        line = one_line_error(r, 2)
        assert line.startswith("Error: bad expression: normalize: ") and message in line
    assert time.perf_counter() - start < 30 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("kwargs", [{"grid": 0}, {"grid": 10**9}, {"num_times": 0},
                                    {"num_times": 1}, {"t_min": 0.0}, {"t_min": 1.0},
                                    {"extent": float("nan")}, {"grid": 16.0}])
def test_the_library_refuses_them_too(kwargs):
    with pytest.raises(ValueError, match="normalize: "):
        rc.normalize(rc.pretrained("left_bar"), **kwargs)


# ------------------------------------------------------------------ 4. recompose list
def test_list_says_which_names_model_accepts_and_how_to_use_the_others(tmp_path):
    out = run("list").output
    assert "2D models, for the command line: --model A=NAME" in out
    assert "image models, not accepted by --model:" in out
    assert 'recompose.pretrained("digits-cond", "energy")' in out
    assert "--distill-from NAME" in out and "experiments/README.md" in out
    line = one_line_error(run("sample", "--model", "A=digits", "--expr", "A", "--out",
                              str(tmp_path / "o")), 2)
    assert "'digits' is a shipped image model" in line
    assert "recompose.pretrained('digits', ...)" in line


# ------------------------------------------------------------------ 5. bounds on counts
@pytest.mark.parametrize("command,option,value,bound", [
    ("sample", "--levels", "99999999999999999999999", "1<=x<=100000"),
    ("sample", "--n", "99999999999999999999", "1<=x<=1000000"),
    ("sample", "--num-samples", "1000001", "1<=x<=1000000"),
    ("demo", "--levels", "99999999999999999999999", "1<=x<=100000"),
    ("demo", "--n", "99999999999999999999", "2<=x<=6000"),
    ("demo", "--mcmc-steps", "99999999999999999999", "0<=x<=10000"),
    ("demo", "--seed", "99999999999999999999999", "0<=x<=4294967295"),
    ("train", "--steps", "99999999999999999999", "1<=x<=10000000"),
    ("train", "--batch-size", "99999999999999999999", "1<=x<=1000000"),
    ("train", "--seed", "99999999999999999999", "0<=x<=4294967295"),
    ("train", "--threads", "99999999999999999999", "1<=x<=1024"),
])
def test_huge_counts_are_usage_errors_that_state_the_bound(tmp_path, command, option, value,
                                                           bound):
    extra = {"sample": ["--model", "A=ring", "--expr", "A"], "demo": [],
             "train": ["--data", "ring"]}[command]
    line = one_line_error(run(command, *extra, option, value, "--out", str(tmp_path / "o")), 2)
    assert f"is not in the range {bound}" in line


def test_demo_refuses_chain_counts_its_w2_cannot_compare_before_any_work(tmp_path):
    start = time.perf_counter()
    line = one_line_error(run("demo", "--n", "7", "--out", str(tmp_path / "o")), 2)
    assert "lcm(n, 2000) must be at most 6000" in line and "e.g. 500, 1000" in line
    assert time.perf_counter() - start < 10 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 6. --debug anywhere
def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    from recompose.errors import CapabilityError

    args = ["sample", "--model", "A=ring:score", "--model", "B=bar:score", "--expr", "A*B",
            "--sampler", "hmc", "--n", "5", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(cli, [*args, "--debug"])
    assert isinstance(r.exception, CapabilityError), r.output  # raised, not a one-liner
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)


def test_every_subcommand_takes_debug(tmp_path, monkeypatch):
    for name in cli.commands:
        r = run(name, "--debug", "--help")
        assert r.exit_code == 0 and "--debug" in r.output, name
    _fail_at(monkeypatch, 1, FloatingPointError("diverged"))
    r = CliRunner().invoke(cli, [*_train(tmp_path / "t"), "--quiet", "--debug"])
    assert isinstance(r.exception, FloatingPointError)


# ------------------------------------------------------------------ 7. the loss plot
def test_train_writes_a_loss_plot_at_every_checkpoint_and_at_the_end(tmp_path, monkeypatch):
    from recompose.viz import plots

    drawn = []
    original = plots.loss_plot

    def loss_plot(losses, title=""):
        drawn.append(len(losses))
        return original(losses, title)

    monkeypatch.setattr(plots, "loss_plot", loss_plot)
    out = tmp_path / "t"
    r = run("--quiet", *_train(out))
    assert r.exit_code == 0, r.output
    png = out / "figures" / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert drawn[:2] == [3, 6]  # at the checkpoints of steps 3 and 6 (and again at the end)
    assert not list((out / "figures").glob(".*"))  # no temporary files left


def test_loss_plot_is_log_scaled_when_it_can_be():
    from recompose.viz.plots import loss_plot

    assert loss_plot([1.0, 0.5, 0.25]).axes[0].get_yscale() == "log"
    assert loss_plot([1.0, -0.5, 0.25]).axes[0].get_yscale() == "linear"


# ------------------------------------------------------------------ 8. torchrun
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": SRC} | extra
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in extra:
            env.pop(key, None)
    return env


USAGE_ERROR = ["sample", "--model", "A=ring", "--expr", "A", "--num-samples", "10",
               "--levels", "2"]  # + --out into a folder of someone else's files


@pytest.mark.slow
def test_a_usage_error_in_a_process_group_is_printed_once_and_exits_cleanly(tmp_path):
    """Two processes as torchrun starts them (same environment variables), 5 times: both
    exit with 2, rank 0 prints the one error line, rank 1 nothing, nobody aborts."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for attempt in range(5):
        port = str(_free_port())
        procs = [subprocess.Popen([sys.executable, "-m", "recompose.cli.main", *USAGE_ERROR,
                                   "--out", str(out)],
                                  env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        codes = [p.returncode for p in procs]
        assert codes == [2, 2], (attempt, codes, results)
        errors = [ln for ln in results[0][1].splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and "is not empty" in errors[0], results[0]
        assert results[1] == ("", ""), results[1]
        for _, stderr in results:
            assert "terminate called" not in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_a_usage_error_under_torchrun_is_printed_once_without_an_abort(tmp_path):
    """Under torchrun itself, 5 times. torchrun turns any failed worker into its own exit code
    1 and prints its own ChildFailedError report (a traceback of torchrun's code, out of our
    hands); the report names the worker's exit code 2."""
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun (installed with torch) is not on PATH")
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for attempt in range(5):
        proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m",
                               "recompose.cli.main", *USAGE_ERROR, "--out", str(out)],
                              capture_output=True, text=True, timeout=120, env=_env())
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text
        errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and "is not empty" in errors[0], (attempt, text)
        assert "terminate called" not in text and "SIGABRT" not in text, (attempt, text)
        assert "exitcode  : 2" in text, (attempt, text)
        assert text.count("Traceback") <= 1 and "recompose/" not in text  # torchrun's only
