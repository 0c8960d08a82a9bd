"""A tiny experiment for test_interrupts.py, shaped like the real ones: the first line before
the slow imports, a worker pool whose workers import torch, results written into a run folder.

``python tests/experiments/interrupt_target.py OUT TASKS SECONDS`` — TASKS tasks of SECONDS
each in two workers. It prints markers on stdout for the test to time its signals: ``importing``
(the slow imports follow), ``pool`` (the pool starts), ``task`` (a worker started a task) and
``writing`` (inside the run folder, for two seconds).
"""
# ruff: noqa: E402 (the first line is printed before the slow imports, like the experiments)

from experiments.common import announce

announce(__name__, "interrupt_target: importing torch, then tasks in two workers")
if __name__ == "__main__":
    print("importing", flush=True)

import sys
import time
from pathlib import Path

import torch

from experiments.common import map_in_workers, script
from recompose.io import run_folder


def work(seconds: float) -> float:
    print("task", flush=True)
    time.sleep(seconds)
    return float(torch.ones(3).sum()) * seconds


@script
def main() -> None:
    out, count, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print("pool", flush=True)
    results = map_in_workers(work, [seconds] * count, 2, "tasks", progress=False)
    with run_folder(out) as tmp:
        print("writing", flush=True)
        (tmp / "results.txt").write_text(str(results))
        time.sleep(2)
    print("done", flush=True)


if __name__ == "__main__":
    main()
