"""``recompose bench``: the cost of one energy-and-gradient evaluation per network family.

For each shipped energy network — the 2D residual MLP (``ring``), the digits MLP (``digits``)
and the position UNet (``clevr``) — at each batch size, times ``model.energy_and_score``
(recompose's default path: one forward and one autograd backward), the bare autograd call
around the network's energy (``energy_and_score_autograd``: the floor of any autograd path),
for the MLPs the compiled path (``model.compile_gradient()``: a hand-derived backward pass under
``torch.compile``, compiled during warm-up as JAX's ``jit`` is), and, when JAX is installed
(a benchmark-only dependency), the same architecture and weights under ``jax.jit`` (``jax.vjp``
of the per-sample energies). Outputs are checked against recompose's before timing; calls are
interleaved, median of ``repeats`` rounds. Ratios ``/ JAX`` < 1: recompose is faster.

Each thread count runs in its own process pinned to that many cores: JAX reads its thread
settings at import, and XLA's flags alone do not keep it on one core. They run with
recompose's default ``OMP_WAIT_POLICY=PASSIVE`` (``--wait-policy``): on several threads,
``active`` makes torch faster, but its threads then spin through JAX's interleaved calls and
slow them too, so the multi-threaded JAX column would not be a fair reference. One thread is
unaffected either way.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import time

import click

__all__ = ["bench", "time_family", "FAMILIES"]

FAMILIES = {"2d": ("2D MLP", "ring"), "digits": ("digits MLP", "digits"),
            "clevr": ("position UNet", "clevr")}
HEADER = ("| network | batch | threads | recompose ms | compiled ms | recompose / JAX | "
          "compiled / JAX | autograd / JAX | recompose / autograd |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _jax_energy(net: object) -> object:
    """``(x, t, sigma) -> (E (B,), ∇ₓE)`` for a ResMLP energy model in JAX, same weights."""
    import jax
    import jax.numpy as jnp

    p = {k: jnp.asarray(v.detach().numpy()) for k, v in net.state_dict().items()}
    freqs = jnp.asarray(net.embed[0].freqs.numpy())

    def linear(x: object, name: str) -> object:
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def energy(x: object, t: object, sigma: object) -> object:
        angles = 1000.0 * t * freqs
        e = jax.nn.silu(linear(jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])[None],
                               "embed.1"))
        h = linear(x, "inp")
        for i in range(len(net.blocks)):
            b = f"blocks.{i}"
            mu = h.mean(1, keepdims=True)
            var = ((h - mu) ** 2).mean(1, keepdims=True)
            n = (h - mu) / jnp.sqrt(var + 1e-5) * p[f"{b}.norm.weight"] + p[f"{b}.norm.bias"]
            z = linear(jax.nn.silu(n), f"{b}.fc1") + linear(e, f"{b}.emb")
            h = h + linear(jax.nn.silu(z), f"{b}.fc2")
        return ((linear(h, "out") - x) ** 2).sum(1) / sigma

    def value_and_grad(x: object, t: object, sigma: object) -> object:
        u, vjp = jax.vjp(lambda z: energy(z, t, sigma), x)
        return u, vjp(jnp.ones_like(u))[0]

    return jax.jit(value_and_grad)


def _close(a: object, b: object, what: str) -> None:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    scale = float(np.abs(b).max())
    if not np.allclose(a, b.reshape(a.shape), rtol=1e-3, atol=1e-3 * scale):
        raise AssertionError(f"{what} differs from recompose's output; timings would be void")


def time_family(family: str, batch: int, threads: int, repeats: int,
                compiled: bool = True) -> str:
    """One table row: ``family`` (a key of :data:`FAMILIES`) at ``batch``."""
    import torch

    from ..models.loading import load_model, shipped_path
    from ..utils import energy_and_score_autograd

    label, name = FAMILIES[family]
    model = load_model(shipped_path(f"{name}-energy")).eval().requires_grad_(False)
    mlp = type(model.net).__name__ == "ResMLP"
    x = torch.randn((batch, *model.event_shape), generator=torch.Generator().manual_seed(batch))
    t = torch.tensor(0.3)
    e_ref, s_ref = model.energy_and_score(x, t)
    fns = {"recompose": functools.partial(model.energy_and_score, x, t),
           "autograd": functools.partial(energy_and_score_autograd,
                                         functools.partial(model.energy, t=t), x)}
    compile_s = None
    if mlp and compiled:
        fast = load_model(shipped_path(f"{name}-energy")).eval().requires_grad_(False)
        fast.compile_gradient()
        start = time.perf_counter()
        e_c, s_c = fast.energy_and_score(x, t)  # compiles for this shape
        compile_s = time.perf_counter() - start
        _close(e_c, e_ref, "compiled energy")
        _close(s_c, s_ref, "compiled score")
        fns["compiled"] = functools.partial(fast.energy_and_score, x, t)
    try:
        import jax.numpy as jnp
    except ImportError:
        jnp = None
    if mlp and jnp is not None:
        jfn, sigma = _jax_energy(model.net), float(model.schedule(t)[1])
        xj = jnp.asarray(x.reshape(batch, -1).numpy())
        e_j, g_j = jfn(xj, 0.3, sigma)
        _close(e_j, e_ref, "JAX energy")
        _close(-g_j, s_ref, "JAX score")
        fns["jax"] = lambda: jfn(xj, 0.3, sigma)[1].block_until_ready()
    calls = max(3, min(300, 3000 // batch)) if mlp else max(3, min(60, 600 // batch))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - start) / calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = ["no reference"] * 3
    if "jax" in med:
        ratios = [f"{med[k] / med['jax']:.2f}" if k in med else "—"
                  for k in ("recompose", "compiled", "autograd")]
    fast_cell = (f"{med['compiled'] * 1e3:.3f} ({compile_s:.0f} s to compile)"
                 if "compiled" in med else "—")
    return (f"| {label} | {batch} | {threads} | {med['recompose'] * 1e3:.3f} | {fast_cell} | "
            f"{' | '.join(ratios)} | {med['recompose'] / med['autograd']:.2f} |")


@click.command()
@click.option("--families", "-f", multiple=True, type=click.Choice(list(FAMILIES)),
              default=tuple(FAMILIES), show_default=True, help="Network families to time.")
@click.option("--batches", "-b", multiple=True, type=click.IntRange(min=1),
              default=(1, 64, 1000), show_default=True, help="Batch sizes to time.")
@click.option("--threads", multiple=True, type=click.IntRange(min=1),
              help="Thread settings (default: 1 and every core).")
@click.option("--repeats", default=7, show_default=True, type=click.IntRange(min=1),
              help="Rounds; the table shows medians.")
@click.option("--compiled/--no-compiled", default=True, show_default=True,
              help="Also time model.compile_gradient() (compiles once per shape).")
@click.option("--wait-policy", type=click.Choice(["active", "passive"]), default="passive",
              show_default=True, help="OpenMP wait policy of the timed processes (passive: "
              "recompose's import default). Active makes torch's multi-threaded calls faster "
              "but its spinning threads also slow JAX's interleaved calls.")
@click.option("--in-process", is_flag=True, hidden=True,
              help="Internal: run one thread setting here.")
def bench(families: tuple[str, ...], batches: tuple[int, ...], threads: tuple[int, ...],
          repeats: int, compiled: bool, wait_policy: str, in_process: bool) -> None:
    """Time one energy-and-gradient call per shipped network family against JAX's jit.

    JAX is optional (``pip install jax``); without it the JAX columns read "no reference".
    The full table takes about 5 minutes.

    \b
    Example:
      recompose bench --families 2d --batches 1000 --threads 1
    """
    pinnable = hasattr(os, "sched_setaffinity")  # Linux
    cores = len(os.sched_getaffinity(0)) if pinnable else os.cpu_count() or 1
    settings = threads or (1, cores)
    if in_process:
        import torch

        if pinnable:
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:settings[0]])
        torch.set_num_threads(settings[0])
        for family in families:
            for batch in batches:
                click.echo(time_family(family, batch, settings[0], repeats, compiled))
        return
    click.echo(HEADER)
    for n in dict.fromkeys(settings):
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env = os.environ | {"XLA_FLAGS": flags if n == 1 else "", "OMP_NUM_THREADS": str(n),
                            "OMP_WAIT_POLICY": wait_policy.upper()}
        argv = [sys.executable, "-m", "recompose", "bench", "--in-process", "--threads", str(n),
                "--repeats", str(repeats), "--compiled" if compiled else "--no-compiled"]
        argv += [a for f in families for a in ("-f", f)]
        argv += [a for b in batches for a in ("-b", str(b))]
        with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:  # rows as they come (the full table takes minutes)
                click.echo(line, nl=False)
        if proc.returncode:
            raise click.ClickException(f"the {n}-thread run failed (exit code {proc.returncode})")
