r"""What a sampling run returns: the samples, per-level diagnostics and their one builder.

Per-level arrays are ordered from level 0 (the cleanest) up, whatever the sampler:

* ``acceptance`` / ``acceptance_min``: mean and lowest per-chain Metropolis–Hastings
  acceptance at each level (1 for unadjusted kernels and for samplers without MCMC steps);
* ``step_size``: the last step size used at each level (NaN where no MCMC step was taken);
* ``divergent``: fraction of the level's transitions flagged divergent;
* weighted samplers only: ``ess`` (effective sample size before resampling, the worst group's
  fraction times ``n``), ``resampled`` (levels where the particles were resampled),
  ``log_evidence`` (``log Ẑ`` of the cleanest level's composed density; one per group when the
  particles are grouped) at ``evidence_t``.

Costs are counted per chain: composite evaluations (``score_evals``, ``energy_evals``; an
``energy_and_score`` call counts in both), network evaluations (× the composite's leaves) and,
for compositions with reward factors, reward calls (``reward_evals``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

__all__ = ["SampleInfo", "SampleResult", "SamplingWarning", "LevelRecord", "build_info",
           "sample_problems", "ACCEPTANCE_FLOOR", "ESS_FLOOR", "FAR_OUTSIDE", "EXPLODED"]

ACCEPTANCE_FLOOR = 0.05  # mean MH acceptance under which a run is reported as stuck
ESS_FLOOR = 0.01  # effective sample size (fraction of n) under which a run is reported


class SamplingWarning(RuntimeWarning):
    """A run that finished but whose samples are suspect (see :meth:`SampleInfo.problems`)."""


@dataclass
class SampleInfo:
    """Diagnostics of a sampling run (module docstring)."""

    sampler: str
    num_chains: int
    t: list[float]
    acceptance: list[float]
    acceptance_min: list[float]
    step_size: list[float]
    divergent: list[float]
    score_evals: int = 0
    energy_evals: int = 0
    network_score_evals: int = 0
    network_energy_evals: int = 0
    wall_time: float = 0.0
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # see :meth:`problems`
    ess: list[float] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)
    log_evidence: float | list[float] | None = None
    evidence_t: float | None = None
    reward_evals: int = 0

    @property
    def mean_acceptance(self) -> float:
        """The acceptance averaged over the levels."""
        return float(sum(self.acceptance) / len(self.acceptance))

    def problems(self, acceptance_floor: float = ACCEPTANCE_FLOOR) -> list[str]:
        """What makes this run's samples suspect: a Metropolis-corrected chain that (almost)
        never moved, weights that collapsed onto a few particles, or divergent transitions."""
        out = []
        if self.settings.get("metropolis") and self.mean_acceptance < acceptance_floor:
            out.append(f"{self.sampler}: mean acceptance {self.mean_acceptance:.3f} is under "
                       f"{acceptance_floor}: the chains barely moved and the samples are close "
                       "to the predictor's; lower the step size (or enable adaptation)")
        if self.ess and min(self.ess) < ESS_FLOOR * self.num_chains:
            i = min(range(len(self.ess)), key=self.ess.__getitem__)
            fix = ("" if self.sampler == "fkc" else
                   ", or AIS weights with moves (proposal='ais')")
            out.append(f"{self.sampler}: the weights collapsed onto ESS {self.ess[i]:.1f} of "
                       f"{self.num_chains} particles at t = {self.t[i]:.3f}: the samples and "
                       f"the evidence rest on a few particles; use more levels or particles{fix}")
        bad = [i for i, d in enumerate(self.divergent) if d > 0]
        if bad:
            worst = max(self.divergent)
            out.append(f"{self.sampler}: divergent transitions at {len(bad)} of "
                       f"{len(self.divergent)} levels (up to {worst:.1%} of the chain steps at "
                       "one level); lower the step size")
        return out

    def to_dict(self) -> dict:
        """A JSON-ready record (``json.dumps(..., allow_nan=False)`` succeeds): what is
        undefined is ``null``, and ``notes`` says why."""
        out = asdict(self) | {"mean_acceptance": self.mean_acceptance}
        notes = {}
        moved = [math.isfinite(s) for s in self.step_size]
        if not any(moved):
            for key in ("acceptance", "acceptance_min", "mean_acceptance", "step_size"):
                out[key] = None
            notes["acceptance"] = (f"{self.sampler} took no MCMC steps: no acceptance rate and "
                                   "no step size")
        elif not all(moved):
            out["step_size"] = [s if ok else None for s, ok in zip(self.step_size, moved)]
            notes["step_size"] = "null at the levels without MCMC steps"
        if isinstance(self.log_evidence, float) and not math.isfinite(self.log_evidence):
            out["log_evidence"] = None
            notes["log_evidence"] = f"log Ẑ is {self.log_evidence}: every weight was zero"
        elif isinstance(self.log_evidence, list):
            bad = [i for i, v in enumerate(self.log_evidence) if not math.isfinite(v)]
            if bad:
                out["log_evidence"] = [None if i in bad else v
                                       for i, v in enumerate(self.log_evidence)]
                notes["log_evidence"] = f"groups {bad}: every weight was zero"
        if notes:
            out["notes"] = notes
        return out


FAR_OUTSIDE = 100.0  # samples beyond this many prior standard deviations (at least 1) are suspect
EXPLODED = 1e6  # … and beyond this many, nothing is left of them


def sample_problems(x: Tensor, prior_std: float) -> list[str]:
    """What is wrong with the final samples ``x`` ``(n, *D)``: chains that are not finite, or
    far outside the range the model's noise and data allow (``|x| > FAR_OUTSIDE ·
    max(1, prior_std)``; diffusion models' data are of order 1, their noise of order
    ``prior_std``). A run where every chain is not finite or exploded (``|x| > EXPLODED ·
    max(1, prior_std)``) has nothing usable left and raises ``FloatingPointError``."""
    flat = x.detach().reshape(x.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    scale = max(1.0, prior_std)
    limit = FAR_OUTSIDE * scale
    peak = flat.abs().amax(dim=1)  # (n,) each chain's largest coordinate
    far = finite & (peak > limit)
    exploded = finite & (peak > EXPLODED * scale)
    bad, n = int((~finite).sum()) + int(far.sum()), x.shape[0]
    if bad == 0:
        return []
    parts = []
    if not bool(finite.all()):
        parts.append(f"{int((~finite).sum())} of {n} samples are not finite")
    if bool(far.any()):
        top = float(peak[far].max())
        parts.append(f"{int(far.sum())} of {n} samples lie far outside the range of the "
                     f"model's noise and data (|x| up to {top:.3g}, beyond {limit:g})")
    what = " and ".join(parts)
    advice = ("the composition is likely degenerate (an exponent of 0 is a flat density, huge "
              "exponents make the steps explode): check the expression, or use more levels "
              "or an annealed sampler")
    if int((~finite).sum()) + int(exploded.sum()) == n:
        raise FloatingPointError(f"no usable sample: {what}; {advice}")
    return [f"{what}: {advice}"]


@dataclass
class SampleResult:
    """Samples ``x`` of shape ``(n, *D)`` and their :class:`SampleInfo`. For weighted samplers,
    ``log_weights`` ``(n,)`` are the normalised float64 log-weights of the particles before the
    final resampling (``x`` is equally weighted); ``None`` for the other samplers.

    ``log_density``: for a composition with tracked log-densities (score-only mixtures,
    superpositions; :mod:`recompose.samplers.tracking`), ``{name: ℓ (n,)}`` float64, each tracked
    model's estimated ``log p_t(x_t)`` (normaliser included) along each returned chain at the
    cleanest level ``info.t[0]``; ``None`` otherwise."""

    x: Tensor
    info: SampleInfo
    log_weights: Tensor | None = None
    log_density: dict[str, Tensor] | None = None


@dataclass
class LevelRecord:
    """What a sampler did at one level (``None``: nothing of that kind, the default is kept).
    ``acceptance`` is the mean over chains, ``acceptance_min`` the lowest chain's."""

    acceptance: float | None = None
    acceptance_min: float | None = None
    step_size: float | None = None
    divergent: float | None = None
    ess: float | None = None
    resampled: bool = False


def build_info(sampler: str, num_chains: int, t: list[float], records: list[LevelRecord],
               score_evals: int, energy_evals: int, leaves: int, wall_time: float,
               weighted: bool, log_evidence: float | list[float] | None = None,
               reward_evals: int = 0) -> SampleInfo:
    """The one place a :class:`SampleInfo` is assembled from per-level records (``records[i]``
    for level ``i``)."""
    def column(key: str, default: float) -> list[float]:
        return [default if getattr(r, key) is None else float(getattr(r, key)) for r in records]

    return SampleInfo(
        sampler=sampler, num_chains=num_chains, t=list(t),
        acceptance=column("acceptance", 1.0), acceptance_min=column("acceptance_min", 1.0),
        step_size=column("step_size", math.nan), divergent=column("divergent", 0.0),
        score_evals=score_evals, energy_evals=energy_evals,
        network_score_evals=score_evals * leaves, network_energy_evals=energy_evals * leaves,
        wall_time=wall_time, ess=column("ess", 0.0) if weighted else [],
        resampled=[i for i, r in enumerate(records) if r.resampled],
        log_evidence=log_evidence, evidence_t=t[0] if weighted else None,
        reward_evals=reward_evals)
