"""The ``recompose`` command line.

Exit codes: 0 success; 2 usage error (bad option, expression, model name, or a composition
the models cannot support); 1 runtime failure (divergence, unreadable checkpoint, I/O).
Errors print one line (``--debug`` shows the traceback). Outputs are written atomically, so
Ctrl-C never leaves half-written files.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .. import __version__

EXPERIMENTS = {
    "toy2d": "R3 2D table: product / mixture / negation × samplers × score/energy (≈ 11 min)",
    "analytic-product": "issue-2 table: samplers on an exact product of two GMMs (≈ 1 min)",
    "digits": "classifier / classifier-free guidance on 8×8 digits × samplers × scales",
    "clevr": "multi-object position composition: accuracy vs K and vs MCMC steps (reduced)",
}


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = 1


def _usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def handle_errors(fn: Callable) -> Callable:
    """Map library exceptions to one-line messages and exit codes (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ..errors import CapabilityError, CompositionError
        from ..io import CheckpointError
        from .expr import ExprError

        ctx = click.get_current_context()
        debug = (ctx.find_root().params or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("interrupted: no partial outputs were written", err=True)
            sys.exit(130)
        except Exception as err:  # noqa: BLE001 - the CLI boundary
            if debug:
                raise
            if isinstance(err, ExprError):
                raise _usage(f"bad expression: {err.pretty()}") from None
            if isinstance(err, CapabilityError | CompositionError):
                raise _usage(str(err)) from None
            if isinstance(err, CheckpointError):
                raise Failure(str(err)) from None
            if isinstance(err, FloatingPointError):
                raise Failure(str(err)) from None
            if isinstance(err, OSError):
                raise Failure(f"{err.strerror or err}: {err.filename or ''}".strip()) from None
            raise Failure(f"{type(err).__name__}: {err} (rerun with --debug for details)") \
                from None

    return wrapper


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
      recompose reproduce toy2d
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def _quiet() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().obj.get("quiet") or ctx.params.get("quiet"))


def quiet_option(fn: Callable) -> Callable:
    """``--quiet`` on a subcommand too (same as ``recompose --quiet …``)."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter.")(fn)


def _check_writable(out: Path) -> None:
    """Refuse an output folder we cannot create or write, before any work is done."""
    import os

    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise Failure(f"cannot write to {out}: {probe} is not a writable folder; choose "
                      "another --out")


from . import commands  # noqa: E402,F401  (registers the subcommands)


def main() -> None:
    cli(obj={})


if __name__ == "__main__":  # `python -m recompose.cli.main`: use the package's module
    from recompose.cli.main import main as _main

    _main()
