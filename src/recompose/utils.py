"""Shape-agnostic helpers: broadcasting, reductions, time handling, autograd energy -> score.

All broadcasting in the library goes through :func:`append_dims` and every reduction over the
event dimensions through :func:`batch_sum`, so one code path serves ``(B, 2)`` points and
``(B, C, H, W)`` images.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["append_dims", "batch_sum", "as_time", "per_chain", "energy_and_score_autograd",
           "keep_graph", "graph_kept",
           "check_finite", "check_event_shape"]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``v`` (shape ``(B,)`` or ``()``) until it has ``ndim``."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of rank {v.ndim} to rank {ndim}")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def batch_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, *D) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def as_time(t: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """Return ``t`` as a ``(B,)`` tensor on ``like``'s device and dtype.

    Accepts a Python number, a 0-d tensor or a ``(B,)`` tensor.
    """
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


_KEEP_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar("keep_graph", default=False)


@contextlib.contextmanager
def keep_graph() -> Iterator[None]:
    """Scores computed inside stay differentiable in ``x`` (energy models' autograd scores
    keep their graph; compiled hand-written gradients fall back to autograd)."""
    token = _KEEP_GRAPH.set(True)
    try:
        yield
    finally:
        _KEEP_GRAPH.reset(token)


def graph_kept() -> bool:
    """Whether :func:`keep_graph` is active."""
    return _KEEP_GRAPH.get()


def energy_and_score_autograd(
    energy_fn: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Evaluate ``E(x)`` and ``s(x) = -∇ₓ E(x)`` with one forward and one backward pass.

    Runs under ``torch.enable_grad()`` so it works inside ``torch.no_grad()`` sampling loops.
    Returns detached tensors unless ``create_graph`` (training differentiates through ∇ₓE).
    Inside :func:`keep_graph`, with ``x`` requiring grad, the score stays a differentiable
    function of ``x`` itself (reward guidance differentiates through it).
    """
    if graph_kept() and x.requires_grad:
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return energy, -grad
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        energy = energy_fn(xg)
        if energy.shape != (x.shape[0],):
            raise ValueError(f"energy must have shape ({x.shape[0]},), got {tuple(energy.shape)}")
        (grad,) = torch.autograd.grad(energy.sum(), xg, create_graph=create_graph)
    if create_graph:
        return energy, -grad
    return energy.detach(), -grad.detach()


def check_finite(x: Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` (naming ``what`` and the bad rows) if ``x`` has NaN/inf."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        raise FloatingPointError(f"{what}: {int(bad.sum())} of {x.shape[0]} chains are not finite")


def per_chain(value: float | Tensor, x: Tensor) -> Tensor:
    """A scalar or ``(B,)`` value as a ``(B, 1, …)`` tensor broadcastable against ``x``."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"expected a scalar or shape ({x.shape[0]},), got {tuple(v.shape)}")
    return append_dims(v, x.ndim)


def check_event_shape(x: Tensor, event_shape: tuple[int, ...], what: str) -> None:
    """Refuse ``x`` unless it is ``(B, *event_shape)``, in one line naming the model."""
    if tuple(x.shape[1:]) != tuple(event_shape) or x.ndim != 1 + len(event_shape):
        want = ", ".join(["B", *map(str, event_shape)])
        raise ValueError(f"{what} takes x of shape ({want}), got {tuple(x.shape)}")
