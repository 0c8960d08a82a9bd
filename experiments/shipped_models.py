"""Train the shipped models and export them: the scripts that made every file in
``src/recompose/pretrained/`` (diffusion models, the guidance classifier) and in
``experiments/weights/`` (evaluators, used only to score samples).

==================  ================================================================  =========
family              files                                                             time*
==================  ================================================================  =========
``2d``              ``{ring,bar,left_bar,right_bar,large_box,small_box}-{score,energy}``  ≈ 45 min
``digits``          ``digits-{score,energy,noisy-clf,cond-{energy,score}}``           ≈ 25 min
``clevr``           ``clevr-{score,energy}``; checker                                  ≈ 55 min
``distilled``       ``{2D shapes,digits,digits-cond,clevr}-distilled``                 see below
==================  ================================================================  =========

\\* on 2 CPU cores. Run ``python -m experiments.shipped_models FAMILY [--only NAME …]``.

* 2D: :class:`~recompose.config.TrainConfig` defaults with 6,000 steps, seed 0, one thread.
* digits: sklearn's 8×8 digits; the class-conditional energy model uses label dropout 0.2
  (null class = ``p(x)``, for classifier-free guidance); ``digits-noisy-clf`` is the
  noise-conditional ``p_t(y | x_t)`` for classifier guidance; ``digits-evaluator`` is a clean
  CNN used only to evaluate samples (accuracy, Fréchet distance in its 32-d features).
* clevr: position-conditioned UNet (null position 10 %) as score and as energy model with the
  ``‖f − x‖²`` form — its ``‖x‖²``-like growth away from the data keeps ``exp(−E)``
  normalisable, which matters for Metropolis-corrected chains that wander, and
  ``ε̂ = 2(I − J_f)ᵀ(x − f)`` is nearly linear in the network's output at initialisation, so
  it trains from the start like a denoiser; ``clevr-checker`` is a presence detector trained
  on ground-truth scenes (evaluation only).

* distilled: energy models distilled from the score models above
  (:mod:`recompose.training.distill`), each with its teacher's data, network, schedule and
  condition dropout; 2D with 4,000 steps on 2 threads (≤ 5 min each), digits 48,000 steps
  with the plain DSM term beside the teacher's (``dsm_weight=1``: the digits teachers are the
  family's weakest models, docs/results.md §8.4). clevr in two stages:
  ``clevr-distilled-base`` (21,750 steps of the plain loss; into ``experiments/weights/``, the
  model of §8.5's earlier rows), then ``clevr-distilled`` from its weights (``init_from``) with
  the condition-contrast term (``contrast_weight=30``, lr 3·10⁻⁴, 21,250 steps, ≈ 0.3 s per
  step on 2 threads). ``digits-cond-score`` (in the digits family) is the conditional teacher.
  ``clevr-late-score`` (≈ 30 min, 24,000 steps; into ``experiments/weights/``, a study, not
  shipped) is a late-conditioned position UNet (``late=True``) distilled as a score model
  from ``clevr-score``; trained by DSM alone, its head learned almost no position dependence.

Diffusion models train in ``OUT/<name>/`` and resume from their checkpoint if interrupted;
classifiers (a minute or two each) restart. One thread per run where the config says so and
fixed seeds: a rerun on the same platform gives the same weights.
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "shipped_models: training the shipped models (resumable), 15–55 min per "
         "family on 2 cores; loading torch")

import argparse
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from recompose.config import ClassifierConfig, TrainConfig
from recompose.training.classifier import train_classifier
from recompose.training.distill import teacher_config
from recompose.training.trainer import Trainer

from .common import echo, signals_as_usual
from .evaluators import WEIGHTS_DIR, classifier_data, classifier_loss

__all__ = ["FAMILIES", "PACKAGE_DIR", "train_and_export", "main"]

# The source tree's shipped-model folder (the repository's, never site-packages).
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "recompose" / "pretrained"

# the CLEVR student's first stage (in the repository: experiments run from its root)
CLEVR_BASE = "experiments/weights/clevr-distilled-base.safetensors"
CLEVR_CONTRAST_STEPS = 21250
SHAPES_2D = ("ring", "bar", "left_bar", "right_bar", "large_box", "small_box")

_DIGITS_NET = {"arch": "resmlp", "dim": 64, "width": 128, "num_blocks": 4, "emb_dim": 64,
               "widen": 2}
_CLEVR_NET = {"arch": "position_unet", "in_channels": 3, "size": 16, "channels": 16,
              "emb_dim": 64, "bump": 1.0}


def _digits(parameterization: str, conditional: bool) -> TrainConfig:
    net = {**_DIGITS_NET, "num_classes": 10} if conditional else dict(_DIGITS_NET)
    return TrainConfig(data="digits", parameterization=parameterization, steps=15000,
                       batch_size=256, lr=1e-3, ema_decay=0.999, seed=0, threads=1,
                       checkpoint_every=1000, network=net,
                       label_dropout=0.2 if conditional else 0.0)


def _clevr(parameterization: str) -> TrainConfig:
    return TrainConfig(data="clevr", parameterization=parameterization, steps=6000,
                       batch_size=64, lr=1e-3, ema_decay=0.999, seed=0, threads=2,
                       checkpoint_every=250, network=dict(_CLEVR_NET), label_dropout=0.1)


# family -> name -> config (or a function making it from a teacher file); the files named in
# EXPERIMENT_FILES go to WEIGHTS_DIR.
Config = TrainConfig | ClassifierConfig | Callable[[], TrainConfig]
FAMILIES: dict[str, dict[str, Config]] = {
    "2d": {f"{s}-{p}": TrainConfig(data=s, parameterization=p, steps=6000, seed=0, threads=1)
           for s in SHAPES_2D for p in ("energy", "score")},
    "digits": {
        "digits-noisy-clf": ClassifierConfig(
            data="digits", noisy=True, steps=4000, batch_size=256,
            network={"arch": "time_classifier", "dim": 64, "num_classes": 10, "width": 128,
                     "num_blocks": 3, "emb_dim": 64}),
        "digits-evaluator": ClassifierConfig(
            data="digits", noisy=False, steps=3000, batch_size=256, augment_noise=0.1, seed=1,
            network={"arch": "conv_classifier", "in_channels": 1, "size": 8, "num_classes": 10,
                     "channels": 32, "feature_dim": 32}),
        "digits-score": _digits("score", False),
        "digits-energy": _digits("energy", False),
        "digits-cond-energy": _digits("energy", True),
        "digits-cond-score": _digits("score", True),
    },
    "clevr": {
        "clevr-checker": ClassifierConfig(
            data="clevr-presence", noisy=False, steps=2000, batch_size=64, augment_noise=0.05,
            lr=2e-3, seed=2, threads=2,
            network={"arch": "presence_net", "in_channels": 3, "channels": 32}),
        "clevr-score": _clevr("score"),
        "clevr-energy": _clevr("energy"),
    },
    "distilled": {
        **{f"{s}-distilled": partial(teacher_config, s, steps=4000, threads=2)
           for s in SHAPES_2D},
        "digits-distilled": partial(teacher_config, "digits", steps=48000, dsm_weight=1.0),
        "digits-cond-distilled": partial(teacher_config, "digits-cond", steps=48000,
                                        dsm_weight=1.0),
        # two stages: the plain distillation loss, then the condition-contrast term from there
        "clevr-distilled-base": partial(teacher_config, "clevr", steps=21750),
        "clevr-distilled": partial(teacher_config, "clevr", steps=CLEVR_CONTRAST_STEPS,
                                   contrast_weight=30.0, lr=3e-4, seed=1,
                                   init_from=CLEVR_BASE),
        "clevr-late-score": partial(teacher_config, "clevr", parameterization="score",
                                    steps=24000,
                                    network={**_CLEVR_NET, "late": True, "head_blocks": 2}),
    },
}
# files for the experiments only: evaluators, and the late-conditioned position model of
# docs/results.md §6 (a study that missed its accuracy target, so not shipped)
EXPERIMENT_FILES = ("digits-evaluator", "clevr-checker", "clevr-late-score",
                    "clevr-distilled-base")


def train_and_export(family: str, out: Path, export: Path = PACKAGE_DIR,
                     names: tuple[str, ...] | None = None, log: bool = True) -> None:
    """Train (or resume) each named file of ``family`` in ``out/<name>`` and copy it to
    ``export/<name>.safetensors`` (``EXPERIMENT_FILES``: to ``experiments/weights/``)."""
    from tqdm.auto import tqdm

    configs = FAMILIES[family]
    for name in names or tuple(configs):
        t0 = time.perf_counter()
        config = configs[name]
        if callable(config):  # distilled: read the teacher's file only when it is needed
            config = config()
        target = (WEIGHTS_DIR if name in EXPERIMENT_FILES else export) / f"{name}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(config.threads)
        if isinstance(config, TrainConfig):
            trainer = Trainer(config, Path(out) / name)
            resumed = trainer.load()
            with tqdm(total=config.steps, initial=trainer.step, desc=name,
                      disable=not log) as bar:
                trainer.run(progress=lambda step, loss: bar.update())
            shutil.copyfile(Path(out) / name / "checkpoint" / "model.safetensors", target)
            tail = trainer.losses[-200:]
            how = (f"{trainer.step} steps ({'resumed' if resumed else 'fresh'}), final loss "
                   f"{sum(tail) / len(tail):.4f}")
        else:
            made = Path(out) / f"{name}.safetensors"
            with tqdm(total=config.steps, desc=name, disable=not log) as bar:
                train_classifier(config, made, lambda step, loss: bar.update(),
                                 data=classifier_data(config.data),
                                 loss=classifier_loss(config.data))
            shutil.copyfile(made, target)
            how = f"{config.steps} steps"
        if log:
            echo(f"{name}: {how}, {time.perf_counter() - t0:.0f} s -> {target}")


def main(argv: list[str] | None = None) -> None:
    signals_as_usual()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--out", type=Path, default=None,
                        help="training folder (default runs/shipped-FAMILY; resumable)")
    parser.add_argument("--export", type=Path, default=PACKAGE_DIR,
                        help="where diffusion models and the guidance classifier go")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME")
    args = parser.parse_args(argv)
    known = FAMILIES[args.family]
    unknown = [n for n in args.only or () if n not in known]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(known)}")
    train_and_export(args.family, args.out or Path(f"runs/shipped-{args.family}"), args.export,
                     tuple(args.only) if args.only else None)


if __name__ == "__main__":
    main()
