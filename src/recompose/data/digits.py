r"""scikit-learn's bundled handwritten digits (8×8, 10 classes; ships inside the package).

Pixels ``0…16`` are mapped to ``[−1, 1]``: ``x = v/8 − 1``; images have shape ``(1, 8, 8)``.
The split is fixed: a permutation seeded with 0, then the first 50 images of each class form
the held-out set (500 images, used only for evaluation), the other 1,297 the training set.
``sample(n, generator)`` draws training images with replacement and returns ``(x, y)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["Digits", "digits_split", "HELD_OUT_PER_CLASS"]

HELD_OUT_PER_CLASS = 50


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the digits experiments need scikit-learn: pip install scikit-learn") \
            from err
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def digits_split(split: str) -> tuple[Tensor, Tensor]:
    """``(x (N, 1, 8, 8) in [−1, 1], y (N,))`` for ``split`` in ``{"train", "test"}``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _load()
    order = np.random.default_rng(0).permutation(len(labels))
    held = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        held[order[labels[order] == c][:HELD_OUT_PER_CLASS]] = True
    keep = order[held[order]] if split == "test" else order[~held[order]]
    x = torch.from_numpy(images[keep] / 8.0 - 1.0)[:, None]
    return x, torch.from_numpy(labels[keep])


class Digits:
    """The training split as a sampler of ``(x, y)`` batches."""

    name = "digits"
    event_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, split: str = "train") -> None:
        self.x, self.y = digits_split(split)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` draws with replacement from the split: images ``(n, 1, 8, 8)`` and labels
        ``(n,)``."""
        idx = torch.randint(len(self.y), (n,), generator=generator)
        return self.x[idx], self.y[idx]
