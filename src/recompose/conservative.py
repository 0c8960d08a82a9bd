r"""Is a learned score field a gradient? The antisymmetric part of its Jacobian.

An energy model's score ``s = −∇ₓE`` is a gradient field by construction; a score (ε) network
is free to learn any field. Two tools assume a gradient: **energy distillation**
(:mod:`recompose.training.distill`) fits ``−∇E_θ`` to the teacher's field, so whatever of the
field is not a gradient it cannot learn; and **score-only Metropolis tests**
(:mod:`recompose.mcmc.path`) integrate ``s`` along a path, which gives a path-independent
energy difference only for a gradient field.

A differentiable field ``F: ℝᴰ → ℝᴰ`` is locally a gradient iff its Jacobian ``J = ∂F/∂x`` is
symmetric. Split ``J = S + A`` (``S = ½(J + Jᵀ)``, ``A = ½(J − Jᵀ)``) and report

    ρ = ‖A‖²_F / ‖S‖²_F          (0 for a gradient field; 1 when both parts are equally big)

estimated without forming ``J``: for independent ``u, v ~ N(0, I)``,

    uᵀJv − vᵀJu = 2 uᵀAv,   uᵀJv + vᵀJu = 2 uᵀSv,   E[(uᵀMv)²] = ‖M‖²_F

and ``uᵀJv = (Jᵀu)·v`` needs only vector–Jacobian products, so each probe costs two backward
passes through the field. :func:`jacobian_asymmetry` pools over the batch and the probes,
``ρ̂ = Σ (uᵀJv − vᵀJu)² / Σ (uᵀJv + vᵀJu)²`` (a ratio of means: consistent, not unbiased;
:func:`asymmetry_terms` gives the per-row sums, :func:`asymmetry_ratio` the estimate with its
standard error). The
rows of a batch are separate inputs: ``F``'s ``(B, *D)`` output row ``b`` must depend on input
row ``b`` alone, so ``J`` is block diagonal and the products are per row.

Where it matters most is a **difference** of two nearly gradient fields: a conditional model's
condition contrast ``s(x, c) − s(x, ∅)``, what products over conditions and guidance add
(docs/results.md §8.5). Its Jacobian is the difference of two nearly symmetric Jacobians, so a
small antisymmetric part of each can be a large part of the difference. The contrast of a
conditional model ``m`` is itself a model, ``m.given(c) / m``, and :func:`score_field` gives
any model's score as a differentiable function of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .models.base import DiffusionModel
from .utils import batch_sum

__all__ = ["score_field", "asymmetry_terms", "asymmetry_ratio", "jacobian_asymmetry"]

Field = Callable[[Tensor], Tensor]


def score_field(model: DiffusionModel, t: float | Tensor) -> Field:
    """``x ↦ s(x, t)`` with a graph to ``x``: ``−∇ₓE`` (kept differentiable) for a model with
    energies, the network's score otherwise."""
    if not model.has_energy:
        return lambda x: model.score(x, t)

    def minus_grad_energy(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model.energy(x, t).sum(), x, create_graph=True)
        return -grad

    return minus_grad_energy


def asymmetry_terms(field: Field, x: Tensor, generator: torch.Generator | None = None,
                    probes: int = 8) -> tuple[Tensor, Tensor]:
    """Per row of ``x`` (``(B, *D)``), summed over ``probes`` pairs of Gaussian probes (drawn
    from ``generator``): ``(Σ (uᵀJv − vᵀJu)², Σ (uᵀJv + vᵀJu)²)``, two ``(B,)`` float64
    tensors whose expectations are ``4·probes·‖A‖²`` and ``4·probes·‖S‖²``."""
    if probes < 1:
        raise ValueError(f"probes must be ≥ 1, got {probes}")
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        f = field(xg)
        if f.shape != x.shape:
            raise ValueError(f"the field must have the shape of x {tuple(x.shape)}, got "
                             f"{tuple(f.shape)}")
        if not f.requires_grad:
            raise ValueError("the field's output has no graph to x; pass a differentiable "
                             "field (recompose.conservative.score_field(model, t) gives one)")
        anti = sym = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(probes):
            u, v = (torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                    for _ in range(2))
            (jt_u,) = torch.autograd.grad(f, xg, u, retain_graph=True)
            (jt_v,) = torch.autograd.grad(f, xg, v, retain_graph=True)
            ujv, vju = batch_sum(jt_u * v).double(), batch_sum(jt_v * u).double()
            anti = anti + (ujv - vju) ** 2
            sym = sym + (ujv + vju) ** 2
    return anti.detach(), sym.detach()


def asymmetry_ratio(anti: Tensor, sym: Tensor) -> tuple[float, float]:
    """``ρ̂ = Σ a / Σ s`` from :func:`asymmetry_terms`' per-row sums, and its standard error (the
    ratio estimator's, from the spread of ``a_i − ρ̂ s_i`` over the independent rows; 0 for one
    row)."""
    if not sym.sum() > 0:
        raise ValueError("the field's Jacobian is zero at these points (or not finite): "
                         "its asymmetry is undefined")
    rho = anti.sum() / sym.sum()
    n = len(anti)
    spread = (anti - rho * sym).pow(2).sum() * n / (n - 1) if n > 1 else torch.zeros(())
    return float(rho), float(spread.sqrt() / sym.sum())


def jacobian_asymmetry(field: Field, x: Tensor, generator: torch.Generator | None = None,
                       probes: int = 8) -> float:
    """``ρ̂ = ‖A‖²/‖S‖²`` of ``field``'s Jacobian at the points ``x`` (``(B, *D)``), pooled over
    the rows and ``probes`` pairs of Gaussian probes (drawn from ``generator``)."""
    return asymmetry_ratio(*asymmetry_terms(field, x, generator, probes))[0]
