"""The ``recompose`` command line (exit codes and one-line errors: :mod:`.common`; outputs are
written atomically, so Ctrl-C never leaves half-written files)."""

from __future__ import annotations

import signal

import click

from .. import __version__
from .bench import bench
from .common import raise_terminated
from .demo import demo
from .sample import sample
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recompose")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Compose trained diffusion models as densities and sample them correctly.

    \b
    Examples:
      recompose demo
      recompose list
      recompose sample --model A=ring --model B=bar --expr "A * B" --sampler hmc --out runs/ab
      recompose train --data ring --out runs/ring
      recompose bench --families 2d --batches 1000
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


@click.command(name="list")
def list_() -> None:
    """List the shipped models (and where the paper's experiments are).

    \b
    Example:
      recompose list
    """
    from importlib import resources

    from ..models.loading import PARAMETERIZATIONS, PRETRAINED

    click.echo("shipped 2D models (use as --model A=<name>, A=<name>:score or "
               "A=<name>:distilled):")
    folder = resources.files("recompose") / "pretrained"
    for name in PRETRAINED:
        have = [p for p in PARAMETERIZATIONS
                if (folder / f"{name}-{p}.safetensors").is_file()]
        click.echo(f"  {name:10s} {', '.join(have) or 'missing'}")
    for family, names in (("digits", ("digits-score", "digits-energy", "digits-distilled",
                                       "digits-cond-energy", "digits-cond-score",
                                       "digits-cond-distilled", "digits-noisy-clf")),
                          ("CLEVR-like", ("clevr-score", "clevr-energy", "clevr-distilled"))):
        click.echo(f"shipped {family} files (recompose.models.loading.shipped_path):")
        for name in names:
            ok = (folder / f"{name}.safetensors").is_file()
            click.echo(f"  {name:20s} {'ok' if ok else 'missing'}")
    click.echo("the paper's experiments: experiments/README.md in the repository")


def main() -> None:
    signal.signal(signal.SIGTERM, raise_terminated)  # stop like Ctrl-C, exit code 143
    cli(obj={})


for _command in (demo, sample, train, list_, bench):
    cli.add_command(_command)


if __name__ == "__main__":
    main()
