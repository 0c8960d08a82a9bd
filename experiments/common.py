"""What the experiment scripts share: their configs, output folders and Markdown tables, the
worker pool and the entry point that stops cleanly on Ctrl-C or SIGTERM.

Each experiment ``NAME`` has ``configs/NAME.json`` holding the protocol of its table in
``docs/results.md``; command-line options override single entries, and the config actually
used is saved with the results (``OUT/config.json``).

This module imports neither torch nor recompose at the top, so that a script's first line
(:func:`announce`) comes before the seconds its own imports take.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_context
from pathlib import Path

__all__ = ["mean_or_none", "CONFIG_DIR", "VARIANTS", "sampler_args", "load_config", "parse_config",
           "markdown_table", "write_results", "map_in_workers", "announce", "signals_as_usual",
           "echo", "script"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# Sampler names of the tables beyond rc.sample's own: score-only Metropolis (mcmc/path.py),
# FKC with moves that spread its resampled copies.
VARIANTS: dict[str, tuple[str, dict]] = {
    "fkc-ula": ("fkc", {"moves": "ula"}),
    "fkc-uhmc": ("fkc", {"moves": "uhmc"}),
    "mala-path": ("mala", {"energy": "path", "quadrature": "simpson"}),
    "mala-trapezoid": ("mala", {"energy": "path", "quadrature": "trapezoid"}),
    "hmc-path": ("hmc", {"energy": "path", "quadrature": "simpson"}),
    "hmc-trapezoid": ("hmc", {"energy": "path", "quadrature": "trapezoid"}),
}


def sampler_args(name: str) -> tuple[str, dict]:
    """``(sampler, kernel options)`` for a table's sampler name (``"hmc-path"`` …)."""
    return VARIANTS.get(name, (name, {}))


def load_config(name: str) -> dict:
    """The checked-in protocol of experiment ``name``."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def parse_config(name: str, description: str, argv: list[str] | None = None,
                 check: Callable[[dict], None] | None = None) -> dict:
    """``configs/NAME.json`` with ``--KEY VALUE`` overrides (``--out``, ``--overwrite`` too).

    Every key of the config becomes an option of the same type (lists take several values).
    ``check(config)`` raises ``ValueError`` for values the script cannot run with; like an
    unusable ``--out`` folder, that ends the script with the usage line and the message,
    before any work.
    """
    from recompose.io import RunFolderError, check_run_folder

    config = load_config(name)
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if key == "out":
            parser.add_argument(flag, type=Path, default=Path(value), help="output folder")
        elif isinstance(value, list):
            kind = type(value[0]) if value else str
            parser.add_argument(flag, type=kind, nargs="+", default=value,
                                help=f"default: {' '.join(map(str, value))}")
        else:
            parser.add_argument(flag, type=type(value), default=value,
                                help=f"default: {value}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --out")
    args = vars(parser.parse_args(argv))
    try:  # before any work: a folder we can write, and never someone else's files
        check_run_folder(args["out"], args["overwrite"])
        if check is not None:
            check(args)
    except (RunFolderError, ValueError) as err:
        parser.error(str(err))
    return args


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean, or ``None`` when a value is undefined (e.g. the acceptance of a sampler
    without MCMC steps)."""
    return None if any(v is None for v in values) else sum(values) / len(values)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells are printed with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def echo(line: str) -> None:
    """Print ``line`` on stdout at once, without breaking the progress bars on stderr."""
    from tqdm.auto import tqdm

    tqdm.write(line)
    sys.stdout.flush()


def write_results(config: dict, results: object, table: str) -> None:
    """``config.json``, ``results.json`` and ``table.md`` into ``config["out"]``, atomically
    (the folder was checked by :func:`parse_config`)."""
    from recompose.io import run_folder

    with run_folder(config["out"], config["overwrite"]) as tmp:
        (tmp / "config.json").write_text(json.dumps({k: str(v) if k == "out" else v
                                                     for k, v in config.items()}, indent=2))
        (tmp / "results.json").write_text(json.dumps(results, indent=2))
        (tmp / "table.md").write_text(table + "\n")


_STOP = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held(deliver: bool = True) -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, then act as usual (or, ``deliver=False``,
    are dropped: the caller is already stopping). Processes started inside begin with both
    blocked, so none is stopped half-started or interrupted while it imports."""
    if (threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "pthread_sigmask")
            or any(signal.getsignal(s) is None for s in _STOP)):
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in _STOP}

    def restore() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)  # pending ones are held now
        for s, handler in previous.items():
            signal.signal(s, handler)

    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
    try:
        yield
    except BaseException:
        restore()
        raise
    restore()
    if held and deliver:
        handler = previous[held[0]]
        if callable(handler):
            handler(held[0], None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(held[0])


def _portable(err: Exception) -> tuple[Exception, str]:
    """A task's exception as the parent can receive it, with the worker's traceback."""
    text = traceback.format_exc()
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        err = RuntimeError(f"{type(err).__name__}: {err}")
    return err, text


def _worker(fn: Callable, link: object) -> None:
    """A worker: ``fn`` of each task received on ``link`` until ``None`` or the parent is gone.
    Ctrl-C is the parent's to answer (it kills the workers); SIGTERM ends a worker silently."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)  # blocked since its start
    import torch

    torch.set_num_threads(1)
    while True:
        try:
            task = link.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            try:
                link.send((True, fn(task)))
            except Exception as err:  # the task's, or its result cannot be sent
                link.send((False, _portable(err)))
        except OSError:  # the parent is gone
            return


def _stop(procs: list, links: list, graceful: bool) -> None:
    """End every worker within a few seconds: asked to (``graceful``), else killed at once
    (they hold nothing but their task)."""
    with _signals_held(deliver=graceful):
        if graceful:
            for link in links:
                with contextlib.suppress(OSError):
                    link.send(None)
            deadline = time.monotonic() + 5
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.exitcode is None:
                p.kill()
        deadline = time.monotonic() + 5
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for link in links:
            link.close()


def map_in_workers(fn: Callable, tasks: Sequence, workers: int, desc: str,
                   progress: bool = True) -> list:
    """``[fn(t) for t in tasks]`` in ``workers`` spawned processes of one thread each, in
    order, tasks handed out in order as workers free up. A task's exception is raised here
    (with the worker's traceback as its cause). An exception or interrupt in the parent
    (Ctrl-C to the parent or to its whole process group, SIGTERM) kills the workers at once,
    whatever they are doing, starting up included; they print nothing."""
    from multiprocessing.connection import wait
    from multiprocessing.pool import RemoteTraceback

    from tqdm.auto import tqdm

    tasks = list(tasks)
    if not tasks:
        return []
    ctx = get_context("spawn")
    procs: list = []
    links: list = []
    try:
        with tqdm(total=len(tasks), desc=desc, disable=not progress) as bar:
            if os.name == "posix":  # before holding: starting it unblocks Ctrl-C and SIGTERM
                from multiprocessing import resource_tracker

                resource_tracker.ensure_running()
            with _signals_held():  # a worker is started whole, and never sees Ctrl-C
                for _ in range(max(1, min(workers, len(tasks)))):
                    here, there = ctx.Pipe()
                    links.append(here)
                    procs.append(ctx.Process(target=_worker, args=(fn, there), daemon=True))
                    procs[-1].start()
                    there.close()
            results: list = [None] * len(tasks)
            order = iter(range(len(tasks)))
            busy: dict[int, int] = {}  # worker -> its task

            def hand_out(w: int) -> None:
                i = next(order, None)
                if i is not None:
                    links[w].send(tasks[i])
                    busy[w] = i

            for w in range(len(procs)):
                hand_out(w)
            while busy:
                ready = wait([links[w] for w in busy] + [procs[w].sentinel for w in busy])
                for w in [w for w in busy if links[w] in ready or procs[w].sentinel in ready]:
                    try:
                        ok, value = links[w].recv()
                    except (EOFError, OSError):
                        procs[w].join(1)
                        raise RuntimeError(
                            f"{desc}: a worker ended (exit code {procs[w].exitcode}) during "
                            f"task {busy[w]}; out of memory?") from None
                    i = busy.pop(w)
                    if not ok:
                        err, text = value
                        err.__cause__ = RemoteTraceback(text)
                        raise err
                    results[i] = value
                    bar.update()
                    hand_out(w)
    except BaseException:
        _stop(procs, links, graceful=False)
        raise
    _stop(procs, links, graceful=True)
    return results


class _Terminated(KeyboardInterrupt):
    pass


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def _stopped(signum: int) -> str:
    return (f"{'terminated' if signum == signal.SIGTERM else 'interrupted'}: no results were "
            "written (an earlier run's results are untouched)")


def _close_bars() -> None:
    """Close the progress bars an interrupt left open, so that the stop line comes after
    them (a bar iterated by a loop is closed only when the loop's frame is collected)."""
    module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(module, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def _stop_early(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while a script imports: nothing started yet, nothing to clean up."""
    print(_stopped(signum), file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(128 + signum)


def announce(module: str, line: str) -> None:
    """An experiment's first line, on stderr, before its slow imports: call it first thing,
    with ``__name__``; only a script run (``python -m experiments.NAME``) prints it. From
    then on Ctrl-C and SIGTERM end the script with one line, even before :func:`script`'s
    ``main`` runs."""
    if module != "__main__":
        return
    for s in _STOP:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _stop_early)
    print(line, file=sys.stderr, flush=True)


def signals_as_usual() -> None:
    """For a ``main`` without :func:`script`, first thing: Ctrl-C raises KeyboardInterrupt
    and SIGTERM ends the process again (:func:`announce`'s one line is for the imports)."""
    for s, usual in ((signal.SIGINT, signal.default_int_handler),
                     (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(s) is _stop_early:
            signal.signal(s, usual)


def script(main: Callable[..., None]) -> Callable[..., None]:
    """An experiment's entry point: SIGTERM stops it like Ctrl-C, and either ends it with one
    line (what was kept) and exit code 143 / 130 instead of a traceback; the workers of
    :func:`map_in_workers` are gone by then."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> None:
        previous = {s: signal.getsignal(s) for s in _STOP}
        for s, handler in ((signal.SIGINT, signal.default_int_handler),
                           (signal.SIGTERM, _terminate)):
            if previous[s] is not signal.SIG_IGN:  # e.g. Ctrl-C in a background job
                signal.signal(s, handler)

        def restore() -> None:  # announce's handlers would say "no results": not now
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is _stop_early else handler)

        try:
            main(*args, **kwargs)
        except KeyboardInterrupt as err:
            for s in _STOP:  # stopping already: a second Ctrl-C changes nothing
                signal.signal(s, signal.SIG_IGN)
            signum = signal.SIGTERM if isinstance(err, _Terminated) else signal.SIGINT
            _close_bars()
            print(_stopped(signum), file=sys.stderr, flush=True)
            sys.exit(128 + signum)
        except BaseException:
            restore()
            raise
        restore()

    return wrapper
