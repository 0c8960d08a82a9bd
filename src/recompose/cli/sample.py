"""``recompose sample``: sample a composition of shipped or trained models into a run folder."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import click

from .common import (
    check_on_lead,
    handle_errors,
    is_quiet,
    overwrite_option,
    prepare_out,
    quiet_option,
    usage,
)

SAMPLER_CHOICES = click.Choice(["reverse", "ula", "uhmc", "mala", "hmc", "smc", "fkc"])
KERNEL_CHOICES = click.Choice(["ula", "uhmc", "mala", "hmc"])


def resolve_model(spec: str, default_param: str) -> object:
    """``name``, ``name:score|energy|distilled`` (shipped models) or a path to a model file."""
    from ..models.loading import PRETRAINED, load_model, model_file

    try:
        path = model_file(spec, default_param, PRETRAINED)
    except ValueError as err:
        raise usage(f"{err}; see `recompose list`") from None
    name = spec.partition(":")[0]
    return load_model(path, name=name if name in PRETRAINED else None)


def bindings(items: tuple[str, ...], option: str, expects: str, empty_value: bool = False,
             reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """``{NAME: VALUE}`` from repeated ``option NAME=VALUE`` (``--model``, ``--prompt``): each
    NAME an identifier, not reserved and given once."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier() or key in reserved or not (value or empty_value):
            raise usage(f"{option} expects {expects}, got {item!r}")
        if key in out:
            raise usage(f"{option} {key} is given twice")
        out[key] = value
    return out


def parse_bound(expr: str, env: dict, option: str, value: str) -> object:
    """``recompose.parse(expr, env)``; a name ``expr`` uses but ``env`` lacks is reported with
    the option that would define it (``define it with --model B=MODEL``)."""
    from ..expression import ExpressionError, parse

    try:
        return parse(expr, env)
    except ExpressionError as err:
        if err.name is None:
            raise
        raise ExpressionError(f"{err.message}; define it with {option} {err.name}={value}",
                              err.column, err.text, err.name) from None


def parse_model_options(models: tuple[str, ...], default_param: str) -> dict:
    specs = bindings(models, "--model", "NAME=MODEL (e.g. A=ring)")
    return {key: resolve_model(spec, default_param) for key, spec in specs.items()}


def build_model(models: tuple[str, ...], expr: str, default_param: str) -> object:
    """The model ``--model NAME=MODEL … --expr EXPR`` describe: ``recompose.parse(expr, env)``
    on the bound models, nothing added (mixtures are normalised only where ``expr`` says
    ``normalize(A)``). Syntax errors are reported before any model is loaded."""
    from ..expression import check

    check(expr)
    env = parse_model_options(models, default_param)
    if not env:
        raise usage("give at least one --model NAME=MODEL")
    return parse_bound(expr, env, "--model", "MODEL")


def build_diffusers_model(source: str, prompts: tuple[str, ...], expr: str, dtype: str,
                          device: str) -> tuple[object, object]:
    """``(composition, pipeline model)`` for ``--diffusers SOURCE --prompt NAME=TEXT … --expr``:
    each prompt's view ``model.given(TEXT)`` bound to ``NAME``, the null (empty-prompt) view to
    ``U``."""
    import torch

    from ..expression import check
    from ..integrations.diffusers import from_pretrained, require_diffusers

    check(expr)
    try:
        require_diffusers()
    except ImportError as err:
        raise usage(str(err)) from None
    texts = bindings(prompts, "--prompt", "NAME=TEXT with NAME not U (U is the empty prompt)",
                     empty_value=True, reserved=("U",))
    model = from_pretrained(source, torch_dtype=getattr(torch, dtype), device=device)
    if texts and not model.conditional:
        raise usage(f"{source} is not text-conditioned; --prompt does not apply")
    env = {"U": model} | {k: model.prompt(v, name=k) for k, v in texts.items()}
    return parse_bound(expr, env, "--prompt", "TEXT"), model


def _write_figures(folder: Path, result: object, model: object) -> None:
    from ..viz.plots import acceptance_plot, density_levels, ess_plot, image_grid, scatter_grid

    figs = folder / "figures"
    figs.mkdir()
    x = result.x.detach().cpu()
    if x.ndim == 2 and x.shape[1] == 2:
        info = result.info
        fig = scatter_grid({("samples", info.sampler): x.numpy()}, ["samples"], [info.sampler],
                           size=4.0, lim=1.5,
                           title=f"{len(x)} samples of {model.describe()} ({info.sampler})")
        fig.savefig(figs / "samples.png", dpi=120)
        density_levels(model, [0.01, 0.1, 0.3, 0.6, 1.0]).savefig(figs / "target_levels.png",
                                                                  dpi=110)
    elif x.ndim == 4:
        image_grid(x[:64]).savefig(figs / "samples.png", dpi=120)
    info = result.info
    acceptance_plot(info.t, info.acceptance, info.step_size, label=info.sampler).savefig(
        figs / "acceptance.png", dpi=110)
    if info.ess:
        ess_plot(info.t, info.ess, info.num_chains, info.resampled).savefig(figs / "ess.png",
                                                                          dpi=110)


@click.command()
@click.option("--diffusers", "diffusers_source", metavar="PATH_OR_ID", default=None,
              help="A diffusers pipeline (a save_pretrained folder, or a hub id on a "
                   "connected machine) instead of --model; its prompts are bound with --prompt "
                   "and its empty prompt is U. Needs the extra: pip install -e \".[diffusers]\"")
@click.option("--prompt", "prompts", multiple=True, metavar="NAME=TEXT",
              help='With --diffusers: bind a name to a prompt, e.g. P0="a red cube". '
                   "Repeatable.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              default="float32", show_default=True,
              help="With --diffusers: the networks' dtype (the samplers stay float32).")
@click.option("--device", default="cpu", show_default=True,
              help="With --diffusers: the device to run on (cpu, cuda, cuda:1, …).")
@click.option("--model", "models", multiple=True, metavar="NAME=MODEL",
              help="Bind a name to a shipped model (ring, bar, …; optionally ring:score, "
                   "ring:distilled) or a model file. Repeatable.")
@click.option("--expr", required=True,
              help='Composition, in the language of recompose.parse: names, numbers, * / ** '
                   '+, mix(A, B, weights=[...]), cfg(C, U, w), normalize(A); e.g. '
                   '"A * B**-0.3" or "mix(normalize(A), normalize(B), weights=[0.3, 0.7])" '
                   '(learned energies need normalize(...) to mix with the given weights).')
@click.option("--sampler", type=SAMPLER_CHOICES, default="hmc", show_default=True,
              help="Reverse diffusion, annealed MCMC (MALA and HMC need energies), SMC "
                   "(weighted particles with MCMC moves; needs energies), or FKC (reverse "
                   "diffusion with Feynman–Kac weights and resampling; scores suffice).")
@click.option("--parameterization", type=click.Choice(["energy", "score", "distilled"]),
              default="energy", show_default=True,
              help="For shipped model names without :score/:energy/:distilled (distilled: "
                   "an energy model distilled from the score model).")
@click.option("--levels", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="Noise levels T.")
@click.option("--mcmc-steps", default=None, type=click.IntRange(min=0),
              help="MCMC steps K per level (default 10; SMC moves: 2).")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiplier c of the step rule c·σ_t^p (default per sampler).")
@click.option("--step-power", type=float, default=None, help="p in c·σ_t^p (0 = constant).")
@click.option("--adapt/--no-adapt", default=None,
              help="Adapt the step toward a target acceptance (MALA/HMC; on by default).")
@click.option("--leapfrog", default=3, show_default=True, type=click.IntRange(min=1),
              help="Leapfrog steps L per U-HMC/HMC transition.")
@click.option("--damping", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of momentum kept at each U-HMC/HMC refresh (0 = full refresh).")
@click.option("--energy", "energy_mode", type=click.Choice(["exact", "path"]), default="exact",
              show_default=True,
              help="MALA/HMC (and SMC moves): the model's energies, or energy differences "
                   "integrated from the scores along each proposal (runs on score models).")
@click.option("--quadrature", type=click.Choice(["simpson", "trapezoid"]), default=None,
              help="With --energy path: simpson (default; one more score per segment) or "
                   "trapezoid (free, larger bias).")
@click.option("--reverse-step/--no-reverse-step", default=None,
              help="A DDPM predictor step between levels (annealed samplers: on by default; "
                   "SMC: the DDPM step as proposal, off by default = AIS weights).")
@click.option("--moves", type=KERNEL_CHOICES, default="hmc", show_default=True,
              help="SMC: the MCMC kernel that moves the particles at each level.")
@click.option("--ess-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="SMC: resample when the effective sample size is under this fraction of "
                   "--n (1: every level, 0: never).")
@click.option("--resampling", type=click.Choice(["systematic", "stratified", "multinomial",
                                                  "residual"]),
              default="systematic", show_default=True, help="SMC: the resampling scheme.")
@click.option("--n", "--num-samples", "n", default=2000, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="Number of samples (--num-samples under torchrun, whose own options take --n).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder (created; must be empty or a previous run's, see "
                   "--overwrite).")
@overwrite_option
@quiet_option
@handle_errors
def sample(diffusers_source: str | None, prompts: tuple[str, ...], dtype: str, device: str,
           models: tuple[str, ...], expr: str, sampler: str, parameterization: str,
           levels: int, mcmc_steps: int, step_size: float | None, step_power: float | None,
           adapt: bool | None, leapfrog: int, damping: float, energy_mode: str,
           quadrature: str | None, reverse_step: bool | None,
           moves: str, ess_threshold: float, resampling: str, n: int, seed: int, out: Path,
           overwrite: bool, quiet: bool = False) -> None:
    """Sample a composition of models.

    \b
    Example:
      recompose sample --model A=large_box --model B=small_box --expr "A / B**0.3" \\
          --sampler hmc --n 2000 --seed 0 --out runs/negation
      recompose sample --model A=left_bar --model B=right_bar \\
          --expr "mix(normalize(A), normalize(B), weights=[0.3, 0.7])" --out runs/mixture
      recompose sample --diffusers PIPELINE_DIR --prompt P0="a red cube" \\
          --prompt P1="a blue sphere" --expr "P0 * P1" --sampler reverse --out runs/and
    Writes OUT/config.json, samples.npz, metrics.json and figures/*.png.
    """
    import numpy as np

    from .. import distributed
    from .. import sample as draw
    from ..diffusion.annealed import SamplingWarning
    from ..io import run_folder

    lead = check_on_lead(lambda: prepare_out(out, overwrite))  # torchrun: rank 0 writes
    pipeline = None
    if diffusers_source is not None:
        if models:
            raise usage("give --model (recompose models) or --diffusers (a pipeline), not both")
        model, pipeline = build_diffusers_model(diffusers_source, prompts, expr, dtype, device)
    else:
        if prompts:
            raise usage("--prompt applies only with --diffusers")
        model = build_model(models, expr, parameterization)
    kernel = moves if sampler == "smc" else None if sampler == "fkc" else sampler
    if energy_mode == "path" and kernel not in ("mala", "hmc"):
        raise usage(f"--energy path applies to mala and hmc (and SMC moves), not {kernel}")
    if quadrature is not None and energy_mode != "path":
        raise usage("--quadrature applies only with --energy path")
    if (sampler == "smc" or kernel in ("mala", "hmc") and energy_mode == "exact") \
            and not model.has_energy:
        from ..errors import CapabilityError

        hint = "" if sampler == "smc" else ", --energy path (energies from the scores)"
        raise CapabilityError(
            f"{sampler} needs energies but {model.describe()} contains score-only models; "
            f"use :energy or :distilled models{hint} or --sampler ula/uhmc/reverse")
    config = {"command": "sample", "world_size": distributed.world_size(),
              "models": list(models), "diffusers": diffusers_source,
              "prompts": list(prompts), "dtype": dtype, "device": device,
              "expr": expr, "sampler": sampler,
              "parameterization": parameterization, "levels": levels,
              "mcmc_steps": mcmc_steps, "step_size": step_size, "step_power": step_power,
              "adapt": adapt, "leapfrog": leapfrog, "damping": damping,
              "energy": energy_mode, "quadrature": quadrature,
              "reverse_step": reverse_step, "n": n, "seed": seed}
    options = {}  # pass only the options that apply to the sampler (rc.sample refuses others)
    if sampler not in ("reverse", "fkc"):
        options = {"num_steps": mcmc_steps, "step_size": step_size, "step_power": step_power,
                   "adapt": adapt, "reverse_step": reverse_step}
    if sampler == "smc":
        config |= {"moves": moves}
        options |= {"moves": moves}
    if sampler in ("smc", "fkc"):
        config |= {"ess_threshold": ess_threshold, "resampling": resampling}
        options |= {"ess_threshold": ess_threshold, "resampling": resampling}
    if kernel in ("uhmc", "hmc"):
        options |= {"num_leapfrog_steps": leapfrog, "damping": damping}
    if energy_mode == "path":
        options |= {"energy": "path", "quadrature": quadrature or "simpson"}
    with warnings.catch_warnings(record=True) as caught:  # reported below, in one line each
        warnings.simplefilter("always", SamplingWarning)
        result = draw(model, n, sampler, num_levels=levels, seed=seed,
                      progress=lead and not is_quiet(), **options)
    if not lead:
        return
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    x = result.x.detach()
    latents = None
    if pipeline is not None and pipeline.vae is not None:  # latent pipeline: decode at the end
        latents, x = x.cpu(), pipeline.decode(x)
    x = x.cpu()
    metrics = {"sampling": result.info.to_dict(),
               "samples": {"mean": x.reshape(n, -1).mean(0).tolist()[:16],
                           "std": x.reshape(n, -1).std(0).tolist()[:16]}}
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        arrays = {"x": x.numpy()} | ({} if latents is None else {"latents": latents.numpy()})
        np.savez_compressed(tmp / "samples.npz", **arrays)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _write_figures(tmp, dataclasses.replace(result, x=x), model)
    if not is_quiet():
        info = result.info
        acc = f", acceptance {info.mean_acceptance:.2f}" if kernel in ("mala", "hmc") else ""
        if info.log_evidence is not None:
            acc += f", log evidence {info.log_evidence:.3f} at t = {info.evidence_t:.3g}"
        click.echo(f"{n} samples of {model.describe()} with {sampler} in {info.wall_time:.1f} s"
                   f" ({info.network_score_evals} gradient / {info.network_energy_evals} energy"
                   f" network evaluations per chain{acc}) -> {out}")
