r"""``(U, ∇ₓU)`` of a residual-MLP energy by a hand-derived backward pass, for ``torch.compile``.

The network (:class:`~.networks.ResMLP`; ``e`` its time and class embedding, rows independent):

    h₀ = W_in x + b_in
    block k:  x̂ = (h − μ(h)) r,   r = (var(h) + ε)^{−1/2},   n = γ ⊙ x̂ + β    (LayerNorm)
              a = silu(n),   z = W₁ a + b₁ + W_e e,   u = silu(z),   h ← h + W₂ u + b₂
    f = W_out h + b_out,     U = ‖f − x‖²  ("ae")   or   ½‖f‖²  ("l2"),   shape (B,)

Backward (``g_v = ∂U/∂v`` per row, ``silu′(v) = σ(v)(1 + v(1 − σ(v)))``):

    g_f = 2(f − x) ("ae") or f ("l2"),        g_h = W_outᵀ g_f
    block k, last to first:  g_z = (W₂ᵀ g_h) ⊙ silu′(z),   g_x̂ = (W₁ᵀ g_z) ⊙ silu′(n) ⊙ γ,
              g_h ← g_h + r (g_x̂ − mean(g_x̂) − x̂ ⊙ mean(g_x̂ ⊙ x̂))
    ∇ₓU = W_inᵀ g_h − g_f ("ae") or W_inᵀ g_h ("l2")

Eager, this is slower than autograd (every line above is a separate kernel); compiled, the
elementwise lines fuse into a few loops around the matrix products, which autograd's graph does
not allow. Two rewrites cut work without changing the function (beyond float rounding):

* a time shared by the whole batch is embedded once and folded into ``b₁`` (:meth:`_Block.inner`);
* when the data dimension ``D`` is under the width, the last block's ``W₂`` folds into the
  output layer: ``f = W_out h₃ + (W_out W₂) u + (W_out b₂ + b_out)``, so the two largest
  products of that block (width × width, forward and backward) become ``D × width`` ones —
  for the 2D MLP, 14 instead of 16 large products per call.

Shapes: ``x (B, *D)``, ``t (B,)``, optional encoded conditions ``c (B,)`` → ``U (B,)``,
``∇ₓU (B, *D)``. Used by :meth:`~.parameterization.EnergyModel.compile_gradient`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .networks import ResMLP

__all__ = ["resmlp_potential_and_gradient"]


def _dsilu(v: Tensor, sig: Tensor) -> Tensor:
    return sig * (1 + v * (1 - sig))


def resmlp_potential_and_gradient(net: ResMLP, form: str, x: Tensor, t: Tensor,
                                  c: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(U_θ(x, t), ∇ₓU_θ(x, t))`` for ``form`` ``"ae"`` or ``"l2"`` (module docstring)."""
    shape, xf = x.shape, x.reshape(x.shape[0], -1)
    emb = net.embedding(t, c)
    blocks = list(net.blocks)
    fold = bool(blocks) and net.out.weight.shape[0] < net.out.weight.shape[1]
    h = net.inp(xf)
    saved = []
    for k, block in enumerate(blocks):
        centred = h - h.mean(1, keepdim=True)
        r = torch.rsqrt((centred * centred).mean(1, keepdim=True) + block.norm.eps)
        xhat = centred * r
        n = xhat * block.norm.weight + block.norm.bias
        sig_n = torch.sigmoid(n)
        z = block.inner(n * sig_n, emb)
        sig_z = torch.sigmoid(z)
        saved.append((xhat, r, n, sig_n, z, sig_z))
        if not (fold and k == len(blocks) - 1):
            h = h + block.fc2(z * sig_z)
    w_out = net.out.weight
    if fold:
        last = blocks[-1].fc2
        w_last = w_out @ last.weight  # (D, inner): W_out W₂
        z, sig_z = saved[-1][4:]
        f = (net.out(h) + w_out @ last.bias) + (z * sig_z) @ w_last.T
    else:
        f = net.out(h)
    if form == "ae":
        resid = f - xf
        u, g_f = (resid * resid).sum(1), 2 * resid
    else:
        u, g_f = 0.5 * (f * f).sum(1), f
    g_h = g_f @ w_out
    for k in reversed(range(len(blocks))):
        block, (xhat, r, n, sig_n, z, sig_z) = blocks[k], saved[k]
        g_u = g_f @ w_last if fold and k == len(blocks) - 1 else g_h @ block.fc2.weight
        g_xhat = ((g_u * _dsilu(z, sig_z)) @ block.fc1.weight) * _dsilu(n, sig_n) \
            * block.norm.weight
        g_h = g_h + r * (g_xhat - g_xhat.mean(1, keepdim=True)
                         - xhat * (g_xhat * xhat).mean(1, keepdim=True))
    grad = g_h @ net.inp.weight
    if form == "ae":
        grad = grad - g_f
    return u, grad.reshape(shape)
