r"""Sampling sharded over a ``torch.distributed`` process group (``torchrun``; gloo or NCCL).

Sharding wraps any sampler object (:mod:`recompose.samplers`): :func:`recompose.sample` binds
every option of the run once and hands this module a single-process run to repeat on parts of
the work, so ``groups=``, ``clip=`` and every sampler option behave the same in a group.

**Independent chains** (reverse diffusion, the ODE, annealed MCMC, a user's sampler that is not
``weighted``): the ``n`` chains are split into blocks of ``block_size`` chains (default
:func:`default_block_size`: about 2¹⁶ numbers per block, a power of two between 16 and 1,024 —
1,024 chains of 2D points, 64 16×16 RGB images; it depends only on the data shape, never on
the world size), in order: block ``b`` holds chains ``b·S … min((b+1)·S, n) − 1``. Block ``b``
is an independent run of the same sampler, seeded with

    seed_b = SeedSequence([seed, b]).generate_state(1, uint64)[0]   (numpy's seed mixing)

Blocks are dealt to ranks in contiguous runs (rank ``r`` of ``P`` gets blocks
``⌊r·N_b/P⌋ … ⌊(r+1)·N_b/P⌋ − 1``), every rank samples its blocks one after another, and the
blocks are gathered in block order onto every rank; rank 0 shows the progress bar, counted in
levels of its blocks (and, in the CLI, alone writes files). A block's bytes depend only on
``(seed, b)`` and its size, never on ``P``, so **the union of the samples is the same for any
world size**, one process outside a group included (``shard=True``; the CLI always samples
this way) — bit for bit on CPU with the same number of threads per process (a BLAS may round
differently with other thread counts; use one thread per process, as ``torchrun`` does with
``OMP_NUM_THREADS=1``).

Per-block consequences: step-size adaptation runs per block (as it would per chain group), and
``x_init`` is split with the chains. The diagnostics are merged: per-level acceptance and
divergence are chain-weighted means, ``acceptance_min`` the minimum, ``step_size`` the chain-
weighted mean of the blocks' final steps, ``wall_time`` the slowest rank's.

**Weighted particles** (SMC, FKC: one population) are distributed differently. Every rank holds
the whole population and runs the sampler's bookkeeping (weights, ESS, resampling, the kernels'
random draws) identically from the same seed, while each network evaluation — the dominant
cost — is split: rank ``r`` evaluates its rows of the batch and the outputs are all-gathered
(:class:`ShardedModel`; :func:`_split_rows` for row-wise functions such as FKC's weights).
Weights, groups and resampling are therefore global by construction (no particle has to move
between ranks), and the result equals the single-process run seeded alike up to the network's
floating-point rounding on smaller batches. Memory per rank is the whole population's. A model
with a condition per chain (a label per particle, ``groups=``) is evaluated whole on every rank
(``info.settings["rows_split"]`` is false): correct, but no faster than one process.

Failures are collective: if any rank raises, every rank raises (no rank is left waiting).
"""

from __future__ import annotations

import atexit
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import numpy as np
import torch
from torch import Tensor

from .models.base import DiffusionModel, model_device_dtype
from .samplers.base import Sampler
from .samplers.result import SampleInfo, SampleResult, SamplingWarning, sample_problems

__all__ = ["active", "rank", "world_size", "init_from_env", "agree", "require_seed",
           "block_seed", "blocks_of", "Sharded", "run_sharded", "ShardedModel",
           "default_block_size"]


def active() -> bool:
    """Is this process in an initialised ``torch.distributed`` process group?"""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank in the default process group (0 outside one)."""
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes in the default process group (1 outside one)."""
    return torch.distributed.get_world_size() if active() else 1


def init_from_env(timeout_s: float = 600.0) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``…): NCCL when CUDA is available, else gloo. Returns whether
    this process is in a group (``False`` when not launched by ``torchrun``)."""
    if active():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    # leave the group before the interpreter exits: a live gloo thread at exit aborts the
    # process ("terminate called without an active exception")
    atexit.register(lambda: torch.distributed.destroy_process_group() if active() else None)
    return True


def agree(error: str | None) -> str | None:
    """Every rank learns the first rank's error (``None`` if no rank has one): a check made on
    one rank (e.g. rank 0's output folder) stops all of them instead of leaving them waiting."""
    if not active():
        return error
    errors: list = [None] * world_size()
    torch.distributed.all_gather_object(errors, error)
    return next((e for e in errors if e), None)


def require_seed(seed: int | None, generator: torch.Generator | None = None) -> None:
    """Sampling in a process group is seeded by ``seed`` alone (every rank derives the same
    random numbers from it); a generator cannot be shared between processes."""
    if seed is None or generator is not None:
        raise ValueError("sampling in a process group needs seed= and no generator= (the "
                         "chains' random numbers are derived from the seed, so that every "
                         "world size gives the same samples); a generator cannot be shared "
                         "between processes")


def default_block_size(event_shape: tuple[int, ...]) -> int:
    """Chains per block: ``2¹⁶ / numel(event)`` rounded to a power of two in ``[16, 1024]``.
    Small blocks keep image batches in cache (a 16×16 UNet runs 2× faster per chain in
    blocks of 64 than in one batch of 2,000, and two processes then scale); vectors need
    large blocks to amortise per-call overhead (docs/results.md §10)."""
    numel = math.prod(event_shape) or 1
    return int(min(1024, max(16, 2 ** round(math.log2(2**16 / numel)))))


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block`` of a run seeded ``seed`` (see the module docstring)."""
    state = np.random.SeedSequence([int(seed), int(block)]).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def blocks_of(n: int, block_size: int, world: int, r: int) -> list[tuple[int, int, int]]:
    """``[(block, start, stop), …]`` of rank ``r`` among ``world`` ranks."""
    count = -(-n // block_size)
    first, last = r * count // world, (r + 1) * count // world
    return [(b, b * block_size, min((b + 1) * block_size, n)) for b in range(first, last)]


def _merge_info(infos: list[SampleInfo], sizes: list[int], wall: float) -> SampleInfo:
    w = np.asarray(sizes, dtype=np.float64) / sum(sizes)

    def mean(key: str) -> list[float]:
        return (np.asarray([getattr(i, key) for i in infos]) * w[:, None]).sum(0).tolist()

    head = infos[0]
    merged = replace(head, num_chains=sum(sizes), acceptance=mean("acceptance"),
                     acceptance_min=np.min([i.acceptance_min for i in infos], 0).tolist(),
                     step_size=mean("step_size"), divergent=mean("divergent"), wall_time=wall,
                     settings=dict(head.settings), warnings=[])
    merged.warnings = merged.problems()
    return merged


class Sharded:
    """``sampler`` (a name, kernel or sampler object) with an explicit ``block_size`` for sharded
    runs: ``rc.sample(model, n, Sharded("hmc", block_size=64), seed=0)``. ``rc.sample`` shards
    any sampler inside a process group without it; this only sets the block size."""

    def __init__(self, sampler: object = "hmc", block_size: int | None = None) -> None:
        if block_size is not None and (isinstance(block_size, bool)
                                       or not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be an integer ≥ 1, got {block_size!r}")
        self.sampler, self.block_size = sampler, block_size


def run_sharded(run: Callable[..., SampleResult], sampler: Sampler, n: int, seed: int | None,
                generator: torch.Generator | None, x_init: Tensor | None,
                groups: Tensor | None, block_size: int | None, event_shape: tuple[int, ...],
                num_levels: int, progress: bool, model: DiffusionModel) -> SampleResult:
    """Run ``run(n=…, generator=…, x_init=…, groups=…, tick=…[, evaluate=…, rows=…])`` — one
    single-process run of ``sampler`` with every other option bound — sharded over the process
    group (this process alone outside one): independent chains in seeded blocks, weighted
    particles by rows (module docstring)."""
    require_seed(seed, generator)
    if sampler.weighted:
        if block_size is not None:
            raise TypeError(f"block_size does not apply to {sampler.name} (its population is "
                            "not split into blocks)")
        return _run_rows(run, n, seed, groups, num_levels, progress and rank() == 0, model,
                         sampler.name)
    block_size = default_block_size(event_shape) if block_size is None else block_size
    result = _run_blocks(run, n, seed, x_init, block_size, num_levels, progress,
                         model_device_dtype(model)[0])
    result.info.warnings += sample_problems(result.x, model.schedule.prior_std())
    return result


def _run_rows(run: Callable[..., SampleResult], n: int, seed: int, groups: Tensor | None,
              num_levels: int, progress: bool, model: DiffusionModel, name: str
              ) -> SampleResult:
    """One weighted population, replicated bookkeeping, network evaluations split by rows."""
    from tqdm.auto import tqdm

    generator = torch.Generator(device=model_device_dtype(model)[0]).manual_seed(int(seed))
    # a condition per chain (a label per particle) belongs to the whole population: such a
    # model is evaluated whole on every rank (correct, not faster)
    split = world_size() > 1 and not model.per_chain
    bar = tqdm(total=num_levels, desc=name, unit="level", leave=False) if progress else None
    try:
        result = run(n=n, generator=generator, x_init=None, groups=groups,
                     tick=None if bar is None else (lambda _record: bar.update(1)),
                     evaluate=ShardedModel(model) if split else None,
                     rows=_split_rows if split else None)
    finally:
        if bar is not None:
            bar.close()
    result.info.settings |= {"world_size": world_size(), "seed": seed, "rows_split": split}
    return result


def _run_blocks(run: Callable[..., SampleResult], n: int, seed: int, x_init: Tensor | None,
                block_size: int, num_levels: int, progress: bool, device: torch.device
                ) -> SampleResult:
    """Independent chains in seeded blocks dealt to the ranks, gathered on every rank."""
    world, me = world_size(), rank()
    mine = blocks_of(n, block_size, world, me)
    start = time.perf_counter()
    results, error = [], None
    bar = None
    if progress and me == 0:
        from tqdm.auto import tqdm

        desc = "levels" if world == 1 else f"levels (rank 0 of {world})"
        bar = tqdm(total=len(mine) * num_levels, desc=desc, unit="level", leave=False)
    try:
        for b, lo, hi in mine:
            part = None if x_init is None else x_init[lo:hi]
            with warnings.catch_warnings():  # reported once, for the merged run
                warnings.simplefilter("ignore", SamplingWarning)
                gen = torch.Generator(device=device).manual_seed(block_seed(seed, b))
                r = run(n=hi - lo, generator=gen, x_init=part,
                        groups=None, tick=None if bar is None else (lambda _r: bar.update(1)))
            tracked = None if r.log_density is None else {k: v.cpu() for k, v in
                                                           r.log_density.items()}
            results.append((b, r.x.cpu(), r.info, tracked))
    except Exception as err:  # noqa: BLE001 - re-raised on every rank below
        error = f"rank {me}: {type(err).__name__}: {err}"
        failure = err
    finally:
        if bar is not None:
            bar.close()
    gathered = [{"error": error, "blocks": results, "wall": time.perf_counter() - start}]
    if active():
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, {"error": error, "blocks": results,
                                                       "wall": time.perf_counter() - start})
    errors = [g["error"] for g in gathered if g["error"]]
    if errors:
        if error is not None:
            raise failure
        raise RuntimeError(f"sampling failed on another rank: {errors[0]}")
    blocks = sorted((blk for g in gathered for blk in g["blocks"]), key=lambda blk: blk[0])
    x = torch.cat([blk[1] for blk in blocks])
    info = _merge_info([blk[2] for blk in blocks], [len(blk[1]) for blk in blocks],
                       max(g["wall"] for g in gathered))
    info.settings |= {"world_size": world, "block_size": block_size,
                      "blocks": len(blocks), "seed": seed}
    tracked = None
    if blocks and blocks[0][3] is not None:  # tracked log-densities, block by block
        tracked = {k: torch.cat([blk[3][k] for blk in blocks]) for k in blocks[0][3]}
    return SampleResult(x, info, log_density=tracked)


def _rows(n: int, world: int, r: int) -> tuple[int, int]:
    share = -(-n // world)
    return min(r * share, n), min((r + 1) * share, n)


def _gather_rows(local: Tensor, n: int) -> Tensor:
    """Concatenate every rank's rows (rank order) into ``n`` rows on every rank."""
    world = world_size()
    share = -(-n // world)
    pad = torch.zeros((share - local.shape[0],) + tuple(local.shape[1:]), dtype=local.dtype,
                      device=local.device)
    parts = [torch.empty((share,) + tuple(local.shape[1:]), dtype=local.dtype,
                         device=local.device) for _ in range(world)]
    torch.distributed.all_gather(parts, torch.cat([local, pad]).contiguous())
    return torch.cat([p[: hi - lo] for p, (lo, hi) in
                      zip(parts, (_rows(n, world, r) for r in range(world)))])


def _split_rows(fn: Callable[[Tensor], object], x: Tensor) -> object:
    """``fn(x)`` with this rank's rows evaluated here and every output tensor (or tuple of
    them) all-gathered: a row-wise function of ``x`` split across the ranks."""
    n = x.shape[0]
    lo, hi = _rows(n, world_size(), rank())
    out = fn(x[lo:hi])
    if isinstance(out, tuple):
        return tuple(_gather_rows(o.detach(), n) for o in out)
    return _gather_rows(out.detach(), n)


class ShardedModel(DiffusionModel):
    """``model`` with every evaluation split across the ranks by rows and all-gathered (see the
    module docstring). All ranks must call it with the same inputs."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.inner = model
        self.schedule, self.event_shape = model.schedule, tuple(model.event_shape)
        self.has_energy, self.marginal = model.has_energy, model.marginal
        self.name = model.describe()

    def _split(self, fn: Callable[[Tensor, Tensor | float], object], x: Tensor,
               t: float | Tensor) -> tuple[Tensor, ...]:
        n = x.shape[0]
        lo, hi = _rows(n, world_size(), rank())
        tt = t[lo:hi] if isinstance(t, Tensor) and t.ndim == 1 and t.shape[0] == n else t
        out = fn(x[lo:hi], tt)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(_gather_rows(o.detach(), n) for o in outs)

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)
        return self._split(self.inner.energy, x, t)[0]

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self._split(self.inner.score, x, t)[0]

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_energy:
            return super().energy_and_score(x, t)
        return self._split(self.inner.energy_and_score, x, t)

    def leaves(self) -> Iterator[DiffusionModel]:
        return self.inner.leaves()
