"""Output folders and interrupts: recompose never deletes what it did not write, checks ``--out``
before any work, and stops (with its workers) on Ctrl-C / SIGTERM with the right exit code."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from recompose.cli.main import cli
from recompose.io import RUN_RECORD, RunFolderError, check_run_folder, run_folder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ["--quiet", "sample", "--model", "A=ring", "--expr", "A", "--sampler", "ula",
          "--levels", "2", "--mcmc-steps", "1", "--n", "8"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _write(out, **files):
    with run_folder(out, overwrite=True) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


# ------------------------------------------------------------------------------ the library
def test_a_run_replaces_only_what_the_previous_run_wrote(tmp_path):
    out = tmp_path / "run"
    _write(out, **{"a.txt": "1", "old.txt": "1"})
    (out / "mine.txt").write_text("the user's")
    _write(out, **{"a.txt": "2"})
    assert (out / "a.txt").read_text() == "2"
    assert not (out / "old.txt").exists()  # the previous run's output, not rewritten
    assert (out / "mine.txt").read_text() == "the user's"
    assert json.loads((out / RUN_RECORD).read_text())["entries"] == ["a.txt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".recompose-tmp-")]


def test_a_failed_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    _write(out, **{"a.txt": "1"})
    with pytest.raises(RuntimeError), run_folder(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in out.iterdir()) == [RUN_RECORD, "a.txt"]


def test_a_users_file_where_an_output_goes_is_kept_and_so_are_the_outputs(tmp_path):
    out = tmp_path / "run"
    _write(out, **{"a.txt": "1"})
    (out / "b.txt").write_text("the user's")
    with pytest.raises(RunFolderError, match="b.txt was not written by recompose"):
        _write(out, **{"b.txt": "new"})
    assert (out / "b.txt").read_text() == "the user's"
    kept = [p for p in out.iterdir() if p.name.startswith("recompose-outputs-")]
    assert len(kept) == 1 and (kept[0] / "b.txt").read_text() == "new"


def test_checks_before_any_work(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match=r"not empty; allow overwriting \(--overwrite\)"):
        check_run_folder(user)
    with pytest.raises(RunFolderError, match="did not write"):
        check_run_folder(user, overwrite=True)
    with pytest.raises(RunFolderError, match="is a file"):
        check_run_folder(user / "notes.txt")
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root can write anywhere
        with pytest.raises(RunFolderError, match="not writable"):
            check_run_folder(tmp_path / "ro" / "new")
    assert check_run_folder(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper")


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "run"
    (out / ".recompose-tmp-killed").mkdir(parents=True)
    (out / ".recompose-tmp-killed" / "x").write_text("partial")
    _write(out, **{"a.txt": "1"})
    assert sorted(p.name for p in out.iterdir()) == [RUN_RECORD, "a.txt"]


# ------------------------------------------------------------------------------ the commands
def test_sample_refuses_a_folder_of_user_files_even_with_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        r = run(*SAMPLE, "--out", str(out), *extra)
        assert r.exit_code == 2, r.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_sample_overwrite_keeps_user_files_beside_a_run(tmp_path):
    out = tmp_path / "run"
    assert run(*SAMPLE, "--out", str(out)).exit_code == 0
    (out / "thesis.tex").write_text("precious")
    assert run(*SAMPLE, "--out", str(out)).exit_code == 2  # needs --overwrite
    r = run(*SAMPLE, "--out", str(out), "--overwrite", "--seed", "1")
    assert r.exit_code == 0, r.output
    assert (out / "thesis.tex").read_text() == "precious"
    assert json.loads((out / "config.json").read_text())["seed"] == 1


def test_out_dot_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*SAMPLE, "--out", ".")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.npz").exists() and (tmp_path / RUN_RECORD).exists()


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run("--quiet", "demo", "--out", str(out), "--overwrite")
    assert r.exit_code == 2 and "did not write" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_experiments_never_replace_a_folder_they_did_not_write(tmp_path, capsys):
    from experiments.common import parse_config

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as err:
        parse_config("toy2d", "", ["--out", str(out), "--overwrite"])
    assert err.value.code == 2 and "did not write" in capsys.readouterr().err


# ------------------------------------------------------------------------------ interrupts
def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() \
        else "X"
    return state not in ("Z", "X")


def _default_sigint() -> None:
    """In the child: SIGINT back to its default. A shell that starts the tests in the
    background ignores SIGINT, children inherit that, and Python then never raises
    KeyboardInterrupt — so Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_experiment_stops_with_all_its_workers(tmp_path, sig, code):
    cmd = [sys.executable, "-m", "experiments.toy2d", "--compositions", "product", "--n",
           "400", "--seeds", "2", "--levels", "200", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 120
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.5)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "the workers never started"
        time.sleep(3)  # let them get busy
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)  # a guard against hangs, not a speed test
        assert proc.returncode == code, err
        assert "no results were written" in err and "Traceback" not in err
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "worker processes outlived the run"
        assert not (tmp_path / "out").exists()
    finally:
        proc.kill()
        proc.wait()


def test_sample_stops_on_sigterm_with_143(tmp_path):
    cmd = [sys.executable, "-m", "recompose", "sample", "--model", "A=ring", "--expr", "A",
           "--sampler", "ula", "--levels", "5000", "--n", "2000", "--out", str(tmp_path / "o")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        time.sleep(8)  # imports, model loading, sampling under way
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # a guard against hangs, not a speed test
        assert proc.returncode == 143, err
        assert "terminated: no results were written" in err
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    finally:
        proc.kill()
        proc.wait()


def test_an_interrupted_training_says_its_checkpoint_is_kept(tmp_path):
    out = tmp_path / "t"
    cmd = [sys.executable, "-m", "recompose", "train", "--data", "ring", "--steps", "100000",
           "--checkpoint-every", "5", "--batch-size", "64", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint").exists() and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # a guard against hangs, not a speed test
        assert proc.returncode == 130, err
        assert "interrupted: the checkpoint of step" in err and "rerun the same command" in err
        assert (out / "checkpoint" / "model.safetensors").exists()
    finally:
        proc.kill()
        proc.wait()
