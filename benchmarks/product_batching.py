"""Cost of a product of K position terms vs K: one batched network call vs one call per term.

Run: ``python benchmarks/product_batching.py`` (prints three tables of ratios to K = 1: the plain
product ``Π_k A|p_k`` and R3's form ``A^(1−K) Π_k A|p_k`` of the shipped position UNet, then
the plain product of the input- and the late-conditioned UNets side by side).
"""

import torch
from _bench import late_conditioning, product_batching

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(product_batching(n=32, plain=True))
    print()
    print(product_batching(n=32, plain=False))
    print()
    print(late_conditioning(n=32))
