"""Issue-31 table: every sampler on the exact product oracle of three Gaussian paths, side by
side, at equal network evaluations.

``A`` = two Gaussians of different widths at ``(±2, 0)`` (stds 0.2 and 1.0), ``B`` = one
Gaussian at the origin (std 0.5); the product ``A·B`` at ``t = 0`` is again a mixture
(:func:`recompose.gmm_product`): its mass on ``x₁ < 0`` is known exactly, and the normaliser
``Z_0 = ∫ A_{t_0} B_{t_0}`` of the cleanest level has a closed form. The time-``t`` products
split that mass differently, which is what each sampler is tested on. Paths: cosine VP, plain
rectified flow, VE (``σ`` from 0.01 to 20).

Budget: the same number of composite score evaluations per chain for every sampler (``budget``
in the config, 700 by default): reverse diffusion, the ODE (Euler) and FKC take ``T = 700``
levels; annealed ULA (K = 6), HMC (K = 2, L = 3) and SMC (HMC moves, K = 2, L = 3) spend
7 per level at ``T = 100``. Columns: the mass on ``x₁ < 0`` minus the exact value (mean ±
standard error over seeds), and for the weighted samplers ``log Ẑ − log Z_0``.

Run: ``python -m experiments.paths`` (prints the table, writes ``--out``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "paths: every sampler on the exact product oracle of the VP, rectified-flow "
         "and VE paths at equal network evaluations, ≈ 3 min on 2 cores")

import math
import statistics

import torch

import recompose as rc
from recompose.models.analytic import gmm_log_overlap

from .common import markdown_table, parse_config, script, write_results

__all__ = ["PATHS", "problem", "exact_left", "cells", "run"]

PATHS = {"VP (cosine)": rc.CosineSchedule, "rectified flow": rc.RectifiedFlowSchedule,
         "VE": lambda: rc.VESchedule(0.01, 20.0)}


def problem(schedule: rc.Schedule) -> tuple[rc.GaussianMixture, rc.GaussianMixture]:
    a = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], schedule=schedule, name="A")
    b = rc.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name="B")
    return a, b


def exact_left(a: rc.GaussianMixture, b: rc.GaussianMixture) -> float:
    """``P(x₁ < 0)`` under the exact product at ``t = 0``."""
    prod = rc.gmm_product(a, b)
    w, mu = prod.log_weights.exp(), prod.means[:, 0]
    sd = prod.covariances()[:, 0, 0].sqrt()
    return float((w * torch.distributions.Normal(0.0, 1.0).cdf(-mu / sd)).sum())


def cells(budget: int) -> list[tuple[str, object, int]]:
    """``(label, sampler, levels)`` spending ``budget`` composite scores per chain."""
    per7 = budget // 7
    return [("reverse", "reverse", budget), ("ode (Euler)", "ode", budget),
            ("ula, K = 6", rc.samplers.Annealed(rc.mcmc.ula(), num_steps=6), per7),
            ("hmc, K = 2, L = 3", rc.samplers.Annealed(rc.mcmc.hmc(), num_steps=2), per7),
            ("smc, HMC moves K = 2", rc.samplers.SMC(moves="hmc", num_steps=2), per7),
            ("fkc", "fkc", budget)]


def run(n: int, seeds: list[int], budget: int, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    plan = [(p, c) for p in PATHS for c in cells(budget)]
    bar = tqdm(total=len(plan) * len(seeds), desc="paths × samplers × seeds",
               disable=not progress)
    for path, (label, sampler, levels) in plan:
        a, b = problem(PATHS[path]())
        exact = exact_left(a, b)
        left, evidence, evals = [], [], None
        for seed in seeds:
            r = rc.sample(a * b, n, sampler, num_levels=levels, seed=seed)
            left.append(float((r.x[:, 0] < 0).double().mean()) - exact)
            evals = (r.info.score_evals, r.info.energy_evals)
            if r.info.log_evidence is not None:
                t0 = r.info.evidence_t
                evidence.append(r.info.log_evidence - gmm_log_overlap(a.diffused(t0),
                                                                      b.diffused(t0)))
            bar.update()
        rows.append({"path": path, "sampler": label, "levels": levels,
                     "score evals": evals[0], "energy evals": evals[1],
                     "exact mass x₁ < 0": round(exact, 4),
                     "mass error": _mean_se(left),
                     "log Ẑ − log Z": _mean_se(evidence) if evidence else "–"})
    bar.close()
    return rows


def _mean_se(values: list[float]) -> str:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{statistics.mean(values):+.3f} ± {se:.3f}"


@script
def main(argv: list[str] | None = None) -> None:
    config = parse_config("paths", __doc__, argv)
    torch.set_num_threads(1)
    rows = run(config["n"], list(range(config["seeds"])), config["budget"])
    table = markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    write_results(config, rows, table)
    print(table)
    print(f"\noutputs in {config['out']}/")


if __name__ == "__main__":
    main()
