"""Benchmarks printed as tables (ratios measured side by side in one process); run the
scripts beside this module (``python benchmarks/NAME.py``).

* :func:`sampler_overhead` — wall time of each sampler (reverse diffusion, annealed MALA / HMC,
  SMC) on the shipped product ``ring * bar`` (energy models) over the wall time of the *same
  number* of bare network evaluations (each leaf's energy + gradient at the same batch),
  interleaved, best of ``repeats``. Targets: ≤ 1.15 for the MCMC samplers; SMC's bookkeeping
  (its row without moves, against reverse diffusion's) ≤ 5 %.
* :func:`parameterization_cost` — energy vs score parameterisation: cost of one gradient
  (score) evaluation and of one training step.
* :func:`product_batching` — one sampling step (composite energy + gradient) of a product of
  ``K`` position terms of the shipped CLEVR UNet, batched into one network call vs one call
  per term, as a ratio to ``K = 1``. Target: ``K = 4`` costs ≤ 2.5× ``K = 1``.
* :func:`late_conditioning` — the same product for the shipped position UNet (the condition
  enters at the input) and the late-conditioned study model (``experiments/weights/
  clevr-late-score``: a condition-free trunk computed once, a head per term), as score models
  (one score evaluation, no graph) and as energy models (energy + gradient; the late
  architecture's energy reads the same network as ``‖f − x‖²``, for timing only: no energy
  was trained for it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

# The CLEVR benchmarks use the experiments' composition and loaders (``experiments/`` sits
# beside this folder; a script's own folder, not the repository, is on ``sys.path``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recompose.config import TrainConfig
from recompose.models.loading import pretrained
from recompose.sampling import sample
from recompose.training.trainer import Trainer

__all__ = ["sampler_overhead", "parameterization_cost", "product_batching",
           "late_conditioning"]


def _bare(leaves: list, x: torch.Tensor, t: torch.Tensor, calls: int, energy_only: int) -> float:
    """Time ``calls`` energy+gradient and ``energy_only`` energy evaluations of every leaf."""
    start = time.perf_counter()
    for _ in range(calls):
        for leaf in leaves:
            leaf.energy_and_score(x, t)
    with torch.no_grad():
        for _ in range(energy_only):
            for leaf in leaves:
                leaf.energy(x, t)
    return time.perf_counter() - start


# (row label, sampler, options): the rows of :func:`sampler_overhead`
OVERHEAD_RUNS = (
    ("reverse", "reverse", {}),
    ("mala", "mala", {}),
    ("hmc", "hmc", {}),
    ("smc, hmc moves", "smc", {"num_steps": 2}),
    ("smc, DDPM proposal, no moves, resample every level", "smc",
     {"proposal": "ddpm", "num_steps": 0, "ess_threshold": 1.0}),
    ("fkc, resample every level", "fkc", {"ess_threshold": 1.0}),
)


def sampler_overhead(n: int = 1000, repeats: int = 3, num_levels: int = 20,
                     num_steps: int = 10, progress: bool = False) -> str:
    """Each sampler's wall time over the bare network evaluations it makes (module docstring).
    The SMC row without moves is the bookkeeping bound: its only work beside the network is
    the DDPM proposal (as in reverse diffusion), the weights, the ESS and resampling."""
    from tqdm.auto import tqdm

    model = pretrained("ring", "energy") * pretrained("bar", "energy")
    leaves = list(model.leaves())
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.3)
    lines = ["| sampler | chains | grad evals (network) | sampler s | bare evals s | ratio |",
             "|---|---|---|---|---|---|"]
    worst = 0.0
    bar = tqdm(total=len(OVERHEAD_RUNS) * repeats, desc="sampler overhead",
               disable=not progress)
    for label, name, options in OVERHEAD_RUNS:
        if name in ("mala", "hmc"):
            options = {"num_steps": num_steps}
        best_s, best_b = float("inf"), float("inf")
        for r in range(repeats):
            bar.update(1)
            res = sample(model, n, name, num_levels=num_levels, seed=r, **options)
            info = res.info
            # Every composite evaluation is an energy-and-score call per leaf (reverse: a score,
            # which for an energy model is the same autograd call).
            calls = info.score_evals
            extra_energy = info.energy_evals - min(info.energy_evals, info.score_evals)
            best_s = min(best_s, info.wall_time)
            best_b = min(best_b, _bare(leaves, x, t, calls, extra_energy))
        ratio = best_s / best_b
        worst = max(worst, ratio)
        lines.append(f"| {label} | {n} | {info.network_score_evals} | {best_s:.2f} | "
                     f"{best_b:.2f} | {ratio:.3f} |")
    bar.close()
    lines.append(f"\nmax overhead ratio: {worst:.3f}")
    return "\n".join(lines)


def parameterization_cost(n: int = 1000, repeats: int = 3, calls: int = 30,
                          train_steps: int = 20) -> str:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.3)
    grad = {}
    for param in ("score", "energy"):
        m = pretrained("ring", param)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.no_grad():
                for _ in range(calls):
                    m.score(x, t)
            best = min(best, (time.perf_counter() - start) / calls)
        grad[param] = best
    step = {}
    for param in ("score", "energy"):
        cfg = TrainConfig(data="ring", parameterization=param, steps=10**6, batch_size=n)
        trainer = Trainer(cfg, "/dev/null/unused")  # never saves: we only time train_step
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(train_steps):
                trainer.train_step()
            best = min(best, (time.perf_counter() - start) / train_steps)
        step[param] = best
    return "\n".join([
        f"| cost (batch {n}) | score model | energy model | energy / score |",
        "|---|---|---|---|",
        f"| one gradient (score) evaluation | {1e3 * grad['score']:.2f} ms | "
        f"{1e3 * grad['energy']:.2f} ms | {grad['energy'] / grad['score']:.2f} |",
        f"| one training step | {1e3 * step['score']:.1f} ms | {1e3 * step['energy']:.1f} ms "
        f"| {step['energy'] / step['score']:.2f} |",
    ])


def _best_time(fn: object, repeats: int, calls: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def product_batching(n: int = 32, repeats: int = 5, calls: int = 5,
                     ks: tuple[int, ...] = (1, 2, 3, 4, 5), plain: bool = True) -> str:
    """Time per composite energy+gradient vs ``K`` (batched vs per-term calls)."""
    from experiments.clevr import compose_positions, load_clevr, request_positions

    model = load_clevr("energy")
    x = torch.randn((n, *model.event_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.5)
    rows, base = [], {}
    for k in ks:
        comp = compose_positions(model, request_positions(n, k, seed=k), plain=plain)
        factors = list(getattr(comp, "factors", [comp]))
        batched = _best_time(lambda c=comp: c.energy_and_score(x, t), repeats, calls)
        separate = _best_time(lambda fs=factors: [f.energy_and_score(x, t) for f in fs],
                              repeats, calls)
        base.setdefault("b", batched)
        base.setdefault("s", separate)
        rows.append(f"| {k} | {len(factors)} | {1e3 * batched:.1f} | {batched / base['b']:.2f} | "
                    f"{1e3 * separate:.1f} | {separate / base['s']:.2f} | "
                    f"{separate / batched:.2f} |")
    form = "Π_k A|p_k" if plain else "A^(1−K) Π_k A|p_k"
    return "\n".join([
        f"composite {form}, {n} images of {tuple(model.event_shape)}, energy + gradient, "
        f"best of {repeats}×{calls}",
        "",
        "| K | network terms | batched ms | batched / K=1 | per-term ms | per-term / K=1 | "
        "per-term / batched |",
        "|---|---|---|---|---|---|---|", *rows])


def late_conditioning(n: int = 32, repeats: int = 5, calls: int = 5,
                      ks: tuple[int, ...] = (1, 2, 3, 4, 5)) -> str:
    """Time of one composite evaluation ``Π_k A|p_k`` vs ``K``, as a ratio to ``K = 1``, for
    the input-conditioned and the late-conditioned position UNets (module docstring)."""
    from experiments.clevr import compose_positions, load_clevr, request_positions
    from recompose.models.parameterization import EnergyModel

    late = load_clevr("late-score")
    models = {"input, score": load_clevr("score"), "late, score": late,
              "input, energy": load_clevr("energy"),
              "late, energy": EnergyModel(late.net, late.schedule, late.event_shape, name="A")}
    x = torch.randn((n, *late.event_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.5)
    times: dict[str, list[float]] = {name: [] for name in models}
    for k in ks:
        positions = request_positions(n, k, seed=k)
        for name, model in models.items():
            comp = compose_positions(model, positions, plain=True)
            call = comp.energy_and_score if model.has_energy else comp.score
            with torch.no_grad():
                times[name].append(_best_time(lambda f=call: f(x, t), repeats, calls))
    rows = [f"| {k} | " + " | ".join(f"{1e3 * times[m][i]:.1f} ({times[m][i] / times[m][0]:.2f}×)"
                                      for m in models) + " |" for i, k in enumerate(ks)]
    return "\n".join([
        f"composite Π_k A|p_k, {n} images of {tuple(late.event_shape)}, one evaluation (score: "
        f"no graph; energy: energy + gradient), ms (ratio to K = 1), best of {repeats}×{calls}",
        "", "| K | " + " | ".join(models) + " |", "|---|" + "---|" * len(models), *rows])
