"""Sampler overhead: each sampler's wall time over the bare network evaluations it makes.

Run: ``python benchmarks/sampler_overhead.py`` (prints a table; last line
``max overhead ratio: X``). Targets: ≤ 1.15 for annealed MALA / HMC; SMC's bookkeeping (the
row without moves minus reverse diffusion's) ≤ 5 %.
"""

import torch
from _bench import sampler_overhead

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(sampler_overhead(n=1000, repeats=3))
