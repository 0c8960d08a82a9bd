"""What every subcommand shares: one-line errors with exit codes, ``--quiet``, output checks.

Exit codes: 0 success; 2 usage error (bad option, expression, model name, or a composition
the models cannot support); 1 runtime failure (divergence, unreadable checkpoint, I/O).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["Failure", "Terminated", "usage", "handle_errors", "is_quiet", "quiet_option",
           "prepare_out", "check_on_lead", "on_interrupt", "overwrite_option"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (exit code 143)."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = 1


usage = click.UsageError  # a usage error: one line, exit code 2


def handle_errors(fn: Callable) -> Callable:
    """Map library exceptions to one-line messages and exit codes (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ..errors import CapabilityError, CompositionError, first_line
        from ..expression import ExpressionError
        from ..io import CheckpointError, RunFolderError

        ctx = click.get_current_context()
        debug = (ctx.find_root().params or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt as err:
            what = "terminated" if isinstance(err, Terminated) else "interrupted"
            kept = ctx.meta.get("recompose.kept", "no results were written")
            click.echo(f"{what}: {kept}", err=True)
            sys.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:  # noqa: BLE001 - the CLI boundary
            if debug:
                raise
            if isinstance(err, ExpressionError):
                raise usage(f"bad expression: {err.pretty()}") from None
            if isinstance(err, CapabilityError | CompositionError):
                raise usage(str(err)) from None
            if isinstance(err, CheckpointError | RunFolderError | FloatingPointError):
                raise Failure(str(err)) from None
            if isinstance(err, MemoryError) or "can't allocate memory" in str(err):
                raise usage("not enough memory for this run; use a smaller --n or --levels"
                            ) from None
            if isinstance(err, ValueError | TypeError):  # invalid values met past click
                raise usage(first_line(err)) from None
            if isinstance(err, OSError):
                raise Failure(f"{err.strerror or err}: {err.filename or ''}".strip()) from None
            raise Failure(f"{type(err).__name__}: {err} (rerun with --debug for details)") \
                from None

    return wrapper


def is_quiet() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().obj.get("quiet") or ctx.params.get("quiet"))


def quiet_option(fn: Callable) -> Callable:
    """``--quiet`` on a subcommand too (same as ``recompose --quiet …``)."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter.")(fn)


def prepare_out(out: Path, overwrite: bool = False) -> Path:
    """Check ``--out`` before any work (see :func:`recompose.io.check_run_folder`)."""
    from ..io import RunFolderError, check_run_folder

    try:
        return check_run_folder(out, overwrite)
    except RunFolderError as err:
        raise usage(str(err)) from None


def check_on_lead(check: Callable[[], object]) -> bool:
    """Join ``torchrun``'s process group when launched by it, run ``check`` (which raises a
    usage error, e.g. on the output folder) on rank 0 only, and stop every rank with its
    message. Returns whether this process is rank 0 (the one that writes)."""
    from .. import distributed

    distributed.init_from_env()
    lead = distributed.rank() == 0
    problem = None
    if lead:
        try:
            check()
        except click.UsageError as err:
            problem = err.message
    problem = distributed.agree(problem)
    if problem:
        raise usage(problem)
    return lead


def on_interrupt(kept: str) -> None:
    """What an interrupted command keeps, for the message of Ctrl-C / SIGTERM."""
    click.get_current_context().meta["recompose.kept"] = kept


def overwrite_option(fn: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True,
                        help="Replace the outputs of a previous recompose run in --out (other "
                             "files there are never touched).")(fn)
