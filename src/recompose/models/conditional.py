r"""Conditional models: a condition fixed (:class:`Conditioned`), and the stacking that lets many
conditions of one network share a single batched call (:func:`stack_copies`,
:func:`weighted_sum`).

A conditional network ``f_θ(x, t, c)`` trained with condition dropout defines a family of
densities ``p_t(x | c)`` plus the unconditional ``p_t(x)`` (the null condition ``c = ∅``).
``model.given(c)`` is the leaf model ``p_t(x | c)``; ``model`` itself is ``p_t(x)``.

**Batched terms.** A product over ``K`` conditions of the same network, each raised to ``w_k``
(CLEVR: one factor per object position; classifier-free guidance: ``p(x)^{1−w} p(x|y)^w``),
has

    E(x, t) = Σ_k w_k E_θ(x, t, c_k),        s(x, t) = Σ_k w_k s_θ(x, t, c_k).

Instead of ``K`` network calls on ``B`` chains, :func:`stack_copies` stacks the ``K`` copies of
``x`` into one ``(K·B, *D)`` batch with conditions ``(c_1…c_1, …, c_K…c_K)``, the network is
called once, and :func:`weighted_sum` reduces its ``(K·B, …)`` output with the weights. Autograd
through the stacking sums the gradients of the copies, so a score obtained as ``−∇ₓE`` is exact.
Which network output is stacked, and how it becomes an energy or a score, is the
parameterisation's business (:meth:`~recompose.models.parameterization.EnergyModel.stacked`,
:meth:`~recompose.models.parameterization.ScoreModel.stacked`); a leaf joins such a call
through its :attr:`~recompose.models.base.DiffusionModel.batch_slot`, and
:class:`~recompose.compose.Product` groups its factors by that slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..utils import append_dims, as_time
from .base import BatchSlot, DiffusionModel

__all__ = ["Conditioned", "condition_batch", "stack_copies", "weighted_sum"]


def condition_batch(model: DiffusionModel, cond: Tensor | None, n: int) -> Tensor:
    """Encoded conditions for ``n`` chains: the null condition, one broadcast, or per chain."""
    net = model.net
    if cond is None:
        return net.null_condition(n)
    event_ndim = getattr(net, "condition_ndim", 0)
    if cond.ndim == event_ndim:
        return cond.expand((n,) + tuple(cond.shape))
    if cond.shape[0] != n:
        raise ValueError(f"{model.describe()}: got conditions for {cond.shape[0]} chains but {n} "
                         "chains")
    return cond


class Conditioned(DiffusionModel):
    """``p_t(x | c)`` for a fixed condition ``c`` (one value, or one per chain)."""

    def __init__(self, parent: DiffusionModel, value: object, name: str | None = None) -> None:
        super().__init__()
        self.parent, self.value, self.cond = parent, value, parent.net.encode_condition(value)
        self.schedule, self.event_shape = parent.schedule, tuple(parent.event_shape)
        self.has_energy = parent.has_energy
        if name is None:
            small = not isinstance(value, Tensor) or value.numel() <= 4
            shown = (value.tolist() if isinstance(value, Tensor) else value) if small else "…"
            name = f"{parent.describe()}|{shown}"
        self.name = name

    @property
    def batch_slot(self) -> BatchSlot:
        """A view of the parent's network: it joins the parent's batched call with ``c``."""
        return BatchSlot(self.parent, self.cond)

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


def stack_copies(model: DiffusionModel, x: Tensor, t: float | Tensor,
                 conditions: Sequence[Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    """One network batch for ``K = len(conditions)`` copies of ``B`` chains.

    Args:
        model: the conditional model whose network will be called (see :func:`condition_batch`).
        x: ``(B, *D)`` chains; t: scalar or ``(B,)`` times.
        conditions: ``K`` encoded conditions (``None`` = null), each one value or one per chain.

    Returns:
        ``(xs, ts, cs)`` of shapes ``(K·B, *D)``, ``(K·B,)``, ``(K·B, …)``; copy ``k`` occupies
        rows ``k·B … (k+1)·B − 1``.
    """
    b, k = x.shape[0], len(conditions)
    xs = torch.cat([x] * k)
    ts = as_time(t, b, x).repeat(k)
    cs = torch.cat([condition_batch(model, None if c is None else c.to(x.device), b)
                    for c in conditions])
    return xs, ts, cs


def weighted_sum(stacked: Tensor, weights: Sequence[float]) -> Tensor:
    """``Σ_k w_k v_k`` of a ``(K·B, …)`` batch laid out by :func:`stack_copies` -> ``(B, …)``."""
    k = len(weights)
    v = stacked.reshape((k, stacked.shape[0] // k) + tuple(stacked.shape[1:]))
    w = torch.tensor(list(weights), dtype=v.dtype, device=v.device)
    return (append_dims(w, v.ndim) * v).sum(0)
