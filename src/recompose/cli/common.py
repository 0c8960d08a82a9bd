"""What every subcommand shares: one-line errors with exit codes, ``--quiet``, ``--debug``,
output checks, and how the console script runs (:func:`run_command_line`).

Exit codes: 0 success; 2 usage error (bad option, expression, model name, or a composition
the models cannot support); 1 runtime failure (divergence, unreadable checkpoint, I/O).
Under ``torchrun`` a usage error is printed by rank 0 alone (every rank gets the same
arguments, so the same error); the other ranks exit with the same code silently.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["Failure", "Terminated", "usage", "handle_errors", "is_quiet", "quiet_option",
           "add_debug_option", "is_debug", "prepare_out", "check_on_lead",
           "on_interrupt", "overwrite_option", "run_command_line", "release_process_group",
           "MEMORY_HINTS"]

DEBUG_KEY = "recompose.debug"
DEBUG_HELP = "Show full tracebacks on errors."
# what to make smaller when a command runs out of memory (by command name)
MEMORY_HINTS = {"sample": "a smaller --n or --levels", "demo": "a smaller --n or --levels",
                "train": "a smaller --batch-size (or a smaller network in --config)"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (exit code 143)."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = 1


usage = click.UsageError  # a usage error: one line, exit code 2


def _remember_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True  # ctx.meta is shared by the group's and the command's context


def add_debug_option(command: click.Command) -> None:
    """``--debug`` on a subcommand too, same as ``recompose --debug …`` (unless it has one);
    :func:`handle_errors` reads it with :func:`is_debug`."""
    if not any(p.name == "debug" for p in command.params):
        command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False,
                                           callback=_remember_debug, help=DEBUG_HELP))


def is_debug() -> bool:
    """Was ``--debug`` given, before or after the subcommand?"""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    return bool(ctx.meta.get(DEBUG_KEY) or (ctx.find_root().params or {}).get("debug"))


def _out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return (isinstance(err, MemoryError) or "can't allocate memory" in text
            or "out of memory" in text)


def handle_errors(fn: Callable) -> Callable:
    """Map library exceptions to one-line messages and exit codes (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ..errors import CapabilityError, CompositionError, first_line
        from ..expression import ExpressionError
        from ..io import CheckpointError, RunFolderError

        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except KeyboardInterrupt as err:
            what = "terminated" if isinstance(err, Terminated) else "interrupted"
            kept = ctx.meta.get("recompose.kept", "no results were written")
            click.echo(f"{what}: {kept() if callable(kept) else kept}", err=True)
            sys.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:  # noqa: BLE001 - the CLI boundary
            if is_debug():
                raise
            if isinstance(err, ExpressionError):
                raise usage(f"bad expression: {err.pretty()}") from None
            if isinstance(err, CapabilityError | CompositionError):
                raise usage(str(err)) from None
            if isinstance(err, CheckpointError | RunFolderError | FloatingPointError):
                raise Failure(str(err)) from None
            if _out_of_memory(err):
                hint = MEMORY_HINTS.get(ctx.command.name, "smaller sizes")
                raise usage(f"not enough memory for this run; use {hint}") from None
            if isinstance(err, ValueError | TypeError):  # invalid values met past click
                raise usage(first_line(err)) from None
            if isinstance(err, OSError):
                raise Failure(f"{err.strerror or err}: {err.filename or ''}".strip()) from None
            raise Failure(f"{type(err).__name__}: {err} (rerun with --debug for details)") \
                from None

    return wrapper


def is_quiet() -> bool:
    """``--quiet`` given (before or after the subcommand); outside a command: quiet."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    return bool((ctx.find_root().obj or {}).get("quiet") or ctx.params.get("quiet"))


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


def on_interrupt(kept: str | Callable[[], str]) -> None:
    """What an interrupted command keeps, for the message of Ctrl-C / SIGTERM (a function is
    called when the interrupt comes, for what is kept only from some point on)."""
    click.get_current_context().meta["recompose.kept"] = kept


def overwrite_option(fn: Callable) -> Callable:
    """The ``--overwrite`` flag: replace the outputs of a previous recompose run in ``--out``."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace the outputs of a previous recompose run in --out (other "
                             "files there are never touched).")(fn)


def release_process_group() -> None:
    """Leave ``torchrun``'s process group if this process joined one. A gloo group still
    alive when the interpreter exits can abort the process ("terminate called without an
    active exception", SIGABRT) instead of letting it exit with its own code."""
    torch = sys.modules.get("torch")  # never import torch just to find nothing to release
    if torch is None:
        return
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - leaving anyway; the exit code is what matters
            pass


def run_command_line(command: click.Command, args: list[str] | None = None) -> int:
    """Run ``command`` as the console script does and return its exit code.

    Click's standalone handling (one-line errors, exit codes), except that a usage error
    (exit 2) is printed only by the lead process: under ``torchrun`` every rank parses the
    same arguments and meets the same error, so rank 0 prints it and the others exit with
    the same code silently. Runtime failures are printed by every rank that meets one (they
    may differ between ranks). The process group, if any, is left before returning.
    """
    lead = os.environ.get("RANK", "0") == "0"  # set by torchrun for every process it starts
    try:
        try:
            code = command.main(args=args, obj={}, standalone_mode=False)
            return code if type(code) is int else 0  # ctx.exit(code), or a command's None
        except click.exceptions.Exit as err:
            return err.exit_code
        except click.ClickException as err:
            if lead or err.exit_code != click.UsageError.exit_code:
                err.show()
            return err.exit_code
        except click.Abort:
            click.echo("Aborted!", err=True)
            return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        if threading.current_thread() is threading.main_thread():
            # exiting: torchrun's SIGTERM to a rank that has not finished yet (sent when
            # another rank exits first) ends it quietly rather than as an interrupt
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        release_process_group()
