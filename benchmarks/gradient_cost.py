"""Cost of one energy-and-gradient evaluation per network family, against JAX ``jit``.

The table of docs/results.md §4 (issue #17): recompose's default (autograd) path, its compiled
path (``model.compile_gradient()``), the bare autograd call and, when JAX is installed, the
same architecture and weights under ``jax.jit``, for the 2D MLP, the digits MLP and the
position UNet at batch 1, 64 and 1,000, on one thread and on every core (each setting in its
own process, pinned to that many cores). The same as ``recompose bench``; what is timed and
how: :mod:`recompose.cli.bench`.

Run: ``python benchmarks/gradient_cost.py`` (needs ``pip install jax`` for the JAX columns, a
benchmark-only dependency; ≈ 5 min).
"""

from recompose.cli.bench import bench

if __name__ == "__main__":
    bench(prog_name="gradient_cost.py")
