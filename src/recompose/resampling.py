r"""Weighted particles: normalised log-weights, effective sample size, resampling schemes.

``n`` particles carry log-weights ``ℓ_j`` (any constant shift is irrelevant). In float64::

    W_j = exp(ℓ_j − logsumexp(ℓ))                 normalised weights, Σ_j W_j = 1
    ESS = 1 / Σ_j W_j²                             n for equal weights, 1 for one particle

A resampling scheme draws ancestor indices ``A_1 … A_n`` whose offspring counts
``N_j = #{k : A_k = j}`` are unbiased, ``E[N_j] = n W_j``; they differ in variance
(Douc, Cappé & Moulines 2005). With ``u`` uniform on ``[0, 1)`` and the cumulative weights
``C_j = Σ_{l ≤ j} W_l``, ancestor ``A_k`` is the first ``j`` with ``C_j > U_k``, where::

    multinomial   U_k = n independent uniforms, sorted
    stratified    U_k = (k + u_k) / n        one uniform per stratum
    systematic    U_k = (k + u) / n          one uniform for all (lowest variance in practice)
    residual      ⌊n W_j⌋ copies of j, then the remaining r = n − Σ⌊n W_j⌋ by multinomial
                  on the residual weights n W_j − ⌊n W_j⌋

Indices come back sorted, shape ``(n,)`` ``int64``, on the weights' device.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SCHEMES", "normalize_log_weights", "effective_sample_size", "resample"]

SCHEMES = ("systematic", "stratified", "multinomial", "residual")


def normalize_log_weights(log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """``(log W, logsumexp ℓ)`` in float64; refuses NaN (``−inf``, a zero weight, is allowed)."""
    lw = log_weights.to(torch.float64)
    if bool(torch.isnan(lw).any()) or bool((lw == float("inf")).any()):
        raise FloatingPointError("particle log-weights are NaN or +inf")
    total = torch.logsumexp(lw, dim=0)
    if not bool(torch.isfinite(total)):
        raise FloatingPointError("every particle has zero weight (all log-weights are -inf)")
    return lw - total, total


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``1 / Σ W_j²`` of (unnormalised) log-weights, a float64 0-d tensor."""
    log_w, _ = normalize_log_weights(log_weights)
    return torch.exp(-torch.logsumexp(2 * log_w, dim=0))


def _search(cdf: Tensor, u: Tensor) -> Tensor:
    """First index ``j`` with ``cdf[j] > u`` (clamped: rounding may leave ``cdf[-1] < 1``)."""
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[0] - 1)


def resample(log_weights: Tensor, scheme: str = "systematic", num: int | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Ancestor indices ``(num,)`` (default ``num = n``) drawn by ``scheme`` (module docstring)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose one of "
                         f"{', '.join(SCHEMES)}")
    log_w, _ = normalize_log_weights(log_weights)
    w = log_w.exp()
    n = w.shape[0] if num is None else int(num)
    dev = w.device
    if scheme == "residual":
        copies = torch.floor(n * w)
        kept = torch.repeat_interleave(torch.arange(w.shape[0], device=dev), copies.long())
        rest = n - kept.shape[0]
        if rest == 0:
            return kept
        residual = n * w - copies
        extra = _search(torch.cumsum(residual / residual.sum(), 0),
                        _uniforms(rest, "multinomial", generator, dev))
        return torch.sort(torch.cat([kept, extra])).values
    return _search(torch.cumsum(w, 0), _uniforms(n, scheme, generator, dev))


def _uniforms(n: int, scheme: str, generator: torch.Generator | None,
              device: torch.device) -> Tensor:
    """The sorted points ``U_1 ≤ … ≤ U_n`` in ``[0, 1)`` of each scheme, float64."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    if scheme == "systematic":
        return (k + torch.rand((), generator=generator, dtype=torch.float64, device=device)) / n
    if scheme == "stratified":
        return (k + torch.rand(n, generator=generator, dtype=torch.float64, device=device)) / n
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    return torch.sort(u).values
