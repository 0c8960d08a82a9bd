"""The subcommands: demo, sample, train, reproduce, list, bench."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .main import (
    EXPERIMENTS,
    _check_writable,
    _quiet,
    _usage,
    cli,
    handle_errors,
    quiet_option,
)

SAMPLER_CHOICES = click.Choice(["reverse", "ula", "uhmc", "mala", "hmc"])


# ----------------------------------------------------------------------------- helpers
def resolve_model(spec: str, default_param: str) -> object:
    """``name``, ``name:score|energy`` (shipped models) or a path to a model file."""
    from ..models.loading import PRETRAINED, load_model, pretrained

    name, _, param = spec.partition(":")
    if name in PRETRAINED:
        param = param or default_param
        if param not in ("score", "energy"):
            raise _usage(f"unknown parameterization {param!r} in {spec!r}: use "
                         f"{name}:score or {name}:energy")
        return pretrained(name, param)
    path = Path(spec)
    if path.exists():
        return load_model(path)
    raise _usage(f"unknown model {spec!r}: not a shipped model ({', '.join(PRETRAINED)}) "
                 "and no such file; see `recompose list`")


def parse_model_options(models: tuple[str, ...], default_param: str) -> dict:
    env = {}
    for item in models:
        key, sep, spec = item.partition("=")
        if not sep or not key.isidentifier() or not spec:
            raise _usage(f"--model expects NAME=MODEL (e.g. A=ring), got {item!r}")
        if key in env:
            raise _usage(f"--model {key} is given twice")
        env[key] = resolve_model(spec, default_param)
    return env


def _normalise_for_mixtures(expr: str, env: dict) -> dict:
    """Mixtures need normalised energies: normalise 2D learned energy models by quadrature."""
    from ..models.normalization import normalize_by_quadrature
    from ..models.parameterization import EnergyModel
    from .expr import Mix, names_in, parse

    def mixed(node: object) -> set[str]:
        if isinstance(node, Mix):
            return {n.name for n in names_in(node)}
        kids = [getattr(node, a) for a in ("left", "right", "base") if hasattr(node, a)]
        return set().union(*(mixed(k) for k in kids)) if kids else set()

    out = dict(env)
    for name in mixed(parse(expr)):
        model = env.get(name)
        if isinstance(model, EnergyModel) and tuple(model.event_shape) == (2,):
            out[name] = normalize_by_quadrature(model, num_times=51, grid=64)
    return out


def _write_figures(folder: Path, result: object, model: object) -> None:
    from ..viz.plots import acceptance_plot, density_levels, image_grid, scatter_grid

    figs = folder / "figures"
    figs.mkdir()
    x = result.x.detach().cpu()
    if x.ndim == 2 and x.shape[1] == 2:
        fig = scatter_grid({("samples", result.info.sampler): x.numpy()}, ["samples"],
                           [result.info.sampler], size=4.0, lim=1.5)
        fig.savefig(figs / "samples.png", dpi=120)
        density_levels(model, [0.01, 0.1, 0.3, 0.6, 1.0]).savefig(figs / "target_levels.png",
                                                                  dpi=110)
    elif x.ndim == 4:
        image_grid(x[:64]).savefig(figs / "samples.png", dpi=120)
    info = result.info
    acceptance_plot(info.t, info.acceptance, info.step_size, label=info.sampler).savefig(
        figs / "acceptance.png", dpi=110)


# ----------------------------------------------------------------------------- sample
@cli.command()
@click.option("--model", "models", multiple=True, metavar="NAME=MODEL",
              help="Bind a name to a shipped model (ring, bar, …; optionally ring:score) or a "
                   "model file. Repeatable.")
@click.option("--expr", required=True, help='Composition, e.g. "A * B**-0.3" or '
                                            '"mix(A:0.3, B:0.7)".')
@click.option("--sampler", type=SAMPLER_CHOICES, default="hmc", show_default=True)
@click.option("--parameterization", type=click.Choice(["energy", "score"]), default="energy",
              show_default=True, help="For shipped model names without :score/:energy.")
@click.option("--levels", default=100, show_default=True, type=click.IntRange(min=1),
              help="Noise levels T.")
@click.option("--mcmc-steps", default=10, show_default=True, type=click.IntRange(min=0),
              help="MCMC steps K per level.")
@click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multiplier c of the step rule c·σ_t^p (default per sampler).")
@click.option("--step-power", type=float, default=None, help="p in c·σ_t^p (0 = constant).")
@click.option("--adapt/--no-adapt", default=None,
              help="Adapt the step toward a target acceptance (MALA/HMC; on by default).")
@click.option("--leapfrog", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--damping", default=0.5, show_default=True, type=click.FloatRange(0, 1,
                                                                                   max_open=True))
@click.option("--reverse-step/--no-reverse-step", default=True, show_default=True)
@click.option("--n", default=2000, show_default=True, type=int, help="Number of samples.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@quiet_option
@handle_errors
def sample(models: tuple[str, ...], expr: str, sampler: str, parameterization: str,
           levels: int, mcmc_steps: int, step_size: float | None, step_power: float | None,
           adapt: bool | None, leapfrog: int, damping: float, reverse_step: bool, n: int,
           seed: int, out: Path, overwrite: bool, quiet: bool = False) -> None:
    """Sample a composition of models.

    \b
    Example:
      recompose sample --model A=large_box --model B=small_box --expr "A / B**0.3" \\
          --sampler hmc --n 2000 --seed 0 --out runs/negation
    Writes OUT/config.json, samples.npz, metrics.json and figures/*.png.
    """
    import numpy as np

    from .. import sample as draw
    from ..io import atomic_dir
    from .expr import evaluate, parse

    if n <= 0:
        raise _usage(f"--n must be a positive integer, got {n}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise _usage(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    _check_writable(out)
    parse(expr)  # syntax errors before loading anything
    env = parse_model_options(models, parameterization)
    if not env:
        raise _usage("give at least one --model NAME=MODEL")
    model = evaluate(expr, _normalise_for_mixtures(expr, env))
    if sampler in ("mala", "hmc") and not model.has_energy:
        from ..errors import CapabilityError

        raise CapabilityError(
            f"{sampler} needs energies but {model.describe()} contains score-only models; "
            "use :energy models or --sampler ula/uhmc/reverse")
    config = {"command": "sample", "models": list(models), "expr": expr, "sampler": sampler,
              "parameterization": parameterization, "levels": levels,
              "mcmc_steps": mcmc_steps, "step_size": step_size, "step_power": step_power,
              "adapt": adapt, "leapfrog": leapfrog, "damping": damping,
              "reverse_step": reverse_step, "n": n, "seed": seed}
    result = draw(model, n, sampler, num_levels=levels, num_steps=mcmc_steps,
                  step_size=step_size, step_power=step_power, adapt=adapt,
                  num_leapfrog_steps=leapfrog, damping=damping, reverse_step=reverse_step,
                  seed=seed, progress=not _quiet())
    x = result.x.detach().cpu()
    metrics = {"sampling": result.info.to_dict(),
               "samples": {"mean": x.reshape(n, -1).mean(0).tolist()[:16],
                           "std": x.reshape(n, -1).std(0).tolist()[:16]}}
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        np.savez_compressed(tmp / "samples.npz", x=x.numpy())
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _write_figures(tmp, result, model)
    if not _quiet():
        info = result.info
        acc = f", acceptance {info.mean_acceptance:.2f}" if sampler in ("mala", "hmc") else ""
        click.echo(f"{n} samples of {model.describe()} with {sampler} in {info.wall_time:.1f} s"
                   f" ({info.network_score_evals} gradient / {info.network_energy_evals} energy"
                   f" network evaluations per chain{acc}) -> {out}")


# ----------------------------------------------------------------------------- demo
@cli.command()
@click.option("--n", default=500, show_default=True, type=click.IntRange(min=2))
@click.option("--levels", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--mcmc-steps", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"),
              show_default=True)
@quiet_option
@handle_errors
def demo(n: int, levels: int, mcmc_steps: int, seed: int, out: Path,
         quiet: bool = False) -> None:
    """Compose the shipped 2D models and compare reverse diffusion with annealed HMC.

    Product ring × bar, mixture of the left and right bars, negation large box / small box^0.3,
    energy models; prints a table (vs the exact target) and writes one figure grid.
    A reduced budget (T = 50, K = 5, 500 chains) keeps it under a minute; the full protocol
    is `recompose reproduce toy2d`.

    \b
    Example:
      recompose demo --n 1000 --out runs/demo
    """
    import torch

    from ..experiments.demo import run_demo

    _check_writable(out)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    table = run_demo(out, n=n, num_levels=levels, num_steps=mcmc_steps, seed=seed,
                     progress=not _quiet())
    click.echo(table)
    click.echo(f"\nfinished in {time.perf_counter() - t0:.0f} s; figure and metrics in "
               f"{out}/ (demo.png, metrics.json, config.json)")


# ----------------------------------------------------------------------------- train
@cli.command()
@click.option("--data", type=click.Choice(["ring", "bar", "left_bar", "right_bar", "large_box",
                                           "small_box"]), default=None)
@click.option("--parameterization", type=click.Choice(["energy", "score"]), default="energy",
              show_default=True)
@click.option("--steps", default=6000, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0,
                                                                              min_open=True))
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True,
              type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (resumes from OUT/checkpoint if present).")
@click.option("--all", "all_models", is_flag=True,
              help="Retrain the 12 shipped 2D models bit for bit (≈ 45 min on one core).")
@click.option("--digits", "digits_models", is_flag=True,
              help="Retrain the shipped digits models and classifiers (≈ 20 min).")
@click.option("--clevr", "clevr_models", is_flag=True,
              help="Retrain the shipped CLEVR-like position models and checker (≈ 55 min).")
@quiet_option
@handle_errors
def train(data: str | None, parameterization: str, steps: int, batch_size: int, lr: float,
          seed: int, checkpoint_every: int, out: Path | None, all_models: bool,
          digits_models: bool = False, clevr_models: bool = False,
          quiet: bool = False) -> None:
    """Train a 2D diffusion model by denoising score matching (resumable), or retrain a
    shipped family (--all, --digits, --clevr) into src/recompose/pretrained.

    \b
    Examples:
      recompose train --data ring --parameterization energy --out runs/ring-energy
      recompose train --all            # the shipped 2D models
      recompose train --digits         # digits: diffusion models, guidance classifier, evaluator
      recompose train --clevr          # position UNets (score, energy) and the checker
    """
    from tqdm.auto import tqdm

    from ..config import TrainConfig
    from ..experiments.pretrained import train_pretrained
    from ..training.trainer import Trainer

    if all_models:
        train_pretrained(out or Path("runs/pretrained"))
        return
    if digits_models:
        from ..experiments.digits_models import train_digits_models

        train_digits_models(out or Path("runs/pretrained-digits"))
        return
    if clevr_models:
        from ..experiments.clevr_models import train_clevr_models

        train_clevr_models(out or Path("runs/pretrained-clevr"))
        return
    if data is None or out is None:
        raise _usage("give --data and --out (or --all)")
    _check_writable(out)
    config = TrainConfig(data=data, parameterization=parameterization, steps=steps,
                         batch_size=batch_size, lr=lr, seed=seed,
                         checkpoint_every=checkpoint_every)
    trainer = Trainer(config, out)
    if trainer.load():
        click.echo(f"resuming from step {trainer.step}")
    bar = tqdm(total=steps, initial=trainer.step, desc=f"train {data}", disable=_quiet())
    trainer.run(progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}",
                                                                            refresh=False)))
    bar.close()
    click.echo(f"model: {out}/checkpoint/model.safetensors (EMA weights; "
               f"load with recompose.models.loading.load_model)")


# ----------------------------------------------------------------------------- reproduce
@cli.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--n", default=None, type=click.IntRange(min=2),
              help="Chains (images) per cell and seed.")
@click.option("--seeds", default=None, type=click.IntRange(min=1),
              help="Seeds per cell (default: 3; clevr: 1).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@quiet_option
@handle_errors
def reproduce(experiment: str, out: Path | None, n: int | None, seeds: int | None,
              workers: int, overwrite: bool = False, quiet: bool = False) -> None:
    """Regenerate a table of docs/results.md.

    \b
    Examples:
      recompose reproduce toy2d                # ≈ 11 min on 2 cores
      recompose reproduce analytic-product     # ≈ 1 min
      recompose reproduce digits               # guidance table, ≈ 38 min (--seeds 2: < 30)
      recompose reproduce clevr                # multi-object accuracy, reduced, ≈ 18 min
    """
    if experiment != "analytic-product":
        out = out or Path(f"runs/{experiment}")
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise _usage(f"{out} exists and is not empty (a previous run's results); pass "
                         "--overwrite or choose another --out")
    if experiment in ("digits", "clevr"):
        _check_writable(out)
        if experiment == "digits":
            from ..experiments.digits import run as run_digits

            res = run_digits(out, n=n or 1000, seeds=tuple(range(seeds or 3)),
                             workers=workers, progress=not _quiet())
        else:
            from ..experiments.clevr import run as run_clevr

            res = run_clevr(out, n=n or 32, seeds=tuple(range(seeds or 1)), threads=workers,
                            progress=not _quiet())
        click.echo(res["table"])
        click.echo(f"\n{res['elapsed_s']:.0f} s; outputs in {out}/")
        return
    seeds = seeds or 3
    if seeds < 2:
        raise _usage("the 2D tables need --seeds ≥ 2 (they report a spread over seeds)")
    if experiment == "toy2d":
        from ..experiments.toy2d import run

        out = out or Path("runs/toy2d")
        _check_writable(out)
        res = run(out, n=n or 500, seeds=tuple(range(seeds)), workers=workers,
                  progress=not _quiet())
        click.echo(res["table"])
        click.echo(f"\n{res['elapsed_s']:.0f} s; outputs in {out}/")
    else:
        from ..experiments.analytic_product import markdown, run

        click.echo(markdown(run(n or 2000, tuple(range(seeds)), progress=not _quiet())))


# ----------------------------------------------------------------------------- list
@cli.command(name="list")
def list_() -> None:
    """List the shipped models and the reproducible experiments.

    \b
    Example:
      recompose list
    """
    from importlib import resources

    from ..models.loading import PRETRAINED

    click.echo("shipped 2D models (use as --model A=<name> or A=<name>:score):")
    folder = resources.files("recompose") / "pretrained"
    for name in PRETRAINED:
        have = [p for p in ("energy", "score")
                if (folder / f"{name}-{p}.safetensors").is_file()]
        click.echo(f"  {name:10s} {', '.join(have) or 'missing'}")
    for family, names in (("digits", ("digits-score", "digits-energy", "digits-cond-energy",
                                       "digits-noisy-clf", "digits-evaluator")),
                          ("CLEVR-like", ("clevr-score", "clevr-energy", "clevr-checker"))):
        click.echo(f"shipped {family} files (recompose.models.loading.shipped_path):")
        for name in names:
            ok = (folder / f"{name}.safetensors").is_file()
            click.echo(f"  {name:20s} {'ok' if ok else 'missing'}")
    click.echo("experiments (recompose reproduce <name>):")
    for name, desc in EXPERIMENTS.items():
        click.echo(f"  {name:17s} {desc}")


# ----------------------------------------------------------------------------- bench
@cli.command()
@click.option("--n", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@quiet_option
@handle_errors
def bench(n: int, repeats: int, quiet: bool = False) -> None:
    """Benchmarks: sampler overhead over bare network evaluations, energy vs score cost,
    batched product evaluation vs the number of position terms K (CLEVR UNet, 32 images).

    \b
    Example:
      recompose bench --n 1000
    """
    from ..experiments.bench import parameterization_cost, product_batching, sampler_overhead

    click.echo(sampler_overhead(n=n, repeats=repeats, progress=not _quiet()))
    click.echo("")
    click.echo(parameterization_cost(n=n, repeats=repeats))
    click.echo("")
    click.echo(product_batching(n=32, repeats=repeats))
