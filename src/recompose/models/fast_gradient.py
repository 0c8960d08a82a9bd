r"""A hand-derived energy gradient for the residual MLP (:class:`~.networks.ResMLP`): the same
numbers as autograd, without building a graph.

Forward (one block; ``LN`` with weight ``γ``, bias ``β``; ``e`` the time(-and-class) embedding)::

    h₀ = W_in x + b_in
    n = LN(h),  a = silu(n),  z = W₁ a + b₁ + W_e e,  s = silu(z),  h ← h + W₂ s + b₂
    f = W_out h + b_out

Potential (:class:`~.parameterization.EnergyModel`): ``U = ‖f − x‖²`` (``"ae"``) or
``½‖f‖²`` (``"l2"``), per sample, shape ``(B,)``. Its input gradient by the chain rule, with
``g = ∂U/∂f`` (``2(f − x)`` or ``f``)::

    ḡ_h = W_outᵀ g;  per block, in reverse:  ḡ_z = (W₂ᵀ ḡ_h) ⊙ silu′(z),
    ḡ_n = (W₁ᵀ ḡ_z) ⊙ silu′(n),  ḡ_h ← ḡ_h + LN′(ḡ_n)
    ∇ₓU = W_inᵀ ḡ_h  (− 2(f − x) for "ae")

with ``silu′(u) = σ(u)(1 + u(1 − σ(u)))`` and, for ``n̂ = (h − μ)/ρ``
(``ρ = √(var + ε)``), ``LN′(v) = (v̂ − mean(v̂) − n̂ · mean(v̂ ⊙ n̂))/ρ``, ``v̂ = γ ⊙ v``.

Two savings beyond the graph: when every sample has the same ``t`` (the samplers' case) the
embedding terms ``W_e e + b₁`` are computed for one row and broadcast; and the sigmoids are
computed once for both ``silu`` and ``silu′``. :func:`potential_and_grad` is used by
``EnergyModel.energy_and_score`` for ResMLP networks when no graph is wanted (sampling); training
(``create_graph``) keeps autograd. ``tests/test_fast_gradient.py`` checks it against autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .networks import ResMLP

__all__ = ["supports", "potential_and_grad"]


def supports(net: object) -> bool:
    """The fast path covers the residual MLP (conditional or not)."""
    return type(net) is ResMLP


def _embedding(net: ResMLP, t: Tensor, c: Tensor | None, n: int) -> Tensor:
    """``e`` for the batch: one row when ``t`` (and the condition) is shared."""
    shared = t.ndim == 0 or bool((t == t[:1]).all())
    if shared and (not net.conditional or c is None or bool((c == c[:1]).all())):
        e = net.embed(t.reshape(-1)[:1])
        if net.conditional:
            cls = net.null_condition(1) if c is None else c[:1]
            e = e + net.class_embed(cls)
        return e  # (1, E), broadcast below
    e = net.embed(t.expand(n) if t.ndim == 0 else t)
    if net.conditional:
        e = e + net.class_embed(net.null_condition(n) if c is None else c)
    return e


def potential_and_grad(net: ResMLP, x: Tensor, t: Tensor, form: str,
                       c: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(U (B,), ∇ₓU (B, *D))`` of the energy form ``form`` on ``net`` (module docstring)."""
    with torch.no_grad():
        shape = x.shape
        xf = x.reshape(shape[0], -1)
        e = _embedding(net, t, c, shape[0])
        h = F.linear(xf, net.inp.weight, net.inp.bias)
        saved = []
        for block in net.blocks:
            ln = block.norm
            mu = h.mean(1, keepdim=True)
            centred = h - mu
            rho = (centred.square().mean(1, keepdim=True) + ln.eps).sqrt()
            n_hat = centred / rho
            nrm = n_hat * ln.weight + ln.bias
            sig_n = torch.sigmoid(nrm)
            z = F.linear(nrm * sig_n, block.fc1.weight) + F.linear(e, block.emb.weight,
                                                                   block.emb.bias + block.fc1.bias)
            sig_z = torch.sigmoid(z)
            h = h + F.linear(z * sig_z, block.fc2.weight, block.fc2.bias)
            saved.append((n_hat, rho, nrm, sig_n, z, sig_z))
        f = F.linear(h, net.out.weight, net.out.bias)
        if form == "ae":
            r = f - xf
            u, g = r.square().sum(1), 2 * r
        else:
            u, g = 0.5 * f.square().sum(1), f
        gh = g @ net.out.weight
        for block, (n_hat, rho, nrm, sig_n, z, sig_z) in zip(reversed(net.blocks),
                                                             reversed(saved)):
            gz = (gh @ block.fc2.weight) * (sig_z * (1 + z * (1 - sig_z)))
            gn = (gz @ block.fc1.weight) * (sig_n * (1 + nrm * (1 - sig_n)))
            v = gn * block.norm.weight
            gh = gh + (v - v.mean(1, keepdim=True)
                       - n_hat * (v * n_hat).mean(1, keepdim=True)) / rho
        grad = gh @ net.inp.weight
        if form == "ae":
            grad = grad - g
        return u, grad.reshape(shape)
