"""Cost of one energy-and-gradient evaluation per network family, against JAX ``jit``.

For each shipped energy network — the 2D residual MLP (``ring``), the digits MLP (``digits``)
and the position UNet (``clevr``) — at batch 1, 64 and 1,000, times ``model.energy_and_score``
(recompose's path: one forward and one autograd backward), the bare autograd call around
the network's energy (``energy_and_score_autograd``: the floor of any autograd path), and,
for the MLPs, recompose's compiled path (``model.compile_gradient()``: a hand-derived
backward pass under ``torch.compile``; compiled during warm-up, like JAX's ``jit``) and the
same architecture and weights in JAX under ``jit`` (``jax.vjp`` of the per-sample energies,
as recompose returns them). Outputs are checked against recompose's before timing. Calls are
interleaved, median of ``repeats`` rounds of ``calls`` calls. Ratios ``/ JAX`` < 1: recompose
is faster. No JAX reference was built for the UNet.

Each thread count runs in its own process, pinned to that many cores (JAX reads its thread
settings at import, and XLA's flags alone do not stop it from using every core: unpinned,
its "one thread" process used 1.9 cores).

Run: ``python benchmarks/gradient_cost.py`` (needs ``pip install jax``, a benchmark-only
dependency; ≈ 3 min).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

FAMILIES = (("2D MLP", "ring"), ("digits MLP", "digits"), ("position UNet", "clevr"))
BATCHES = (1, 64, 1000)


def _jax_energy(net: object) -> object:
    """``(x, t, sigma) -> (E (B,), ∇ₓE)`` for a ResMLP energy model in JAX, same weights."""
    import jax
    import jax.numpy as jnp

    p = {k: jnp.asarray(v.detach().numpy()) for k, v in net.state_dict().items()}
    freqs = jnp.asarray(net.embed[0].freqs.numpy())
    nblocks = len(net.blocks)

    def linear(x: object, name: str) -> object:
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def energy(x: object, t: object, sigma: object) -> object:
        angles = 1000.0 * t * freqs
        e = jax.nn.silu(linear(jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])[None],
                               "embed.1"))
        h = linear(x, "inp")
        for i in range(nblocks):
            b = f"blocks.{i}"
            mu = h.mean(1, keepdims=True)
            var = ((h - mu) ** 2).mean(1, keepdims=True)
            n = (h - mu) / jnp.sqrt(var + 1e-5) * p[f"{b}.norm.weight"] + p[f"{b}.norm.bias"]
            z = linear(jax.nn.silu(n), f"{b}.fc1") + linear(e, f"{b}.emb")
            h = h + linear(jax.nn.silu(z), f"{b}.fc2")
        f = linear(h, "out")
        return ((f - x) ** 2).sum(1) / sigma

    def value_and_grad(x: object, t: object, sigma: object) -> object:
        u, vjp = jax.vjp(lambda z: energy(z, t, sigma), x)
        return u, vjp(jnp.ones_like(u))[0]

    return jax.jit(value_and_grad)


def _jax_call(jfn: object, xj: object, sigma: float) -> object:
    return jfn(xj, 0.3, sigma)[1].block_until_ready()


def run(threads: int, repeats: int) -> list[str]:
    import torch

    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    torch.set_num_threads(threads)
    import numpy as np

    from recompose.models.loading import load_model, pretrained, shipped_path
    from recompose.utils import energy_and_score_autograd

    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        jax = None
    rows = []
    for label, name in FAMILIES:
        model = pretrained(name) if name == "ring" else load_model(shipped_path(f"{name}-energy"))
        model = model.eval().requires_grad_(False)
        shape = model.event_shape
        mlp = type(model.net).__name__ == "ResMLP"
        for batch in BATCHES:
            gen = torch.Generator().manual_seed(batch)
            x = torch.randn((batch, *shape), generator=gen)
            t = torch.tensor(0.3)
            sigma = float(model.schedule(t)[1])
            fns = {"recompose": functools.partial(model.energy_and_score, x, t),
                   "autograd": functools.partial(energy_and_score_autograd,
                                                 functools.partial(model.energy, t=t), x)}
            compile_s = None
            if mlp:
                fast = load_model(shipped_path(f"{name}-energy")).eval().requires_grad_(False)
                fast.compile_gradient()
                start = time.perf_counter()
                e_c, s_c = fast.energy_and_score(x, t)  # compiles for this shape
                compile_s = time.perf_counter() - start
                e_t, s_t = model.energy_and_score(x, t)
                scale = float(s_t.abs().max())
                assert torch.allclose(e_c, e_t, rtol=1e-4, atol=1e-4 * float(e_t.abs().max()))
                assert torch.allclose(s_c, s_t, rtol=1e-4, atol=1e-4 * scale)
                fns["compiled"] = functools.partial(fast.energy_and_score, x, t)
            if mlp and jax is not None:
                jfn = _jax_energy(model.net)
                xj = jnp.asarray(x.reshape(batch, -1).numpy())
                e_j, g_j = jfn(xj, 0.3, sigma)
                e_t, s_t = model.energy_and_score(x, t)
                scale = float(s_t.abs().max())
                assert np.allclose(np.asarray(e_j), e_t.numpy(), rtol=1e-3, atol=1e-3 * scale)
                assert np.allclose(-np.asarray(g_j).reshape(s_t.shape), s_t.numpy(),
                                   rtol=1e-3, atol=1e-3 * scale)
                fns["jax"] = functools.partial(_jax_call, jfn, xj, sigma)
            calls = max(3, min(300, 3000 // batch)) if mlp else max(3, min(60, 600 // batch))
            times: dict[str, list[float]] = {k: [] for k in fns}
            for fn in fns.values():  # warm-up (JAX compiles here)
                fn()
            for _ in range(repeats):
                for key, fn in fns.items():
                    start = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    times[key].append((time.perf_counter() - start) / calls)
            med = {k: statistics.median(v) for k, v in times.items()}
            jax_cells = ["no reference"] * 3
            if "jax" in med:
                jax_cells = [f"{med[k] / med['jax']:.2f}" if k in med else "—"
                             for k in ("recompose", "compiled", "autograd")]
            compiled = (f"{med['compiled'] * 1e3:.3f} ({compile_s:.0f} s to compile)"
                        if compile_s is not None else "—")
            rows.append(f"| {label} | {batch} | {threads} | {med['recompose'] * 1e3:.3f} | "
                        f"{compiled} | {' | '.join(jax_cells)} | "
                        f"{med['recompose'] / med['autograd']:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="one setting (internal)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.threads is not None:
        print("\n".join(run(args.threads, args.repeats)), flush=True)
        return
    print("| network | batch | threads | recompose ms | compiled ms | recompose / JAX | "
          "compiled / JAX | autograd / JAX | recompose / autograd |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for threads in (1, os.cpu_count() or 1):
        flags = ("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                 if threads == 1 else "")
        env = os.environ | {"XLA_FLAGS": flags, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, __file__, "--threads", str(threads), "--repeats",
                        str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
