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

SAMPLER_CHOICES = click.Choice(["reverse", "ode", "ula", "uhmc", "mala", "hmc", "smc",
                                "fkc"])
KERNEL_CHOICES = click.Choice(["ula", "uhmc", "mala", "hmc"])
# the command's options that configure a sampler: (flag, the sampler option it sets)
SAMPLER_OPTIONS = {"mcmc_steps": ("--mcmc-steps", "num_steps"),
                   "step_size": ("--step-size", "step_size"),
                   "step_power": ("--step-power", "step_power"),
                   "adapt": ("--adapt/--no-adapt", "adapt"),
                   "leapfrog": ("--leapfrog", "num_leapfrog_steps"),
                   "damping": ("--damping", "damping"),
                   "energy_mode": ("--energy", "energy"),
                   "quadrature": ("--quadrature", "quadrature"),
                   "predictor": ("--predictor/--no-predictor", "predictor"),
                   "proposal": ("--proposal", "proposal"), "method": ("--method", "method"),
                   "moves": ("--moves", "moves"),
                   "ess_threshold": ("--ess-threshold", "ess_threshold"),
                   "resampling": ("--resampling", "resampling")}


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
    from ..models.normalization import PROGRESS

    check(expr)
    env = parse_model_options(models, default_param)
    if not env:
        raise usage("give at least one --model NAME=MODEL")
    token = PROGRESS.set(not is_quiet())  # normalize(A) takes seconds: show it
    try:
        return parse_bound(expr, env, "--model", "MODEL")
    finally:
        PROGRESS.reset(token)


def build_diffusers_model(source: str, prompts: tuple[str, ...], expr: str, dtype: str,
                          device: str, size: int | None = None) -> tuple[object, object]:
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
    model = from_pretrained(source, torch_dtype=getattr(torch, dtype), device=device,
                            height=size, width=size)
    if texts and not model.conditional:
        raise usage(f"{source} is not text-conditioned; --prompt does not apply")
    env = {"U": model} | {k: model.prompt(v, name=k) for k, v in texts.items()}
    return parse_bound(expr, env, "--prompt", "TEXT"), model


def given_options(options: dict) -> dict:
    """The sampler options given on the command line (``None``: not given), by flag."""
    return {SAMPLER_OPTIONS[k][0]: v for k, v in options.items() if v is not None}


def build_sampler(name: str, options: dict) -> object:
    """The sampler object for ``--sampler NAME`` and the options given: the sampler's own
    constructor decides what applies (:mod:`recompose.samplers.shortcuts`), and an option that
    does not is a usage error naming the flag and the sampler."""
    from ..samplers import make_sampler

    given = {SAMPLER_OPTIONS[k][1]: v for k, v in options.items() if v is not None}
    flags = {SAMPLER_OPTIONS[k][1]: SAMPLER_OPTIONS[k][0] for k in options}
    try:
        return make_sampler(name, **given)
    except TypeError as err:
        option = str(err).split(" ", 1)[0]
        if option not in given:
            raise usage(str(err)) from None
        moves = given.get("moves", "hmc" if name == "smc" else None)
        kernel_option = option in ("num_leapfrog_steps", "damping", "energy", "quadrature")
        hint = (f" (with --moves {moves or 'none'})"
                if name in ("smc", "fkc") and kernel_option else "")
        raise usage(f"{flags[option]} does not apply to --sampler {name}{hint}") from None


def _write_figures(folder: Path, result: object, model: object) -> None:
    """``figures/``: the samples (2D: a scatter and the composed target's density per level;
    images: a mosaic), the acceptance and step size per level where the sampler took MCMC
    steps (none for reverse diffusion, FKC without moves or zero steps), and SMC's and FKC's
    effective sample size."""
    from ..compose import needs_tracking
    from ..viz.plots import (
        acceptance_plot,
        density_levels,
        ess_plot,
        has_mcmc_steps,
        image_grid,
        scatter_grid,
    )

    figs = folder / "figures"
    figs.mkdir()
    x = result.x.detach().cpu()
    info = result.info
    what = f"{len(x)} samples of {model.describe()} ({info.sampler})"
    if x.ndim == 2 and x.shape[1] == 2:
        fig = scatter_grid({("samples", info.sampler): x.numpy()}, ["samples"], [info.sampler],
                           size=4.0, lim=1.5, title=what)
        fig.savefig(figs / "samples.png", dpi=120)
        if not needs_tracking(model):  # a tracked mixture has no score at a point alone
            density_levels(model, [0.01, 0.1, 0.3, 0.6, 1.0], title=model.describe()).savefig(
                figs / "target_levels.png", dpi=110)
    elif x.ndim == 4:
        image_grid(x[:64], title=what if len(x) <= 64 else f"first 64 of {what}").savefig(
            figs / "samples.png", dpi=120)
    if has_mcmc_steps(info.settings):
        acceptance_plot(info.t, info.acceptance, info.step_size, label=info.sampler,
                        metropolis=bool(info.settings.get("metropolis"))).savefig(
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
@click.option("--size", type=click.IntRange(min=1), default=None, metavar="PIXELS",
              help="With --diffusers and an SD3 / FLUX pipeline: the image's height and width "
                   "(default: the pipeline's).")
@click.option("--model", "models", multiple=True, metavar="NAME=MODEL",
              help="Bind a name to a shipped model (ring, bar, …; optionally ring:score, "
                   "ring:distilled) or a model file. Repeatable.")
@click.option("--expr", required=True,
              help='Composition, in the language of recompose.parse: names, numbers, * / ** '
                   '+, mix(A, B, weights=[...]), cfg(C, U, w), normalize(A); e.g. '
                   '"A * B**-0.3" or "mix(normalize(A), normalize(B), weights=[0.3, 0.7])" '
                   '(learned energies need normalize(...) to mix with the given weights; '
                   'mix(...) of score models tracks their log-densities along each chain and '
                   'needs --sampler fkc or reverse).')
@click.option("--sampler", type=SAMPLER_CHOICES, default="hmc", show_default=True,
              help="Reverse diffusion, the probability-flow ODE (deterministic, DDIM), "
                   "annealed MCMC (ula, uhmc; mala and hmc need energies or --energy path), SMC "
                   "(weighted particles with MCMC moves; needs energies), or FKC (reverse "
                   "diffusion with Feynman–Kac weights and resampling; scores suffice). An "
                   "option below that does not apply to the sampler is an error.")
@click.option("--parameterization", type=click.Choice(["energy", "score", "distilled"]),
              default="energy", show_default=True,
              help="For shipped model names without :score/:energy/:distilled (distilled: "
                   "an energy model distilled from the score model).")
@click.option("--levels", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="Noise levels T.")
@click.option("--mcmc-steps", default=None, type=click.IntRange(0, 10_000),
              help="MCMC steps K per level (annealed samplers: default 10; SMC moves: 2; FKC "
                   "moves: 1).")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiplier c of the step rule c·σ_t^p (default: the kernel's).")
@click.option("--step-power", type=float, default=None, help="p in c·σ_t^p (0 = constant).")
@click.option("--adapt/--no-adapt", default=None,
              help="Adapt the step toward a target acceptance (MALA/HMC; on by default).")
@click.option("--leapfrog", default=None, type=click.IntRange(1, 1000),
              help="Leapfrog steps L per U-HMC/HMC transition.  [default: 3]")
@click.option("--damping", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="Fraction of momentum kept at each U-HMC/HMC refresh (0 = full refresh).  "
                   "[default: 0.5]")
@click.option("--energy", "energy_mode", type=click.Choice(["exact", "path"]), default=None,
              help="MALA/HMC (and SMC or FKC moves): the model's energies (exact, the "
                   "default), or energy differences integrated from the scores along each "
                   "proposal (path; runs on score models).")
@click.option("--quadrature", type=click.Choice(["simpson", "trapezoid"]), default=None,
              help="With --energy path: simpson (default; one more score per segment) or "
                   "trapezoid (free, larger bias).")
@click.option("--predictor/--no-predictor", default=None,
              help="Annealed samplers: a reverse-diffusion step between levels (on by "
                   "default).")
@click.option("--proposal", type=click.Choice(["ais", "ddpm"]), default=None,
              help="SMC: re-weight the same points between levels (ais, the default; needs "
                   "moves) or propose with the reverse-diffusion step (ddpm).")
@click.option("--method", type=click.Choice(["euler", "heun"]), default=None,
              help="ODE: Euler (DDIM; one evaluation per level, the default) or Heun (two).")
@click.option("--moves", type=KERNEL_CHOICES, default=None,
              help="SMC (default hmc) and FKC (default none): the MCMC kernel that moves the "
                   "particles at each level.")
@click.option("--ess-threshold", type=click.FloatRange(0, 1), default=None,
              help="SMC/FKC: resample when the effective sample size is under this fraction of "
                   "--n (1: every level, 0: never).  [default: 0.5]")
@click.option("--resampling", type=click.Choice(["systematic", "stratified", "multinomial",
                                                  "residual"]),
              default=None, help="SMC/FKC: the resampling scheme.  [default: systematic]")
@click.option("--n", "--num-samples", "n", default=2000, show_default=True,
              type=click.IntRange(1, 1_000_000),
              help="Number of samples (--num-samples under torchrun, whose own options take --n).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Random seed.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder (created; must be empty or a previous run's, see "
                   "--overwrite).")
@overwrite_option
@quiet_option
@handle_errors
def sample(diffusers_source: str | None, prompts: tuple[str, ...], dtype: str, device: str,
           size: int | None, models: tuple[str, ...], expr: str, sampler: str,
           parameterization: str, levels: int, n: int, seed: int, out: Path, overwrite: bool,
           quiet: bool = False, **sampler_options: object) -> None:
    """Sample a composition of models.

    \b
    Example:
      recompose sample --model A=large_box --model B=small_box --expr "A / B**0.3" \\
          --sampler hmc --n 2000 --seed 0 --out runs/negation
      recompose sample --model A=left_bar --model B=right_bar \\
          --expr "mix(normalize(A), normalize(B), weights=[0.3, 0.7])" --out runs/mixture
      recompose sample --diffusers PIPELINE_DIR --prompt P0="a red cube" \\
          --prompt P1="a blue sphere" --expr "P0 * P1" --sampler reverse --out runs/and
      recompose sample --model A=left_bar:score --model B=right_bar:score \
          --expr "mix(A, B, weights=[0.3, 0.7])" --sampler fkc --out runs/score-or
    Writes OUT/config.json, samples.npz (with a score-only mix(...): each model's tracked
    log-density per sample, log_density[NAME]), metrics.json and figures/*.png.
    """
    import numpy as np

    from .. import distributed
    from .. import sample as draw
    from ..errors import CapabilityError
    from ..io import json_safe, run_folder
    from ..samplers.base import check_tracking
    from ..samplers.result import SamplingWarning

    lead = check_on_lead(lambda: prepare_out(out, overwrite))  # torchrun: rank 0 writes
    pipeline = None
    if diffusers_source is not None:
        if models:
            raise usage("give --model (recompose models) or --diffusers (a pipeline), not both")
        model, pipeline = build_diffusers_model(diffusers_source, prompts, expr, dtype, device,
                                                size)
    else:
        if prompts or size is not None:
            flag = "--prompt" if prompts else "--size"
            raise usage(f"{flag} applies only with --diffusers")
        model = build_model(models, expr, parameterization)
    chosen = build_sampler(sampler, sampler_options)  # before any work
    check_tracking(chosen, model)  # a score-only mixture: its own one-line advice
    try:
        chosen.check(model)
    except CapabilityError as err:
        raise CapabilityError(f"{err} (on the command line: :energy or :distilled models, "
                              "or --energy path for mala / hmc)") from None
    config = {"command": "sample", "world_size": distributed.world_size(),
              "models": list(models), "diffusers": diffusers_source,
              "prompts": list(prompts), "dtype": dtype, "device": device, "size": size,
              "expr": expr, "sampler": sampler, "parameterization": parameterization,
              "levels": levels, "n": n, "seed": seed,
              "options": given_options(sampler_options)}
    with warnings.catch_warnings(record=True) as caught:  # reported below, in one line each
        warnings.simplefilter("always", SamplingWarning)
        result = draw(model, n, chosen, num_levels=levels, seed=seed, shard=True,
                      progress=lead and not is_quiet())
    config["sampler_settings"] = result.info.settings
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
        if result.log_density is not None:  # tracked log-densities, one array per model
            arrays |= {f"log_density[{k}]": v.cpu().numpy()
                       for k, v in result.log_density.items()}
        np.savez_compressed(tmp / "samples.npz", **arrays)
        metrics, nulls = json_safe(metrics)  # undefined values are null, and say why
        if nulls:
            metrics["null_note"] = "not finite, written as null: " + ", ".join(nulls)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        _write_figures(tmp, dataclasses.replace(result, x=x), model)
    if not is_quiet():
        info = result.info
        acc = (f", acceptance {info.mean_acceptance:.2f}"
               if info.settings.get("metropolis") else "")
        if info.log_evidence is not None:
            acc += f", log evidence {info.log_evidence:.3f} at t = {info.evidence_t:.3g}"
        click.echo(f"{n} samples of {model.describe()} with {sampler} in {info.wall_time:.1f} s"
                   f" ({info.network_score_evals} gradient / {info.network_energy_evals} energy"
                   f" network evaluations per chain{acc}) -> {out}")
