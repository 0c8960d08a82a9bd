r"""Closed-form ``log ∫ ∏_k p_k,t(x)^{c_k} dx`` for diffused Gaussian mixtures.

At time ``t`` component ``j`` of mixture ``k`` is ``N(α μ_kj, α² Σ_kj + σ² I)``. Expanding the
product over one component per mixture, each term is ``exp(−½ xᵀPx + hᵀx + c)`` with
``P = Σ_k c_k P_k``, ``h = Σ_k c_k P_k m_k`` and ``c = Σ_k c_k (log w_k − ½ m_kᵀP_k m_k −
½ log det 2πC_k)``, whose integral is ``exp(c + ½ hᵀP⁻¹h) (2π)^{D/2} det(P)^{−1/2}`` (``P`` must
be positive definite). A mixture with ``c_k ≠ 1`` must have one component (a power of a sum is
not a sum).
"""

import itertools
import math

import torch


def _components(model, t):
    alpha, sigma = model.schedule(torch.tensor(float(t), dtype=torch.float64))
    d = model.means.shape[1]
    covs = alpha**2 * model.covariances() + sigma**2 * torch.eye(d, dtype=torch.float64)
    return alpha * model.means, covs, model.log_weights


def log_integral(parts, t):
    """``parts``: ``[(GaussianMixture, exponent), …]``; returns a float."""
    comps = []
    for model, c in parts:
        means, covs, logw = _components(model, t)
        if c != 1 and means.shape[0] != 1:
            raise ValueError("an exponent other than 1 needs a single Gaussian")
        comps.append([(c, means[j], covs[j], logw[j]) for j in range(means.shape[0])])
    d = comps[0][0][1].shape[0]
    terms = []
    for choice in itertools.product(*comps):
        p = torch.zeros(d, d, dtype=torch.float64)
        h = torch.zeros(d, dtype=torch.float64)
        const = 0.0
        for c, m, cov, logw in choice:
            prec = torch.linalg.inv(cov)
            p += c * prec
            h += c * prec @ m
            const += c * (float(logw) * (c == 1) - 0.5 * float(m @ prec @ m)
                          - 0.5 * float(torch.logdet(2 * math.pi * cov)))
        if not bool(torch.all(torch.linalg.eigvalsh(p) > 0)):
            raise ValueError("the integrand is not integrable (P is not positive definite)")
        terms.append(const + 0.5 * float(h @ torch.linalg.solve(p, h))
                     + 0.5 * d * math.log(2 * math.pi) - 0.5 * float(torch.logdet(p)))
    return float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))
