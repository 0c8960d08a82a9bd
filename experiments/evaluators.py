"""Evaluators: the networks that score generated samples and never generate.

* :class:`ConvClassifier` — clean-image classifier (digits evaluator); :meth:`features` is the
  ``feature_dim`` bottleneck in which Fréchet distances are computed.
* :class:`PresenceNet` — fully convolutional object detector (CLEVR checker), trained on
  :class:`ClevrPresence`: ground-truth scenes with :func:`presence_map` targets (1 where a pixel
  centre is within one pixel of an object centre), binary cross-entropy per pixel.

Both register their architectures with :func:`recompose.models.networks.register_network`
on import, so their files load with :func:`recompose.training.classifier.load_classifier`.
Their weights live in ``experiments/weights/`` (made by :mod:`.shipped_models`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recompose.data import get_dataset
from recompose.data.clevr import SceneSpec, make_scenes
from recompose.models.networks import register_network
from recompose.training.classifier import load_classifier

__all__ = ["WEIGHTS_DIR", "ConvClassifier", "PresenceNet", "presence_map", "ClevrPresence",
           "load_evaluator", "classifier_data", "classifier_loss"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class ConvClassifier(nn.Module):
    """Clean-image classifier for evaluation: ``x (B, C, H, W) -> logits (B, classes)``.

    Two 3×3 conv stages (with 2×2 pooling) then a ``feature_dim`` bottleneck.
    """

    def __init__(self, in_channels: int = 1, size: int = 8, num_classes: int = 10,
                 channels: int = 32, feature_dim: int = 32) -> None:
        super().__init__()
        self.config = {"arch": "conv_classifier", "in_channels": in_channels, "size": size,
                       "num_classes": num_classes, "channels": channels,
                       "feature_dim": feature_dim}
        c = channels
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * (size // 4) ** 2, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.head(self.trunk(x))


class PresenceNet(nn.Module):
    """Fully convolutional object detector: ``x (B, C, S, S) -> logits (B, 1, S, S)`` that a
    pixel lies within one pixel of an object centre (receptive field 11 px)."""

    def __init__(self, in_channels: int = 3, channels: int = 32) -> None:
        super().__init__()
        self.config = {"arch": "presence_net", "in_channels": in_channels,
                       "channels": channels}
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 1, 1),
        )

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self.body(x)


register_network("conv_classifier", ConvClassifier)
register_network("presence_net", PresenceNet)


def presence_map(pos: Tensor, spec: SceneSpec = SceneSpec(), hit_radius: float = 1.0) -> Tensor:
    """``(n, 1, H, W)``: 1 where a pixel centre is within ``hit_radius`` pixels of a centre."""
    s = spec.size
    grid = (torch.arange(s) + 0.5) / s
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    d = ((gx - pos[..., 0, None, None].nan_to_num(-10.0)) ** 2
         + (gy - pos[..., 1, None, None].nan_to_num(-10.0)) ** 2).sqrt() * s
    return (d <= hit_radius).any(dim=1, keepdim=True).float()


class ClevrPresence:
    """Training data of the checker: ``(x, presence map)`` from a fixed set of seeded scenes
    (a different seed from the position model's training scenes)."""

    num_scenes = 20000
    seed = 777

    def __init__(self, spec: SceneSpec = SceneSpec()) -> None:
        self.spec = spec
        scenes = make_scenes(self.num_scenes, torch.Generator().manual_seed(self.seed), spec)
        self.x, self.pos = scenes["x"], scenes["pos"]
        self.event_shape = (3, spec.size, spec.size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        idx = torch.randint(self.num_scenes, (n,), generator=generator)
        return self.x[idx], presence_map(self.pos[idx], self.spec)


def classifier_data(name: str) -> object:
    """The training sampler of a classifier: a library dataset, or the checker's scenes."""
    return ClevrPresence() if name == "clevr-presence" else get_dataset(name)


def classifier_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy for class labels; binary cross-entropy per pixel for presence maps."""
    return F.binary_cross_entropy_with_logits if name == "clevr-presence" else F.cross_entropy


def load_evaluator(name: str) -> tuple[nn.Module, dict]:
    """``(network in eval mode, config)`` of ``digits-evaluator`` or ``clevr-checker``."""
    return load_classifier(WEIGHTS_DIR / f"{name}.safetensors")
