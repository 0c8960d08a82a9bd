"""Every experiment says what it is doing before its slow imports, and shows a bar for each long
step (issue #32: ``python -m experiments.toy2d`` printed nothing for its first ~50 s)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["analytic_product", "attributes", "clevr", "clevr_curves", "conservative",
           "contrast_fit", "digits", "distillation", "equal_compute", "path_mh",
           "shipped_models", "tapestry", "toy2d"]
FIRST_LINE_S = 3.0  # the imports after it take 3–10 s on 2 busy cores


class Script:
    """``python -m experiments.NAME ARGS`` in its own session; its stderr, as it comes."""

    def __init__(self, name: str, *args: str, cwd: Path = ROOT) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.start = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", f"experiments.{name}", *args],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.err = b""
        self.out = b""
        self.readers = [threading.Thread(target=self._read, args=(s, k), daemon=True)
                        for s, k in ((self.proc.stderr, "err"), (self.proc.stdout, "out"))]
        for r in self.readers:
            r.start()

    def _read(self, stream: object, key: str) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            setattr(self, key, getattr(self, key) + chunk)

    def wait_for(self, text: str, within: float) -> float | None:
        """Seconds from the start until stderr holds ``text``; None if not within ``within``."""
        while time.monotonic() - self.start < within:
            if text.encode() in self.err:
                return time.monotonic() - self.start
            if self.proc.poll() is not None and not any(r.is_alive() for r in self.readers):
                return None
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        for r in self.readers:
            r.join(timeout=10)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_experiment_says_what_it_does_before_its_imports(name):
    script = Script(name, "--help")
    try:
        took = script.wait_for("\n", FIRST_LINE_S)
    finally:
        script.stop()
    assert took is not None, f"nothing within {FIRST_LINE_S} s: {script.err[:300]!r}"
    assert script.err.decode().startswith(f"{name}: ")


def test_toy2d_shows_a_bar_while_it_computes_the_mixture_normalisers(tmp_path):
    script = Script("toy2d", "--compositions", "mixture", "--cells", "energy/reverse",
                    "--out", str(tmp_path / "out"))
    try:
        first = script.wait_for("\n", FIRST_LINE_S)
        bar = script.wait_for("mixture normalisers:", 120)
    finally:
        script.stop()
    assert first is not None and bar is not None, script.err.decode()


def test_toy2d_shows_every_step_and_writes_its_table(tmp_path):
    """A tiny run end to end, as a script with two spawned workers."""
    script = Script("toy2d", "--compositions", "product", "--cells", "energy/reverse",
                    "score/reverse", "--n", "20", "--seeds", "1", "--levels", "3",
                    "--n-target", "50", "--out", str(tmp_path / "out"))
    try:
        first = script.wait_for("\n", FIRST_LINE_S)
        script.proc.wait(timeout=300)
    finally:
        script.stop()
    err = script.err.decode()
    assert first is not None and script.proc.returncode == 0, err
    assert "toy2d cells: 100%" in err and "exact draws: 100%" in err
    assert (tmp_path / "out" / "table.md").read_text() in script.out.decode()


def test_ctrl_c_during_a_bar_ends_with_the_bar_then_one_line(tmp_path):
    """The stop line comes after the bars (closed on their own lines), and nothing after it."""
    script = Script("toy2d", "--compositions", "mixture", "--cells", "energy/reverse",
                    "--out", str(tmp_path / "out"))
    try:
        bar = script.wait_for("mixture normalisers:", 120)
        os.killpg(script.proc.pid, signal.SIGINT)
        code = script.proc.wait(timeout=10)
    finally:
        script.stop()
    err = script.err.decode()
    assert bar is not None and code == 130, err
    assert "Traceback" not in err and err.count("interrupted") == 1
    assert err.endswith("\ninterrupted: no results were written (an earlier run's results are "
                        "untouched)\n"), err
