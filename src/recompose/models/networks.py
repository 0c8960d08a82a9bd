r"""Plain ``nn.Module`` networks (no diffusion logic): embeddings, the residual MLP, classifiers.

``ResMLP`` follows the R3 2D network (``ResnetDiffusionModel``): input linear to width ``h``;
``n`` residual blocks ``x ← x + W₃ swish(W₂ swish(LN(x)) + W_e emb(t))`` with the last layer
of each block and the output layer zero-initialised (so an untrained net outputs 0); output
linear to the data dimension. Deviations, for 2 CPU cores and a small shipped file: a
sinusoidal embedding of continuous ``t`` (R3 learns an embedding of 100 integer levels) and
inner width ``h·widen`` with ``widen = 1`` by default (R3: 2).

Shapes: ``x (B, *D)`` (flattened inside), ``t (B,)`` in ``[0, 1]`` → output ``(B, *D)``.

**Conditioning** (for classifier-free guidance and conditional composition). A conditional
network takes ``forward(x, t, c)`` where ``c`` is a batch of conditions in the network's own
encoding, or ``None`` for the *null* condition. It exposes ``encode_condition(value)`` (a
user value → one encoded condition, or a batch of them) and ``null_condition(n)``; the null
condition is a real input the network was trained on (label dropout), so the same network
gives both ``p_t(x | c)`` and ``p_t(x)``. Encodings: class labels are integers with
``num_classes`` meaning null (an extra embedding row).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "ResMLP", "TimeClassifier", "PositionUNet", "build_network",
           "register_network", "NETWORKS"]


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


def shared_time(t: Tensor) -> Tensor:
    """``t[:1]`` when ``t`` is one time broadcast over the batch (a stride-0 expand, as
    :func:`~recompose.utils.as_time` makes of a scalar), else ``t``: the time embedding is then
    computed once, not once per row. Reads only strides, so it never syncs with a device."""
    return t[:1] if t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0 else t


def _time_embedding(emb_dim: int) -> nn.Sequential:
    return nn.Sequential(SinusoidalEmbedding(emb_dim), nn.Linear(emb_dim, emb_dim), nn.SiLU())


class _Block(nn.Module):
    def __init__(self, width: int, inner: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, inner)
        self.emb = nn.Linear(emb_dim, inner)
        self.fc2 = nn.Linear(inner, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def inner(self, a: Tensor, emb: Tensor) -> Tensor:
        """``z = W₁ a + b₁ + W_e emb``; one embedding row for the whole batch is folded into
        the bias (one matrix product fewer)."""
        if emb.shape[0] == 1 < a.shape[0]:
            return F.linear(a, self.fc1.weight, self.fc1.bias + self.emb(emb)[0])
        return self.fc1(a) + self.emb(emb)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.inner(F.silu(self.norm(h)), emb)))


class ResMLP(nn.Module):
    """Residual MLP on flattened data: ``(x (B, *D), t (B,)[, c]) -> (B, *D)``.

    ``dim`` is the flattened data size; ``num_classes > 0`` adds a class embedding (with a
    null row) to the time embedding.
    """

    def __init__(
        self, dim: int = 2, width: int = 128, num_blocks: int = 4, emb_dim: int = 32,
        widen: int = 1, num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.config = {"arch": "resmlp", "dim": dim, "width": width, "num_blocks": num_blocks,
                       "emb_dim": emb_dim, "widen": widen}
        if num_classes:
            self.config["num_classes"] = num_classes
        self.num_classes = num_classes
        self.conditional = num_classes > 0
        self.embed = _time_embedding(emb_dim)
        if num_classes:
            self.class_embed = nn.Embedding(num_classes + 1, emb_dim)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            _Block(width, width * widen, emb_dim) for _ in range(num_blocks)
        )
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # conditions ---------------------------------------------------------------------
    def encode_condition(self, value: int | Tensor) -> Tensor:
        """Class labels (an int or a tensor of them) as a ``long`` tensor; ``ValueError`` outside
        ``0 … num_classes − 1``."""
        y = torch.as_tensor(value, dtype=torch.long, device=self.inp.weight.device)
        if ((y < 0) | (y >= self.num_classes)).any():
            raise ValueError(f"class labels must lie in 0..{self.num_classes - 1}")
        return y

    def null_condition(self, n: int) -> Tensor:
        """The null label ``num_classes`` for ``n`` chains, shape ``(n,)``."""
        return torch.full((n,), self.num_classes, dtype=torch.long,
                          device=self.inp.weight.device)

    def embedding(self, t: Tensor, c: Tensor | None = None) -> Tensor:
        """Time (plus class) embedding: ``(B, emb_dim)``, or ``(1, emb_dim)`` for one
        unconditional time shared by the batch (:func:`shared_time`)."""
        emb = self.embed(shared_time(t))
        if self.conditional:
            emb = emb + self.class_embed(self.null_condition(t.shape[0]) if c is None else c)
        return emb

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        emb = self.embedding(t, c)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape)


class TimeClassifier(nn.Module):
    """Noise-conditional classifier ``(x_t (B, *D), t (B,)) -> logits (B, C)``: a residual
    MLP trunk (as :class:`ResMLP`) with a linear head; ``p_t(y | x_t)`` for guidance."""

    def __init__(self, dim: int = 64, num_classes: int = 10, width: int = 128,
                 num_blocks: int = 3, emb_dim: int = 32) -> None:
        super().__init__()
        self.config = {"arch": "time_classifier", "dim": dim, "num_classes": num_classes,
                       "width": width, "num_blocks": num_blocks, "emb_dim": emb_dim}
        self.embed = _time_embedding(emb_dim)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width, width, emb_dim) for _ in range(num_blocks))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.embed(shared_time(t))
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        return self.skip(h) + self.conv2(F.silu(self.norm2(z)))


class PositionUNet(nn.Module):
    """A small UNet conditioned on one 2D position: ``(x (B,C,S,S), t (B,), c) -> (B,C,S,S)``.

    Three resolutions (S, S/2, S/4) with ``channels·(1, 2, 2)`` feature maps, one residual block
    per level each way plus a middle block, GroupNorm, time embedding added in every block.
    The condition ``c = (p_x, p_y, 1)`` (``(0, 0, 0)`` = null) enters as a channel holding a
    Gaussian bump (``bump`` pixels wide) at the position — which makes "put an object here" a
    local, translation-equivariant task — and through Fourier features of the position added
    to a time embedding.

    ``late=False``: the bump is an input channel and the position embedding is added in every
    block, so the whole UNet depends on ``c``. ``late=True``: the UNet is a trunk over
    ``(x, t)`` alone whose output is the null condition's ``ε̂(x, t)``; a condition adds a
    residual ``Δε̂(x, t, c)`` from a head at full resolution (``x``, the trunk's features and
    the bump in, ``head_blocks`` residual blocks with the position embedding). Then ``K``
    conditions on one ``x`` cost one trunk pass and ``K`` head passes (:meth:`forward_copies`).
    """

    conditional = True
    condition_ndim = 1

    def __init__(self, in_channels: int = 3, size: int = 16, channels: int = 32,
                 emb_dim: int = 64, bump: float = 1.0, late: bool = False,
                 head_blocks: int = 1) -> None:
        super().__init__()
        self.config = {"arch": "position_unet", "in_channels": in_channels, "size": size,
                       "channels": channels, "emb_dim": emb_dim, "bump": bump}
        if late:
            self.config.update(late=True, head_blocks=head_blocks)
        self.size, self.bump, self.late = size, bump, late
        c1, c2 = channels, 2 * channels
        self.embed = _time_embedding(emb_dim)
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(4), persistent=False)
        self.cond_embed = nn.Sequential(nn.Linear(17, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Conv2d(in_channels + (0 if late else 1), c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, emb_dim)
        self.down2 = _ResBlock(c1, c2, emb_dim)
        self.down3 = _ResBlock(c2, c2, emb_dim)
        self.mid = _ResBlock(c2, c2, emb_dim)
        self.up3 = _ResBlock(2 * c2, c2, emb_dim)
        self.up2 = _ResBlock(2 * c2, c1, emb_dim)
        self.up1 = _ResBlock(2 * c1, c1, emb_dim)
        self.out_norm = nn.GroupNorm(8, c1)
        self.out = nn.Conv2d(c1, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if late:
            self.head_inp = nn.Conv2d(c1 + in_channels + 1, c1, 3, padding=1)
            self.head = nn.ModuleList(_ResBlock(c1, c1, emb_dim) for _ in range(head_blocks))
            self.head_norm = nn.GroupNorm(8, c1)
            self.head_out = nn.Conv2d(c1, in_channels, 3, padding=1)
            nn.init.zeros_(self.head_out.weight)
            nn.init.zeros_(self.head_out.bias)

    @property
    def shares_trunk(self) -> bool:
        """Whether :meth:`forward_copies` computes the trunk once for ``K`` conditions."""
        return self.late

    def encode_condition(self, value: object) -> Tensor:
        """A position ``(x, y)`` in ``[0, 1]²`` (or a batch ``(B, 2)``) as ``(x, y, 1)``;
        ``ValueError`` outside the square."""
        p = torch.as_tensor(value, dtype=torch.float32, device=self.out.weight.device)
        if p.shape[-1:] != (2,):
            raise ValueError(f"a position is (x, y) in [0, 1]²; got shape {tuple(p.shape)}")
        if ((p < 0) | (p > 1)).any() or not bool(torch.isfinite(p).all()):
            raise ValueError("positions must lie in [0, 1]² (x right, y down)")
        return torch.cat([p, torch.ones_like(p[..., :1])], dim=-1)

    def null_condition(self, n: int) -> Tensor:
        """The null condition ``(0, 0, 0)`` for ``n`` chains, shape ``(n, 3)``."""
        return torch.zeros(n, 3, device=self.out.weight.device)

    def _bump(self, c: Tensor) -> Tensor:
        grid = (torch.arange(self.size, device=c.device, dtype=c.dtype) + 0.5) / self.size
        dx = (grid[None, None, :] - c[:, 0, None, None]) * self.size
        dy = (grid[None, :, None] - c[:, 1, None, None]) * self.size
        return c[:, 2, None, None] * torch.exp(-(dx**2 + dy**2) / (2 * self.bump**2))

    def _position_embedding(self, c: Tensor) -> Tensor:
        angles = c[:, :2, None] * self.freqs.to(c.dtype)  # (B, 2, 4)
        fourier = torch.cat([angles.sin().flatten(1), angles.cos().flatten(1), c[:, 2:]], 1)
        return self.cond_embed(fourier * c[:, 2:])

    def _unet(self, x: Tensor, emb: Tensor) -> Tensor:
        h1 = self.down1(self.inp(x), emb)
        h2 = self.down2(F.avg_pool2d(h1, 2), emb)
        h3 = self.down3(F.avg_pool2d(h2, 2), emb)
        h = self.mid(h3, emb)
        h = self.up3(torch.cat([h, h3], 1), emb)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), emb)
        return self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), emb)

    def _head(self, x: Tensor, h: Tensor, emb: Tensor, c: Tensor) -> Tensor:
        """The late head's residual ``Δε̂(x, t, c)``, zero for the null condition."""
        g = self.head_inp(torch.cat([x, h, self._bump(c)[:, None]], 1))
        emb = emb + self._position_embedding(c)
        for block in self.head:
            g = block(g, emb)
        return c[:, 2, None, None, None] * self.head_out(F.silu(self.head_norm(g)))

    def _out(self, h: Tensor) -> Tensor:
        return self.out(F.silu(self.out_norm(h)))

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        c = self.null_condition(x.shape[0]).to(x.dtype) if c is None else c.to(x.dtype)
        if self.late:
            return self.forward_copies(x, t, c)
        emb = self.embed(t) + self._position_embedding(c)
        return self._out(self._unet(torch.cat([x, self._bump(c)[:, None]], 1), emb))

    def forward_copies(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        """``forward`` on ``K`` copies of the batch, copy ``k`` with conditions
        ``c[k·B:(k+1)·B]``: ``(x (B, …), t (B,), c (K·B, 3)) -> (K·B, …)``. A late-conditioned
        network runs its trunk once; otherwise this is ``forward`` on the stacked copies."""
        k = c.shape[0] // x.shape[0]
        if not self.late:
            return self.forward(torch.cat([x] * k), t.repeat(k), c)
        if c.shape[0] != k * x.shape[0]:
            raise ValueError(f"{c.shape[0]} conditions are not a multiple of {x.shape[0]} rows")
        emb = self.embed(t)
        h = self._unet(x, emb)
        delta = self._head(torch.cat([x] * k), torch.cat([h] * k), emb.repeat(k, 1), c.to(x.dtype))
        return torch.cat([self._out(h)] * k) + delta


NETWORKS: dict[str, type[nn.Module]] = {"resmlp": ResMLP, "time_classifier": TimeClassifier,
                                        "position_unet": PositionUNet}


def register_network(arch: str, cls: type[nn.Module]) -> None:
    """Make ``cls`` buildable (and its model files loadable) under ``config["arch"] == arch``.

    ``cls(**config_without_arch)`` must rebuild the network; set ``self.config`` to that dict.
    """
    if arch in NETWORKS and NETWORKS[arch] is not cls:
        raise ValueError(f"network architecture {arch!r} is already registered")
    NETWORKS[arch] = cls


def build_network(config: dict) -> nn.Module:
    """Instantiate a network from its ``config`` dict (``arch`` plus constructor arguments)."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in NETWORKS:
        raise ValueError(f"unknown network architecture {arch!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[arch](**config)
