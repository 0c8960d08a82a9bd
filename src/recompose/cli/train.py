"""``recompose train``: train one diffusion model from a config (resumable)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..data.toy2d import TOY2D
from .common import handle_errors, is_quiet, on_interrupt, prepare_out, quiet_option, usage


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path), default=None,
              help="A TrainConfig as JSON (data, network, schedule, steps, …); the options "
                   "below override its entries.")
@click.option("--data", type=click.Choice(TOY2D), default=None,
              help="A 2D toy dataset (other data: give a --config).")
@click.option("--parameterization", type=click.Choice(["energy", "score"]), default=None,
              help="Energy (MALA/HMC/mixtures) or score (ε) model.  [default: energy]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Adam steps.  [default: 6000 without --config]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: 1000]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate.  [default: 1e-3]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Steps between checkpoints.  [default: 500]")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder (resumes from OUT/checkpoint if present).")
@quiet_option
@handle_errors
def train(config_file: Path | None, data: str | None, parameterization: str | None,
          steps: int | None, batch_size: int | None, lr: float | None, seed: int | None,
          checkpoint_every: int | None, out: Path, quiet: bool = False) -> None:
    """Train one diffusion model by denoising score matching (resumable).

    \b
    Examples:
      recompose train --data ring --parameterization energy --out runs/ring-energy
      recompose train --config my_model.json --out runs/my-model
    The model file is OUT/checkpoint/model.safetensors; sample it with
    `recompose sample --model A=OUT/checkpoint/model.safetensors …`.
    """
    from dataclasses import fields

    from tqdm.auto import tqdm

    from ..config import TrainConfig
    from ..training.trainer import Trainer

    settings: dict = {}
    if config_file is not None:
        try:
            settings = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise usage(f"{config_file} is not valid JSON ({err})") from None
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(settings) - known) if isinstance(settings, dict) else ["?"]
        if unknown:
            raise usage(f"{config_file}: unknown training settings {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    elif data is None:
        raise usage("give --data (a 2D toy) or --config (any dataset and network)")
    else:
        settings["steps"] = 6000
    given = {"data": data, "parameterization": parameterization, "steps": steps,
             "batch_size": batch_size, "lr": lr, "seed": seed,
             "checkpoint_every": checkpoint_every}
    settings |= {k: v for k, v in given.items() if v is not None}
    try:
        config = TrainConfig(**settings)
    except (TypeError, ValueError) as err:
        raise usage(f"bad training config: {err}") from None
    out = Path(out).resolve()
    resuming = (out / "checkpoint").is_dir()
    if not resuming:  # a new run: the folder must be new or empty, and writable
        prepare_out(out)
    elif not os.access(out, os.W_OK | os.X_OK):
        raise usage(f"cannot write to {out}")
    trainer = Trainer(config, out)
    if trainer.load():
        click.echo(f"resuming from step {trainer.step}")
    on_interrupt(f"the checkpoint in {out / 'checkpoint'} (saved every "
                 f"{config.checkpoint_every} steps) is kept; rerun the same command to resume")
    bar = tqdm(total=config.steps, initial=trainer.step, desc=f"train {config.data}",
               disable=is_quiet())
    trainer.run(progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}",
                                                                            refresh=False)))
    bar.close()
    click.echo(f"model: {out}/checkpoint/model.safetensors (EMA weights; "
               f"load with recompose.load_model)")
