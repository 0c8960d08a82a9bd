"""What the experiment scripts share: their configs, output folders and Markdown tables.

Each experiment ``NAME`` has ``configs/NAME.json`` holding the protocol of its table in
``docs/results.md``; command-line options override single entries, and the config actually
used is saved with the results (``OUT/config.json``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONFIG_DIR", "load_config", "parse_config", "prepare_out", "markdown_table"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def load_config(name: str) -> dict:
    """The checked-in protocol of experiment ``name``."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def parse_config(name: str, description: str, argv: list[str] | None = None) -> dict:
    """``configs/NAME.json`` with ``--KEY VALUE`` overrides (``--out``, ``--overwrite`` too).

    Every key of the config becomes an option of the same type (lists take several values).
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
    overwrite = args.pop("overwrite")
    if "out" in args:
        prepare_out(args["out"], overwrite, parser)
    return args


def prepare_out(out: Path, overwrite: bool, parser: argparse.ArgumentParser) -> None:
    """Refuse, before any work, a folder we cannot write or one holding earlier results."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        parser.error(f"{out} exists and is not empty (a previous run's results); pass "
                     "--overwrite or choose another --out")
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        parser.error(f"cannot write to {out}: {probe} is not a writable folder")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
