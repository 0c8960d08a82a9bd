r"""Normalising learned energies by quadrature, so that mixtures of them are proper mixtures.

A learned energy is ``E(x, t) = U_θ(x, t)/σ_t`` and defines ``p_t ∝ e^{−E}`` only up to
``Z(t) = ∫ e^{−E(x, t)} dx``. A mixture ``Σᵢ wᵢ pⁱ_t`` needs each part normalised: with
``E'ᵢ = Eᵢ + log Zᵢ(t)`` the composite energy ``−logsumexp(log wᵢ − E'ᵢ)`` is exactly the
weighted mixture of the models' time-``t`` densities (the R3 notebook used a hard-coded
sharpness instead, which collapses its mixture between the bars).

In low dimension ``Z(t)`` is a cheap quadrature. :func:`normalize_by_quadrature` tabulates
``log Z`` on ``num_times`` times in ``[t_min, 1]`` with a midpoint rule on a ``grid × grid`` window
that follows the diffused data, ``|x| ≤ α_t·extent + 7σ_t``, and interpolates linearly in
``t``. Only for 2D models (``D = 2``); images need another route. The settings are bounded
(:func:`check_quadrature`: ``num_times`` in ``[2, 1000]``, ``grid`` in ``[8, 2048]``, ``extent >
0``, ``0 < t_min < 1``) and checked before any work. Normalising is always
explicit (:func:`normalize`, ``normalize(A)`` in :mod:`recompose.expression`), so ``mix(A, B)``
means the same density from every entry point.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

from ..errors import CapabilityError
from ..utils import as_time
from .base import DiffusionModel

__all__ = ["Normalized", "normalize", "normalize_by_quadrature", "check_quadrature",
           "NUM_TIMES_RANGE", "GRID_RANGE"]

NUM_TIMES_RANGE = (2, 1000)  # tabulated times: two at least, to interpolate between
# points per axis: 2048² ≈ 4·10⁶ energies per time (about 20 s on one core for the 2D MLP)
GRID_RANGE = (8, 2048)


def check_quadrature(*, num_times: int | None = None, grid: int | None = None,
                     extent: float | None = None, t_min: float | None = None) -> None:
    """Raise ``ValueError`` (one line, naming the setting and its range) unless the given
    quadrature settings of :func:`normalize` are usable; ``None`` means not given."""
    for name, value, (lo, hi) in (("num_times", num_times, NUM_TIMES_RANGE),
                                  ("grid", grid, GRID_RANGE)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            shown = f"{value:.3g}" if isinstance(value, int) and abs(value) > 10**6 else value
            raise ValueError(f"normalize: {name} must be a whole number from {lo} to {hi}, "
                             f"got {shown!s}")
    if extent is not None and not (isinstance(extent, int | float) and math.isfinite(extent)
                                   and extent > 0):
        raise ValueError(f"normalize: extent must be a positive finite number, got {extent!r}")
    if t_min is not None and not (isinstance(t_min, int | float) and 0 < t_min < 1):
        raise ValueError(f"normalize: t_min must lie strictly between 0 and 1 (log Z is -inf "
                         f"at t = 0), got {t_min!r}")


class Normalized(DiffusionModel):
    """``model`` with energy ``E + log Z(t)`` from a tabulated ``log Z``; same score."""

    has_energy = True

    def __init__(self, model: DiffusionModel, times: Tensor, log_z: Tensor) -> None:
        super().__init__()
        self.model = model
        self.schedule, self.event_shape = model.schedule, tuple(model.event_shape)
        self.marginal = model.marginal  # the same density, normalised
        self.name = f"normalize({model.describe()})"
        self.register_buffer("times", times.to(torch.float64))
        self.register_buffer("log_z", log_z.to(torch.float64))

    def log_normalizer(self, t: Tensor) -> Tensor:
        """Linear interpolation of the tabulated ``log Z`` at ``t`` (shape of ``t``)."""
        t0 = self.times[0]
        t = t.to(torch.float64).clamp(float(t0), 1)
        pos = (t - t0) / (1 - t0) * (len(self.times) - 1)
        lo = pos.floor().long().clamp(max=len(self.times) - 2)
        frac = pos - lo
        return (1 - frac) * self.log_z[lo] + frac * self.log_z[lo + 1]

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        tt = as_time(t, x.shape[0], x)
        return self.model.energy(x, t) + self.log_normalizer(tt).to(x.dtype)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        e, s = self.model.energy_and_score(x, t)
        tt = as_time(t, x.shape[0], x)
        return e + self.log_normalizer(tt).to(x.dtype), s

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.model.score(x, t)

    def leaves(self) -> Iterator[DiffusionModel]:
        yield from self.model.leaves()


@torch.no_grad()
def log_normalizer_2d(model: DiffusionModel, t: float, extent: float = 1.5,
                      grid: int = 256) -> float:
    """``log ∫ e^{−E(x, t)} dx`` by the midpoint rule on a square window."""
    alpha, sigma = model.schedule(torch.tensor(t, dtype=torch.float64))
    half = float(alpha) * extent + 7 * float(sigma)
    h = 2 * half / grid
    axis = -half + h * (torch.arange(grid, dtype=torch.float64) + 0.5)
    xx = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    energies = torch.cat([model.energy(chunk.to(dtype), t).to(torch.float64)
                          for chunk in xx.split(16384)])
    return float(torch.logsumexp(-energies, 0)) + 2 * math.log(h)


#: progress bars for the quadratures (off: the library is quiet; the command line turns them on)
PROGRESS: ContextVar[bool] = ContextVar("recompose_normalize_progress", default=False)


def normalize_by_quadrature(model: DiffusionModel, num_times: int = 101, extent: float = 1.5,
                            grid: int = 96, t_min: float = 0.005) -> Normalized:
    """:func:`normalize` with finer defaults (positional arguments allowed)."""
    check_quadrature(num_times=num_times, grid=grid, extent=extent, t_min=t_min)
    if not model.has_energy:
        raise CapabilityError(f"normalize needs an energy, but {model.describe()} is "
                              "score-only; use an energy-parameterised model")
    if tuple(model.event_shape) != (2,):
        raise CapabilityError(f"normalize works by 2D quadrature, but {model.describe()} has "
                              f"data shape {tuple(model.event_shape)}")
    from tqdm.auto import tqdm

    times = torch.linspace(t_min, 1, num_times, dtype=torch.float64)
    bar = tqdm(times.tolist(), desc=f"normalize({model.describe()})", unit="t", leave=False,
               disable=not PROGRESS.get())
    log_z = torch.tensor([log_normalizer_2d(model, t, extent, grid) for t in bar])
    return Normalized(model, times, log_z)


def normalize(model: DiffusionModel, *, num_times: int = 51, grid: int = 64,
              extent: float = 1.5, t_min: float = 0.005) -> Normalized:
    """``model`` with energy ``E + log Z(t)``, ``Z(t) = ∫ e^{−E(x, t)} dx`` by quadrature.

    What a mixture of learned energies needs: ``mixture([normalize(A), normalize(B)], w)``
    is the ``w``-weighted mixture of the two densities (without it, each part's unknown
    ``log Z`` silently re-weights it).

    Args:
        model: a 2D energy model (``event_shape == (2,)``, ``has_energy``).
        num_times: times tabulated in ``[t_min, 1]`` (linear interpolation between them),
            2 to 1000.
        grid: midpoint-rule points per axis, 8 to 2048. The defaults (51 × 64²), those of the
            shipped mixture experiments, give ``log Z`` to about 0.02 on the shipped models.
        extent: half-width of the data window at ``t = 0``; it grows as ``α_t·extent + 7σ_t``
            (positive).
        t_min: first tabulated time, in ``(0, 1)`` (``U/σ_t`` is undefined at ``t = 0``).

    Returns:
        A :class:`Normalized` model (same score; energy shifted by ``log Z(t)``).

    Raises:
        ValueError: for settings outside those ranges (:func:`check_quadrature`), before any
            work.
        CapabilityError: for a score-only model or data that are not 2D.
    """
    return normalize_by_quadrature(model, num_times=num_times, extent=extent, grid=grid,
                                   t_min=t_min)
