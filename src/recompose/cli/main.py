"""The ``recompose`` command line (exit codes and one-line errors: :mod:`.common`; outputs are
written atomically, so Ctrl-C never leaves half-written files)."""

from __future__ import annotations

import signal
import sys

import click

from .. import __version__
from .bench import bench
from .common import DEBUG_HELP, add_debug_option, raise_terminated, run_command_line
from .demo import demo
from .sample import sample
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="recompose")
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
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


IMAGE_FILES = {"digits": "8×8 digits", "digits-cond": "8×8 digits given a class",
               "clevr": "16×16 scenes given object positions"}


@click.command(name="list")
def list_() -> None:
    """List the shipped models: which ones --model accepts, and how to use the others.

    \b
    Example:
      recompose list
    """
    from importlib import resources

    from ..models.loading import PARAMETERIZATIONS, PRETRAINED

    folder = resources.files("recompose") / "pretrained"

    def have(name: str) -> str:
        found = [p for p in PARAMETERIZATIONS if (folder / f"{name}-{p}.safetensors").is_file()]
        return ", ".join(found) or "missing"

    click.echo("2D models, for the command line: --model A=NAME (energy), A=NAME:score or "
               "A=NAME:distilled")
    for name in PRETRAINED:
        click.echo(f"  {name:16s} {have(name)}")
    click.echo("image models, not accepted by --model:")
    for name, what in IMAGE_FILES.items():
        click.echo(f"  {name:16s} {have(name)}  ({what})")
    click.echo('  use them in Python, e.g. recompose.pretrained("digits-cond", "energy")'
               ".given(labels),\n  or distil one: recompose train --distill-from NAME --out DIR")
    ok = "ok" if (folder / "digits-noisy-clf.safetensors").is_file() else "missing"
    click.echo("guidance classifier, for Python only:\n"
               "    recompose.training.classifier.load_classifier(\n"
               '        recompose.models.loading.shipped_path("digits-noisy-clf"))')
    click.echo(f"  {'digits-noisy-clf':16s} {ok}")
    click.echo("the paper's experiments, which use the image models: experiments/README.md in "
               "the repository")


def main() -> None:
    signal.signal(signal.SIGTERM, raise_terminated)  # stop like Ctrl-C, exit code 143
    sys.exit(run_command_line(cli))


for _command in (demo, sample, train, list_, bench):
    add_debug_option(_command)  # `recompose sample … --debug` as well as `recompose --debug …`
    cli.add_command(_command)


if __name__ == "__main__":
    main()
