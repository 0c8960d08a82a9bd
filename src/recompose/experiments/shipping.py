"""Train a family of shipped files (diffusion models and classifiers) and export them into the
package, shared by :mod:`.digits_models` and :mod:`.clevr_models`.

Diffusion models train in ``out/<name>/`` and resume from their checkpoint if interrupted;
classifiers (a minute or two each) restart. Each result is copied to
``export/<name>.safetensors`` (default: the package's ``pretrained/`` folder).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ..config import ClassifierConfig, TrainConfig
from ..training.classifier import train_classifier
from ..training.trainer import Trainer

__all__ = ["PACKAGE_DIR", "train_and_export", "export_main"]

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def train_and_export(models: dict[str, TrainConfig], classifiers: dict[str, ClassifierConfig],
                     out: Path, export: Path = PACKAGE_DIR,
                     names: tuple[str, ...] | None = None, log: bool = True) -> None:
    """Train (or resume) each named file and copy it to ``export/<name>.safetensors``."""
    names = names or (*classifiers, *models)
    export.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        target = export / f"{name}.safetensors"
        if name in models:
            trainer = Trainer(models[name], Path(out) / name)
            resumed = trainer.load()
            trainer.run()
            shutil.copyfile(Path(out) / name / "checkpoint" / "model.safetensors", target)
            tail = trainer.losses[-200:]
            how = f"{trainer.step} steps ({'resumed' if resumed else 'fresh'}), final loss " \
                  f"{sum(tail) / len(tail):.4f}"
        elif name in classifiers:
            train_classifier(classifiers[name], Path(out) / f"{name}.safetensors")
            shutil.copyfile(Path(out) / f"{name}.safetensors", target)
            how = f"{classifiers[name].steps} steps"
        else:
            known = ", ".join((*classifiers, *models))
            raise KeyError(f"unknown model {name!r}; choose from {known}")
        if log:
            print(f"{name}: {how}, {time.perf_counter() - t0:.0f} s -> {target}", flush=True)


def export_main(description: str, default_out: str, models: dict[str, TrainConfig],
                classifiers: dict[str, ClassifierConfig]) -> None:
    """Command-line entry: ``--out``, ``--export``, ``--only NAME …``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--export", type=Path, default=PACKAGE_DIR)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    unknown = [n for n in args.only or () if n not in models and n not in classifiers]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from "
                     f"{', '.join((*classifiers, *models))}")
    train_and_export(models, classifiers, args.out, args.export,
                     tuple(args.only) if args.only else None)
