"""What the experiment scripts share: their configs, output folders and Markdown tables.

Each experiment ``NAME`` has ``configs/NAME.json`` holding the protocol of its table in
``docs/results.md``; command-line options override single entries, and the config actually
used is saved with the results (``OUT/config.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from pathlib import Path

import torch

from recompose.io import RunFolderError, check_run_folder

__all__ = ["CONFIG_DIR", "VARIANTS", "sampler_args", "load_config", "parse_config",
           "markdown_table", "write_results", "map_in_workers", "script"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# Sampler names of the tables beyond rc.sample's own: score-only Metropolis (mcmc/path.py),
# FKC with moves that spread its resampled copies.
VARIANTS: dict[str, tuple[str, dict]] = {
    "fkc-ula": ("fkc", {"moves": "ula"}),
    "fkc-uhmc": ("fkc", {"moves": "uhmc"}),
    "mala-path": ("mala", {"energy": "path", "quadrature": "simpson"}),
    "mala-trapezoid": ("mala", {"energy": "path", "quadrature": "trapezoid"}),
    "hmc-path": ("hmc", {"energy": "path", "quadrature": "simpson"}),
    "hmc-trapezoid": ("hmc", {"energy": "path", "quadrature": "trapezoid"}),
}


def sampler_args(name: str) -> tuple[str, dict]:
    """``(sampler, kernel options)`` for a table's sampler name (``"hmc-path"`` …)."""
    return VARIANTS.get(name, (name, {}))


def load_config(name: str) -> dict:
    """The checked-in protocol of experiment ``name``."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def parse_config(name: str, description: str, argv: list[str] | None = None,
                 check: Callable[[dict], None] | None = None) -> dict:
    """``configs/NAME.json`` with ``--KEY VALUE`` overrides (``--out``, ``--overwrite`` too).

    Every key of the config becomes an option of the same type (lists take several values).
    ``check(config)`` raises ``ValueError`` for values the script cannot run with; like an
    unusable ``--out`` folder, that ends the script with the usage line and the message,
    before any work.
    """
    config = load_config(name)
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if key == "out":
            parser.add_argument(flag, type=Path, default=Path(value), help="output folder")
        elif isinstance(value, list):
            kind = type(value[0]) if value else str
            parser.add_argument(flag, type=kind, nargs="+", default=value,
                                help=f"default: {' '.join(map(str, value))}")
        else:
            parser.add_argument(flag, type=type(value), default=value,
                                help=f"default: {value}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out")
    args = vars(parser.parse_args(argv))
    try:  # before any work: a folder we can write, and never someone else's files
        check_run_folder(args["out"], args["overwrite"])
        if check is not None:
            check(args)
    except (RunFolderError, ValueError) as err:
        parser.error(str(err))
    return args


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(config: dict, results: object, table: str) -> None:
    """``config.json``, ``results.json`` and ``table.md`` into ``config["out"]``, atomically
    (the folder was checked by :func:`parse_config`)."""
    from recompose.io import run_folder

    with run_folder(config["out"], config["overwrite"]) as tmp:
        (tmp / "config.json").write_text(json.dumps({k: str(v) if k == "out" else v
                                                     for k, v in config.items()}, indent=2))
        (tmp / "results.json").write_text(json.dumps(results, indent=2))
        (tmp / "table.md").write_text(table + "\n")


def _one_thread() -> None:
    torch.set_num_threads(1)


def map_in_workers(fn: Callable, tasks: Sequence, workers: int, desc: str,
                   progress: bool = True) -> list:
    """``[fn(t) for t in tasks]`` in ``workers`` spawned processes of one thread each, in
    order. Any exception or interrupt in the parent (Ctrl-C, SIGTERM) terminates the workers
    at once instead of waiting for the queued tasks."""
    from tqdm.auto import tqdm

    pool = get_context("spawn").Pool(workers, initializer=_one_thread)
    try:
        results = list(tqdm(pool.imap(fn, tasks), total=len(tasks), desc=desc,
                            disable=not progress))
        pool.close()
        return results
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


class _Terminated(KeyboardInterrupt):
    pass


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def script(main: Callable[..., None]) -> Callable[..., None]:
    """An experiment's entry point: SIGTERM stops it like Ctrl-C, and either ends it with one
    line (what was kept) and exit code 143 / 130 instead of a traceback."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> None:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            main(*args, **kwargs)
        except KeyboardInterrupt as err:
            term = isinstance(err, _Terminated)
            print(f"{'terminated' if term else 'interrupted'}: no results were written (an "
                  "earlier run's results are untouched)", file=sys.stderr)
            sys.exit(143 if term else 130)

    return wrapper
