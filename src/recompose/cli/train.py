"""``recompose train``: train one diffusion model from a config (resumable)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..data.toy2d import TOY2D
from .common import (
    check_on_lead,
    handle_errors,
    is_quiet,
    on_interrupt,
    quiet_option,
    usage,
)


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path), default=None,
              help="A TrainConfig as JSON (data, network, schedule, steps, …); the options "
                   "below override its entries.")
@click.option("--data", type=click.Choice(TOY2D), default=None,
              help="A 2D toy dataset (other data: give a --config).")
@click.option("--parameterization", type=click.Choice(["energy", "score"]), default=None,
              help="Energy (MALA/HMC/mixtures) or score (ε) model.  [default: energy]")
@click.option("--distill-from", default=None, metavar="MODEL",
              help="Train an energy model whose gradient matches this score model (a shipped "
                   "name such as ring or clevr, or a model file); its training config gives "
                   "the defaults (data, network, steps, …).")
@click.option("--dsm-weight", type=click.FloatRange(min=0), default=None,
              help="With --distill-from: weight of the plain denoising loss beside the "
                   "teacher's.  [default: 0]")
@click.option("--contrast-weight", type=click.FloatRange(min=0), default=None,
              help="With --distill-from and a conditional teacher: weight of the condition "
                   "contrast, the student's ε̂(c) − ε̂(∅) against the teacher's (what products "
                   "and guidance use; twice the work per step).  [default: 0]")
@click.option("--init-from", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Start from this model file's weights (same network), e.g. to fine-tune a "
                   "student with another loss.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Torch threads while training.  [default: 1, or the teacher's]")
@click.option("--steps", type=click.IntRange(1, 10_000_000), default=None,
              help="Adam steps.  [default: 6000 without --config]")
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=None,
              help="[default: 1000]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate.  [default: 1e-3]")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="[default: 0]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Steps between checkpoints.  [default: 500]")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: new or empty, or an earlier run of train's to resume (from "
                   "OUT/checkpoint; with more --steps and otherwise the same settings, a "
                   "finished run trains longer). Writes OUT/checkpoint, OUT/config.json and "
                   "OUT/figures/loss.png.")
@quiet_option
@handle_errors
def train(config_file: Path | None, data: str | None, parameterization: str | None,
          distill_from: str | None, dsm_weight: float | None,
          contrast_weight: float | None, init_from: str | None, threads: int | None,
          steps: int | None, batch_size: int | None, lr: float | None, seed: int | None,
          checkpoint_every: int | None, out: Path, quiet: bool = False) -> None:
    """Train one diffusion model by denoising score matching (resumable).

    \b
    Examples:
      recompose train --data ring --parameterization energy --out runs/ring-energy
      recompose train --config my_model.json --out runs/my-model
      recompose train --distill-from ring --out runs/ring-distilled
    The model file is OUT/checkpoint/model.safetensors; sample it with
    `recompose sample --model A=OUT/checkpoint/model.safetensors …`.
    The loss curve is OUT/figures/loss.png (redrawn at every checkpoint).
    """
    from dataclasses import fields

    from tqdm.auto import tqdm

    from ..config import TrainConfig
    from ..training.trainer import Trainer, check_config

    settings: dict = {}
    if config_file is not None:
        try:
            settings = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise usage(f"{config_file} is not valid JSON ({err})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise usage(f"cannot read {config_file} ({err})") from None
        if not isinstance(settings, dict):
            raise usage(f"{config_file} must hold one JSON object of training settings, "
                        f'e.g. {{"data": "ring", "steps": 2000}}')
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise usage(f"{config_file}: unknown training settings {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    elif distill_from is not None:
        from ..training.distill import teacher_config

        try:
            settings = teacher_config(distill_from).to_dict()
        except ValueError as err:
            raise usage(str(err)) from None
    elif data is None:
        raise usage("give --data (a 2D toy), --config (any dataset and network) or "
                    "--distill-from MODEL")
    else:
        settings["steps"] = 6000
    for name, value in (("--dsm-weight", dsm_weight), ("--contrast-weight", contrast_weight)):
        if value is not None and distill_from is None and not settings.get("distill_from"):
            raise usage(f"{name} applies only with --distill-from")
    given = {"data": data, "parameterization": parameterization, "steps": steps,
             "batch_size": batch_size, "lr": lr, "seed": seed,
             "checkpoint_every": checkpoint_every, "distill_from": distill_from,
             "dsm_weight": dsm_weight, "contrast_weight": contrast_weight,
             "init_from": None if init_from is None else str(Path(init_from).resolve()),
             "threads": threads}
    settings |= {k: v for k, v in given.items() if v is not None}
    where = f" in {config_file}" if config_file is not None else ""
    try:
        config = TrainConfig(**settings)
        check_config(config)  # schedule and network fit the data (no work: torch's meta device)
    except (TypeError, ValueError) as err:
        raise usage(f"bad training config{where}: {err}") from None
    out = Path(out).resolve()
    lead = check_on_lead(lambda: check_train_out(out))  # torchrun: data-parallel, rank 0 writes
    trainer = Trainer(config, out)
    if trainer.load() and lead:
        click.echo(f"resuming from step {trainer.step}")
    what = f"distill {config.distill_from}" if config.distill_from else f"train {config.data}"

    def kept() -> str:  # what Ctrl-C keeps: what is on disk when it comes
        try:
            step = json.loads((out / "checkpoint" / "trainer.json").read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError):
            first = min(config.checkpoint_every, config.steps)
            return (f"nothing was kept: no checkpoint had been written yet (the first comes "
                    f"at step {first}); rerunning the same command starts over")
        return (f"the checkpoint of step {step} in {out / 'checkpoint'} is kept; rerun the "
                f"same command to resume from it")

    on_interrupt(kept)
    bar = tqdm(total=config.steps, initial=trainer.step, desc=what,
               disable=is_quiet() or not lead)
    try:
        trainer.run(progress=lambda step, loss: (bar.update(1),
                                                 bar.set_postfix(loss=f"{loss:.3f}",
                                                                 refresh=False)),
                    on_checkpoint=lambda t: write_loss_plot(out, t.losses, what))
    finally:
        bar.close()  # before any error message, which would land on the bar's line
    if lead:
        write_loss_plot(out, trainer.losses, what)  # also when a resumed run had nothing to do
        click.echo(f"model: {out}/checkpoint/model.safetensors (EMA weights; "
                   f"load with recompose.load_model); loss curve: {out}/figures/loss.png")


def check_train_out(out: Path) -> None:
    """A usage error unless ``out`` can hold this run: an earlier train run's folder (to
    resume), or a new or empty, writable folder. Train has no --overwrite: it never replaces
    files it did not write."""
    from ..io import RunFolderError, check_run_folder

    if (out / "checkpoint").is_dir() or (out / ".checkpoint.old").is_dir():  # resume
        if not os.access(out, os.W_OK | os.X_OK):
            raise usage(f"cannot write to {out}; choose another --out")
        return
    try:
        check_run_folder(out)
    except RunFolderError as err:
        if out.is_dir() and os.access(out, os.W_OK | os.X_OK):  # refused for holding files
            raise usage(f"{out} is not empty and holds no training checkpoint to resume; "
                        "train into a new or empty folder (another --out), or give the "
                        "folder of an earlier recompose train run to resume it") from None
        raise usage(str(err)) from None


def write_loss_plot(out: Path, losses: list[float], title: str) -> None:
    """``out/figures/loss.png``: the training loss so far (written atomically)."""
    from ..io import atomic_write
    from ..viz.plots import loss_plot

    if not losses:
        return
    fig = loss_plot(losses, title=f"{title}: {len(losses)} steps")
    atomic_write(out / "figures" / "loss.png",
                 lambda tmp: fig.savefig(tmp, format="png", dpi=110))
