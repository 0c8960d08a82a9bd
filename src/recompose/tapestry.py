r"""Spatial composition (R3's tapestry): one canvas density from models of overlapping crops.

A canvas ``x`` has shape ``(B, C, *S)`` (e.g. ``(B, 3, 16, 40)``). Region ``k`` is the crop
``P_k x = x[:, :, o_k : o_k + s_k]`` at spatial offset ``o_k`` with the size ``s_k`` of its
model ``m_k``'s event shape ``(C, *s_k)``; ``P_kᵀ`` places a crop-shaped tensor back on a canvas
of zeros. Two overlap treatments:

* ``overlap="product"`` (default) — the product of the crop densities,

      p_t(x) ∝ Π_k p^k_t(P_k x),   E(x, t) = Σ_k E_k(P_k x, t),   s(x, t) = Σ_k P_kᵀ s_k(P_k x, t).

  A density: energies (when every crop model has one) and every sampler, MALA, HMC and SMC
  included. A pixel covered by ``n(p)`` crops enters ``n(p)`` factors, so overlaps are
  constrained by every window that sees them.
* ``overlap="average"`` — every pixel's total weight is 1:
  ``s(x, t)_p = (1/n(p)) Σ_k [P_kᵀ s_k(P_k x, t)]_p``, the mean of the crop scores covering
  ``p`` (MultiDiffusion's averaged update). It is the score of a density only when the crop
  densities factorise over the overlapped pixels, ``p^k_t(y) = Π_q f_{k,q}(y_q)``; then it is
  ``Π_p Π_{k ∋ p} f_{k,p}(x_p)^{1/n(p)}``. In general the averaged field is not a gradient, so
  this tapestry is score-only (reverse diffusion, ULA, U-HMC).

A pixel that no crop covers would have a flat (improper) density: refused when built.

**One network call per network.** Each crop model is expanded into its canonical factors
``(base, exponent)`` (:mod:`recompose.compose`). Factors whose bases are views of one network
(the same :attr:`~recompose.models.base.DiffusionModel.batch_slot` network), across all crops,
stack their crops along the batch and make one call through ``network.rows(conditions, B)``;
any other base is called once on the stack of its crops. A ``16×40`` canvas of four windows,
each a conjunction of ``K`` positions of one position model, is one UNet call on ``4(K+1)·B``
crops.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .compose import factors
from .errors import CapabilityError, CompositionError
from .models.base import DiffusionModel
from .utils import append_dims, as_time, check_event_shape

__all__ = ["Tapestry", "tapestry", "OVERLAPS"]

OVERLAPS = ("product", "average")


@dataclass
class _Group:
    """Terms evaluated by one call: ``(crop index, condition, exponent)`` per term."""

    base: DiffusionModel  # the shared network (``rows`` view) or the lone base model
    shared: bool  # True: ``base.rows(conditions, B)`` evaluates the stacked crops
    crops: list[int] = field(default_factory=list)
    conditions: list[Tensor | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def _plan(models: Sequence[DiffusionModel]) -> list[_Group]:
    groups: dict[int, _Group] = {}
    for k, model in enumerate(models):
        for base, w in factors(model):
            slot = base.batch_slot
            # a network that cannot take one condition per row: each view is called on its own
            shared = slot is not None and type(slot.network).rows is not DiffusionModel.rows
            owner = slot.network if shared else base
            group = groups.setdefault(id(owner), _Group(owner, shared))
            group.crops.append(k)
            group.conditions.append(slot.condition if shared else None)
            group.weights.append(w)
    return list(groups.values())


class Tapestry(DiffusionModel):
    """A canvas model from crop models at offsets; build with :func:`tapestry`."""

    marginal = False  # a product over overlapping crops

    def __init__(self, canvas_shape: Sequence[int], regions: Sequence[tuple[Sequence[int],
                 DiffusionModel]], overlap: str = "product", name: str | None = None) -> None:
        super().__init__()
        shape = tuple(int(v) for v in canvas_shape)
        if len(shape) < 2 or min(shape) < 1:
            raise CompositionError(f"a canvas shape is (C, *spatial) with positive sizes, got "
                                   f"{tuple(canvas_shape)}")
        if overlap not in OVERLAPS:
            raise CompositionError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")
        if not regions:
            raise CompositionError("a tapestry needs at least one (offset, model) region")
        models = [m for _, m in regions]
        self.slices = [_region(i, shape, tuple(o), m) for i, (o, m) in enumerate(regions)]
        first = models[0]
        for i, m in enumerate(models[1:], start=2):
            if m.schedule != first.schedule:
                raise CompositionError(f"cannot form a tapestry: region {i} ({m.describe()}) "
                                       f"uses {m.schedule} but region 1 uses {first.schedule}")
        coverage = torch.zeros(shape[1:])
        for sl in self.slices:
            coverage[sl] += 1
        if (coverage == 0).any():
            hole = [int(v) for v in torch.nonzero(coverage == 0)[0]]
            raise CompositionError(f"canvas position {hole} (and {int((coverage == 0).sum()) - 1}"
                                   " more) lies in no region: its density would be flat; add a "
                                   "region there or shrink the canvas")
        self.register_buffer("coverage", coverage, persistent=False)
        self.models = nn.ModuleList(models)
        self.overlap, self.name = overlap, name
        self.schedule, self.event_shape = first.schedule, shape
        self.has_energy = overlap == "product" and all(m.has_energy for m in models)
        self._groups = _plan(models)
        # per-row views of shared networks by (group, batch size); a plain dict, so they are
        # not submodules (their networks already are, through the region models)
        self._rows: dict[tuple[int, int], DiffusionModel] = {}

    # ------------------------------------------------------------------ evaluation
    def _calls(self, x: Tensor, t: float | Tensor) -> Iterator[tuple[_Group, DiffusionModel,
                                                                     Tensor, Tensor]]:
        """Per group: the model to call, its stacked crops ``(M·B, C, *s)`` and times."""
        check_event_shape(x, self.event_shape, self.describe())
        b = x.shape[0]
        t = as_time(t, b, x)
        for i, g in enumerate(self._groups):
            crops = torch.cat([x[(slice(None), slice(None)) + self.slices[k]] for k in g.crops])
            yield g, self._caller(i, b), crops, t.repeat(len(g.crops))

    def _caller(self, i: int, batch: int) -> DiffusionModel:
        """What evaluates group ``i`` on ``batch`` chains: its network's per-row view (built
        once per batch size: a sampler calls with one size throughout) or its lone base."""
        g = self._groups[i]
        if not g.shared:
            return g.base
        if (i, batch) not in self._rows:
            self._rows[(i, batch)] = g.base.rows(g.conditions, batch)
        return self._rows[(i, batch)]

    @staticmethod
    def _weighted(g: _Group, out: Tensor) -> Tensor:
        """``(M·B, …) -> (M, B, …)`` scaled by each term's exponent."""
        v = out.reshape((len(g.crops), -1) + tuple(out.shape[1:]))
        return append_dims(torch.tensor(g.weights, dtype=v.dtype, device=v.device), v.ndim) * v

    def _place(self, scores: list[tuple[_Group, Tensor]], x: Tensor) -> Tensor:
        """``Σ_k P_kᵀ s_k`` (then divided by the coverage for ``overlap="average"``)."""
        out = torch.zeros_like(x)
        for g, s in scores:
            for j, k in enumerate(g.crops):
                out[(slice(None), slice(None)) + self.slices[k]] += s[j]
        if self.overlap == "average":
            out = out / self.coverage.to(out)
        return out

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        self._require_energy()
        return sum(self._weighted(g, m.energy(xs, ts)).sum(0)
                   for g, m, xs, ts in self._calls(x, t))

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self._place([(g, self._weighted(g, m.score(xs, ts)))
                            for g, m, xs, ts in self._calls(x, t)], x)

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        self._require_energy()
        energy, scores = 0, []
        for g, m, xs, ts in self._calls(x, t):
            e, s = m.energy_and_score(xs, ts)
            energy = energy + self._weighted(g, e).sum(0)
            scores.append((g, self._weighted(g, s)))
        return energy, self._place(scores, x)

    def _require_energy(self) -> None:
        if self.has_energy:
            return
        if self.overlap == "average":
            raise CapabilityError(f"{self.describe()} averages crop scores (overlap='average'): a "
                                  "score field, not a density, so it has no energy; use "
                                  "overlap='product' for Metropolis samplers, SMC or mixtures")
        lame = next(m for m in self.models if not m.has_energy)
        raise CapabilityError(f"{self.describe()} has no energy: its region model "
                              f"{lame.describe()} is score-only; use energy-parameterised models")

    # ------------------------------------------------------------------- structure
    def leaves(self) -> Iterator[DiffusionModel]:
        for m in self.models:
            yield from m.leaves()

    def describe(self) -> str:
        return self.name or f"tapestry({'x'.join(map(str, self.event_shape))}, " \
                            f"{len(self.models)} regions, {self.overlap})"


def _region(i: int, canvas: tuple[int, ...], offset: tuple[int, ...],
            model: DiffusionModel) -> tuple[slice, ...]:
    """The spatial slices of region ``i`` (1-based in messages), checked against the canvas."""
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"region {i + 1}: expected a DiffusionModel, got {type(model).__name__}")
    crop = tuple(model.event_shape)
    where = f"region {i + 1} ({model.describe()}, shape {crop})"
    if len(crop) != len(canvas) or crop[0] != canvas[0]:
        raise CompositionError(f"{where} does not fit a canvas of shape {canvas}: a crop model "
                               f"must have the canvas's {canvas[0]} channels and "
                               f"{len(canvas) - 1} spatial dimensions")
    try:
        offset = tuple(operator.index(o) for o in offset)
    except TypeError:
        offset = ()
    if len(offset) != len(canvas) - 1:
        raise CompositionError(f"{where}: its offset must be {len(canvas) - 1} integers (one per "
                               "spatial dimension)")
    if any(o < 0 or o + s > c for o, s, c in zip(offset, crop[1:], canvas[1:])):
        raise CompositionError(f"{where} at offset {offset} reaches outside the canvas "
                               f"{canvas[1:]}")
    return tuple(slice(o, o + s) for o, s in zip(offset, crop[1:]))


def tapestry(canvas_shape: Sequence[int],
             regions: Sequence[tuple[Sequence[int], DiffusionModel]],
             overlap: str = "product", name: str | None = None) -> Tapestry:
    """A model of a ``canvas_shape = (C, *S)`` canvas from ``(offset, model)`` regions: each
    model is a density of the crop at that spatial offset, of its own event shape.

    ``overlap="product"``: the product of the crop densities (a density; energies when all
    crops have them). ``overlap="average"``: crop scores averaged per pixel (score-only).

    Raises:
        CompositionError: a crop outside the canvas or of the wrong channels / rank, an offset
            that is not one integer per spatial dimension, differing noise schedules, a pixel
            no region covers, or an unknown ``overlap``.
    """
    return Tapestry(canvas_shape, [(tuple(o), m) for o, m in regions], overlap, name)
