r"""Plain ``nn.Module`` networks (no diffusion logic): time embedding and the 2D residual MLP.

``ResMLP`` follows the R3 2D network (``ResnetDiffusionModel``): input linear to width ``h``;
``n`` residual blocks ``x ← x + W₃ swish(W₂ swish(LN(x)) + W_e emb(t))`` with the last layer
of each block and the output layer zero-initialised (so an untrained net outputs 0); output
linear to the data dimension. Deviations, for 2 CPU cores and a small shipped file: a
sinusoidal embedding of continuous ``t`` (R3 learns an embedding of 100 integer levels) and
inner width ``h·widen`` with ``widen = 1`` by default (R3: 2).

Shapes: ``x (B, D)``, ``t (B,)`` in ``[0, 1]`` → output ``(B, D)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "ResMLP"]


class SinusoidalEmbedding(nn.Module):
    """``t ∈ [0, 1] -> [sin(1000 t ω_k), cos(1000 t ω_k)]``, geometric ``ω_k`` (Vaswani et al.)."""

    def __init__(self, dim: int = 32, max_period: float = 10_000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = 1000.0 * t[:, None].to(self.freqs.dtype) * self.freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, width: int, inner: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, inner)
        self.emb = nn.Linear(emb_dim, inner)
        self.fc2 = nn.Linear(inner, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(F.silu(z))


class ResMLP(nn.Module):
    """Residual MLP for 2D (or any flat ``D``) data: ``(x (B, D), t (B,)) -> (B, D)``."""

    def __init__(
        self, dim: int = 2, width: int = 128, num_blocks: int = 4, emb_dim: int = 32,
        widen: int = 1,
    ) -> None:
        super().__init__()
        self.config = {"arch": "resmlp", "dim": dim, "width": width, "num_blocks": num_blocks,
                       "emb_dim": emb_dim, "widen": widen}
        self.embed = nn.Sequential(SinusoidalEmbedding(emb_dim), nn.Linear(emb_dim, emb_dim),
                                   nn.SiLU())
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            _Block(width, width * widen, emb_dim) for _ in range(num_blocks)
        )
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.embed(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


NETWORKS = {"resmlp": ResMLP}


def build_network(config: dict) -> nn.Module:
    """Instantiate a network from its ``config`` dict (``arch`` plus constructor arguments)."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in NETWORKS:
        raise ValueError(f"unknown network architecture {arch!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[arch](**config)
