r"""A noise-conditional classifier as a model factor: ``p_t(y | x)`` for a fixed label ``y``.

Given logits ``f(x, t) ∈ ℝ^C`` of a classifier trained on noised data::

    E(x, t) = −log p_t(y | x) = −(f_y(x, t) − logsumexp_c f_c(x, t))      shape (B,)
    s(x, t) = ∇ₓ log p_t(y | x)                                            (autograd)

This is an exact (normalised over labels) log-likelihood, so classifier guidance
``model * ClassifierFactor(...) ** λ`` keeps Metropolis corrections available whenever the
diffusion model has energies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..schedules import Schedule
from ..utils import as_time
from .base import DiffusionModel

__all__ = ["ClassifierFactor"]


class ClassifierFactor(DiffusionModel):
    """``p_t(y | x)`` as a factor. ``classifier(x, t) -> (B, C)`` logits; ``y`` int or ``(B,)``."""

    has_energy = True
    marginal = False  # a likelihood ratio p_t(x|y)/p_t(x), not a diffusion's marginal

    def __init__(self, classifier: Callable[[Tensor, Tensor], Tensor] | nn.Module,
                 y: int | Tensor, schedule: Schedule, event_shape: tuple[int, ...],
                 name: str | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.y = y
        self.schedule, self.event_shape = schedule, tuple(event_shape)
        self.name = name or f"p(y={y}|x)"

    @property
    def per_chain(self) -> bool:
        y = self.y
        return torch.is_tensor(y) and y.numel() > 1 and bool((y != y.flatten()[0]).any())

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        logits = self.classifier(x, as_time(t, x.shape[0], x))
        y = torch.as_tensor(self.y, device=x.device).expand(x.shape[0])
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None])[:, 0]
        return -log_p
