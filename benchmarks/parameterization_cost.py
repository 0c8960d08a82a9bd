"""Energy vs score parameterisation: cost per gradient evaluation and per training step.

Run: ``python benchmarks/parameterization_cost.py`` (prints a table of ratios).
"""

import torch
from _bench import parameterization_cost

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(parameterization_cost(n=1000, repeats=3))
