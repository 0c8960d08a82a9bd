"""What every subcommand shares: one-line errors with exit codes, ``--quiet``, output checks.

Exit codes: 0 success; 2 usage error (bad option, expression, model name, or a composition
the models cannot support); 1 runtime failure (divergence, unreadable checkpoint, I/O).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["Failure", "usage", "handle_errors", "is_quiet", "quiet_option", "check_writable"]


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = 1


def usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def handle_errors(fn: Callable) -> Callable:
    """Map library exceptions to one-line messages and exit codes (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ..errors import CapabilityError, CompositionError
        from ..expression import ExpressionError
        from ..io import CheckpointError

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
            if isinstance(err, ExpressionError):
                raise usage(f"bad expression: {err.pretty()}") from None
            if isinstance(err, CapabilityError | CompositionError):
                raise usage(str(err)) from None
            if isinstance(err, CheckpointError):
                raise Failure(str(err)) from None
            if isinstance(err, FloatingPointError):
                raise Failure(str(err)) from None
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


def check_writable(out: Path) -> None:
    """Refuse an output folder we cannot create or write, before any work is done."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise Failure(f"cannot write to {out}: {probe} is not a writable folder; choose "
                      "another --out")
