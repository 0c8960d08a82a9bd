"""Sharded sampling throughput: P = 1 vs P = 2 gloo processes of one thread each, same chains.

Each case samples ``n`` chains in a process group of ``P`` ranks (:mod:`recompose.distributed`:
blocks of chains dealt to the ranks, gathered on every rank), timed between two barriers,
best of ``repeats``. Parallel efficiency ``= T₁ / (P · T_P)`` (1.0 = perfect). For reference,
``unsharded`` times the same run outside a group in one process of one thread (all chains in one
batch) — the blocks' cost against one big batch.

Run: ``python benchmarks/distributed_sampling.py`` (``--n``, ``--repeats``, ``--block-size``,
``--cases``; ≈ 10 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CASES = {  # name: (model builder, sampler, options)
    "2D ring * bar, HMC": ("ring_bar", "hmc", {"num_levels": 20, "num_steps": 4}),
    "CLEVR 2-object product, ULA": ("clevr2", "ula", {"num_levels": 10, "num_steps": 2}),
}


def build(name: str) -> object:
    import recompose as rc

    if name == "ring_bar":
        return rc.pretrained("ring") * rc.pretrained("bar")
    clevr = rc.pretrained("clevr", "score")
    return rc.conjunction(clevr, [torch.tensor([0.3, 0.3]), torch.tensor([0.7, 0.6])])


def _time(model: object, n: int, sampler: str, options: dict, repeats: int,
          block_size: int | None = None) -> float:
    import recompose as rc

    best = float("inf")
    if block_size is not None:
        sampler = rc.distributed.Sharded(sampler, block_size=block_size)
    for _ in range(repeats):
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        rc.sample(model, n, sampler, seed=0, **options)
        if dist.is_initialized():
            dist.barrier()
        best = min(best, time.perf_counter() - start)
    return best


def _worker(rank: int, world: int, init: str, case: str, n: int, repeats: int,
            out: str, block_size: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        builder, sampler, options = CASES[case]
        seconds = _time(build(builder), n, sampler, options, repeats, block_size)
        if rank == 0:
            with open(out, "w") as f:
                f.write(str(seconds))
    finally:
        dist.destroy_process_group()


def group_time(world: int, case: str, n: int, repeats: int, block_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.start_processes(_worker, args=(world, os.path.join(tmp, "init"), case, n, repeats,
                                          out, block_size), nprocs=world, start_method="spawn")
        with open(out) as f:
            return float(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=None,
                        help="chains per block (default: recompose's, by the data's size)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    blocks = args.block_size or "recompose's default (1,024 for 2D, 64 for CLEVR)"
    print(f"n = {args.n} chains; blocks of {blocks}; best of {args.repeats}; one thread per "
          "process\n")
    print("| case | unsharded / T₁ | T₁ / T₂ (speed-up) | efficiency T₁ / (2·T₂) |")
    print("|---|---|---|---|")
    for case in args.cases:
        builder, sampler, options = CASES[case]
        single = _time(build(builder), args.n, sampler, options, args.repeats)
        t1 = group_time(1, case, args.n, args.repeats, args.block_size)
        t2 = group_time(2, case, args.n, args.repeats, args.block_size)
        print(f"| {case} | {single / t1:.2f} | {t1 / t2:.2f} | {t1 / (2 * t2):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
