"""Train the shipped CLEVR-like position models and the checker, and export them.

=====================  ==================================================================
file                   what
=====================  ==================================================================
clevr-score            position-conditioned UNet, ε-prediction (score), null position 10 %
clevr-energy           the same network as an energy model, ``E = ‖f − x‖²/σ_t``
clevr-checker          presence detector trained on ground-truth scenes (evaluation only)
=====================  ==================================================================

Energy form: ``‖f − x‖²`` (the R3 2D form) rather than R3's image-code ``½‖f‖²``: its
``‖x‖²``-like growth away from the data keeps ``exp(−E)`` normalisable, which matters for
Metropolis-corrected chains that may wander, and ``ε̂ = 2(I − J_f)ᵀ(x − f)`` is nearly linear
in the network's output at initialisation, so it trains from the start like a denoiser.

Run ``python -m recompose.experiments.clevr_models`` (``recompose train --clevr``; ≈ 55 min
on 2 CPU cores — the budget that sized the UNet to 16 base channels). Diffusion models resume
from their checkpoints; seeds are fixed.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ClassifierConfig, TrainConfig
from .shipping import PACKAGE_DIR, export_main, train_and_export

__all__ = ["CLEVR_MODELS", "CLEVR_CLASSIFIERS", "train_clevr_models"]

_NET = {"arch": "position_unet", "in_channels": 3, "size": 16, "channels": 16, "emb_dim": 64,
        "bump": 1.0}


def _diffusion(parameterization: str, steps: int) -> TrainConfig:
    return TrainConfig(data="clevr", parameterization=parameterization, steps=steps,
                       batch_size=64, lr=1e-3, ema_decay=0.999, seed=0, threads=2,
                       checkpoint_every=250, network=dict(_NET), label_dropout=0.1)


CLEVR_MODELS = {
    "clevr-score": _diffusion("score", 6000),
    "clevr-energy": _diffusion("energy", 6000),
}
CLEVR_CLASSIFIERS = {
    "clevr-checker": ClassifierConfig(
        data="clevr-presence", noisy=False, steps=2000, batch_size=64, augment_noise=0.05,
        lr=2e-3, seed=2, threads=2,
        network={"arch": "presence_net", "in_channels": 3, "channels": 32}),
}


def train_clevr_models(out: Path, export: Path = PACKAGE_DIR,
                       names: tuple[str, ...] | None = None, log: bool = True) -> None:
    """Train (or resume) each file in ``out/<name>``; copy to ``export/<name>.safetensors``."""
    train_and_export(CLEVR_MODELS, CLEVR_CLASSIFIERS, out, export, names, log)


def main() -> None:
    export_main(__doc__, "runs/pretrained-clevr", CLEVR_MODELS, CLEVR_CLASSIFIERS)


if __name__ == "__main__":
    main()
