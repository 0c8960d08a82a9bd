"""Train the shipped digits models (sklearn's 8×8 digits) and export them to the package.

====================  ===================================================================
file                  what
====================  ===================================================================
digits-score          unconditional diffusion model, ε-prediction (score)
digits-energy         unconditional diffusion model, energy ``‖f − x‖²/σ_t``
digits-cond-energy    class-conditional energy model, label dropout 0.2 (null = p(x)): CFG
digits-noisy-clf      noise-conditional classifier ``p_t(y | x_t)``: classifier guidance
digits-evaluator      clean CNN classifier, used only to evaluate samples (accuracy, Fréchet)
====================  ===================================================================

Run ``python -m recompose.experiments.digits_models`` (what ``recompose train --digits``
calls; ≈ 20 min on 2 cores). Diffusion models resume from their checkpoints if interrupted;
classifiers (≤ 1 min each) restart. One thread, fixed seeds: a rerun on the same platform
gives the same weights.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ClassifierConfig, TrainConfig
from .shipping import PACKAGE_DIR, export_main, train_and_export

__all__ = ["DIGITS_MODELS", "DIGITS_CLASSIFIERS", "train_digits_models"]

_NET = {"arch": "resmlp", "dim": 64, "width": 128, "num_blocks": 4, "emb_dim": 64, "widen": 2}


def _diffusion(parameterization: str, conditional: bool) -> TrainConfig:
    net = {**_NET, "num_classes": 10} if conditional else dict(_NET)
    return TrainConfig(data="digits", parameterization=parameterization, steps=15000,
                       batch_size=256, lr=1e-3, ema_decay=0.999, seed=0, threads=1,
                       checkpoint_every=1000, network=net,
                       label_dropout=0.2 if conditional else 0.0)


DIGITS_MODELS = {
    "digits-score": _diffusion("score", False),
    "digits-energy": _diffusion("energy", False),
    "digits-cond-energy": _diffusion("energy", True),
}
DIGITS_CLASSIFIERS = {
    "digits-noisy-clf": ClassifierConfig(
        data="digits", noisy=True, steps=4000, batch_size=256,
        network={"arch": "time_classifier", "dim": 64, "num_classes": 10, "width": 128,
                 "num_blocks": 3, "emb_dim": 64}),
    "digits-evaluator": ClassifierConfig(
        data="digits", noisy=False, steps=3000, batch_size=256, augment_noise=0.1, seed=1,
        network={"arch": "conv_classifier", "in_channels": 1, "size": 8, "num_classes": 10,
                 "channels": 32, "feature_dim": 32}),
}


def train_digits_models(out: Path, export: Path = PACKAGE_DIR,
                       names: tuple[str, ...] | None = None, log: bool = True) -> None:
    """Train (or resume) each file in ``out/<name>``; copy to ``export/<name>.safetensors``."""
    train_and_export(DIGITS_MODELS, DIGITS_CLASSIFIERS, out, export, names, log)


def main() -> None:
    export_main(__doc__, "runs/pretrained-digits", DIGITS_MODELS, DIGITS_CLASSIFIERS)


if __name__ == "__main__":
    main()
