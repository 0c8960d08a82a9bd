"""``recompose.sample``: one entry point for every sampler on any model or composite.

Samplers: ``"reverse"`` (DDPM ancestral with the composed score — the baseline R3 shows to be
wrong for compositions), and annealed MCMC with ``"ula"``, ``"uhmc"`` (scores suffice) or
``"mala"``, ``"hmc"`` (Metropolis-corrected: need energies); weighted particles with
``"smc"`` (energies) and ``"fkc"`` (reverse diffusion with Feynman–Kac weights: scores
suffice; :mod:`recompose.diffusion.smc`). The names are shortcuts for the
kernel factories of :mod:`recompose.mcmc`; a kernel object built by one of them (with its own
settings) is passed as ``kernel=``::

    rc.sample(model, n, "hmc", num_leapfrog_steps=5)            # name + the factory's options
    rc.sample(model, n, kernel=rc.mcmc.hmc(num_leapfrog_steps=5))  # the same run

Every argument must apply to the chosen sampler: kernel options are checked against the
factory's signature, MCMC options are refused for ``"reverse"``, ``target_accept`` needs
adaptation. Such mistakes raise a one-line ``TypeError`` naming the argument; values out of
range raise ``ValueError``.

Randomness: ``seed=`` or ``generator=``; with neither, torch's default generator is used (as
torch and diffusers do), so two unseeded calls differ and ``torch.manual_seed`` applies.

See :mod:`recompose.diffusion.annealed` for the algorithm and :mod:`recompose.mcmc.step_sizes`
for the step-size rule ``c · σ_t^p`` and its optional adaptation.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
from torch import Tensor

from . import distributed as _distributed
from .diffusion.annealed import (
    LevelCallback,
    SampleResult,
    SamplingWarning,
    annealed_mcmc,
    reverse_diffusion,
)
from .diffusion.feynman_kac import FeynmanKac
from .diffusion.smc import smc
from .errors import CapabilityError
from .mcmc import KERNELS
from .mcmc.base import Kernel
from .mcmc.step_sizes import DEFAULT_STEP, DEFAULT_TARGET_ACCEPT, AcceptanceAdapter, StepSizeRule
from .models.base import DiffusionModel, model_device_dtype
from .resampling import SCHEMES

__all__ = ["sample", "SAMPLERS"]

SAMPLERS = ("reverse", "ula", "uhmc", "mala", "hmc", "smc", "fkc")


def _progress_callback(total: int, desc: str, user: LevelCallback | None
                       ) -> tuple[LevelCallback, object]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="level", leave=False)

    def callback(payload: dict) -> None:
        bar.update(1)
        shown = {"acc": payload.get("acceptance"), "ess": payload.get("ess")}
        bar.set_postfix({k: f"{v:.2f}" if k == "acc" else f"{v:.0f}"
                         for k, v in shown.items() if v is not None}, refresh=False)
        if user is not None:
            user(payload)

    return callback, bar


def _inapplicable(name: str, sampler: str, why: str = "") -> TypeError:
    return TypeError(f"{name} does not apply to sampler {sampler!r}{why}")


def _resolve_kernel(sampler: str | None, kernel: Kernel | None, options: dict) -> Kernel | None:
    """The kernel to run (``None`` for reverse diffusion); refuses options that do not apply."""
    if kernel is not None:
        if not isinstance(kernel, Kernel):
            raise TypeError("kernel must be a Kernel built by recompose.mcmc (e.g. "
                            f"rc.mcmc.hmc(num_leapfrog_steps=5)), got {type(kernel).__name__}")
        if sampler is not None:
            raise TypeError(f"give either a sampler name ({sampler!r}) or kernel=, not both")
        if options:
            name = next(iter(options))
            raise TypeError(f"{name} cannot be combined with kernel=; set it in the factory, "
                            f"e.g. rc.mcmc.{kernel.name}({name}=...)")
        return kernel
    sampler = "hmc" if sampler is None else sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        hint = "; pass kernel objects as kernel=" if isinstance(sampler, Kernel) else ""
        raise ValueError(f"unknown sampler {sampler!r}; choose one of "
                         f"{', '.join(SAMPLERS)}{hint}")
    if sampler in ("reverse", "fkc"):
        if options:
            raise _inapplicable(next(iter(options)), sampler, " (reverse diffusion has no kernel)")
        return None
    factory = KERNELS[sampler]
    allowed = list(inspect.signature(factory).parameters)
    for name in options:
        if name not in allowed:
            raise _inapplicable(name, sampler, f" (its kernel options: "
                                               f"{', '.join(allowed) or 'none'})")
    return factory(**options)


def sample(
    model: DiffusionModel, n: int, sampler: str | None = None, *, kernel: Kernel | None = None,
    num_levels: int = 100, num_steps: int | None = None, step_size: float | None = None,
    step_power: float | None = None, adapt: bool | None = None,
    target_accept: float | None = None, reverse_step: bool | None = None,
    denoise: bool | None = None, moves: str | Kernel | None = None,
    ess_threshold: float | None = None, resampling: str | None = None,
    groups: Tensor | None = None, generator: torch.Generator | None = None,
    seed: int | None = None,
    x_init: Tensor | None = None, clip: tuple[float, float] | None = None,
    callback: LevelCallback | None = None, progress: bool = False, shard: bool | None = None,
    block_size: int | None = None, **kernel_options: object,
) -> SampleResult:
    """Draw ``n`` samples from ``model`` (any model or composite).

    Args:
        model: a :class:`~recompose.DiffusionModel`, e.g. ``a * b ** -0.3``.
        n: number of chains / samples (particles for ``"smc"``).
        sampler: ``"reverse" | "ula" | "uhmc" | "mala" | "hmc" | "smc" | "fkc"`` (default
            ``"hmc"``). ``"fkc"``: reverse diffusion whose particles carry Feynman–Kac weights
            and are resampled (scores suffice; weights exact as ``num_levels`` grows).
        kernel: a kernel object instead of ``sampler`` (with its own settings), e.g.
            ``rc.mcmc.hmc(num_leapfrog_steps=3, damping=0.5)``.
        num_levels: noise levels ``T`` (R3: 100).
        num_steps: MCMC steps per level ``K`` (R3 and default: 10; SMC moves: 2). MCMC only.
        step_size: multiplier ``c`` in ``step = c · σ_t^p``; default per sampler (see
            :data:`~recompose.mcmc.step_sizes.DEFAULT_STEP`). MCMC samplers only.
        step_power: ``p``; 0 for a constant step. Default 2 for ULA/MALA, 1 for (U-)HMC.
        adapt: adapt ``c`` toward ``target_accept`` (MALA/HMC only); default on for them.
        target_accept: default 0.574 (MALA) / 0.65 (HMC); only when adapting.
        reverse_step: a DDPM predictor step between levels (free: reuses the kernel's score;
            default ``True``). SMC: ``True`` weights the DDPM step as a proposal; default
            ``False``, AIS weights (see :mod:`recompose.diffusion.smc`).
        denoise: end with Tweedie's denoiser, as reverse diffusion does (free; default
            ``True``); ``False`` returns samples of the cleanest level's target. MCMC and SMC.
        moves: SMC only: the MCMC moves after each level's reweighting, a sampler name or a
            kernel object (default ``"hmc"``; ``num_steps`` of them per level, 0 for none).
            Kernel options and the step-size arguments configure the moves. FKC: none by
            default; given (e.g. ``"uhmc"`` on scores), ``num_steps`` (default 1) moves per
            level spread the copies that resampling makes.
        ess_threshold: SMC and FKC only: resample when the effective sample size falls under
            ``ess_threshold · n`` (default 0.5; 1: every level; 0: never).
        resampling: SMC and FKC only: ``"systematic"`` (default), ``"stratified"``,
            ``"multinomial"`` or ``"residual"``.
        groups: SMC and FKC only: one integer id per particle, equal for particles with the same
            target. Required when conditions differ between chains (a label per chain): each
            group is weighted and resampled on its own, e.g. ``groups=labels``.
        generator: a ``torch.Generator`` on the model's device, or give ``seed`` (with
            neither, torch's default generator).
        x_init: initial chains at the noisiest level; default ``N(0, I)`` (SMC: always).
        clip: data range ``(lo, hi)``: clamp Tweedie's ``x̂₀`` inside every DDPM step, as
            DDPM's ``clip_denoised`` (MCMC steps are not clipped). Default: no clipping.
        callback: called once per level with a dict (``level``, ``t``, ``x``, …).
        progress: show a progress bar.
        shard: inside a ``torch.distributed`` process group (default there: ``True``), split
            the chains into seeded blocks across the ranks and gather them on every rank; the
            samples are the same for any world size (:mod:`recompose.distributed`). Needs
            ``seed=``.
        block_size: chains per block when sharding (default: by the data's size, 1,024 for
            2D points, 64 for 16×16 RGB images; see :mod:`recompose.distributed`).
        **kernel_options: arguments of the named sampler's kernel factory (for SMC, of the
            moves'), e.g. ``num_leapfrog_steps``, ``damping`` (fraction of momentum kept)
            and ``mass`` for ``"uhmc"``/``"hmc"`` (R3: 3, 0.5, 1); ``energy="path"`` for
            ``"mala"``/``"hmc"`` on score-only models (:mod:`recompose.mcmc.path`; MALA also
            ``quadrature="simpson"``).

    Returns:
        :class:`~recompose.diffusion.annealed.SampleResult` with ``.x`` ``(n, *D)`` and ``.info``
        (for SMC also ``.log_weights``, and ``info.ess``, ``info.log_evidence``, …).

    Raises:
        TypeError: an argument that does not apply to the chosen sampler.
        ValueError: a value out of range, or an unknown sampler name.
        CapabilityError: a sampler that needs energies on a score-only model.
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if block_size is not None and not _distributed.active():
        raise TypeError("block_size applies only inside a torch.distributed process group")
    sharded = (shard is None or shard) and _distributed.active()
    if sharded:
        _distributed.require_seed(seed, generator)
    if sharded and sampler == "fkc":
        raise TypeError("fkc does not run sharded yet (its weights need each factor's score, "
                        "which the sharded wrapper does not expose); use 'smc' or run unsharded")
    if sharded and sampler == "smc":
        # one weighted population: replicated bookkeeping, network evaluations split by rows
        if block_size is not None:
            raise TypeError("block_size does not apply to smc (its population is not split "
                            "into blocks)")
        model = _distributed.ShardedModel(model)
        progress = progress and _distributed.rank() == 0
    elif sharded:
        result = _distributed.sample_sharded(
            functools.partial(sample, model, sampler=sampler, kernel=kernel,
                              num_levels=num_levels, num_steps=num_steps, step_size=step_size,
                              step_power=step_power, adapt=adapt, target_accept=target_accept,
                              reverse_step=reverse_step, denoise=denoise, moves=moves,
                              ess_threshold=ess_threshold, resampling=resampling, clip=clip,
                              callback=callback, shard=False, **kernel_options),
            n, seed, x_init, _distributed.default_block_size(tuple(model.event_shape))
            if block_size is None else block_size, progress)
        result.x = result.x.to(model_device_dtype(model)[0])
        for problem in result.info.warnings:
            warnings.warn(problem, SamplingWarning, stacklevel=2)
        return result
    elif shard:
        raise ValueError("shard=True needs an initialised torch.distributed process group")
    particles = sampler in ("smc", "fkc")
    feynman_kac = FeynmanKac(model) if sampler == "fkc" else None  # capability errors now
    smc_options = {"moves": moves, "ess_threshold": ess_threshold, "resampling": resampling,
                   "groups": groups}
    if feynman_kac is not None:  # moves (optional) rejuvenate the resampled copies
        kernel = (_resolve_kernel("fkc", kernel, kernel_options) if moves is None
                  else _resolve_moves(moves, kernel, kernel_options))
        if reverse_step is not None:
            raise _inapplicable("reverse_step", "fkc", " (it always takes the DDPM step)")
        name = "fkc"
    elif particles:
        kernel = _resolve_moves(moves, kernel, kernel_options)
        name = "smc"
    else:
        for option, value in smc_options.items():
            if value is not None:
                raise _inapplicable(option, sampler or "hmc", " (only 'smc' has particles)")
        kernel = _resolve_kernel(sampler, kernel, kernel_options)
        name = "reverse" if kernel is None else kernel.name
    mcmc_options = {"num_steps": num_steps, "step_size": step_size, "step_power": step_power,
                    "adapt": adapt, "target_accept": target_accept,
                    "reverse_step": reverse_step, "denoise": denoise}
    if particles and x_init is not None:
        raise _inapplicable("x_init", name, " (its initial weights assume N(0, I) draws)")
    if kernel is None:
        for option, value in mcmc_options.items():
            if value is not None:
                raise _inapplicable(option, name, " (it has no MCMC steps)")
    if num_steps is None:
        num_steps = (int(kernel is not None) if feynman_kac else 2 if particles else 10)
    if num_levels < 1 or num_steps < 0:
        raise ValueError("num_levels must be ≥ 1 and num_steps ≥ 0")
    reverse_step = (not particles) if reverse_step is None else reverse_step
    if particles and feynman_kac is None and not reverse_step and num_steps == 0:
        raise ValueError("smc with reverse_step=False (AIS weights) moves the particles only "
                         "by its MCMC moves: give num_steps ≥ 1, or reverse_step=True for the "
                         "DDPM proposal")
    device, dtype = model_device_dtype(model)
    if generator is not None and seed is not None:
        raise ValueError("give either generator= or seed=, not both")
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    if particles and groups is None and model.per_chain:
        raise ValueError(f"{model.describe()} has conditions that differ between chains, so its "
                         f"chains target different densities; {name} weighs and resamples "
                         "particles against each other: give groups= (one id per chain, equal "
                         "for chains with the same conditions), e.g. groups=labels")
    if particles and feynman_kac is None and not model.has_energy:
        raise CapabilityError(
            f"SMC weights particles by energy differences but {model.describe()} is "
            "score-only; use energy-parameterised models, or the 'fkc' (weighted, score-only), "
            "'reverse', 'ula' or 'uhmc' samplers")
    if kernel is not None and kernel.needs_energy and not model.has_energy:
        raise CapabilityError(
            f"{kernel.name.upper()} needs energies for its Metropolis-Hastings test but "
            f"{model.describe()} is score-only; use energy-parameterised models, "
            "energy='path' (energy differences estimated from the scores), or the "
            "'ula', 'uhmc' or 'reverse' samplers"
        )
    rule = adapter = None
    if kernel is not None:
        rule, adapter = _step_rule(kernel, step_size, step_power, adapt, target_accept, device)
    if x_init is None:
        x_init = torch.randn((n, *model.event_shape), generator=generator, device=device,
                             dtype=dtype)
    elif tuple(x_init.shape) != (n, *model.event_shape):
        raise ValueError(f"x_init must have shape {(n, *model.event_shape)}")

    levels = model.schedule.levels(num_levels)
    cb, bar = _progress_callback(num_levels, name, callback) if progress else (callback, None)
    if clip is not None:
        clip = (float(clip[0]), float(clip[1]))
        if not clip[0] < clip[1]:
            raise ValueError(f"clip must be (lo, hi) with lo < hi, got {clip}")
    settings = {"num_levels": num_levels, "n": n, "clip": clip}
    denoise = True if denoise is None else denoise
    try:
        if particles:
            ess_threshold, resampling = _smc_options(ess_threshold, resampling)
            result = smc(model, x_init, levels, kernel, num_steps, rule, adapter, ess_threshold,
                         resampling, reverse_step, denoise, generator, cb, clip, feynman_kac,
                         groups)
            settings |= {"ess_threshold": ess_threshold, "resampling": resampling,
                         "moves": None if kernel is None else kernel.name}
        elif kernel is None:
            result = reverse_diffusion(model, x_init, levels, generator, cb, clip)
        else:
            result = annealed_mcmc(model, x_init, levels, kernel, num_steps, rule, adapter,
                                   reverse_step, denoise, generator, cb, clip)
        if kernel is not None:
            settings |= {"reverse_step": None if feynman_kac else reverse_step,
                         "denoise": denoise,
                         "num_steps": num_steps, "step_size": rule.scale,
                         "step_power": rule.power, "adapt": adapter is not None,
                         "target_accept": adapter.target if adapter else None,
                         "metropolis": kernel.metropolis, **kernel.params}
    finally:
        if bar is not None:
            bar.close()
    result.info.settings = settings
    result.info.warnings = result.info.problems()
    for problem in result.info.warnings:  # finished, but say so when the samples are suspect
        warnings.warn(problem, SamplingWarning, stacklevel=2)
    return result


def _resolve_moves(moves: str | Kernel | None, kernel: Kernel | None, options: dict) -> Kernel:
    """SMC's MCMC moves (default HMC); refuses ``kernel=``."""
    if kernel is not None:
        raise TypeError("kernel= does not apply to sampler 'smc'; pass its MCMC moves as "
                        "moves= (a sampler name or a kernel object)")
    moves = "hmc" if moves is None else moves
    if isinstance(moves, Kernel):
        return _resolve_kernel(None, moves, options)
    if moves in ("reverse", "smc"):
        raise ValueError(f"moves must be an MCMC kernel (ula, uhmc, mala, hmc), got {moves!r}")
    return _resolve_kernel(moves, None, options)


def _smc_options(ess_threshold: float | None, resampling: str | None) -> tuple[float, str]:
    threshold = 0.5 if ess_threshold is None else ess_threshold
    if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
    scheme = "systematic" if resampling is None else resampling
    if scheme not in SCHEMES:
        raise ValueError(f"unknown resampling {resampling!r}; choose one of {', '.join(SCHEMES)}")
    return float(threshold), scheme


def _step_rule(kernel: Kernel, step_size: float | None, step_power: float | None,
               adapt: bool | None, target_accept: float | None, device: torch.device
               ) -> tuple[StepSizeRule, AcceptanceAdapter | None]:
    """The step-size rule ``c · σ^p`` and the optional acceptance adapter for ``kernel``."""
    name = kernel.name
    c, p = DEFAULT_STEP.get(name, (step_size, step_power))
    if step_size is None and c is None or step_power is None and p is None:
        raise ValueError(f"kernel {name!r} has no default step size; give step_size= and "
                         "step_power=")
    rule = StepSizeRule(c if step_size is None else step_size,
                        p if step_power is None else step_power)
    adapt = kernel.metropolis if adapt is None else adapt
    if adapt and not kernel.metropolis:
        raise _inapplicable("adapt", name, " (adapt needs an acceptance rate: only mala and "
                                          "hmc adapt)")
    if target_accept is not None and not adapt:
        raise _inapplicable("target_accept", name, " with adapt=False")
    if not adapt:
        return rule, None
    target = target_accept if target_accept is not None else DEFAULT_TARGET_ACCEPT.get(name)
    if target is None:
        raise ValueError(f"kernel {name!r} has no default target acceptance; give "
                         "target_accept=")
    return rule, AcceptanceAdapter(target, device=device)
