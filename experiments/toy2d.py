"""The R3 2D experiments on the shipped models: product, mixture, negation × samplers.

Compositions (shipped models, ``recompose.pretrained``):

* product   ``ring * bar``
* mixture   ``mixture([left_bar, right_bar], [0.5, 0.5])`` of energy models normalised by
  quadrature (:mod:`recompose.models.normalization`) — a proper weighted mixture of the
  time-``t`` densities, not R3's hard-coded sharpness
* negation  ``large_box / small_box ** 0.3`` — the paper's ``q₁/q₂^α`` with ``α = 0.3``; the R3
  notebook coded ``q₁^1.3/q₂^0.3``, available as the extra composition ``negation_r3``

Cells: {reverse, ULA, U-HMC} × {score, energy} and {MALA, HMC} × energy (a mixture needs
energies, so its score cells are refused). Further cells (config ``cells``, ``MODEL/SAMPLER``):
``distilled/*`` (energies distilled from the score models), and score-only Metropolis on the
score models, ``score/mala-path``, ``score/hmc-path`` (Simpson's rule) and
``score/hmc-trapezoid`` (:mod:`recompose.mcmc.path`). Budget as R3: T = 100 levels, K = 10
steps per level; 500 chains per cell, 3 seeds (the reference run used 1,000 for the product and 500
for the others, one seed; 500 keeps the whole table well within 20 minutes on 2 cores, and
W2 against 2,000 target draws stays a 2,000-point assignment). Metrics against the exact
smoothed targets of :mod:`.targets2d`: mean log-likelihood, exact W2 to 2,000 target draws,
fraction in the ideal support; mean ± sd over seeds.

Run: ``python -m experiments.toy2d`` (protocol: ``experiments/configs/toy2d.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "toy2d: 2D compositions × samplers, ≈ 11 min on 2 cores with the checked-in "
         "protocol (loading; mixture normalisers, ≈ 10–40 s; cells in workers; exact draws)")

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recompose.cli.demo import NEGATION_ALPHA, build, mixture_normalizers
from recompose.data.targets2d import TARGETS
from recompose.io import run_folder
from recompose.metrics import wasserstein2
from recompose.sampling import sample

from .common import (
    map_in_workers,
    markdown_table,
    mean_or_none,
    parse_config,
    sampler_args,
    script,
)

__all__ = ["CELLS", "ANCHOR", "run", "main"]

COMPOSITIONS = ("product", "mixture", "negation")
EXTRA_COMPOSITIONS = ("negation_r3",)  # R3 notebook's form, large**1.3 / small**0.3
CELLS = [("score", "reverse"), ("score", "ula"), ("score", "uhmc"),
         ("energy", "reverse"), ("energy", "ula"), ("energy", "uhmc"),
         ("energy", "mala"), ("energy", "hmc")]

# The reference run of the R3 notebook (r3-reference.md, Part B §4.3): energy models, 1,000
# chains (500 for mixture/negation), one seed. Product: LL / in-support / W2; mixture and
# negation: W2 / in-support (their negation target and W2 reference differ from ours).
ANCHOR = {
    ("product", "exact"): {"LL": 3.45, "support": 1.00, "W2": 0.085},
    ("product", "reverse"): {"LL": -4.52, "support": 0.56, "W2": 0.197},
    ("product", "ula"): {"LL": -2.41, "support": 0.68, "W2": 0.176},
    ("product", "uhmc"): {"LL": -0.39, "support": 0.80, "W2": 0.246},
    ("product", "mala"): {"LL": 0.04, "support": 0.82, "W2": 0.212},
    ("product", "hmc"): {"LL": 1.69, "support": 0.94, "W2": 0.251},
    ("mixture", "exact"): {"support": 1.00, "W2": 0.082},
    ("mixture", "reverse"): {"support": 0.09, "W2": 0.281},
    ("mixture", "ula"): {"support": 0.24, "W2": 0.210},
    ("mixture", "uhmc"): {"support": 0.23, "W2": 0.197},
    ("mixture", "mala"): {"support": 0.06, "W2": 0.225},
    ("mixture", "hmc"): {"support": 0.05, "W2": 0.206},
    ("negation", "exact"): {"support": 1.00, "W2": 0.079},
    ("negation", "reverse"): {"support": 0.71, "W2": 0.113},
    ("negation", "ula"): {"support": 0.70, "W2": 0.158},
    ("negation", "uhmc"): {"support": 0.61, "W2": 0.260},
    ("negation", "mala"): {"support": 0.62, "W2": 0.196},
    ("negation", "hmc"): {"support": 0.63, "W2": 0.324},
}
ANCHOR |= {("negation_r3", s): v for (c, s), v in list(ANCHOR.items()) if c == "negation"}


def _target_draws(composition: str, seed: int, n_target: int) -> torch.Tensor:
    return TARGETS[composition]().sample(n_target, torch.Generator().manual_seed(1000 + seed))


def _run_cell(task: dict) -> dict:
    """Sample one cell and score it (in a worker, so metrics run in parallel too)."""
    model = build(task["composition"], task["parameterization"],
                  (task["normalizers"] or {}).get(task["parameterization"]))
    sampler, options = sampler_args(task["sampler"])
    r = sample(model, task["n"], sampler, num_levels=task["num_levels"],
               num_steps=None if sampler == "reverse" else task["num_steps"],
               seed=task["seed"], **options)
    target = TARGETS[task["composition"]]()
    ref = _target_draws(task["composition"], task["seed"], task["n_target"])
    return {**{k: v for k, v in task.items() if k != "normalizers"},
            "x": r.x.numpy(), "info": r.info.to_dict(),
            "metrics": _metrics(r.x.double(), target, ref)}


def _metrics(x: torch.Tensor, target: object, ref: torch.Tensor) -> dict:
    lp = target.log_prob(x)
    finite = torch.isfinite(lp)
    return {"LL": float(lp.mean()) if bool(finite.all()) else -math.inf,
            "outside_window": float((~finite).double().mean()),
            "W2": wasserstein2(x, ref),
            "support": float(target.in_support(x).double().mean())}


def _cells_for(composition: str, cells: list[tuple[str, str]] = CELLS
               ) -> list[tuple[str, str]]:
    if composition == "mixture":  # a mixture needs energies: the score cells are refused
        return [c for c in cells if c[0] != "score"]
    return cells


def run(out: Path, n: int = 500, seeds: tuple[int, ...] = (0, 1, 2), num_levels: int = 100,
        num_steps: int = 10, workers: int = 2, n_target: int = 2000,
        compositions: tuple[str, ...] = COMPOSITIONS, progress: bool = True,
        overwrite: bool = False, cells: list[tuple[str, str]] = CELLS) -> dict:
    """Run every cell, write ``out/{config,metrics}.json``, samples, table and figures."""
    from tqdm.auto import tqdm

    out = Path(out)
    config = {"n": n, "seeds": list(seeds), "num_levels": num_levels, "num_steps": num_steps,
              "n_target": n_target, "compositions": list(compositions),
              "negation_alpha": NEGATION_ALPHA, "workers": workers,
              "cells": [f"{p}/{s}" for p, s in cells]}
    start = time.perf_counter()
    normalizers = None
    if "mixture" in compositions:
        kinds = sorted({p for p, _ in cells} - {"score"})
        normalizers = {p: mixture_normalizers(p) for p in tqdm(
            kinds, desc="mixture normalisers", disable=not progress)}
    tasks = [{"composition": c, "parameterization": p, "sampler": s, "seed": seed, "n": n,
              "num_levels": num_levels, "num_steps": num_steps, "normalizers": normalizers,
              "n_target": n_target}
             for c in compositions for p, s in _cells_for(c, cells) for seed in seeds]
    cost = {"reverse": 1, "ula": 11, "mala": 11, "uhmc": 31, "hmc": 31, "mala-path": 21,
            "mala-trapezoid": 11, "hmc-path": 61, "hmc-trapezoid": 31, "smc": 31}
    tasks.sort(key=lambda t: -cost[t["sampler"]] * (1 if t["parameterization"] == "score"
                                                    else 2))
    results = map_in_workers(_run_cell, tasks, workers, "toy2d cells", progress)
    # Keep the expensive part safe until the outputs are in place (never lose the sampling).
    out = Path(out).resolve()
    raw = out.with_name(f"{out.name}.cells.json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps([{**r, "x": r["x"].tolist()} for r in results]))

    rows: dict = {}
    samples: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(compositions) * len(seeds), desc="exact draws", disable=not progress)
    for comp in compositions:
        target = TARGETS[comp]()
        exact = []
        for s in seeds:
            exact.append(_metrics(target.sample(n, torch.Generator().manual_seed(2000 + s)),
                                  target, _target_draws(comp, s, n_target)))
            bar.update()
        rows[(comp, "exact", "exact")] = {"metrics": exact}
        samples[f"{comp}/target"] = target.sample(n, torch.Generator().manual_seed(0)).numpy()
        for p, s in _cells_for(comp, cells):
            cell = [r for r in results if (r["composition"], r["parameterization"],
                                           r["sampler"]) == (comp, p, s)]
            cell.sort(key=lambda r: r["seed"])
            rows[(comp, p, s)] = {"metrics": [r["metrics"] for r in cell],
                                  "info": [r["info"] for r in cell]}
            samples[f"{comp}/{p}/{s}"] = cell[0]["x"]
    bar.close()
    elapsed = time.perf_counter() - start
    summary = _summarise(rows)
    table = markdown(summary)
    with run_folder(out, overwrite) as tmp:  # all outputs appear together, or not at all
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps({"rows": summary, "elapsed_s": elapsed},
                                                     indent=2))
        np.savez_compressed(tmp / "samples.npz", **samples)
        (tmp / "table.md").write_text(table + "\n")
        _figures(tmp, samples, rows, compositions, cells)
    raw.unlink()
    return {"rows": summary, "elapsed_s": elapsed, "table": table}


def _ms(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return -math.inf, float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summarise(rows: dict) -> list[dict]:
    summary = []
    for (comp, p, s), cell in rows.items():
        entry = {"composition": comp, "parameterization": p, "sampler": s}
        for key in ("LL", "W2", "support", "outside_window"):
            entry[key] = _ms([m[key] for m in cell["metrics"]])
        if "info" in cell:
            info = cell["info"][0]
            entry |= {"score_evals": info["score_evals"], "energy_evals": info["energy_evals"],
                      "network_score_evals": info["network_score_evals"],
                      "network_energy_evals": info["network_energy_evals"],
                      "wall_time": statistics.mean(i["wall_time"] for i in cell["info"]),
                      "acceptance": mean_or_none([i["mean_acceptance"] for i in cell["info"]])}
        entry["anchor"] = ANCHOR.get((comp, s), {}) if p in ("energy", "exact") else {}
        summary.append(entry)
    return summary


def _fmt(v: tuple[float, float], digits: int = 2) -> str:
    mean, sd = v
    if not math.isfinite(mean):
        return "−∞"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(summary: list[dict]) -> str:
    head = ["composition", "model", "sampler", "LL ↑", "W2 ↓", "in support ↑", "grad evals",
            "energy evals", "time (s)", "acceptance", "reference run (LL / W2 / support)"]
    rows = []
    for e in summary:
        a = e["anchor"]
        anchor = " / ".join(f"{a[k]:.2f}" if k in a else "–" for k in ("LL", "W2", "support"))
        if "wall_time" in e:
            model, sampler = e["parameterization"], e["sampler"]
            mh = sampler_args(sampler)[0] in ("mala", "hmc")
            cost = [str(e["network_score_evals"]), str(e["network_energy_evals"]),
                    f"{e['wall_time']:.0f}", f"{e['acceptance']:.2f}" if mh else "–"]
        else:
            model, sampler, cost = "exact draws", "–", ["–"] * 4
        rows.append([e["composition"], model, sampler, _fmt(e["LL"]), _fmt(e["W2"], 3),
                     _fmt(e["support"]), *cost, anchor])
    return markdown_table(head, rows)


def _figures(out: Path, samples: dict, rows: dict, compositions: tuple[str, ...],
             cells: list[tuple[str, str]] = CELLS) -> None:
    from recompose.viz.plots import acceptance_plot, scatter_grid

    cols = ["target"] + [f"{s} ({p})" for p, s in cells]
    if not any(c != "mixture" for c in compositions):
        cols = ["target"] + [f"{s} ({p})" for p, s in cells if p != "score"]
    shown = {}
    for comp in compositions:
        shown[(comp, "target")] = samples[f"{comp}/target"]
        for p, s in _cells_for(comp, cells):
            shown[(comp, f"{s} ({p})")] = samples[f"{comp}/{p}/{s}"]
    fig = scatter_grid(shown, list(compositions), cols)
    fig.savefig(out / "toy2d_samples.png", dpi=130)
    for comp in compositions:
        for p, s in _cells_for(comp, cells):
            if s not in ("mala", "hmc") or p == "score":
                continue
            info = rows[(comp, p, s)]["info"][0]
            fig = acceptance_plot(info["t"], info["acceptance"], info["step_size"],
                                  label=f"{comp} {s} ({p})")
            suffix = "" if p == "energy" else f"_{p}"
            fig.savefig(out / f"acceptance_{comp}_{s}{suffix}.png", dpi=110)


@script
def main(argv: list[str] | None = None) -> None:
    c = parse_config("toy2d", __doc__, argv)
    res = run(c["out"], n=c["n"], seeds=tuple(range(c["seeds"])), num_levels=c["levels"],
              num_steps=c["mcmc_steps"], workers=c["workers"], n_target=c["n_target"],
              compositions=tuple(c["compositions"]), overwrite=c["overwrite"],
              cells=[tuple(cell.split("/")) for cell in c["cells"]])
    print(res["table"])
    print(f"\n{res['elapsed_s']:.0f} s; outputs in {c['out']}")


if __name__ == "__main__":
    main()
