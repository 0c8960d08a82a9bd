"""Sampler overhead: annealed HMC / MALA wall time over the bare network evaluations they make.

Run: ``python benchmarks/sampler_overhead.py`` (prints a table; last line
``max overhead ratio: X``; target ≤ 1.15).
"""

import torch
from _bench import sampler_overhead

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(sampler_overhead(n=1000, repeats=3))
