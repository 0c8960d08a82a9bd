r"""Samplers as objects, and the one level loop that runs every one of them.

A sampler's constructor owns its options (so Python itself refuses an option that does not
apply); the sampler object holds no state of a run and can be reused. :func:`run_levels` runs
it over the noise levels of the model's path (:class:`~recompose.schedules.Levels`, level
``T − 1`` the noisiest)::

    state = sampler.start(run)                     # from run.x_init, drawn from the prior
    for i = T − 1, …, 0:
        state, record = sampler.level(run, state, i)   # arrive at level i and do its work
    result = sampler.finish(run, state)            # e.g. Tweedie's step to the data

``level`` returns a :class:`~.result.LevelRecord` (acceptance, step size, divergences, ESS,
resampling) and counts its evaluations on the :class:`Run`; the loop turns them into the run's
:class:`~.result.SampleInfo` and calls the user's ``callback`` once per level with
``{"level", "t", "x", …record}``.

**Writing a sampler.** Subclass :class:`Sampler`, set ``name``, implement ``start``,
``level``, ``finish`` (and ``check`` for capability errors, ``settings`` for the run record),
and pass the object to :func:`recompose.sample`. It runs with progress bars, callbacks,
diagnostics and under ``torch.distributed`` (:mod:`recompose.distributed`) without touching the
library. ``weighted = True`` declares that the chains are particles weighed against each
other: such a sampler accepts ``groups=`` and is sharded by splitting network evaluations,
not chains. ``tracks = True`` declares that it tracks log-densities along its chains
(:mod:`.tracking`), which score-only mixtures and superpositions need; :func:`check_tracking`
refuses them to every other sampler before any work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..compose import TRACKING_SAMPLERS, Superposition, needs_tracking
from ..errors import CapabilityError
from ..mcmc.base import Target
from ..models.base import DiffusionModel, model_device_dtype
from ..rewards import Tilted
from ..schedules import Levels
from ..utils import check_finite
from .result import LevelRecord, SampleResult, build_info, sample_problems

__all__ = ["Sampler", "Run", "Finished", "run_levels", "execute", "LevelCallback",
           "check_tracking", "finite_or_raise", "model_output_or_raise", "FAR", "STEP_ADVICE",
           "SCORE_ADVICE"]

LevelCallback = Callable[[dict], None]

FAR = 1e4  # |x| beyond which non-finite scores are blamed on runaway chains
STEP_ADVICE = "use a smaller step size or enable step-size adaptation"
SCORE_ADVICE = ("the composed score is too large for reverse diffusion's steps (large "
                "exponents?); use more levels or an annealed MCMC sampler")


@dataclass
class Run:
    """One run of a sampler: the model and its levels, the randomness and the counters.

    ``model`` is what the sampler evaluates (a row-sharded wrapper of ``composition`` for
    weighted samplers under ``torch.distributed``); ``composition`` is the model as built,
    for its structure (factors, conditions). ``rows(fn, x)`` evaluates a row-wise function of
    ``x`` (split across the ranks when sharded)."""

    model: DiffusionModel
    composition: DiffusionModel
    levels: Levels
    x_init: Tensor
    generator: torch.Generator | None
    clip: tuple[float, float] | None
    groups: Tensor | None
    rows: Callable[[Callable[[Tensor], Any], Tensor], Any]
    rewards: tuple = ()  # reward factors for samplers that weigh them (:mod:`recompose.rewards`)
    score_evals: int = 0
    energy_evals: int = 0
    reward_evals: int = 0

    def count(self, score: int = 0, energy: int = 0) -> None:
        """Composite evaluations per chain (an ``energy_and_score`` call counts in both)."""
        self.score_evals += score
        self.energy_evals += energy

    def t(self, i: int) -> Tensor:
        """Level ``i``'s time in the chains' dtype."""
        return self.levels.t[i].to(self.x_init.dtype)

    def target(self, i: int) -> Target:
        """The composed density at level ``i`` as an MCMC target."""
        return self.model.at(self.t(i))


class Finished(NamedTuple):
    """What :meth:`Sampler.finish` returns: the samples and, for weighted samplers, the
    log-weights before the final resampling and the evidence; for tracking samplers, each
    tracked model's log-density per chain at the cleanest level (``{name: (n,)}``)."""

    x: Tensor
    log_weights: Tensor | None = None
    log_evidence: float | list[float] | None = None
    log_density: dict[str, Tensor] | None = None


class Sampler:
    """Base class of the samplers (module docstring)."""

    name: str = "sampler"
    weighted: bool = False
    tracks: bool = False
    #: runs the base of ``model * rc.reward(...)`` and uses the rewards itself (weights,
    #: selection); other samplers run the tilted model, whose score needs their gradients
    weighs_rewards: bool = False
    #: steps from a top level at pure noise (``α = 0``) with the model's own ``x̂₀``
    from_pure_noise: bool = False

    def check(self, model: DiffusionModel) -> None:
        """Raise a capability error (before any work) if this sampler cannot run ``model``."""

    def settings(self) -> dict:
        """The sampler's options, JSON-ready (recorded in ``info.settings``)."""
        return {}

    def start(self, run: Run) -> Any:  # pragma: no cover - abstract
        """The state before the noisiest level, from ``run.x_init`` (draws from the prior)."""
        raise NotImplementedError

    def level(self, run: Run, state: Any, i: int) -> tuple[Any, LevelRecord]:
        """Arrive at level ``i`` from ``state`` (at level ``i + 1``, or the start) and do the
        level's work; return the new state and the level's :class:`~.result.LevelRecord`.
        Evaluations are counted with :meth:`Run.count`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def finish(self, run: Run, state: Any) -> Finished:  # pragma: no cover - abstract
        """The samples from the state at level 0 (e.g. Tweedie's step to the clean data)."""
        raise NotImplementedError

    def positions(self, state: Any) -> Tensor:
        """The chains' positions in ``state`` (for callbacks); default ``state.x``."""
        return state.x

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({options})"


def run_levels(sampler: Sampler, run: Run, callback: LevelCallback | None = None,
               tick: Callable[[LevelRecord], None] | None = None) -> SampleResult:
    """Run ``sampler`` from the noisiest level to the data (module docstring)."""
    start = time.perf_counter()
    num = len(run.levels)
    records: list[LevelRecord] = [LevelRecord() for _ in range(num)]
    with torch.no_grad():
        state = sampler.start(run)
        for i in reversed(range(num)):
            state, records[i] = sampler.level(run, state, i)
            if tick is not None:
                tick(records[i])
            if callback is not None:
                payload = {k: v for k, v in vars(records[i]).items() if v is not None}
                callback({"level": i, "t": float(run.levels.t[i]),
                          "x": sampler.positions(state), **payload})
        done = sampler.finish(run, state)
    info = build_info(sampler.name, run.x_init.shape[0], run.levels.t.tolist(), records,
                      run.score_evals, run.energy_evals, run.composition.num_networks,
                      time.perf_counter() - start, sampler.weighted, done.log_evidence,
                      run.reward_evals)
    return SampleResult(done.x, info, log_weights=done.log_weights,
                        log_density=done.log_density)


def check_tracking(sampler: Sampler, model: DiffusionModel) -> None:
    """Refuse (before any work) a model that needs tracked log-densities to a sampler that
    cannot track them, in one line naming the samplers that can."""
    if sampler.tracks or not needs_tracking(model):
        return
    use = ("'reverse'" if any(isinstance(m, Superposition) for m in model.modules())
           else TRACKING_SAMPLERS)
    raise CapabilityError(
        f"{sampler.name} cannot sample {model.describe()}: its score needs each part's "
        "log-density tracked along the chain, which an ODE or MCMC move cannot do without the "
        f"score's divergence; use {use}")


def finite_or_raise(x: Tensor, i: int, levels: Levels, advice: str) -> None:
    """Chains that left the reals at level ``i`` stop the run with one line and advice."""
    try:
        check_finite(x, f"sampling diverged at level {i} (t = {float(levels.t[i]):.3f})")
    except FloatingPointError as err:
        raise FloatingPointError(f"{err}; {advice}") from None


def model_output_or_raise(value: Tensor, x: Tensor, i: int, levels: Levels,
                          what: str = "score") -> None:
    """The model's score (or energy) at finite points. Not finite where the chains are at the
    data's scale (diffused data and noise are O(1)) means the model, not the sampler, is at
    fault."""
    try:
        check_finite(value, f"the model's {what} is not finite at level {i} "
                            f"(t = {float(levels.t[i]):.3f})")
    except FloatingPointError as err:
        if float(x.abs().max()) > FAR:
            raise FloatingPointError(f"{err} where the chains ran far away (|x| up to "
                                     f"{float(x.abs().max()):.3g}); {STEP_ADVICE}") from None
        raise FloatingPointError(
            f"{err}: the model itself gives non-finite values at finite inputs (check its "
            "weights and the exponents of the composition); a smaller step size will not help"
        ) from None


def _local(fn: Callable[[Tensor], Any], x: Tensor) -> Any:
    return fn(x)


def resolve_levels(model: DiffusionModel, num_levels: int | Levels, sampler: Sampler
                   ) -> Levels:
    """The levels of a run: ``num_levels`` on the model's path, or levels given by hand (on
    the model's path; a top at pure noise only for samplers that step from there)."""
    if not isinstance(num_levels, Levels):
        return model.schedule.levels(num_levels)
    if num_levels.schedule != model.schedule:
        raise ValueError(f"the levels are on {num_levels.schedule!r} but {model.describe()} is "
                         f"on {model.schedule!r}: place them with model.schedule.levels_at")
    if float(num_levels.alpha[-1]) == 0.0 and not sampler.from_pure_noise:
        raise ValueError(
            f"the top level is pure noise (α = 0), where {sampler.name} has no step (a score "
            "there carries nothing of the data); only the 'ode' sampler starts there, from the "
            "model's own x̂₀: drop the top level or use the 'ode' sampler")
    return num_levels


def execute(sampler: Sampler, model: DiffusionModel, n: int, num_levels: int | Levels,
            generator: torch.Generator | None, x_init: Tensor | None,
            clip: tuple[float, float] | None, groups: Tensor | None,
            callback: LevelCallback | None = None,
            tick: Callable[[LevelRecord], None] | None = None,
            evaluate: DiffusionModel | None = None,
            rows: Callable[[Callable[[Tensor], Any], Tensor], Any] | None = None,
            rewards: tuple = ()) -> SampleResult:
    """One run of ``sampler`` on ``model`` in this process: ``n`` chains from ``x_init`` (default:
    the path's prior) over ``num_levels`` levels; ``evaluate``/``rows``: a row-sharded model
    and row splitter (:mod:`recompose.distributed`); ``rewards``: the reward factors a sampler
    that weighs them uses (``model`` is then their base). Records the settings and the
    problems."""
    levels = resolve_levels(model, num_levels, sampler)
    device, dtype = model_device_dtype(model)
    if x_init is None:
        x_init = levels.prior(n, tuple(model.event_shape), generator, device, dtype)
    run = Run(evaluate if evaluate is not None else model, model, levels, x_init, generator,
              clip, groups, rows if rows is not None else _local, tuple(rewards))
    guided = model if isinstance(model, Tilted) else None
    if guided is not None:  # reward guidance: the tilted score calls the rewards
        guided.reward_rows = 0
    result = run_levels(sampler, run, callback, tick)
    if guided is not None:
        result.info.reward_evals = guided.reward_rows // n
    result.info.settings = {"num_levels": len(levels), "n": n, "clip": clip,
                            **sampler.settings()}
    tilted = rewards or (guided.rewards if guided is not None else ())
    if tilted:
        result.info.settings["rewards"] = [r.settings() for r in tilted]
    if isinstance(num_levels, Levels):
        result.info.settings["level_times"] = levels.t.tolist()
    result.info.warnings = result.info.problems() + sample_problems(result.x,
                                                                    levels.prior_std())
    return result
