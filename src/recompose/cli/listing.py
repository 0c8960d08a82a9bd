"""``recompose list``: the shipped models."""

from __future__ import annotations

import click


@click.command(name="list")
def list_() -> None:
    """List the shipped models (and where the paper's experiments are).

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
                                       "digits-noisy-clf")),
                          ("CLEVR-like", ("clevr-score", "clevr-energy"))):
        click.echo(f"shipped {family} files (recompose.models.loading.shipped_path):")
        for name in names:
            ok = (folder / f"{name}.safetensors").is_file()
            click.echo(f"  {name:20s} {'ok' if ok else 'missing'}")
    click.echo("the paper's experiments: experiments/README.md in the repository")
