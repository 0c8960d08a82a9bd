"""Output folders and interrupts: recompose never deletes what it did not write, checks ``--out``
before any work, and stops (with its workers) on Ctrl-C / SIGTERM with the right exit code.

The run-folder tests compare the whole tree (every path, every file's bytes, every link's
target) before and after: a record that points outside the folder, a user's file among the
outputs, a full disk or a run killed at any point must leave nothing changed but what the
guarantees in :class:`recompose.io.run_folder` allow."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
    assert list(json.loads((out / RUN_RECORD).read_text())["files"]) == ["a.txt"]
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


# ------------------------------------------------------------------------------ run records
def _tree(root: Path) -> dict[str, object]:
    """Every path under ``root``: a file's bytes, ``"dir"``, or ``("link", target)``."""
    tree: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                tree[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                tree[rel] = "dir"
            else:
                tree[rel] = path.read_bytes()
    return tree


def _meta(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _previous_run(tmp_path: Path) -> Path:
    """A run folder (top-level files and figures/) with the user's files beside and inside it,
    and a file of the user's outside it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "victim.txt").write_text("outside the run folder")
    out = tmp_path / "run"
    with run_folder(out, overwrite=True) as tmp:
        for name, text in {"a.txt": "1", "old.txt": "1", "figures/a.png": "p1",
                           "figures/old.png": "p1"}.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            (tmp / name).write_text(text)
    (out / "mine.txt").write_text("the user's")
    (out / "figures" / "mine.txt").write_text("the user's, among the figures")
    return out


def _next_run(out: Path, outputs_written: Callable[[], None] = lambda: None) -> None:
    with run_folder(out, overwrite=True) as tmp:
        for name, text in {"a.txt": "2", "figures/a.png": "p2", "figures/b.png": "p2",
                           "new/c.txt": "2"}.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            (tmp / name).write_text(text)
        outputs_written()


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_the_record_lists_every_file_with_its_size_and_hash(tmp_path):
    out = _previous_run(tmp_path)
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["files"] == {"a.txt": _meta(b"1"), "old.txt": _meta(b"1"),
                               "figures/a.png": _meta(b"p1"), "figures/old.png": _meta(b"p1")}
    assert record["dirs"] == ["figures"] and "pending" not in record


def test_a_second_run_replaces_only_files_it_wrote_that_are_unchanged(tmp_path):
    out = _previous_run(tmp_path)
    _next_run(out)
    tree = _tree(tmp_path)
    assert {k: v for k, v in tree.items() if k != f"run/{RUN_RECORD}"} == {
        "victim.txt": b"outside the run folder", "run": "dir", "run/mine.txt": b"the user's",
        "run/a.txt": b"2", "run/figures": "dir", "run/figures/a.png": b"p2",
        "run/figures/b.png": b"p2", "run/figures/mine.txt": b"the user's, among the figures",
        "run/new": "dir", "run/new/c.txt": b"2"}
    record = json.loads((out / RUN_RECORD).read_text())
    assert sorted(record["files"]) == ["a.txt", "figures/a.png", "figures/b.png", "new/c.txt"]
    assert record["dirs"] == ["figures", "new"]


def test_a_users_file_among_the_figures_is_kept(tmp_path):
    out = _previous_run(tmp_path)
    _write(out, **{"a.txt": "2"})  # no figures this time
    assert (out / "figures" / "mine.txt").read_text() == "the user's, among the figures"
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["mine.txt"]
    out = _previous_run(tmp_path / "again")
    (out / "figures" / "mine.txt").unlink()
    _write(out, **{"a.txt": "2"})
    assert not (out / "figures").exists()  # created by recompose and now empty


def test_a_recorded_file_edited_since_is_kept(tmp_path):
    out = _previous_run(tmp_path)
    (out / "old.txt").write_text("edited by the user")
    _write(out, **{"a.txt": "2"})
    assert (out / "old.txt").read_text() == "edited by the user"
    assert list(json.loads((out / RUN_RECORD).read_text())["files"]) == ["a.txt"]
    (out / "a.txt").write_text("edited as well")
    before = _tree(tmp_path)
    with pytest.raises(RunFolderError, match="a.txt was not written by recompose") as err:
        _write(out, **{"a.txt": "3"})
    kept = Path(_one_line(err).split("outputs are in ")[1])
    assert (kept / "a.txt").read_text() == "3"
    shutil.rmtree(kept)
    assert _tree(tmp_path) == before


BAD_ENTRIES = ["../victim.txt", "figures/../../victim.txt", "", "./a.txt", "figures//a.png",
               "figures/", "figures\\a.png", 3, None, ["a.txt"]]


@pytest.mark.parametrize("entry", BAD_ENTRIES + ["ABSOLUTE"], ids=repr)
@pytest.mark.parametrize("form", ["old", "files", "dirs"])
def test_a_record_entry_outside_the_folder_is_refused_and_nothing_changes(tmp_path, entry,
                                                                          form):
    out = _previous_run(tmp_path)
    if entry == "ABSOLUTE":
        entry = str(tmp_path / "victim.txt")
    if form == "files" and not isinstance(entry, str):
        pytest.skip("JSON object keys are strings")
    v2 = {"format": "recompose-run-v2", "files": {"a.txt": _meta(b"1")}, "dirs": []}
    if form == "old":
        record = {"entries": ["a.txt", entry]}
    elif form == "files":
        record = {**v2, "files": {"a.txt": _meta(b"1"), entry: _meta(b"1")}}
    else:
        record = {**v2, "dirs": [entry]}
    (out / RUN_RECORD).write_text(json.dumps(record))
    before = _tree(tmp_path)
    with pytest.raises(RunFolderError, match="not a plain relative path inside") as err:
        check_run_folder(out, overwrite=True)
    assert repr(entry)[:40] in _one_line(err)
    with pytest.raises(RunFolderError, match="not a plain relative path inside"):
        _write(out, **{"a.txt": "2"})
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("form", ["old", "old-below", "files", "dirs", "link-file"])
def test_a_symbolic_link_on_a_recorded_path_is_refused_and_never_followed(tmp_path, form):
    out = _previous_run(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "victim.txt").write_text("1")  # the content a record lists
    (out / "link").symlink_to(tmp_path / "elsewhere")
    (out / "ln.txt").symlink_to(tmp_path / "elsewhere" / "victim.txt")
    v2 = {"format": "recompose-run-v2", "files": {"a.txt": _meta(b"1")}, "dirs": []}
    record = {"old": {"entries": ["a.txt", "ln.txt"]},
              "old-below": {"entries": ["a.txt", "link/victim.txt"]},
              "files": {**v2, "files": {"link/victim.txt": _meta(b"1")}},
              "dirs": {**v2, "dirs": ["link"]},
              "link-file": {**v2, "files": {"ln.txt": _meta(b"1")}}}[form]
    (out / RUN_RECORD).write_text(json.dumps(record))
    before = _tree(tmp_path)
    why = "not a top-level name" if form == "old-below" else "is a symbolic link"
    with pytest.raises(RunFolderError, match=why) as err:
        check_run_folder(out, overwrite=True)
    assert str(out) in _one_line(err)
    with pytest.raises(RunFolderError, match=why):
        _write(out, **{"a.txt": "2"})
    assert _tree(tmp_path) == before


def test_an_old_record_is_read_safely(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("a.txt", "b.txt"):
        (out / name).write_text("1")
    (out / "figures").mkdir()
    (out / "figures" / "mine.txt").write_text("the user's")
    (out / RUN_RECORD).write_text(json.dumps({"entries": ["a.txt", "b.txt", "figures"]}))
    before = _tree(tmp_path)
    with pytest.raises(RunFolderError, match="older recompose's run record") as err:
        check_run_folder(out, overwrite=True)
    assert str(out / "figures") in _one_line(err) and "remove it yourself" in str(err.value)
    with pytest.raises(RunFolderError, match="older recompose"):
        _write(out, **{"a.txt": "2"})
    assert _tree(tmp_path) == before
    (out / RUN_RECORD).write_text(json.dumps({"entries": ["a.txt", "b.txt"]}))
    _write(out, **{"a.txt": "2"})  # top-level files of an old record are replaced
    assert sorted(_tree(out)) == [RUN_RECORD, "a.txt", "figures", "figures/mine.txt"]
    assert (out / "a.txt").read_text() == "2"


def test_an_unreadable_record_is_refused(tmp_path):
    out = _previous_run(tmp_path)
    (out / RUN_RECORD).write_text("{not json")
    with pytest.raises(RunFolderError, match="cannot be read"):
        check_run_folder(out, overwrite=True)
    (out / RUN_RECORD).write_text(json.dumps({"format": "recompose-run-v2", "dirs": [],
                                              "files": {"a.txt": {"size": 1}}}))
    with pytest.raises(RunFolderError, match="no valid size and sha256"):
        check_run_folder(out, overwrite=True)


def test_a_full_disk_while_writing_the_record_changes_nothing(tmp_path, monkeypatch):
    out = _previous_run(tmp_path)
    before = _tree(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunFolderError) as err:
        _next_run(out)
    msg = _one_line(err)
    assert str(out / RUN_RECORD) in msg and "No space left on device" in msg
    assert "free some space" in msg
    assert _tree(tmp_path) == before


class _FailAt:
    """Patches the file system calls that change a folder; the ``at``-th one raises ``error``
    (counting from when it is armed), every other one runs."""

    CALLS = ("replace", "rename", "link", "mkdir", "rmdir", "unlink")

    def __init__(self, monkeypatch, at: int, error: BaseException | None) -> None:
        self.at, self.error, self.count, self.armed, self.failed = at, error, 0, False, None
        for name in self.CALLS:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, call):
        def wrapped(*args, **kwargs):
            if self.armed and self.failed is None:
                self.count += 1
                if self.count == self.at:
                    self.failed = args
                    self.on_failure()
                    raise self.error
            return call(*args, **kwargs)
        return wrapped

    def arm(self) -> None:
        self.armed = True

    def on_failure(self) -> None:
        pass


def _calls_in_a_run(tmp_path, monkeypatch, from_start: bool) -> int:
    """How many calls :class:`_FailAt` counts in :func:`_next_run` (from its start, or from
    when its outputs are written)."""
    out = _previous_run(tmp_path / f"count-{from_start}")
    with monkeypatch.context() as m:
        counter = _FailAt(m, 0, None)
        counter.armed = from_start
        _next_run(out, counter.arm)
    return counter.count


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EPERM])
def test_an_error_at_any_point_of_the_move_changes_nothing_and_names_the_path(
        tmp_path, monkeypatch, code):
    _next_run(_previous_run(tmp_path / "ref"))
    expected = _tree(tmp_path / "ref")
    calls = _calls_in_a_run(tmp_path, monkeypatch, from_start=False)
    assert calls > 10
    for at in range(1, calls + 1):
        out = _previous_run(tmp_path / str(at))
        before = _tree(tmp_path / str(at))
        with monkeypatch.context() as m:
            fail = _FailAt(m, at, OSError(code, os.strerror(code)))
            try:
                _next_run(out, fail.arm)
            except RunFolderError as err:
                msg = str(err)
            else:  # a call whose failure does no harm (tidying up, a folder already there)
                msg = None
        if msg is None:  # done; a hidden leftover is removed by the next run
            after = {k: v for k, v in _tree(tmp_path / str(at)).items()
                     if not k.startswith("run/.recompose-tmp-")}
            assert after == expected, fail.failed
            continue
        assert "\n" not in msg and os.strerror(code) in msg, (at, msg)
        named = msg.split("cannot write ")[1].split(": ")[0]
        args = [str(a) for a in fail.failed if isinstance(a, str | Path)]
        scratch = [a for a in args if ".recompose-tmp-" in a]  # hidden: the folder is named
        assert named in args or (scratch and named in (str(out), str(out / RUN_RECORD))), \
            (at, msg, args)
        assert f"{out} is as it was" in msg, (at, msg)
        assert _tree(tmp_path / str(at)) == before, (at, fail.failed)


def test_an_exception_midway_through_the_move_changes_nothing_then_a_run_succeeds(
        tmp_path, monkeypatch):
    out = _previous_run(tmp_path / "ref")
    _next_run(out)
    expected = _tree(tmp_path / "ref")
    calls = _calls_in_a_run(tmp_path, monkeypatch, from_start=False)
    for at in range(1, calls + 1):
        root = tmp_path / str(at)
        out = _previous_run(root)
        before = _tree(root)
        with monkeypatch.context() as m:
            fail = _FailAt(m, at, KeyboardInterrupt())
            try:
                _next_run(out, fail.arm)
            except KeyboardInterrupt:  # before the final record: undone; after it: done
                visible = {k: v for k, v in _tree(root).items()
                           if not k.startswith("run/.recompose-tmp-")}
                assert _tree(root) == before if visible == before else visible == expected, \
                    (at, fail.failed)
        _next_run(out)
        assert _tree(root) == expected, (at, fail.failed)


class _Killed(BaseException):
    """Stands for SIGKILL: the folder is copied as it is at that moment."""


def test_a_run_killed_at_any_point_is_undone_or_kept_by_the_next_run(tmp_path, monkeypatch):
    refs = {}
    for name, runs in {"before": [], "killed": [_next_run], "again": [_next_run, _next_run]
                       }.items():
        out = _previous_run(tmp_path / name)
        for write in runs:
            write(out)
        refs[name] = _tree(tmp_path / name)
    calls = _calls_in_a_run(tmp_path, monkeypatch, from_start=True)
    pending = 0
    for at in range(1, calls + 1):
        root = tmp_path / str(at)
        out = _previous_run(root)
        snap = tmp_path / f"killed-{at}"
        with monkeypatch.context() as m:
            kill = _FailAt(m, at, _Killed())

            def snapshot(kill=kill, root=root, snap=snap):
                kill.armed = False  # the copy's own calls
                shutil.copytree(root, snap, symlinks=True)

            kill.on_failure = snapshot
            kill.armed = True
            with pytest.raises(_Killed):
                _next_run(out)
        pending += "pending" in json.loads((snap / "run" / RUN_RECORD).read_text())
        # the next run into the killed folder fails: the folder is as before, or as after
        with pytest.raises(RuntimeError), run_folder(snap / "run", overwrite=True):
            raise RuntimeError("boom")
        state = _tree(snap)
        assert state in (refs["before"], refs["killed"]), at
        _next_run(snap / "run")
        assert _tree(snap) == refs["again" if state == refs["killed"] else "killed"], at
    assert calls > 30 and pending >= 10  # the move itself was cut at every step


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


def test_sample_overwrite_refuses_a_record_that_points_outside(tmp_path):
    out = tmp_path / "run"
    assert run(*SAMPLE, "--out", str(out)).exit_code == 0
    (tmp_path / "victim.txt").write_text("precious")
    (out / RUN_RECORD).write_text(json.dumps({"entries": ["samples.npz", "../victim.txt"]}))
    before = _tree(tmp_path)
    r = run(*SAMPLE, "--out", str(out), "--overwrite")
    assert r.exit_code == 2 and "'../victim.txt', which is not a plain relative path" in r.output
    assert _tree(tmp_path) == before


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
