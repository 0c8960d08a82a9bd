"""``recompose.sample``: one entry point for every sampler on any model or composite.

A sampler is an object whose constructor owns its options (:mod:`recompose.samplers`):
``Reverse`` (reverse diffusion: the baseline R3 shows to be wrong for compositions), ``ODE``
(the deterministic probability-flow sampler, DDIM), ``Annealed`` (annealed MCMC with a ULA,
U-HMC, MALA or HMC kernel), ``SMC`` (weighted particles on energies) and ``FKC`` (reverse
diffusion with Feynman–Kac weights; scores suffice). Names are shortcuts with the same
defaults::

    rc.sample(model, n, "hmc", num_steps=5, num_leapfrog_steps=2)      # a name + its options
    rc.sample(model, n, rc.samplers.Annealed(rc.mcmc.hmc(num_leapfrog_steps=2), num_steps=5))

An option that does not apply to the chosen sampler raises a one-line ``TypeError`` naming it
(the sampler's constructor decides); values out of range raise ``ValueError``; a sampler that
the model cannot support (energies needed, conditions per chain without ``groups=``) raises
before any work; so does a score-only mixture or a superposition given to a sampler that
cannot track log-densities along its chains (only ``"reverse"`` and ``"fkc"`` can).

Randomness: ``seed=`` or ``generator=``; with neither, torch's default generator is used (as
torch and diffusers do), so two unseeded calls differ and ``torch.manual_seed`` applies.

Inside a ``torch.distributed`` process group the run is sharded (:mod:`recompose.distributed`;
``shard=False`` runs this process alone); ``shard=True`` outside one gives the sharded random
stream on one process, the same samples as any number of processes.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from . import distributed as _distributed
from .compose import needs_tracking
from .errors import CapabilityError
from .mcmc.base import Kernel
from .models.base import DiffusionModel, model_device_dtype
from .rewards import Reward, split_rewards
from .samplers.base import LevelCallback, Sampler, check_tracking, execute
from .samplers.result import SampleResult, SamplingWarning
from .samplers.shortcuts import SAMPLERS, make_sampler
from .schedules import Levels

__all__ = ["sample", "SAMPLERS", "MAX_LEVELS", "MAX_CHAINS"]

MAX_LEVELS = 10**6  # noise levels: beyond this a run takes years; a typo, not a request
MAX_CHAINS = 2**31 - 1  # torch's index range on one dimension


def _progress(total: int, desc: str) -> tuple[object, object]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="level", leave=False)

    def tick(record: object) -> None:
        shown = {"acc": record.acceptance, "ess": record.ess}
        bar.set_postfix({k: f"{v:.2f}" if k == "acc" else f"{v:.0f}"
                         for k, v in shown.items() if v is not None}, refresh=False)
        bar.update(1)

    return tick, bar


def _count(value: object, name: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer in [1, {most:,}], got {value!r}")
    return value


def _reward_split(model: DiffusionModel, sampler: Sampler
                  ) -> tuple[DiffusionModel, tuple[Reward, ...]]:
    """The model a sampler runs and the rewards it weighs itself (:mod:`recompose.rewards`):
    weighted samplers and best-of-N run the base and use the rewards; the others run the tilted
    model, whose score needs every reward's gradient. Refusals come before any work."""
    base, rewards = split_rewards(model)
    if not rewards:
        return model, ()
    if not sampler.weighs_rewards:
        bad = [r.describe() for r in rewards if not r.differentiable]
        if bad:
            raise CapabilityError(
                f"{sampler.name} follows the gradient of every factor, but {', '.join(bad)} is "
                "not differentiable; use it in weights: 'fkc', 'smc' with proposal='ddpm' and "
                "moves=None, or rc.samplers.BestOf(...); or declare differentiable=True")
        if needs_tracking(base):
            raise CapabilityError(
                f"{base.describe()} needs log-densities tracked along the chains, and reward "
                "guidance would differentiate through them; use the reward in weights with "
                "'fkc' (moves=None)")
        return model, ()
    moves = getattr(sampler, "moves", None)
    if moves is not None:
        fix = " (smc: proposal='ddpm')" if sampler.name == "smc" else ""
        raise CapabilityError(
            f"{sampler.name}'s moves ({moves.name}) would target {base.describe()} without its "
            f"reward factor and undo the reward's weights; use moves=None{fix}")
    return base, rewards


def sample(
    model: DiffusionModel, n: int, sampler: str | Sampler | Kernel = "hmc", *,
    num_levels: int | Levels = 100, seed: int | None = None,
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None, clip: tuple[float, float] | None = None,
    groups: Tensor | None = None, callback: LevelCallback | None = None,
    progress: bool = False, shard: bool | None = None, **options: object,
) -> SampleResult:
    """Draw ``n`` samples from ``model`` (any model or composite).

    Args:
        model: a :class:`~recompose.DiffusionModel`, e.g. ``a * b ** -0.3``.
        n: number of chains / samples (particles for ``"smc"`` / ``"fkc"``).
        sampler: a sampler object (``rc.samplers.Annealed(rc.mcmc.hmc(), num_steps=5)``), a
            kernel (annealed MCMC with it), or a name: ``"reverse"``, ``"ode"``, ``"ula"``,
            ``"uhmc"``, ``"mala"``, ``"hmc"`` (default), ``"smc"``, ``"fkc"``
            (:mod:`recompose.samplers.shortcuts`).
        num_levels: noise levels ``T`` (R3: 100) on the model's path, or
            :class:`~recompose.schedules.Levels` placed by hand (``model.schedule.levels_at``;
            e.g. a diffusers scheduler's own steps, :func:`~recompose.integrations.diffusers.
            scheduler_levels`).
        seed: seeds a fresh ``torch.Generator`` (or give ``generator=``; with neither,
            torch's default generator).
        generator: a ``torch.Generator`` on the model's device.
        x_init: initial chains at the noisiest level, ``(n, *event_shape)``; default: draws
            from the path's prior. Not for weighted samplers (their weights assume prior draws).
        clip: data range ``(lo, hi)``: clamp Tweedie's ``x̂₀`` inside every reverse-diffusion
            step (DDPM's ``clip_denoised``; MCMC steps are not clipped).
        groups: weighted samplers only: one integer id per particle, equal for particles with
            the same target; required when conditions differ between chains (a label per
            chain): each group is weighted and resampled on its own, e.g. ``groups=labels``.
        callback: called once per level with a dict (``level``, ``t``, ``x``, …).
        progress: show a progress bar (levels).
        shard: ``None``: shard inside a ``torch.distributed`` process group; ``False``: run in
            this process alone; ``True``: the sharded random stream also outside a group
            (:mod:`recompose.distributed`). Sharding needs ``seed=``.
        **options: with a sampler name, its options (e.g. ``num_steps``,
            ``num_leapfrog_steps``, ``moves``, ``ess_threshold``).

    Returns:
        :class:`~recompose.samplers.result.SampleResult` with ``.x`` ``(n, *D)`` and ``.info``
        (weighted samplers also ``.log_weights``, ``info.ess``, ``info.log_evidence``…;
        tracked compositions ``.log_density``, each tracked model's ``log p_t`` per chain).

    Raises:
        TypeError: an argument that does not apply to the chosen sampler.
        ValueError: a value out of range, or an unknown sampler name.
        CapabilityError: a sampler the model cannot support (e.g. energies needed).
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
    n = _count(n, "n", MAX_CHAINS)
    count = (len(num_levels) if isinstance(num_levels, Levels)
             else _count(num_levels, "num_levels", MAX_LEVELS))
    block_size = None
    if isinstance(sampler, _distributed.Sharded):
        sampler, block_size = sampler.sampler, sampler.block_size
    sampler = make_sampler(sampler, **options)
    model, rewards = _reward_split(model, sampler)
    if groups is not None and not sampler.weighted:
        raise TypeError(f"groups does not apply to sampler {sampler.name!r} (its chains are "
                        "independent: only weighted samplers, smc and fkc, compare particles)")
    if x_init is not None:
        if sampler.weighted:
            raise TypeError(f"x_init does not apply to sampler {sampler.name!r} (its initial "
                            "weights assume draws from the prior)")
        if tuple(x_init.shape) != (n, *model.event_shape):
            raise ValueError(f"x_init must have shape {(n, *model.event_shape)}")
    if clip is not None:
        clip = (float(clip[0]), float(clip[1]))
        if not clip[0] < clip[1]:
            raise ValueError(f"clip must be (lo, hi) with lo < hi, got {clip}")
    if sampler.weighted and groups is None and model.per_chain:
        raise ValueError(
            f"{model.describe()} has conditions that differ between chains, so its chains "
            f"target different densities; {sampler.name} weighs and resamples particles "
            "against each other: give groups= (one id per chain, equal for chains with the "
            "same conditions), e.g. groups=labels")
    check_tracking(sampler, model)
    sampler.check(model)
    run = functools.partial(execute, sampler, model, num_levels=num_levels, clip=clip,
                            callback=callback, rewards=rewards)
    sharded = _distributed.active() if shard is None else bool(shard)
    if sharded:
        _distributed.require_seed(seed, generator)
    elif generator is not None and seed is not None:
        raise ValueError("give either generator= or seed=, not both")
    if block_size is not None and not sharded:
        raise TypeError("block_size applies only to sharded runs (inside a torch.distributed "
                        "process group, or shard=True)")
    if sharded:
        result = _distributed.run_sharded(run, sampler, n, seed, generator, x_init, groups,
                                          block_size, tuple(model.event_shape), count,
                                          progress, model)
        result.x = result.x.to(model_device_dtype(model)[0])
    else:
        if seed is not None:
            generator = torch.Generator(device=model_device_dtype(model)[0]).manual_seed(
                int(seed))
        tick, bar = _progress(count, sampler.name) if progress else (None, None)
        try:
            result = run(n=n, generator=generator, x_init=x_init, groups=groups, tick=tick)
        finally:
            if bar is not None:
                bar.close()
    for problem in result.info.warnings:  # finished, but say so when the samples are suspect
        warnings.warn(problem, SamplingWarning, stacklevel=2)
    return result

