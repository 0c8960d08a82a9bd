r"""Exact diffused Gaussian mixtures: the test oracle and the toy ground truth.

If ``x_0 ~ Σ_k w_k N(μ_k, Σ_k)`` then under ``x_t = α_t x_0 + σ_t ε``::

    p_t(x) = Σ_k w_k N(x; α_t μ_k, C_k(t)),     C_k(t) = α_t² Σ_k + σ_t² I

With ``Σ_k = U_k diag(λ_k) U_kᵀ`` (eigendecomposition, computed once), ``C_k(t)`` has the same
eigenvectors and eigenvalues ``α_t² λ_k + σ_t²``, so any ``t`` (even one per sample) costs no
matrix factorisation. Writing ``y_k = x − α_t μ_k`` and ``r_k(x)`` for the responsibilities::

    E(x, t) = −log p_t(x)                                   (normalised: exact, no constant)
    s(x, t) = −Σ_k r_k(x) C_k(t)⁻¹ y_k

Shapes: ``x`` is ``(B, *event_shape)`` and is flattened to ``(B, D)`` internally; computation
is in float64 and results come back in ``x``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import CompositionError
from ..schedules import CosineSchedule, Schedule
from ..utils import as_time, check_event_shape
from .base import DiffusionModel

__all__ = ["GaussianMixture", "gmm_product", "gmm_log_overlap"]


def _as64(v: object) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


class GaussianMixture(DiffusionModel):
    """Exact time-``t`` marginals of a Gaussian mixture under a VP diffusion.

    Args:
        means: ``(K, D)`` component means (``D = prod(event_shape)``).
        stds: standard deviations: a scalar, ``(K,)`` or ``(K, D)`` (diagonal covariances).
        weights: ``(K,)`` positive mixture weights (normalised here); default equal.
        covs: ``(K, D, D)`` full covariances instead of ``stds``.
        schedule: the diffusion's noise schedule (default cosine).
        event_shape: shape of one sample, e.g. ``(1, 8, 8)``; default ``(D,)``.
        name: label used in messages and plots.
    """

    has_energy = True

    def __init__(
        self, means: Tensor | Sequence, stds: Tensor | float | Sequence | None = None,
        weights: Tensor | Sequence | None = None, *, covs: Tensor | Sequence | None = None,
        schedule: Schedule | None = None, event_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        means = _as64(means)
        if means.ndim != 2:
            raise CompositionError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.ones(k, dtype=torch.float64) if weights is None else _as64(weights)
        if weights.shape != (k,) or not bool((weights > 0).all() & torch.isfinite(weights).all()):
            raise CompositionError(f"weights must be {k} positive finite numbers")
        if (stds is None) == (covs is None):
            raise CompositionError("give exactly one of stds= or covs=")
        if covs is not None:
            covs = _as64(covs)
            if covs.shape != (k, d, d):
                raise CompositionError(f"covs must have shape ({k}, {d}, {d})")
            lam, rot = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
        else:
            stds = _as64(stds)
            if stds.ndim == 0:
                stds = stds.expand(k, d)
            elif stds.shape == (k,):
                stds = stds[:, None].expand(k, d)
            if stds.shape != (k, d):
                raise CompositionError(f"stds must be a scalar, ({k},) or ({k}, {d})")
            if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
                raise CompositionError("stds must be positive and finite")
            lam, rot = stds.clone() ** 2, None
        if not bool((lam > 0).all()):
            raise CompositionError("covariances must be positive definite")
        self.schedule = schedule or CosineSchedule()
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise CompositionError(f"event_shape {self.event_shape} does not hold {d} values")
        self.name = name
        self.register_buffer("means", means.clone())
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))
        self.register_buffer("eigvals", lam.contiguous())
        self.register_buffer("eigvecs", rot.contiguous() if rot is not None else None)

    def diffused(self, t: float) -> GaussianMixture:
        """The exact time-``t`` marginal ``p_t`` as a mixture of its own (read at ``t = 0``):
        means ``α_t μ_k``, covariances ``α_t² Σ_k + σ_t² I``."""
        alpha, sigma = self.schedule(torch.tensor(float(t), dtype=torch.float64))
        eye = torch.eye(self.means.shape[1], dtype=torch.float64, device=self.means.device)
        return GaussianMixture(alpha * self.means, covs=alpha**2 * self.covariances()
                               + sigma**2 * eye, weights=self.log_weights.exp(),
                               schedule=self.schedule, event_shape=self.event_shape,
                               name=self.name)

    def covariances(self) -> Tensor:
        """``(K, D, D)`` covariances at ``t = 0``."""
        if self.eigvecs is None:
            return torch.diag_embed(self.eigvals)
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(1, 2)

    # ------------------------------------------------------------------ density
    def _terms(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Component log-densities ``(B, K)``, and ``z``, ``var`` in the eigenbasis."""
        b = x.shape[0]
        xf = x.reshape(b, -1).to(torch.float64)
        alpha, sigma = self.schedule(as_time(t, b, xf))
        y = xf[:, None, :] - alpha[:, None, None] * self.means[None]  # (B, K, D)
        var = alpha[:, None, None] ** 2 * self.eigvals[None] + sigma[:, None, None] ** 2
        z = y if self.eigvecs is None else torch.einsum("bkd,kde->bke", y, self.eigvecs)
        d = xf.shape[1]
        log_n = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + d * math.log(2 * math.pi))
        return log_n + self.log_weights, z, var

    def _diag_scalar_t(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, ...]:
        """Fast path (diagonal covariances, one ``t`` for the batch): expand the quadratic
        form into matrix products, ``Σ_d (x_d − m_kd)²/v_kd = x²·(1/v_k) − 2x·(m_k/v_k) +
        m_k·(m_k/v_k)``, and the score into ``r @ (m/v) − x ⊙ (r @ (1/v))``."""
        b = x.shape[0]
        xf = x.reshape(b, -1).to(torch.float64)
        alpha, sigma = self.schedule(torch.as_tensor(t, dtype=torch.float64).reshape(()))
        alpha, sigma = alpha.to(xf.device), sigma.to(xf.device)
        var = alpha**2 * self.eigvals + sigma**2  # (K, D)
        inv = 1.0 / var
        m = alpha * self.means
        m_inv = m * inv
        const = (m * m_inv).sum(1) + var.log().sum(1) + xf.shape[1] * math.log(2 * math.pi)
        quad = (xf**2) @ inv.T - 2 * xf @ m_inv.T  # (B, K)
        logits = -0.5 * (quad + const) + self.log_weights
        return logits, xf, inv, m_inv

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_event_shape(x, self.event_shape, self.describe())
        if self.eigvecs is None and torch.as_tensor(t).ndim == 0:
            logits = self._diag_scalar_t(x, t)[0]
        else:
            logits = self._terms(x, t)[0]
        return (-torch.logsumexp(logits, dim=1)).to(x.dtype)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        check_event_shape(x, self.event_shape, self.describe())
        if self.eigvecs is None and torch.as_tensor(t).ndim == 0:
            logits, xf, inv, m_inv = self._diag_scalar_t(x, t)
            resp = torch.softmax(logits, dim=1)
            score = resp @ m_inv - xf * (resp @ inv)
        else:
            logits, z, var = self._terms(x, t)
            resp = torch.softmax(logits, dim=1)  # (B, K)
            w = z / var  # C⁻¹ y in the eigenbasis
            if self.eigvecs is not None:
                w = torch.einsum("bke,kde->bkd", w, self.eigvecs)
            score = -(resp[:, :, None] * w).sum(1)
        energy = -torch.logsumexp(logits, dim=1)
        return energy.to(x.dtype), score.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.energy_and_score(x, t)[1]

    def log_prob(self, x: Tensor, t: float | Tensor = 0.0) -> Tensor:
        """Exact ``log p_t(x)``, shape ``(B,)``."""
        return -self.energy(x, t)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, t: float = 0.0) -> Tensor:
        """Exact draws from ``p_t`` (default: the data), shape ``(n, *event_shape)``."""
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        dev = self.means.device
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        alpha, sigma = self.schedule(torch.tensor(float(t), dtype=torch.float64))
        alpha, sigma = alpha.to(dev), sigma.to(dev)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64,
                        device=dev)
        z = z * torch.sqrt(alpha**2 * self.eigvals[comp] + sigma**2)
        if self.eigvecs is not None:
            z = torch.einsum("kde,ke->kd", self.eigvecs[comp], z)
        x = alpha * self.means[comp] + z
        return x.reshape((n, *self.event_shape))


def _product_terms(a: GaussianMixture, b: GaussianMixture
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Means ``(Ka·Kb, D)``, covariances and unnormalised log-weights of ``p_a · p_b``."""
    if a.schedule != b.schedule or a.event_shape != b.event_shape:
        raise CompositionError("gmm_product needs mixtures with the same schedule and shape")
    ca, cb = a.covariances(), b.covariances()  # (Ka, D, D), (Kb, D, D)
    ia, ib = torch.linalg.inv(ca), torch.linalg.inv(cb)
    cov = torch.linalg.inv(ia[:, None] + ib[None])  # (Ka, Kb, D, D)
    rhs = (ia @ a.means[..., None])[:, None] + (ib @ b.means[..., None])[None]
    mean = (cov @ rhs)[..., 0]
    s = ca[:, None] + cb[None]
    diff = a.means[:, None] - b.means[None]
    d = a.means.shape[1]
    maha = (diff[..., None, :] @ torch.linalg.solve(s, diff[..., None]))[..., 0, 0]
    log_z = -0.5 * (maha + torch.logdet(s) + d * math.log(2 * math.pi))
    logw = a.log_weights[:, None] + b.log_weights[None] + log_z
    return mean.reshape(-1, d), cov.reshape(-1, d, d), logw.reshape(-1)


def gmm_product(a: GaussianMixture, b: GaussianMixture) -> GaussianMixture:
    """The exact normalised product ``p_a(x) p_b(x) / Z`` at ``t = 0``, again a GMM.

    ``N(μ₁, Σ₁) N(μ₂, Σ₂) = N(μ₁; μ₂, Σ₁ + Σ₂) · N(μ, Σ)`` with ``Σ = (Σ₁⁻¹ + Σ₂⁻¹)⁻¹`` and
    ``μ = Σ (Σ₁⁻¹ μ₁ + Σ₂⁻¹ μ₂)``. Only at ``t = 0``: the diffused product is *not* the product
    of the diffused mixtures, which is why composed reverse diffusion fails.
    """
    mean, cov, logw = _product_terms(a, b)
    return GaussianMixture(mean, covs=cov, weights=torch.softmax(logw, 0), schedule=a.schedule,
                           event_shape=a.event_shape,
                           name=f"{a.describe()}*{b.describe()} (exact)")


def gmm_log_overlap(a: GaussianMixture, b: GaussianMixture) -> float:
    """``log Z = log ∫ p_a(x) p_b(x) dx`` at ``t = 0``, the normaliser :func:`gmm_product`
    divides by; at time ``t`` use ``gmm_log_overlap(a.diffused(t), b.diffused(t))``."""
    return float(torch.logsumexp(_product_terms(a, b)[2], 0))
