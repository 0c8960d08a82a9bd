r"""The R3 paper's six 2D toy densities, seeded, each with its exact density.

==============  ==========================================  ==========================
name            density                                     used in
==============  ==========================================  ==========================
``ring``        8 Gaussians on a circle, radius 0.5, std 0.03  product (A)
``bar``         U([−0.2, 0.2] × [−1, 1])                     product (B)
``left_bar``    U([−0.3, −0.1] × [−1, 1])                    mixture
``right_bar``   U([0.1, 0.3] × [−1, 1])                      mixture
``large_box``   U([−0.7, 0.7]²)                              negation (numerator)
``small_box``   U([−0.3, 0.3]²)                              negation (denominator)
==============  ==========================================  ==========================

``sample(n, generator)`` returns ``(n, 2)`` float32; ``log_prob(x)`` is exact (``−inf`` outside
a uniform's support); ``in_support(x)`` is a boolean mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..models.analytic import GaussianMixture

__all__ = ["Toy2D", "Box", "Ring", "TOY2D", "get_toy2d"]


class Toy2D:
    """A named 2D density with exact sampling and log-density."""

    name: str
    event_shape = (2,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws, shape ``(n, 2)``."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact normalised log-density at ``x`` ``(B, 2)``, shape ``(B,)`` (float64; ``−∞``
        outside the support)."""
        raise NotImplementedError

    def in_support(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: the points of ``x`` ``(B, 2)`` where the density is positive."""
        return torch.isfinite(self.log_prob(x))


class Box(Toy2D):
    """Uniform density on ``[x0, x1] × [y0, y1]``."""

    def __init__(self, name: str, x0: float, x1: float, y0: float, y1: float) -> None:
        self.name, self.bounds = name, (x0, x1, y0, y1)
        self.area = (x1 - x0) * (y1 - y0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        x0, x1, y0, y1 = self.bounds
        u = torch.rand(n, 2, generator=generator)
        return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)

    def in_support(self, x: Tensor) -> Tensor:
        x0, x1, y0, y1 = self.bounds
        return (x[:, 0] >= x0) & (x[:, 0] <= x1) & (x[:, 1] >= y0) & (x[:, 1] <= y1)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = self.in_support(x)
        out = torch.full(x.shape[:1], -math.inf, dtype=torch.float64, device=x.device)
        return out.masked_fill(inside, -math.log(self.area))


class Ring(Toy2D):
    """Equal-weight mixture of ``k`` isotropic Gaussians on a circle."""

    def __init__(
        self, name: str = "ring", k: int = 8, radius: float = 0.5, std: float = 0.03
    ) -> None:
        self.name, self.k, self.radius, self.std = name, k, radius, std
        angles = [2 * math.pi * i / k for i in range(k)]
        self.means = torch.tensor([[radius * math.cos(a), radius * math.sin(a)] for a in angles])
        self.gmm = GaussianMixture(self.means, std, name=name)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        comp = torch.randint(0, self.k, (n,), generator=generator)
        return self.means[comp] + self.std * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.gmm.log_prob(x.to(torch.float64), 0.0)


TOY2D: dict[str, Toy2D] = {
    "ring": Ring(),
    "bar": Box("bar", -0.2, 0.2, -1.0, 1.0),
    "left_bar": Box("left_bar", -0.3, -0.1, -1.0, 1.0),
    "right_bar": Box("right_bar", 0.1, 0.3, -1.0, 1.0),
    "large_box": Box("large_box", -0.7, 0.7, -0.7, 0.7),
    "small_box": Box("small_box", -0.3, 0.3, -0.3, 0.3),
}


def get_toy2d(name: str) -> Toy2D:
    """Look up a toy density by name, with a helpful error."""
    if name not in TOY2D:
        raise KeyError(f"unknown 2D density {name!r}; choose one of {', '.join(TOY2D)}")
    return TOY2D[name]
