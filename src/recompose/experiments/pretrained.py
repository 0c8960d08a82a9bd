"""Train the 12 shipped 2D models (6 densities × score/energy) and export their EMA weights.

Run ``python -m recompose.experiments.pretrained`` (what ``recompose train --all`` calls).
Each model trains in ``<out>/<name>-<parameterization>/`` and resumes from its checkpoint if
interrupted; finished models are exported to ``src/recompose/pretrained/`` (or ``--export``).
Settings: :class:`~recompose.config.TrainConfig` defaults with ``steps = 6000`` and one thread,
so a rerun reproduces the shipped files bit for bit on the same platform.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ..config import TrainConfig
from ..models.loading import PRETRAINED
from ..training.trainer import Trainer
from .shipping import PACKAGE_DIR

__all__ = ["PRETRAINED_STEPS", "pretrained_config", "train_pretrained"]

PRETRAINED_STEPS = 6000


def pretrained_config(name: str, parameterization: str) -> TrainConfig:
    """The exact config of a shipped model."""
    return TrainConfig(data=name, parameterization=parameterization, steps=PRETRAINED_STEPS,
                       seed=0, threads=1)


def train_pretrained(out: Path, export: Path = PACKAGE_DIR, names: tuple[str, ...] = PRETRAINED,
                     parameterizations: tuple[str, ...] = ("energy", "score"),
                     log: bool = True) -> None:
    for name in names:
        for param in parameterizations:
            run = Path(out) / f"{name}-{param}"
            trainer = Trainer(pretrained_config(name, param), run)
            resumed = trainer.load()
            t0 = time.perf_counter()
            trainer.run()
            export.mkdir(parents=True, exist_ok=True)
            target = export / f"{name}-{param}.safetensors"
            shutil.copyfile(run / "checkpoint" / "model.safetensors", target)
            if log:
                print(f"{name}-{param}: {trainer.step} steps "
                      f"({'resumed' if resumed else 'fresh'}, {time.perf_counter() - t0:.0f} s), "
                      f"final loss {sum(trainer.losses[-100:]) / 100:.4f} -> {target}",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/pretrained"))
    parser.add_argument("--export", type=Path, default=PACKAGE_DIR)
    args = parser.parse_args()
    train_pretrained(args.out, args.export)


if __name__ == "__main__":
    main()
