"""Every example in README.md and the documentation pages runs.

Collected from ```` ```python ```` and ```` ```bash ```` blocks of README.md and docs/**/*.md.
Excluded: docs/results.md (results, not examples), docs/api/ (generated from docstrings) and
docs/how-to/extend.md (tests/test_docs_extend.py runs its examples).

* **Python blocks** run with ``exec`` in a fresh namespace, in a fresh temporary folder as the
  working directory, with one torch thread (on 2 shared cores, two threads are several times
  slower). A block that mentions ``SamplingWarning`` must warn one; any other block fails on
  one. The blocks that tests/test_readme.py runs and checks (its ``CHECKED`` list) are not run
  again here.
* **Command lines**: every ``recompose …`` command of a bash block runs in-process (click's
  runner, as tests/test_cli.py does), the commands of one block in order in one temporary
  folder, with small settings substituted (:func:`small`) and ``--quiet``. ``pip install`` and
  ``python -m pytest`` are not run; ``torchrun … -m recompose sample`` runs once, as a real
  2-process gloo run (the other torchrun commands are listed and skipped). ``recompose demo``
  runs with a cheap stand-in for its exact W2 (as in tests/test_cli.py). A block identical to
  one already run (README and docs/index.md share the two commands) runs once.
* **Marked blocks**: a block right after ``<!-- no-run: hub -->`` or ``<!-- no-run: gpu -->``
  needs a hub model or a GPU and is not run; their number is asserted (:data:`NO_RUN_COUNT`)
  and they are listed (``pytest -s`` shows the list).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from recompose.samplers import SamplingWarning

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED = {"docs/results.md", "docs/how-to/extend.md"}
EXCLUDED_FOLDERS = ("docs/api/",)
#: blocks marked ``<!-- no-run: … -->``: the SD 2.1 and the SD3 / FLUX hub examples of
#: docs/how-to/diffusers.md (tests/test_readme.py runs both on tiny local pipelines)
NO_RUN_COUNT = 2
NO_RUN = re.compile(r"<!--\s*no-run:\s*(hub|gpu)\s*-->")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
                   re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    code: str
    no_run: str | None  # "hub" or "gpu" when marked

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    found = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    return [p for p in found if p not in EXCLUDED and not p.startswith(EXCLUDED_FOLDERS)]


def blocks(lang: str) -> list[Block]:
    out = []
    for page in pages():
        text = (ROOT / page).read_text()
        for m in FENCE.finditer(text):
            if m["lang"] != lang:
                continue
            before = text[:m.start()].rstrip().splitlines()
            mark = NO_RUN.fullmatch(before[-1].strip()) if before else None
            indent = len(m["indent"])
            code = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
            out.append(Block(page, text.count("\n", 0, m.start()) + 1, lang, code,
                             mark[1] if mark else None))
    return out


def checked_by_test_readme(block: Block) -> bool:
    from test_readme import CHECKED

    return any(page == block.page and marker in block.code for page, marker in CHECKED)


PYTHON = [b for b in blocks("python") if b.no_run is None and not checked_by_test_readme(b)]
BASH = [b for b in blocks("bash")
        if b.no_run is None and re.search(r"^\s*(recompose|torchrun)\b|&&\s*recompose\b",
                                          b.code, re.M)]


# ------------------------------------------------------------------------ the inventory
def test_marked_blocks_are_counted_and_listed():
    marked = [b for lang in ("python", "bash") for b in blocks(lang) if b.no_run]
    print(f"\n{len(marked)} blocks marked no-run:")
    for b in marked:
        print(f"  {b.id} ({b.lang}, needs {'a hub model' if b.no_run == 'hub' else 'a GPU'})"
              + (", run on a local stand-in by tests/test_readme.py"
                 if checked_by_test_readme(b) else ""))
    assert len(marked) == NO_RUN_COUNT, [b.id for b in marked]
    for b in marked:  # a mark must be needed: a hub id ("org/name") or a GPU in the block
        need = r"[\"'][\w.-]+/[\w.-]+[\"']" if b.no_run == "hub" else r"cuda|gpu"
        assert re.search(need, b.code), f"{b.id} is marked {b.no_run} but does not need it"


def test_blocks_that_test_readme_checks_are_not_run_twice():
    from test_readme import CHECKED

    skipped = [b for b in blocks("python") if checked_by_test_readme(b)]
    print(f"\n{len(skipped)} blocks run by tests/test_readme.py instead:")
    for b in skipped:
        print(f"  {b.id}")
    for page, marker in CHECKED:  # every marker names exactly one block of its page
        assert sum(marker in b.code for b in blocks("python") if b.page == page) == 1, marker
    assert len(skipped) == len(CHECKED)


def test_every_page_is_collected():
    assert {"README.md", "docs/index.md", "docs/how-to/cli.md"} <= set(pages())
    assert len(PYTHON) >= 15 and len(BASH) >= 5  # the pages' examples did not vanish


# ------------------------------------------------------------------------ Python blocks
@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_example_runs(block, tmp_path, monkeypatch, one_thread):
    import recompose.models.networks as networks

    monkeypatch.chdir(tmp_path)
    # an example may register a network architecture: keep the registry as it was
    monkeypatch.setattr(networks, "NETWORKS", dict(networks.NETWORKS))
    code = compile(block.code, block.id, "exec")
    namespace = {"__name__": "__main__"}
    if "SamplingWarning" in block.code:  # the example shows a run that warns
        with pytest.warns(SamplingWarning):
            exec(code, namespace)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SamplingWarning)
            exec(code, namespace)


# ------------------------------------------------------------------------ command lines
GLOBAL_FLAGS = {"-q", "--quiet", "--debug"}
#: the file the pages' ``train --config`` examples read (docs/how-to/own-network.md writes one)
MY_MODEL = {"data": "ring", "parameterization": "score", "steps": 2, "batch_size": 64}
PLACEHOLDERS = ("PIPELINE_DIR_OR_HUB_ID", "PIPELINE_DIR")


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``a && b``
    split into two."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            out.append(tokens[:cut])
            tokens = tokens[cut + 1:]
    return out


def _set(args: list[str], names: tuple[str, ...], value: str, add: bool = True) -> None:
    for i, arg in enumerate(args):
        if arg in names:
            args[i + 1] = value
            return
    if add:
        args += [names[0], value]


def small(args: list[str], pipeline: object) -> list[str]:
    """``recompose`` arguments (without the program name) at small settings, quiet."""
    args = [a for a in args if a not in GLOBAL_FLAGS]
    command = args[0]
    if command == "sample":
        _set(args, ("--n", "--num-samples"), "50")
        _set(args, ("--levels",), "10")
        if "--diffusers" in args:
            i = args.index("--diffusers") + 1
            if args[i] in PLACEHOLDERS:
                args[i] = str(pipeline())
    elif command == "demo":
        _set(args, ("--n",), "50")
        _set(args, ("--levels",), "10")
        _set(args, ("--mcmc-steps",), "1")
    elif command == "train":  # a later run into the same folder asks for more: train longer
        _set(args, ("--steps",), "3", add=False)
        if "--steps" not in args:
            args += ["--steps", "2"]
    elif command == "bench":
        args += ["--repeats", "1", "--threads", "1", "--no-compiled"]
    return ["--quiet"] + args


@pytest.fixture(scope="session")
def local_pipeline(tmp_path_factory):
    """A callable giving a tiny saved StableDiffusionPipeline folder (built on first use)."""
    folder = []

    def get() -> Path:
        if not folder:
            pytest.importorskip("diffusers")
            from test_diffusers import tiny_pipeline

            folder.append(tiny_pipeline(tmp_path_factory.mktemp("pipeline")))
        return folder[0]

    return get


_SEEN: set[str] = set()
_TORCHRUN: list[str] = []  # the one torchrun example that ran


def _torchrun(tokens: list[str], cwd: Path) -> None:
    """A real 2-process gloo run of ``torchrun … -m recompose sample …`` at small settings."""
    module = tokens.index("-m")
    launcher = tokens[1:module]
    _set(launcher, ("--nproc_per_node",), "2")
    args = small(tokens[module + 2:], None)
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "recompose", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = cwd / args[args.index("--out") + 1]
    assert (out / "config.json").exists() and (out / "samples.npz").exists()


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.id)
def test_cli_example_runs(block, tmp_path, monkeypatch, one_thread, local_pipeline):
    from click.testing import CliRunner

    import recompose.cli.demo as demo
    from recompose.cli.main import cli

    if block.code in _SEEN:
        pytest.skip("the same block ran on an earlier page")
    _SEEN.add(block.code)
    monkeypatch.chdir(tmp_path)
    # the demo's exact W2 (assignments of 2,000 points, about 2 s each) is tested in
    # test_metrics; a cheap distance keeps this test about the command (as in test_cli)
    monkeypatch.setattr(demo, "wasserstein2", lambda x, y: float(
        torch.cdist(torch.as_tensor(x).double(), torch.as_tensor(y).double()).mean()))
    (tmp_path / "my_model.json").write_text(json.dumps(MY_MODEL))
    ran = 0
    for tokens in commands(block.code):
        if tokens[0] == "torchrun":
            if _TORCHRUN or tokens[tokens.index("-m") + 2] != "sample":
                print(f"skipped (one torchrun example runs: {_TORCHRUN}): {shlex.join(tokens)}")
                continue
            _TORCHRUN.append(block.id)
            _torchrun(tokens, tmp_path)
            ran += 1
            continue
        if tokens[0] != "recompose":  # pip install …, python -m pytest
            assert tokens[0] in ("pip", "python"), f"{block.id}: unexpected {tokens[0]!r}"
            continue
        args = small(tokens[1:], local_pipeline)
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{block.id}: recompose {shlex.join(args)}\n{result.output}"
        if "--out" in args:
            out = tmp_path / args[args.index("--out") + 1]
            assert any(out.iterdir()), f"{block.id}: {out} is empty"
        ran += 1
    assert ran, f"{block.id}: no command ran"
