r"""Conditional models: a condition fixed (:class:`Conditioned`), and many conditions of one
network evaluated in a single batched call (:func:`shared_network_terms`).

A conditional network ``f_θ(x, t, c)`` trained with condition dropout defines a family of
densities ``p_t(x | c)`` plus the unconditional ``p_t(x)`` (the null condition ``c = ∅``).
``model.given(c)`` is the leaf model ``p_t(x | c)``; ``model`` itself is ``p_t(x)``.

**Batched terms.** A product over ``K`` conditions of the same network, each raised to ``w_k``
(CLEVR: one factor per object position; classifier-free guidance: ``p(x)^{1−w} p(x|y)^w``),
has

    E(x, t) = Σ_k w_k E_θ(x, t, c_k),        s(x, t) = Σ_k w_k s_θ(x, t, c_k).

Instead of ``K`` network calls on ``B`` chains, :func:`shared_network_terms` stacks the
``K`` copies of ``x`` into one ``(K·B, *D)`` batch with conditions ``(c_1…c_1, …, c_K…c_K)``,
calls the network once, and reduces the ``(K, B)`` energies (or ``(K, B, *D)`` ε's) with the
weights. Autograd through the stacking sums the gradients of the copies, so the score is
exact. :class:`~recompose.compose.Product` does this by itself for factors sharing a network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..utils import append_dims, as_time, energy_and_score_autograd
from .base import DiffusionModel

__all__ = ["Conditioned", "shared_network_terms", "condition_batch"]


def condition_batch(model: DiffusionModel, cond: Tensor | None, n: int) -> Tensor:
    """Encoded conditions for ``n`` chains: the null condition, one broadcast, or per chain."""
    net = model.net
    if cond is None:
        return net.null_condition(n)
    event_ndim = getattr(net, "condition_ndim", 0)
    if cond.ndim == event_ndim:
        return cond.expand((n,) + tuple(cond.shape))
    if cond.shape[0] != n:
        raise ValueError(
            f"{model.describe()}: got conditions for {cond.shape[0]} chains but {n} chains"
        )
    return cond


class Conditioned(DiffusionModel):
    """``p_t(x | c)`` for a fixed condition ``c`` (one value, or one per chain)."""

    def __init__(self, parent: DiffusionModel, value: object, name: str | None = None) -> None:
        super().__init__()
        self.parent = parent
        self.value = value
        self.cond = parent.net.encode_condition(value)
        self.schedule = parent.schedule
        self.event_shape = tuple(parent.event_shape)
        self.has_energy = parent.has_energy
        if name is None:
            small = not isinstance(value, Tensor) or value.numel() <= 4
            shown = (value.tolist() if isinstance(value, Tensor) else value) if small else "…"
            name = f"{parent.describe()}|{shown}"
        self.name = name

    def _c(self, x: Tensor) -> Tensor:
        return condition_batch(self.parent, self.cond.to(x.device), x.shape[0])

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)  # raises the capability error
        return self.parent.energy(x, t, self._c(x))

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.parent.score(x, t, self._c(x))

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_energy:
            return super().energy_and_score(x, t)
        return self.parent.energy_and_score(x, t, self._c(x))


def _stack(parent: DiffusionModel, x: Tensor, t: float | Tensor,
           conds: Sequence[Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    b, k = x.shape[0], len(conds)
    xs = torch.cat([x] * k)
    ts = as_time(t, b, x).repeat(k)
    cs = torch.cat([condition_batch(parent, None if c is None else c.to(x.device), b)
                    for c in conds])
    return xs, ts, cs


def shared_network_terms(
    parent: DiffusionModel, x: Tensor, t: float | Tensor, conds: Sequence[Tensor | None],
    weights: Sequence[float], need: str = "both",
) -> tuple[Tensor | None, Tensor | None]:
    """``(Σ_k w_k E(x, t, c_k), Σ_k w_k s(x, t, c_k))`` from one network call on ``K·B`` inputs.

    ``need`` is ``"energy"``, ``"score"`` or ``"both"``; the other entry is ``None``.
    """
    b, k = x.shape[0], len(conds)
    w = torch.tensor(list(weights), dtype=x.dtype, device=x.device)
    t_b = as_time(t, b, x)
    _, sigma = parent.schedule(t_b)
    if parent.has_energy:
        def energy(z: Tensor) -> Tensor:
            xs, ts, cs = _stack(parent, z, t_b, conds)
            u = parent.potential(xs, ts, cs).reshape(k, b)
            return (w[:, None] * u).sum(0) / sigma

        if need == "energy":
            return energy(x), None
        e, s = energy_and_score_autograd(energy, x)
        return (e if need == "both" else None), s
    xs, ts, cs = _stack(parent, x, t_b, conds)
    eps = parent.epsilon(xs, ts, cs).reshape((k, b) + tuple(x.shape[1:]))
    eps = (append_dims(w, eps.ndim) * eps).sum(0)
    return None, -eps / append_dims(sigma, x.ndim)
