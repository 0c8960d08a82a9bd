r"""Gaussian paths ``x_t = α_t x_0 + σ_t ε`` on ``t ∈ [0, 1]``, and every formula that depends
on the path: the prior, the transitions between noise levels, the posterior (DDPM) step, the
deterministic (DDIM / probability-flow) step and the SDE coefficients. Nothing else in the
library knows which path a model uses; samplers ask :class:`Levels` and :class:`Schedule`.

**The path.** A schedule gives ``(α_t, σ_t)`` with the signal-to-noise ratio ``α_t/σ_t``
decreasing in ``t``; ``t = 0`` is the data (``α = 1, σ = 0``, or ``σ_min`` for VE) and the
samplers start from the noisiest level ``t_max`` (1 unless a family says otherwise).

==========================  =====================================  ===========================
family                      ``(α_t, σ_t)``                         prior (noisiest level)
==========================  =====================================  ===========================
VP (:class:`VPSchedule`)    ``α² + σ² = 1``: cosine, linear-β,     ``N(0, I)`` (the VP SDE's
                            a trained DDPM's table                 stationary law)
rectified flow (``RF``)     ``α = 1 − σ``, ``σ = s t/(1+(s−1)t)``  ``N(0, (α² + σ²) I)``
                            (``s``: SD3 / FLUX ``shift``)          at ``t_max = 0.999``
VE (:class:`VESchedule`)    ``α = 1``, ``σ = σ_min (σ_max/σ_min)^t``  ``N(0, (1 + σ_max²) I)``
a trained model's table     ``σ_k`` on one of the families above   as the family
(:class:`SigmaSchedule`)
==========================  =====================================  ===========================

The prior is ``N(0, (α² + σ²) I)`` at the noisiest level: the law of ``x_t`` for data of unit
variance and zero mean (the data's share ``α`` is ~1e-3 at the top of every family here).

**Transitions.** For ``s < t``, ``x_t | x_s ~ N(a x_s, v I)`` with ``a = α_t/α_s`` and
``v = σ_t² − a² σ_s²`` (VP: ``v = 1 − a²``). The clean endpoint below the cleanest level is
``(α, σ) = (1, 0)``. The posterior of the step back, given Tweedie's
``x̂₀ = (x + σ_t² s)/α_t`` (``s`` the score at ``(x, t)``), is Gaussian with::

    mean = (x + v s) / a         = α_s v/σ_t² · x̂₀ + a σ_s²/σ_t² · x
    var  = v σ_s² / σ_t²         (0 when stepping to the clean data)

the DDPM ancestral step on any path (:meth:`Levels.posterior`); ``clip=(lo, hi)`` clamps
``x̂₀`` in the second form (DDPM's ``clip_denoised``). Unclamped the two forms are equal.

**Deterministic step** (:meth:`Levels.ddim_step`): ``x_s = α_s x̂₀ + σ_s ε̂`` with
``ε̂ = −σ_t s``: DDIM with ``η = 0``, which is the Euler step of the probability-flow ODE in the
variables ``y = x/α``, ``ρ = σ/α`` (``dy/dρ = ε̂``). On rectified flow it is
``x_s = x + (σ_s − σ_t) u`` (flow matching's Euler step), on VE ``x_s = x + (σ_s − σ_t) ε̂``
(EDM's Euler step).

**SDE.** ``dx = f_t x dt + g_t dW`` with ``f_t = d log α_t/dt`` and
``g_t² = dσ_t²/dt − 2 f_t σ_t²`` has the marginals above; the probability-flow ODE is
``dx/dt = f_t x − ½ g_t² ∇log p_t``. The Feynman–Kac weights use ``κ_t = −2 f_t/g_t²``
(VP: 1; VE: 0) and ``B = ∫ g_t² dt = ∫ α² d(σ²/α²)`` over a step (VP: ``2 log(α_s/α_t)``,
VE: ``σ_t² − σ_s²``, rectified flow: ``2[log(1 + r) + 1/(1 + r)]`` with ``r = σ/α``;
otherwise Gauss–Legendre quadrature of ``g²``). ``(α̇, σ̇)`` come from
:meth:`Schedule.derivatives` (closed forms, or autograd of :meth:`Schedule.alpha_sigma`).

**A new family** is one subclass that implements :meth:`Schedule.alpha_sigma` in float64
(and :meth:`~Schedule.derivatives` where a closed form is cheaper); every sampler, oracle and
weight then works on it.

**Discretisation** (:meth:`Schedule.levels`): ``T`` levels at ``t_i = t_max (i + 1)/T``,
``i = 0 … T−1``; level ``T − 1`` is the noisiest. For VP this is DDPM's ``ᾱ_i = f((i+1)/T)``
indexing of the R3 code (T = 100). The discrete table (:class:`DiscreteSchedule`) puts
timestep ``k`` at ``t = (k + 1)/N``, so ``T`` dividing ``N`` lands on trained timesteps
(``T = 50`` of ``N = 1000``: ``k = 19, 39, …, 999``, diffusers' "trailing" spacing).

All path values are computed in float64 and cast to the caller's dtype. Shapes: ``x`` and
scores ``(B, *D)``; ``t`` a scalar or ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .utils import append_dims

__all__ = ["Schedule", "VPSchedule", "CosineSchedule", "LinearSchedule", "DiscreteSchedule",
           "SigmaSchedule", "RectifiedFlowSchedule", "VESchedule", "Levels", "get_schedule",
           "q_sample"]

_F64 = torch.float64


class Schedule:
    """A Gaussian path (module docstring). Subclasses implement :meth:`alpha_sigma`."""

    name: str = "schedule"
    #: the noisiest time the samplers start from (levels span ``(0, t_max]``)
    t_max: float = 1.0

    # ------------------------------------------------------------ the path
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """``(α_t, σ_t)`` for float64 ``t``."""
        raise NotImplementedError

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(dα/dt, dσ/dt)`` for float64 ``t`` (default: autograd of :meth:`alpha_sigma`)."""
        with torch.enable_grad():
            tt = t.detach().to(_F64).requires_grad_(True)
            out = []
            for value in self.alpha_sigma(tt):  # a constant (VE's α = 1) has derivative 0
                grad = (torch.autograd.grad(value.sum(), tt, retain_graph=True)[0]
                        if value.requires_grad else None)
                out.append(torch.zeros_like(tt) if grad is None else grad)
        return out[0].detach(), out[1].detach()

    def __call__(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(α_t, σ_t)`` with the shape (and float dtype) of ``t``.

        ``t`` outside ``[0, 1]`` raises ``ValueError`` on the CPU; on an accelerator (where the
        check would stall the device every call) those entries become NaN instead, which the
        samplers' finiteness checks report.
        """
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        t64 = t.to(_F64)
        outside = (t64 < 0) | (t64 > 1)
        if t.device.type == "cpu":
            if bool(outside.any()):
                raise ValueError("t must lie in [0, 1]")
        alpha, sigma = self.alpha_sigma(t64)
        if t.device.type != "cpu":
            alpha, sigma = alpha.masked_fill(outside, math.nan), sigma.masked_fill(outside,
                                                                                    math.nan)
        return alpha.to(dtype), sigma.to(dtype)

    # ------------------------------------------------------------ derived facts
    def marginal_variance(self, t: Tensor) -> Tensor:
        """``α_t² + σ_t²``: the variance of ``x_t`` for data of unit variance."""
        alpha, sigma = self.alpha_sigma(t.to(_F64))
        return alpha**2 + sigma**2

    def prior_std(self) -> float:
        """Standard deviation of the prior ``N(0, (α² + σ²) I)`` at ``t_max``."""
        return float(self.marginal_variance(torch.tensor(self.t_max, dtype=_F64))) ** 0.5

    def drift_diffusion(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_t, g_t²)`` of the forward SDE ``dx = f x dt + g dW``."""
        t = t.to(_F64)
        alpha, sigma = self.alpha_sigma(t)
        da, ds = self.derivatives(t)
        f = da / alpha
        return f, 2 * sigma * ds - 2 * f * sigma**2

    def drift_ratio(self, t: Tensor) -> Tensor:
        """``κ_t = −2 f_t / g_t²`` (VP: 1, VE: 0)."""
        f, g2 = self.drift_diffusion(t)
        return -2 * f / g2

    def transition_variance(self, a: float, sigma_s: float, sigma_t: float) -> float:
        """``v = σ_t² − a² σ_s²`` of ``x_t | x_s`` (``a = α_t/α_s``)."""
        return sigma_t**2 - a**2 * sigma_s**2

    def g2_integral(self, t_s: float, t_t: float, alpha: tuple[float, float],
                    sigma: tuple[float, float]) -> float:
        """``∫_{t_s}^{t_t} g_u² du``; ``alpha``, ``sigma``: the path at both ends (default:
        16-point Gauss–Legendre quadrature of ``g²``)."""
        nodes, weights = np.polynomial.legendre.leggauss(16)
        u = torch.tensor(0.5 * (t_t - t_s) * nodes + 0.5 * (t_t + t_s), dtype=_F64)
        g2 = self.drift_diffusion(u)[1]
        return float((torch.tensor(weights, dtype=_F64) * g2).sum()) * 0.5 * (t_t - t_s)

    def time_of(self, sigma: Tensor | Sequence[float]) -> Tensor:
        """The times ``t`` with ``σ_t = sigma`` (float64; the inverse of the path's noise
        level, by bisection unless a family has a closed form). ``σ`` must lie in the range
        ``σ`` takes on ``[0, 1]``."""
        target = torch.as_tensor(sigma, dtype=_F64)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        top = float(self.alpha_sigma(torch.ones((), dtype=_F64))[1])
        bottom = float(self.alpha_sigma(torch.zeros((), dtype=_F64))[1])
        if bool(((target < bottom) | (target > top)).any()):
            raise ValueError(f"{self!r}: noise levels must lie in [{bottom:.4g}, {top:.4g}]")
        for _ in range(64):  # 2⁻⁶⁴: below float64's resolution of t
            mid = 0.5 * (lo + hi)
            below = self.alpha_sigma(mid)[1] < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    # ------------------------------------------------------------ discretisation
    def levels(self, num_levels: int = 100) -> Levels:
        """Discretise into ``num_levels`` levels (see the module docstring)."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be ≥ 1, got {num_levels}")
        t = torch.arange(1, num_levels + 1, dtype=_F64) / num_levels
        if self.t_max != 1.0:
            t = t * self.t_max
        return self.levels_at(t)

    def levels_at(self, t: Tensor | Sequence[float]) -> Levels:
        """Levels at the given times (increasing, in ``(0, 1]``): e.g. a diffusers scheduler's
        own steps, ``schedule.levels_at(schedule.time_of(sigmas))``. The top may be ``t = 1``
        where ``α = 0`` (a flow's pure noise): only samplers that ask the model for ``x̂₀``
        (the ``"ode"`` sampler) step from there."""
        t = torch.as_tensor(t, dtype=_F64).flatten()
        if t.numel() < 1 or bool((t <= 0).any() | (t > 1).any()):
            raise ValueError("level times must lie in (0, 1]")
        if bool((t[1:] <= t[:-1]).any()):
            raise ValueError("level times must increase")
        alpha, sigma = self.alpha_sigma(t)
        return Levels(t=t, alpha=alpha, sigma=sigma, beta=self._level_variances(alpha, sigma),
                      schedule=self)

    def _level_variances(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Transition variance from each level's lower neighbour (the clean data below 0)."""
        a_prev = torch.cat([torch.ones(1, dtype=_F64), alpha[:-1]])
        s_prev = torch.cat([torch.zeros(1, dtype=_F64), sigma[:-1]])
        return sigma**2 - (alpha / a_prev) ** 2 * s_prev**2

    # ------------------------------------------------------------ identity
    def config(self) -> dict:
        """JSON-serialisable description (used in checkpoints and run folders)."""
        return {"name": self.name, **vars(self)}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class VPSchedule(Schedule):
    """Variance-preserving paths (``α² + σ² = 1``): subclasses implement :meth:`alpha_sq`."""

    def alpha_sq(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``ᾱ_t = α_t²`` for float64 ``t``."""
        raise NotImplementedError

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a2 = self.alpha_sq(t)
        return a2.sqrt(), (1.0 - a2).sqrt()

    def marginal_variance(self, t: Tensor) -> Tensor:
        return torch.ones_like(t, dtype=_F64)

    def prior_std(self) -> float:
        return 1.0

    def drift_ratio(self, t: Tensor) -> Tensor:
        return torch.ones_like(t, dtype=_F64)  # f = −½β, g² = β

    def transition_variance(self, a: float, sigma_s: float, sigma_t: float) -> float:
        return 1.0 - a**2

    def g2_integral(self, t_s: float, t_t: float, alpha: tuple[float, float],
                    sigma: tuple[float, float]) -> float:
        return 2.0 * math.log(alpha[0] / alpha[1])  # ∫β dt = log(ᾱ_s/ᾱ_t)

    def levels(self, num_levels: int = 100) -> Levels:
        if num_levels < 1:
            raise ValueError(f"num_levels must be ≥ 1, got {num_levels}")
        t = torch.arange(1, num_levels + 1, dtype=_F64) / num_levels
        a2 = self.alpha_sq(t)
        prev = torch.cat([torch.ones(1, dtype=_F64), a2[:-1]])
        return Levels(t=t, alpha=a2.sqrt(), sigma=(1.0 - a2).sqrt(), beta=1.0 - a2 / prev,
                      schedule=self)


class CosineSchedule(VPSchedule):
    """Cosine schedule of Nichol & Dhariwal (2021); ``s = 0.008`` as in R3.

    ``ᾱ(t) = f(t)/f(0)``, ``f(t) = cos²((t + s)/(1 + s) · π/2)``, floored at ``min_alpha_sq``
    (``ᾱ(1) = 0`` would make ``x̂₀`` undefined at the noisiest level; Nichol & Dhariwal clip the
    discrete β at 0.999 for this reason)."""

    name = "cosine"

    def __init__(self, s: float = 0.008, min_alpha_sq: float = 1e-6) -> None:
        self.s, self.min_alpha_sq = float(s), float(min_alpha_sq)

    def alpha_sq(self, t: Tensor) -> Tensor:
        def f(u: Tensor) -> Tensor:
            return torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2

        a2 = f(t) / f(torch.zeros((), dtype=_F64))
        return a2.clamp(min=self.min_alpha_sq, max=1.0)


class LinearSchedule(VPSchedule):
    """Linear-β schedule of Ho et al. (2020), β from 1e-4 to 0.02 over 1000 DDPM steps, in
    continuous form ``ᾱ(t) = exp(−T₀ ∫₀ᵗ β(u) du)``, ``β(t) = β₀ + t (β₁ − β₀)``, ``T₀ = 1000``."""

    name = "linear"

    def __init__(self, beta_min: float = 1e-4, beta_max: float = 0.02, steps: int = 1000) -> None:
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.steps = int(steps)

    def alpha_sq(self, t: Tensor) -> Tensor:
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return torch.exp(-integral * self.steps)


class DiscreteSchedule(VPSchedule):
    """A trained DDPM's own table ``ᾱ_k`` at ``t = (k + 1)/N`` (e.g. a diffusers scheduler's
    ``alphas_cumprod``); ``log ᾱ`` is linear in ``t`` between timesteps, from ``ᾱ = 1`` at
    ``t = 0``. :meth:`timestep` maps ``t`` back to the (fractional) timestep ``k = N t − 1``
    that the network was trained with; at ``t = (k + 1)/N`` it is the integer ``k`` exactly."""

    name = "discrete"

    def __init__(self, alphas_cumprod: Tensor | list[float]) -> None:
        table = torch.as_tensor(alphas_cumprod, dtype=_F64).flatten()
        if table.numel() < 1 or not bool(((table > 0) & (table <= 1)).all()):
            raise ValueError("alphas_cumprod must be a non-empty table of values in (0, 1]")
        if bool((table[1:] > table[:-1]).any()):
            raise ValueError("alphas_cumprod must not increase with the timestep")
        self.alphas_cumprod = table

    @property
    def num_timesteps(self) -> int:
        """``N``, the number of trained timesteps."""
        return self.alphas_cumprod.numel()

    def timestep(self, t: Tensor) -> Tensor:
        """``k = N t − 1`` in float64 (:func:`_timestep`)."""
        return _timestep(t, self.num_timesteps)

    def alpha_sq(self, t: Tensor) -> Tensor:
        # log ᾱ on the grid u = −1 (t = 0, ᾱ = 1), 0, …, N − 1, linear in between.
        log_table = torch.cat([torch.zeros(1, dtype=_F64),
                               self.alphas_cumprod.to(t.device).log()])
        u = (self.timestep(t) + 1).clamp(0, self.num_timesteps)
        lo = u.floor().clamp(max=self.num_timesteps - 1).long()
        frac = u - lo
        return (log_table[lo] * (1 - frac) + log_table[lo + 1] * frac).exp()

    def config(self) -> dict:
        return {"name": self.name, "alphas_cumprod": self.alphas_cumprod.tolist()}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and torch.equal(self.alphas_cumprod,
                                                         other.alphas_cumprod)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.num_timesteps,
                     float(self.alphas_cumprod.sum())))

    def __repr__(self) -> str:
        return (f"DiscreteSchedule(N={self.num_timesteps}, ᾱ from "
                f"{float(self.alphas_cumprod[0]):.4g} to {float(self.alphas_cumprod[-1]):.3g})")


def _timestep(t: Tensor, n: int) -> Tensor:
    """A table's timestep ``k = N t − 1`` of ``t`` in float64, snapped to the nearest integer
    within 1e-6 (``t`` given in float32 at a trained timestep maps to that timestep exactly)."""
    k = t.to(_F64) * n - 1
    near = torch.round(k)
    return torch.where((k - near).abs() < 1e-6 * max(1, n), near, k)


def _flow_g2_integral(alpha: tuple[float, float], sigma: tuple[float, float]) -> float:
    """``∫ g² dt`` on a path with ``α + σ = 1``: ``g² dt = α² d(σ²/α²)``; with ``r = σ/α`` and
    ``α = 1/(1 + r)`` it is ``∫ 2r/(1 + r)² dr = 2[log(1 + r) + 1/(1 + r)]``."""
    def antiderivative(a: float, s: float) -> float:
        r = s / a
        return 2 * (math.log1p(r) + 1 / (1 + r))

    return antiderivative(alpha[1], sigma[1]) - antiderivative(alpha[0], sigma[0])


class SigmaSchedule(Schedule):
    """A trained model's own table of noise levels ``σ_k`` (ascending, ``k = 0 … N−1``) on a
    path family: ``"ve"`` (``α = 1``; EDM / Karras sigmas), ``"rectified_flow"``
    (``α = 1 − σ``; a flow-matching scheduler's sigmas) or ``"vp"`` (``α = √(1 − σ²)``).
    Timestep ``k`` sits at ``t = (k + 1)/N`` as in :class:`DiscreteSchedule`; ``log σ`` is
    linear in ``t`` between timesteps and ``σ`` linear from 0 at ``t = 0`` to ``σ_0``. An
    entry where ``α = 0`` (a flow's ``σ = 1``) is kept out of the samplers' range (``t_max``
    is the timestep below it)."""

    name = "sigmas"
    FAMILIES = ("ve", "rectified_flow", "vp")

    def __init__(self, sigmas: Tensor | list[float], family: str = "ve") -> None:
        table = torch.as_tensor(sigmas, dtype=_F64).flatten()
        if family not in self.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(self.FAMILIES)}, got "
                             f"{family!r}")
        top = math.inf if family == "ve" else 1.0
        if table.numel() < 2 or not bool(((table > 0) & (table <= top)).all()):
            raise ValueError(f"sigmas must be at least 2 values in (0, {top}] for {family}")
        if bool((table[1:] <= table[:-1]).any()):
            raise ValueError("sigmas must increase with the timestep")
        self.sigmas, self.family = table, family
        n = table.numel()
        self.t_max = (n - 1) / n if family != "ve" and float(table[-1]) == 1.0 else 1.0

    @property
    def num_timesteps(self) -> int:
        """``N``, the number of trained timesteps."""
        return self.sigmas.numel()

    def timestep(self, t: Tensor) -> Tensor:
        """``k = N t − 1`` in float64 (:func:`_timestep`)."""
        return _timestep(t, self.num_timesteps)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        table = self.sigmas.to(t.device)
        k = self.timestep(t).clamp(-1, self.num_timesteps - 1)
        lo = k.floor().clamp(0, self.num_timesteps - 2).long()
        frac = k - lo
        log_s = table.log()
        inside = (log_s[lo] * (1 - frac) + log_s[lo + 1] * frac).exp()
        first = table[0] * (k + 1)  # σ linear from 0 at t = 0 to σ_0 at timestep 0
        sigma = torch.where(k < 0, first, inside)
        if self.family == "ve":
            return torch.ones_like(sigma), sigma
        if self.family == "rectified_flow":
            return 1 - sigma, sigma
        return (1 - sigma**2).clamp_min(0).sqrt(), sigma

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # dσ/dt on each segment (the one above a timestep at the timestep itself)
        table, n = self.sigmas.to(t.device), self.num_timesteps
        k = self.timestep(t).clamp(-1, n - 1)
        lo = k.floor().clamp(0, n - 2).long()
        sigma = self.alpha_sigma(t)[1]
        ds = torch.where(k < 0, table[0] * n, sigma * n * (table[lo + 1] / table[lo]).log())
        if self.family == "ve":
            return torch.zeros_like(ds), ds
        if self.family == "rectified_flow":
            return -ds, ds
        return -sigma * ds / (1 - sigma**2).clamp_min(1e-300).sqrt(), ds

    def drift_ratio(self, t: Tensor) -> Tensor:
        if self.family == "ve":
            return torch.zeros_like(t, dtype=_F64)
        if self.family == "vp":
            return torch.ones_like(t, dtype=_F64)
        return super().drift_ratio(t)

    def g2_integral(self, t_s: float, t_t: float, alpha: tuple[float, float],
                    sigma: tuple[float, float]) -> float:
        if self.family == "ve":
            return sigma[1] ** 2 - sigma[0] ** 2
        if self.family == "vp":
            return 2.0 * math.log(alpha[0] / alpha[1])
        return _flow_g2_integral(alpha, sigma)

    def config(self) -> dict:
        return {"name": self.name, "sigmas": self.sigmas.tolist(), "family": self.family}

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self.family == other.family
                and torch.equal(self.sigmas, other.sigmas))

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.family, self.num_timesteps,
                     float(self.sigmas.sum())))

    def __repr__(self) -> str:
        return (f"SigmaSchedule({self.family}, N={self.num_timesteps}, σ from "
                f"{float(self.sigmas[0]):.4g} to {float(self.sigmas[-1]):.4g})")


class RectifiedFlowSchedule(Schedule):
    """Rectified flow / flow matching: ``α_t = 1 − σ_t``, ``σ_t = s t / (1 + (s − 1) t)``
    (``s = shift``; 1 is the plain ``σ = t``; SD3 uses 3). At ``t = 1`` the data's share is 0
    and Tweedie's ``x̂₀`` from a score is undefined, so samplers start at ``t_max = 0.999``
    (``α ≈ 10⁻³/s``, as the cosine VP schedule's floor)."""

    name = "rectified_flow"

    def __init__(self, shift: float = 1.0, t_max: float = 0.999) -> None:
        if not shift > 0 or not math.isfinite(shift):
            raise ValueError(f"shift must be a positive number, got {shift}")
        if not 0 < t_max < 1:
            raise ValueError(f"t_max must lie in (0, 1) (α = 0 at t = 1), got {t_max}")
        self.shift, self.t_max = float(shift), float(t_max)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.shift * t / (1 + (self.shift - 1) * t)
        return 1 - sigma, sigma

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ds = self.shift / (1 + (self.shift - 1) * t) ** 2
        return -ds, ds

    def time_of(self, sigma: Tensor | Sequence[float]) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=_F64)
        if bool(((sigma < 0) | (sigma > 1)).any()):
            raise ValueError(f"{self!r}: noise levels must lie in [0, 1]")
        return sigma / (self.shift - (self.shift - 1) * sigma)

    def g2_integral(self, t_s: float, t_t: float, alpha: tuple[float, float],
                    sigma: tuple[float, float]) -> float:
        return _flow_g2_integral(alpha, sigma)


class VESchedule(Schedule):
    """Variance exploding (EDM, score-SDE VE): ``α = 1``, ``σ_t = σ_min (σ_max/σ_min)^t``
    (geometric). ``t = 0`` is the data blurred by ``σ_min``; the samplers' last step goes to
    ``σ = 0`` (the clean endpoint). The prior is ``N(0, (σ_d² + σ_max²) I)`` with
    ``σ_d = data_std``."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 data_std: float = 1.0) -> None:
        if not 0 < sigma_min < sigma_max or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < ∞, got {sigma_min}, "
                             f"{sigma_max}")
        if not 0 < data_std < math.inf:
            raise ValueError(f"data_std must be a positive number, got {data_std}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.data_std = float(data_std)

    def marginal_variance(self, t: Tensor) -> Tensor:
        """``σ_d² + σ_t²``: the variance of ``x_t`` for data of standard deviation
        ``data_std`` (EDM's ``σ_data``; 1 by default, as on the other paths)."""
        return self.data_std**2 + self.alpha_sigma(t.to(_F64))[1] ** 2

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return torch.ones_like(sigma), sigma

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.alpha_sigma(t)[1]
        return torch.zeros_like(sigma), sigma * math.log(self.sigma_max / self.sigma_min)

    def time_of(self, sigma: Tensor | Sequence[float]) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=_F64)
        if bool(((sigma < self.sigma_min) | (sigma > self.sigma_max)).any()):
            raise ValueError(f"{self!r}: noise levels must lie in [{self.sigma_min:g}, "
                             f"{self.sigma_max:g}]")
        return (sigma / self.sigma_min).log() / math.log(self.sigma_max / self.sigma_min)

    def drift_ratio(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t, dtype=_F64)

    def g2_integral(self, t_s: float, t_t: float, alpha: tuple[float, float],
                    sigma: tuple[float, float]) -> float:
        return sigma[1] ** 2 - sigma[0] ** 2


@dataclass(frozen=True)
class Levels:
    """A grid of ``T`` noise levels of ``schedule``: float64 tensors of shape ``(T,)``, level
    ``T − 1`` the noisiest. ``beta[i]``: the variance of the transition from level ``i − 1``
    (the clean data below level 0) to level ``i`` (VP: DDPM's ``β_i = 1 − ᾱ_i/ᾱ_{i−1}``).

    The methods are the path's steps between neighbouring levels (module docstring)."""

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    beta: Tensor
    schedule: Schedule

    def __len__(self) -> int:
        return self.t.shape[0]

    def below(self, i: int) -> tuple[float, float, float]:
        """``(t, α, σ)`` of level ``i − 1``, or of the clean data ``(0, 1, 0)`` for ``i = 0``."""
        if i == 0:
            return 0.0, 1.0, 0.0
        return float(self.t[i - 1]), float(self.alpha[i - 1]), float(self.sigma[i - 1])

    def transition(self, i: int) -> tuple[float, float]:
        """``(a, v)`` of ``x_{t_i} | x_{t_{i−1}} ~ N(a x, v I)`` (the clean data for ``i = 0``)."""
        alpha_prev = self.alpha[i - 1] if i > 0 else torch.ones((), dtype=_F64)
        a = float(self.alpha[i] / alpha_prev)
        return a, self.schedule.transition_variance(a, self.below(i)[2], float(self.sigma[i]))

    def prior(self, n: int, event_shape: tuple[int, ...], generator: torch.Generator | None,
              device: torch.device, dtype: torch.dtype) -> Tensor:
        """``n`` draws from the prior ``N(0, prior_std² I)`` at the noisiest level."""
        x = torch.randn((n, *event_shape), generator=generator, device=device, dtype=dtype)
        std = self.prior_std()
        return x if std == 1.0 else x * std

    def prior_std(self) -> float:
        """The prior's standard deviation at the noisiest level (the schedule's, unless the
        levels were placed by hand with another top)."""
        if float(self.t[-1]) == self.schedule.t_max:
            return self.schedule.prior_std()
        return self.marginal_variance(len(self) - 1) ** 0.5

    def prior_variance(self) -> float:
        """The prior's variance at the noisiest level (:meth:`prior_std` squared)."""
        return self.prior_std() ** 2

    def posterior(self, x: Tensor, score: Tensor, i: int,
                  clip: tuple[float, float] | None = None) -> tuple[Tensor, float]:
        """Mean and variance of the step from level ``i`` to ``i − 1`` given the score at
        ``(x, t_i)`` (variance 0 on the step to the clean data)."""
        _, alpha_prev, sigma_prev = self.below(i)
        a, v = self.transition(i)
        if clip is None:
            mean = (x + v * score) / a
        else:
            alpha, sigma2 = float(self.alpha[i]), float(self.sigma[i] ** 2)
            x0 = ((x + sigma2 * score) / alpha).clamp(*clip)
            mean = (alpha_prev * v / sigma2) * x0 + (a * sigma_prev**2 / sigma2) * x
        if i == 0:
            return mean, 0.0
        return mean, self.posterior_variance(i)

    def posterior_variance(self, i: int) -> float:
        """``v σ²_{i−1}/σ²_i``: the variance of the posterior step from level ``i ≥ 1``."""
        return self.transition(i)[1] * float(self.sigma[i - 1] ** 2 / self.sigma[i] ** 2)

    def posterior_step(self, x: Tensor, score: Tensor, i: int,
                       generator: torch.Generator | None = None,
                       clip: tuple[float, float] | None = None) -> Tensor:
        """One ancestral (DDPM) step from level ``i`` to ``i − 1``; on the last step Tweedie's
        ``x̂₀``."""
        mean, var = self.posterior(x, score, i, clip)
        if i == 0:
            return mean
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + var**0.5 * z

    def denoised(self, x: Tensor, score: Tensor, i: int,
                 clip: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
        """Tweedie's ``x̂₀ = (x + σ² s)/α`` (clamped to ``clip``) and ``ε̂ = (x − α x̂₀)/σ`` at
        level ``i``."""
        alpha, sigma = float(self.alpha[i]), float(self.sigma[i])
        x0 = (x + sigma**2 * score) / alpha
        if clip is None:
            return x0, -sigma * score
        x0 = x0.clamp(*clip)
        return x0, (x - alpha * x0) / sigma

    def ddim_step(self, x: Tensor, score: Tensor, i: int,
                  clip: tuple[float, float] | None = None) -> Tensor:
        """The deterministic step ``α_s x̂₀ + σ_s ε̂`` from level ``i`` to ``i − 1`` (DDIM,
        ``η = 0``; the probability-flow ODE's Euler step in ``y = x/α``, ``ρ = σ/α``)."""
        x0, eps = self.denoised(x, score, i, clip)
        _, alpha_prev, sigma_prev = self.below(i)
        return x0 if i == 0 else alpha_prev * x0 + sigma_prev * eps

    def g2_integral(self, i: int) -> float:
        """``B = ∫ g² dt`` over the step from level ``i`` to ``i − 1`` (``i ≥ 1``)."""
        return self.schedule.g2_integral(
            float(self.t[i - 1]), float(self.t[i]),
            (float(self.alpha[i - 1]), float(self.alpha[i])),
            (float(self.sigma[i - 1]), float(self.sigma[i])))

    def drift_integral(self, i: int) -> float:
        """``∫ f dt = log(α_i/α_{i−1})`` over the step from level ``i`` to ``i − 1`` (``i ≥ 1``;
        ``f = d log α/dt``, so exact on every path)."""
        return math.log(float(self.alpha[i]) / float(self.alpha[i - 1]))

    def drift_ratio(self, i: int) -> float:
        """``κ = −2 f/g²`` at level ``i``."""
        return float(self.schedule.drift_ratio(self.t[i : i + 1])[0])

    def marginal_variance(self, i: int) -> float:
        """``α² + σ²`` at level ``i``."""
        return float(self.schedule.marginal_variance(self.t[i : i + 1])[0])


def q_sample(x0: Tensor, t: float | Tensor, schedule: Schedule, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Draw ``x_t = α_t x_0 + σ_t ε`` (forward noising); ``t`` a scalar or ``(B,)``, ``noise``
    (shape of ``x0``) may be given."""
    from .utils import as_time

    t = as_time(t, x0.shape[0], x0)
    alpha, sigma = schedule(t)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return append_dims(alpha, x0.ndim) * x0 + append_dims(sigma, x0.ndim) * noise


SCHEDULES: dict[str, type[Schedule]] = {
    "cosine": CosineSchedule, "linear": LinearSchedule, "discrete": DiscreteSchedule,
    "sigmas": SigmaSchedule, "rectified_flow": RectifiedFlowSchedule, "ve": VESchedule}


def get_schedule(config: dict | str) -> Schedule:
    """Build a schedule from its :meth:`Schedule.config` dict or its name."""
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**config)
