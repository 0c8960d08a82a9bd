"""``recompose.sample``: one entry point for every sampler on any model or composite.

Samplers: ``"reverse"`` (DDPM ancestral with the composed score — the baseline R3 shows to be
wrong for compositions), and annealed MCMC with ``"ula"``, ``"uhmc"`` (scores suffice) or
``"mala"``, ``"hmc"`` (Metropolis-corrected: need energies). See
:mod:`recompose.diffusion.annealed` for the algorithm and :mod:`recompose.mcmc.step_sizes` for
the step-size rule ``c · σ_t^p`` and its optional adaptation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .diffusion.annealed import LevelCallback, SampleResult, annealed_mcmc, reverse_diffusion
from .errors import CapabilityError
from .mcmc import KERNELS
from .mcmc.step_sizes import (
    DEFAULT_STEP,
    DEFAULT_TARGET_ACCEPT,
    AcceptanceAdapter,
    StepSizeRule,
)
from .models.base import DiffusionModel, model_device_dtype

__all__ = ["sample", "SAMPLERS"]

SAMPLERS = ("reverse", "ula", "uhmc", "mala", "hmc")


def _progress_callback(
    total: int, desc: str, user: LevelCallback | None
) -> tuple[LevelCallback, object]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="level", leave=False)

    def callback(payload: dict) -> None:
        bar.update(1)
        if "acceptance" in payload:
            bar.set_postfix(acc=f"{payload['acceptance']:.2f}", refresh=False)
        if user is not None:
            user(payload)

    return callback, bar


def sample(
    model: DiffusionModel,
    n: int,
    sampler: str = "hmc",
    *,
    num_levels: int = 100,
    num_steps: int = 10,
    step_size: float | None = None,
    step_power: float | None = None,
    adapt: bool | None = None,
    target_accept: float | None = None,
    reverse_step: bool = True,
    denoise: bool = True,
    num_leapfrog_steps: int = 3,
    damping: float = 0.5,
    mass: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    x_init: Tensor | None = None,
    clip: tuple[float, float] | None = None,
    callback: LevelCallback | None = None,
    progress: bool = False,
) -> SampleResult:
    """Draw ``n`` samples from ``model`` (any model or composite).

    Args:
        model: a :class:`~recompose.DiffusionModel`, e.g. ``a * b ** -0.3``.
        n: number of chains / samples.
        sampler: ``"reverse" | "ula" | "uhmc" | "mala" | "hmc"``.
        num_levels: noise levels ``T`` (R3: 100).
        num_steps: MCMC steps per level ``K`` (R3: 10).
        step_size: multiplier ``c`` in ``step = c · σ_t^p``; default per sampler (see
            :data:`~recompose.mcmc.step_sizes.DEFAULT_STEP`).
        step_power: ``p``; 0 for a constant step. Default 2 for ULA/MALA, 1 for (U-)HMC.
        adapt: adapt ``c`` toward ``target_accept`` (MALA/HMC only); default on for them.
        target_accept: default 0.574 (MALA) / 0.65 (HMC).
        reverse_step: a DDPM predictor step between levels (free: reuses the kernel's score).
        denoise: end with Tweedie's denoiser at the cleanest level, as reverse diffusion does
            (free); ``False`` returns samples of the cleanest level's target (R3 notebook).
        num_leapfrog_steps, damping, mass: U-HMC/HMC settings (R3: 3, 0.5, 1).
        generator: a ``torch.Generator`` on the model's device; or give ``seed``.
        x_init: initial chains at the noisiest level; default ``N(0, I)``.
        clip: data range ``(lo, hi)`` (e.g. ``(-1, 1)`` for images): clamp Tweedie's ``x̂₀``
            inside every DDPM step (reverse diffusion, predictor steps, final denoise), as
            DDPM's ``clip_denoised``; MCMC steps are not clipped. Default: no clipping.
        callback: called once per level with a dict (``level``, ``t``, ``x``, …).
        progress: show a progress bar.

    Returns:
        :class:`~recompose.diffusion.annealed.SampleResult` with ``.x`` ``(n, *D)`` and ``.info``.
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a DiffusionModel, got {type(model).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if num_levels < 1 or num_steps < 0:
        raise ValueError("num_levels must be ≥ 1 and num_steps ≥ 0")
    device, dtype = model_device_dtype(model)
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else int(seed))
    elif seed is not None:
        raise ValueError("give either generator= or seed=, not both")

    if sampler in ("mala", "hmc") and not model.has_energy:
        raise CapabilityError(
            f"{sampler.upper()} needs energies for its Metropolis-Hastings test but "
            f"{model.describe()} is score-only; use energy-parameterised models, or the "
            "'ula', 'uhmc' or 'reverse' samplers"
        )
    if x_init is None:
        x_init = torch.randn((n, *model.event_shape), generator=generator, device=device,
                             dtype=dtype)
    elif tuple(x_init.shape) != (n, *model.event_shape):
        raise ValueError(f"x_init must have shape {(n, *model.event_shape)}")

    levels = model.schedule.levels(num_levels)
    cb, bar = (callback, None)
    if progress:
        cb, bar = _progress_callback(num_levels, sampler, callback)
    if clip is not None:
        clip = (float(clip[0]), float(clip[1]))
        if not clip[0] < clip[1]:
            raise ValueError(f"clip must be (lo, hi) with lo < hi, got {clip}")
    settings = {"num_levels": num_levels, "n": n, "clip": clip}
    try:
        if sampler == "reverse":
            result = reverse_diffusion(model, x_init, levels, generator, cb, clip)
        else:
            if sampler in ("uhmc", "hmc"):
                kernel = KERNELS[sampler](num_leapfrog_steps, damping, mass)
            else:
                kernel = KERNELS[sampler]()
            c, p = DEFAULT_STEP[sampler]
            rule = StepSizeRule(c if step_size is None else step_size,
                                p if step_power is None else step_power)
            if adapt is None:
                adapt = sampler in DEFAULT_TARGET_ACCEPT
            if adapt and sampler not in DEFAULT_TARGET_ACCEPT:
                raise ValueError(f"adapt needs an acceptance rate: only mala and hmc adapt, "
                                 f"not {sampler}")
            adapter = None
            if adapt:
                adapter = AcceptanceAdapter(target_accept or DEFAULT_TARGET_ACCEPT[sampler],
                                            device=device)
            result = annealed_mcmc(model, x_init, levels, kernel, num_steps, rule, adapter,
                                   reverse_step, denoise, generator, cb, clip)
            settings |= {"num_steps": num_steps, "step_size": rule.scale,
                         "step_power": rule.power, "adapt": bool(adapt),
                         "target_accept": adapter.target if adapter else None,
                         "reverse_step": reverse_step, "denoise": denoise}
            if sampler in ("uhmc", "hmc"):
                settings |= {"num_leapfrog_steps": num_leapfrog_steps, "damping": damping}
    finally:
        if bar is not None:
            bar.close()
    result.info.settings = settings
    return result
