"""Samplers at equal compute: quality against composite gradient evaluations per sample.

Tasks with a known answer:

* ``oracle``: the analytic product ``A · B`` with ``A`` two Gaussians at ``(±2, 0)`` of stds 0.2
  and 1.0 and ``B = N(0, 0.5² I)``. Its exact law at ``t = 0`` is a Gaussian mixture
  (:func:`recompose.gmm_product`) and its normaliser at every ``t`` is closed-form, so we score
  the energy distance (× 10³) to exact draws, the error of the mass on ``x₁ < 0`` (0.203: the
  split between the modes, which unweighted annealing gets wrong) and, for SMC, the error of
  ``log Ẑ`` at the cleanest level.
* ``oracle_cfg``: classifier-free guidance with exact densities (:func:`oracle_cfg_problem`:
  ``p(x)^{−2} p(x | y)^3`` for a two-class Gaussian mixture ``p(x)`` and one of its classes),
  scored by the energy distance (× 10³) to exact draws of its ``t = 0`` law (a grid) and the
  error of its mean ``E[x₁]`` — what the digits FD cannot show: whether a sampler draws the
  guided target at all.
* ``ring_bar``: the shipped energy models' product ``ring * bar``, scored against the exact
  smoothed target of :mod:`recompose.data.targets2d` (W2 to 2,000 draws, mean log-likelihood).
  This mixes the models' error with the sampler's.
* ``ring_bar_model``: the same product scored against what the samplers target, the learned
  composed density ``π_0 ∝ exp(−E_ring(x, t_0) − E_bar(x, t_0))`` at the cleanest level
  ``t_0 = 1/T``, drawn exactly on a 600 × 600 grid over ``[−1.6, 1.6]²`` (W2 to 2,000 draws;
  MCMC and SMC run with ``denoise=False``; reverse diffusion's last step is its own).

* ``digits_classifier10`` and ``digits_cfg3``: §5's guided digits (energy models, classifier
  guidance λ = 10 and CFG w = 3, a label per chain, one particle population per label for SMC
  and FKC), scored like §5 (the evaluator's accuracy, FD to held-out digits, diversity).
  Their cells (:func:`digits_cells`) are chosen to span 100–1,000 composite evaluations (each
  is 2 network evaluations) for every sampler.

Cells (gradient evaluations of the composite per sample, one evaluation = every leaf once):
reverse diffusion with ``T ∈ {100, 300, 1000}``; annealed MALA and HMC (``L = 3``) at
``T = 100`` with ``K ∈ {1, 3, 10}``; SMC with AIS weights and HMC moves at ``T = 100``,
``K ∈ {1, 3, 10}``; SMC with the DDPM proposal and no moves at ``T ∈ {100, 300, 1000}``; FKC
(reverse diffusion with Feynman–Kac weights, scores only) at ``T ∈ {100, 300, 1000}``.
Seeds 0, 1, 2; mean ± sd over seeds. ``--curves`` runs a subset of the samplers.

Run: ``python -m experiments.equal_compute`` (protocol: ``configs/equal_compute.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "equal_compute: samplers at equal compute, ≈ 25 min on 2 cores with the "
         "checked-in protocol (references, cells in workers)")

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recompose import GaussianMixture, cfg, gmm_product
from recompose.cli.demo import build
from recompose.data.targets2d import TARGETS
from recompose.io import run_folder
from recompose.metrics import energy_distance, wasserstein2
from recompose.models.analytic import gmm_log_overlap
from recompose.sampling import sample

from .common import map_in_workers, markdown_table, parse_config, script

__all__ = ["oracle_problem", "cells", "digits_cells", "run", "main"]

DIGITS_TASKS = {"digits_classifier10": ("classifier", 10.0), "digits_cfg3": ("cfg", 3.0)}


def oracle_problem() -> tuple[GaussianMixture, GaussianMixture]:
    a = GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
    b = GaussianMixture([[0.0, 0.0]], 0.5, name="B")
    return a, b


def oracle_log_evidence(a: GaussianMixture, b: GaussianMixture, t: float) -> float:
    """``log ∫ p_a,t p_b,t`` (normalised diffused leaves), in closed form."""
    return gmm_log_overlap(a.diffused(t), b.diffused(t))


def _left(x: torch.Tensor) -> float:
    return float((x[:, 0] < 0).double().mean())


def exact_left(exact: GaussianMixture) -> float:
    """``P(x₁ < 0)`` under a Gaussian mixture, in closed form."""
    w, mu = exact.log_weights.exp(), exact.means[:, 0]
    sd = exact.covariances()[:, 0, 0].sqrt()
    return float((w * torch.distributions.Normal(0.0, 1.0).cdf(-mu / sd)).sum())


def cells() -> list[tuple[str, str, dict]]:
    """``(curve, sampler, options)`` of every cell."""
    out = [("reverse", "reverse", {"num_levels": t}) for t in (100, 300, 1000)]
    for k in (1, 3, 10):
        out += [("mala", "mala", {"num_levels": 100, "num_steps": k}),
                ("hmc", "hmc", {"num_levels": 100, "num_steps": k}),
                ("smc + hmc moves", "smc", {"num_levels": 100, "num_steps": k})]
    out += [("smc, DDPM proposal", "smc", {"num_levels": t, "proposal": "ddpm",
                                           "num_steps": 0}) for t in (100, 300, 1000)]
    out += [("fkc", "fkc", {"num_levels": t}) for t in (100, 300, 1000)]
    return out


def digits_cells() -> list[tuple[str, str, dict]]:
    """The digits tasks' cells: reverse diffusion at three T, MALA / HMC / SMC with HMC moves at
    two or three budgets each (one step per level at more levels, or three at T = 100), FKC."""
    out = [("reverse", "reverse", {"num_levels": t}) for t in (100, 300, 1000)]
    out += [("mala", "mala", {"num_levels": t, "num_steps": k})
            for t, k in ((100, 1), (100, 3), (500, 1))]
    out += [("hmc", "hmc", {"num_levels": t, "num_steps": k})
            for t, k in ((100, 1), (100, 3), (250, 1))]
    out += [("smc + hmc moves", "smc", {"num_levels": 100, "num_steps": k}) for k in (1, 3)]
    out += [("fkc", "fkc", {"num_levels": t}) for t in (100, 300, 1000)]
    return out


def _digits_cell(task: dict) -> dict:
    """One seeded digits run (§5's models and evaluator)."""
    from .digits import Evaluator, evaluate, guided, labels_for, load_digits

    kind, scale = DIGITS_TASKS[task["task"]]
    labels = labels_for(task["n"])
    options = dict(task["options"])
    if task["sampler"] in ("smc", "fkc"):
        options["groups"] = labels
    r = sample(guided(kind, scale, labels, load_digits("energy")), task["n"], task["sampler"],
               seed=task["seed"], **options)
    m = evaluate(r.x.clamp(-1, 1), labels, Evaluator())
    return {"evals": r.info.score_evals, "wall_time": r.info.wall_time,
            "accuracy": m["accuracy"], "FD": m["fd"], "diversity": m["diversity"]}


GRID, EXTENT = 600, 1.6
CFG_GRID = ((-4.0, 6.0, 500), (-4.0, 4.0, 400))  # (low, high, points) per axis


def _grid_law(model: object, t: float, axes: tuple = ((-EXTENT, EXTENT, GRID),) * 2
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grid points, probabilities ∝ exp(−E(x, t)), cell sizes)`` on a 2D grid."""
    x_axis, y_axis = (torch.linspace(lo, hi, k) for lo, hi, k in axes)
    grid = torch.stack(torch.meshgrid(x_axis, y_axis, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        energy = torch.cat([model.energy(chunk, t) for chunk in grid.split(20_000)]).double()
    cells = torch.tensor([(hi - lo) / (k - 1) for lo, hi, k in axes])
    return grid, torch.softmax(-energy, 0), cells


def _grid_draws(law: tuple, n: int, seed: int) -> torch.Tensor:
    """Exact draws up to the grid: a cell by its probability, uniform within it."""
    grid, prob, cells = law
    g = torch.Generator().manual_seed(7000 + seed)
    index = torch.multinomial(prob, n, replacement=True, generator=g)
    return (grid[index] + (torch.rand(n, 2, generator=g) - 0.5) * cells).double()


def learned_product_draws(n: int, t: float, seed: int) -> torch.Tensor:
    """Exact draws (up to the grid) from ``exp(−E(x, t))`` of the shipped ``ring * bar``."""
    return _grid_draws(_grid_law(build("product", "energy", None), t), n, seed)


def oracle_cfg_problem() -> object:
    """Classifier-free guidance with exact densities: ``p(x) = ½ N((−1, 0), 0.7² I) +
    ½ N((1, 0), 0.7² I)`` (two classes), ``p(x | y) = N((1, 0), 0.7² I)``, scale w = 3, i.e. the
    target ``p(x)^{−2} p(x | y)^3``; its law at ``t = 0`` is drawn on a grid."""
    uncond = GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], 0.7, name="U")
    cond = GaussianMixture([[1.0, 0.0]], 0.7, name="C")
    return cfg(cond, uncond, 3.0)


def cfg_target_mean() -> float:
    """``E[x₁]`` under the CFG target at ``t = 0`` (grid quadrature)."""
    grid, prob, _ = _grid_law(oracle_cfg_problem(), 0.0, CFG_GRID)
    return float((prob * grid[:, 0].double()).sum())


def _run_cell(task: dict) -> dict:
    if task["task"] in DIGITS_TASKS:
        return {k: v for k, v in task.items() if k != "ref"} | {"metrics": _digits_cell(task)}
    options = dict(task["options"])
    if task["task"] == "oracle":
        a, b = oracle_problem()
        model = a * b
    elif task["task"] == "oracle_cfg":
        model = oracle_cfg_problem()
    else:
        model = build("product", "energy", None)
        if task["task"] == "ring_bar_model" and task["sampler"] not in ("reverse", "fkc"):
            options["denoise"] = False
    r = sample(model, task["n"], task["sampler"], seed=task["seed"], **options)
    x = r.x.double()
    ref = task["ref"]
    info = r.info
    out = {"evals": info.score_evals, "wall_time": info.wall_time}
    if task["task"] == "oracle":
        out |= {"ED×1e3": 1e3 * energy_distance(x, ref),
                "mass error": abs(_left(x) - task["exact_left"])}
        if info.log_evidence is not None:
            out["log Z error"] = abs(info.log_evidence
                                     - oracle_log_evidence(a, b, info.evidence_t))
    elif task["task"] == "oracle_cfg":
        out |= {"ED×1e3": 1e3 * energy_distance(x, ref),
                "mean error": abs(float(x[:, 0].mean()) - task["exact_mean"])}
    elif task["task"] == "ring_bar":
        target = TARGETS["product"]()
        lp = target.log_prob(x)
        out |= {"W2": wasserstein2(x, ref),
                "LL": float(lp.mean()) if bool(torch.isfinite(lp).all()) else -math.inf}
    else:
        ref = learned_product_draws(len(ref), 1.0 / options["num_levels"], task["seed"])
        out["W2 to π_0"] = wasserstein2(x, ref)
    return {k: v for k, v in task.items() if k != "ref"} | {"metrics": out}


def _refs(task: str, seed: int, n_ref: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5000 + seed)
    if task == "oracle":
        return gmm_product(*oracle_problem()).sample(n_ref, g)
    if task == "oracle_cfg":
        return _grid_draws(_grid_law(oracle_cfg_problem(), 0.0, CFG_GRID), n_ref, 5000 + seed)
    if task == "ring_bar_model" or task in DIGITS_TASKS:  # drawn / not needed in the cell
        return torch.zeros(n_ref, 2)
    return TARGETS["product"]().sample(n_ref, g)


def run(out: Path, tasks: tuple[str, ...] = ("oracle", "ring_bar", "ring_bar_model"),
        n: int = 1000, n_ring_bar: int = 500, seeds: tuple[int, ...] = (0, 1, 2),
        n_ref: int = 2000, workers: int = 2, overwrite: bool = False,
        progress: bool = True, curves: tuple[str, ...] = (), n_digits: int = 1000) -> dict:
    """Every cell (or those of ``curves``) on every task and seed, in worker processes."""
    from tqdm.auto import tqdm

    start = time.perf_counter()

    def chosen(task: str) -> list[tuple[str, str, dict]]:
        pool = digits_cells() if task in DIGITS_TASKS else cells()
        return [c for c in pool if not curves or c[0] in curves]

    size = {"oracle": n, "oracle_cfg": n, "ring_bar": n_ring_bar, "ring_bar_model": n_ring_bar}
    left = exact_left(gmm_product(*oracle_problem()))
    mean = cfg_target_mean() if "oracle_cfg" in tasks else None
    specs = [(task, cell, seed) for task in tasks for cell in chosen(task) for seed in seeds]
    jobs = [{"task": task, "curve": curve, "sampler": sampler, "options": options,
             "seed": seed, "n": size.get(task, n_digits),
             "ref": _refs(task, seed, n_ref), "exact_left": left, "exact_mean": mean}
            for task, (curve, sampler, options), seed in tqdm(
                specs, desc="references", disable=not progress)]
    jobs.sort(key=lambda j: j["task"] in ("oracle", "oracle_cfg"))  # the slow ones first
    results = map_in_workers(_run_cell, jobs, workers, "equal compute", progress)
    summary = _summarise(results)
    elapsed = time.perf_counter() - start
    table = markdown(summary)
    config = {"tasks": list(tasks), "n": n, "n_ring_bar": n_ring_bar, "n_digits": n_digits,
              "seeds": list(seeds), "n_ref": n_ref, "workers": workers, "exact_left": left,
              "exact_cfg_mean": mean,
              "cells": {task: [[c, s, o] for c, s, o in chosen(task)] for task in tasks}}
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps({"rows": summary, "elapsed_s": elapsed},
                                                     indent=2))
        (tmp / "table.md").write_text(table + "\n")
        figure(summary).savefig(tmp / "equal_compute.png", dpi=120)
    return {"rows": summary, "table": table, "elapsed_s": elapsed}


def _summarise(results: list[dict]) -> list[dict]:
    groups: dict = {}
    for r in results:
        key = (r["task"], r["curve"], json.dumps(r["options"], sort_keys=True))
        groups.setdefault(key, []).append(r)
    rows = []
    for (task, curve, options), cell in groups.items():
        metrics = {}
        for name in cell[0]["metrics"]:
            values = [c["metrics"][name] for c in cell]
            metrics[name] = [statistics.mean(values),
                             statistics.stdev(values) if len(values) > 1 else 0.0]
        rows.append({"task": task, "curve": curve, "options": json.loads(options),
                     **metrics})
    return rows


METRICS = {"oracle": ("ED×1e3", "mass error", "log Z error"),
           "oracle_cfg": ("ED×1e3", "mean error"), "ring_bar": ("W2", "LL"),
           "ring_bar_model": ("W2 to π_0",), "digits_classifier10": ("accuracy", "FD"),
           "digits_cfg3": ("accuracy", "FD")}


def markdown(rows: list[dict]) -> str:
    parts = []
    for task, names in METRICS.items():
        cell_rows = [r for r in rows if r["task"] == task]
        if not cell_rows:
            continue
        body = []
        for r in sorted(cell_rows, key=lambda r: (r["curve"], r["evals"][0])):
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            body.append([r["curve"], opts, f"{r['evals'][0]:.0f}"]
                        + [f"{r[m][0]:.3f} ± {r[m][1]:.3f}" if m in r else "–" for m in names]
                        + [f"{r['wall_time'][0]:.1f}"])
        parts.append(f"**{task}**\n\n" + markdown_table(
            ["sampler", "settings", "grad evals / sample", *names, "time (s)"], body))
    return "\n\n".join(parts)


def figure(rows: list[dict]) -> object:
    """One panel per (task, metric): metric against evaluations per sample, one curve per
    sampler, error bars = sd over seeds."""
    from matplotlib.figure import Figure

    panels = [(task, m) for task, names in METRICS.items() for m in names
              if any(r["task"] == task for r in rows)]
    fig = Figure(figsize=(3.4 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    curves = sorted({r["curve"] for r in rows})
    for ax, (task, metric) in zip(axes, panels):
        for i, curve in enumerate(curves):
            pts = sorted((r["evals"][0], *r[metric]) for r in rows
                         if r["task"] == task and r["curve"] == curve and metric in r)
            if pts:
                e, mean, sd = map(np.array, zip(*pts))
                ax.errorbar(e, mean, yerr=sd, marker="o", ms=3, capsize=2, color=f"C{i}",
                            label=curve)
        ax.set_xscale("log")
        if metric in ("FD", "ED×1e3"):  # spans orders of magnitude
            ax.set_yscale("log")
        ax.set_xlabel("gradient evaluations / sample")
        ax.set_title(f"{task}: {metric}", fontsize=9)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


@script
def main(argv: list[str] | None = None) -> None:
    config = parse_config("equal_compute", __doc__, argv)
    result = run(config["out"], tuple(config["tasks"]), config["n"], config["n_ring_bar"],
                 tuple(range(config["seeds"])), config["n_ref"], config["workers"],
                 config["overwrite"], curves=tuple(config["curves"]),
                 n_digits=config["n_digits"])
    print(result["table"])
    print(f"\n{result['elapsed_s']:.0f} s; outputs in {config['out']}/")


if __name__ == "__main__":
    main()
