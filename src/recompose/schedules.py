r"""Variance-preserving noise schedules on continuous time ``t ∈ [0, 1]``.

Forward process: ``x_t = α_t x_0 + σ_t ε``, ``ε ~ N(0, I)``, with ``α_t² + σ_t² = 1``.

* Cosine (Nichol & Dhariwal 2021, the R3 paper's choice, offset ``s = 0.008``)::

      ᾱ(t) = f(t) / f(0),   f(t) = cos²( (t + s)/(1 + s) · π/2 )

  ᾱ(1) = 0 would make ``x̂₀`` undefined at the noisiest level; Nichol & Dhariwal clip the discrete
  β at 0.999 for this reason. We floor ᾱ at ``min_alpha_sq`` (default 1e-6) instead, which keeps
  the schedule a function of continuous time.
* Linear-β (Ho et al. 2020), continuous form with ``β(t) = β₀ + t (β₁ − β₀)`` and
  ``ᾱ(t) = exp(−∫₀ᵗ β(u) du · T₀)`` where ``T₀ = 1000`` converts DDPM's per-step β to a rate.

All values are computed in float64 and cast to the caller's dtype.

* Discrete (:class:`DiscreteSchedule`): a trained DDPM's table ``ᾱ_k``, ``k = 0 … N−1`` (e.g. a
  diffusers scheduler's ``alphas_cumprod``). Timestep ``k`` sits at ``t = (k + 1)/N``, so
  ``levels(T)`` for ``T`` dividing ``N`` lands exactly on trained timesteps (``T = N``: all of
  them; ``T = 50`` of ``N = 1000``: ``k = 19, 39, …, 999``, diffusers' "trailing" spacing).
  Between timesteps ``log ᾱ`` is interpolated linearly in ``t``, from ``ᾱ = 1`` at ``t = 0``.

Discretisation (:meth:`Schedule.levels`): ``T`` levels at ``t_i = (i + 1)/T``, ``i = 0 … T−1``.
Level ``T − 1`` is the noisiest (``t = 1``); level ``0`` the cleanest (``t = 1/T``). This matches
DDPM's ``ᾱ_i = f((i+1)/T)/f(0)`` indexing used by the R3 reference code (T = 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Schedule", "CosineSchedule", "LinearSchedule", "DiscreteSchedule", "Levels",
           "get_schedule"]


@dataclass(frozen=True)
class Levels:
    """A discrete grid of ``T`` noise levels, all float64 tensors of shape ``(T,)``.

    ``beta[i] = 1 − ᾱ_i/ᾱ_{i−1}`` is the DDPM step variance from level ``i`` to ``i − 1``
    (with ``ᾱ_{−1} = 1``, the clean data).
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    beta: Tensor

    def __len__(self) -> int:
        return self.t.shape[0]


class Schedule:
    """Base class: subclasses implement :meth:`alpha_sq` in float64."""

    name: str = "schedule"

    def alpha_sq(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(α_t, σ_t)`` with the shape (and float dtype) of ``t``.

        ``t`` outside ``[0, 1]`` raises ``ValueError`` on the CPU; on an accelerator (where the
        check would stall the device every call) those entries become NaN instead, which the
        samplers' finiteness checks report.
        """
        t = torch.as_tensor(t)
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        t64 = t.to(torch.float64)
        a2 = self.alpha_sq(t64)
        outside = (t64 < 0) | (t64 > 1)
        if t.device.type == "cpu":
            if bool(outside.any()):
                raise ValueError("t must lie in [0, 1]")
        else:
            a2 = a2.masked_fill(outside, math.nan)
        return a2.sqrt().to(dtype), (1.0 - a2).sqrt().to(dtype)

    def levels(self, num_levels: int = 100) -> Levels:
        """Discretise into ``num_levels`` levels (see module docstring)."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be ≥ 1, got {num_levels}")
        t = torch.arange(1, num_levels + 1, dtype=torch.float64) / num_levels
        a2 = self.alpha_sq(t)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), a2[:-1]])
        beta = 1.0 - a2 / prev
        return Levels(t=t, alpha=a2.sqrt(), sigma=(1.0 - a2).sqrt(), beta=beta)

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


class CosineSchedule(Schedule):
    """Cosine schedule of Nichol & Dhariwal (2021); ``s = 0.008`` as in R3."""

    name = "cosine"

    def __init__(self, s: float = 0.008, min_alpha_sq: float = 1e-6) -> None:
        self.s, self.min_alpha_sq = float(s), float(min_alpha_sq)

    def alpha_sq(self, t: Tensor) -> Tensor:
        def f(u: Tensor) -> Tensor:
            return torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2

        a2 = f(t) / f(torch.zeros((), dtype=torch.float64))
        return a2.clamp(min=self.min_alpha_sq, max=1.0)


class LinearSchedule(Schedule):
    """Linear-β schedule of Ho et al. (2020), β from 1e-4 to 0.02 over 1000 DDPM steps."""

    name = "linear"

    def __init__(self, beta_min: float = 1e-4, beta_max: float = 0.02, steps: int = 1000) -> None:
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.steps = int(steps)

    def alpha_sq(self, t: Tensor) -> Tensor:
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return torch.exp(-integral * self.steps)


class DiscreteSchedule(Schedule):
    """A trained model's own table ``ᾱ_k`` at ``t = (k + 1)/N`` (see the module docstring).

    :meth:`timestep` maps ``t`` back to the (fractional) timestep ``k = N t − 1`` that the
    network was trained with; at ``t = (k + 1)/N`` it is the integer ``k`` exactly.
    """

    name = "discrete"

    def __init__(self, alphas_cumprod: Tensor | list[float]) -> None:
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if table.numel() < 1 or not bool(((table > 0) & (table <= 1)).all()):
            raise ValueError("alphas_cumprod must be a non-empty table of values in (0, 1]")
        if bool((table[1:] > table[:-1]).any()):
            raise ValueError("alphas_cumprod must not increase with the timestep")
        self.alphas_cumprod = table

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def timestep(self, t: Tensor) -> Tensor:
        """``k = N t − 1`` in float64, snapped to the nearest integer within 1e-6 (``t`` given
        in float32 at a trained timestep maps to that timestep exactly)."""
        k = t.to(torch.float64) * self.num_timesteps - 1
        near = torch.round(k)
        return torch.where((k - near).abs() < 1e-6 * max(1, self.num_timesteps), near, k)

    def alpha_sq(self, t: Tensor) -> Tensor:
        # log ᾱ on the grid u = −1 (t = 0, ᾱ = 1), 0, …, N − 1, linear in between.
        log_table = torch.cat([torch.zeros(1, dtype=torch.float64),
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


def get_schedule(config: dict | str) -> Schedule:
    """Build a schedule from its :meth:`Schedule.config` dict or its name."""
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name")
    classes = {"cosine": CosineSchedule, "linear": LinearSchedule, "discrete": DiscreteSchedule}
    if name not in classes:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(classes)}")
    return classes[name](**config)
