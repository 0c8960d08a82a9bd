"""``recompose demo``: the shipped 2D models composed three ways, reverse diffusion vs HMC.

Compositions (:func:`build`; the 2D table of ``docs/results.md``): product ``ring * bar``;
mixture ``½ left_bar + ½ right_bar`` of energy models normalised by quadrature (a proper
mixture of the time-``t`` densities); negation ``large_box / small_box ** 0.3`` (the paper's
``q₁/q₂^α``; ``negation_r3`` is the R3 notebook's ``large_box ** 1.3 / small_box ** 0.3``).
Metrics against the exact smoothed targets of :mod:`recompose.data.targets2d` (log-likelihood
↑, W2 to 2,000 target draws ↓, fraction in support ↑); the budget is in :func:`demo`'s help.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch

from ..compose import mixture
from ..data.targets2d import TARGETS
from ..io import run_folder
from ..metrics import wasserstein2
from ..models.base import DiffusionModel
from ..models.loading import pretrained
from ..models.normalization import Normalized, normalize_by_quadrature
from ..sampling import sample
from ..viz.plots import scatter_grid
from .common import handle_errors, is_quiet, overwrite_option, prepare_out, quiet_option

__all__ = ["COMPOSITIONS", "NEGATION_ALPHA", "REFERENCE_DRAWS", "build", "check_chains",
           "mixture_normalizers", "run_demo", "demo"]

COMPOSITIONS = ("product", "mixture", "negation", "negation_r3")
NEGATION_ALPHA = 0.3
REFERENCE_DRAWS = 2000  # target draws that W2 compares the samples with


def check_chains(n: int) -> None:
    """Refuse, before any work, a chain count whose W2 against the 2,000 reference draws
    cannot be exact (:func:`recompose.metrics.wasserstein2` needs ``lcm(n, 2000) ≤ 6000``)."""
    if n < 2 or math.lcm(n, REFERENCE_DRAWS) > 6000:
        raise ValueError(f"{n} chains cannot be compared with the {REFERENCE_DRAWS:,} target "
                         f"draws by exact W2 (lcm(n, {REFERENCE_DRAWS}) must be at most 6000): "
                         "use a divisor of 2000, 4000 or 6000, e.g. 500, 1000, 1500 or 2000")


def mixture_normalizers(parameterization: str = "energy"
                        ) -> dict[str, tuple[list[float], list[float]]]:
    """Quadrature ``log Z(t)`` tables of the two bar energy models (computed once)."""
    out = {}
    for name in ("left_bar", "right_bar"):
        norm = normalize_by_quadrature(pretrained(name, parameterization), num_times=51, grid=64)
        out[name] = (norm.times.tolist(), norm.log_z.tolist())
    return out


def build(composition: str, parameterization: str,
          normalizers: dict[str, tuple[list[float], list[float]]] | None = None
          ) -> DiffusionModel:
    """One composition of the shipped 2D models (``normalizers``: for the mixture)."""
    def m(name: str) -> DiffusionModel:
        return pretrained(name, parameterization)

    if composition == "product":
        return m("ring") * m("bar")
    if composition == "negation":
        return m("large_box") / m("small_box") ** NEGATION_ALPHA
    if composition == "negation_r3":
        return m("large_box") ** (1 + NEGATION_ALPHA) / m("small_box") ** NEGATION_ALPHA
    if composition == "mixture":
        normalizers = normalizers or mixture_normalizers(parameterization)
        parts = [Normalized(m(name), torch.tensor(normalizers[name][0]),
                            torch.tensor(normalizers[name][1]))
                 for name in ("left_bar", "right_bar")]
        return mixture(parts, [0.5, 0.5])
    raise KeyError(f"unknown composition {composition!r}; choose one of {COMPOSITIONS}")


def run_demo(out: Path, n: int = 500, num_levels: int = 50, num_steps: int = 5, seed: int = 0,
             progress: bool = True, overwrite: bool = False) -> str:
    check_chains(n)
    normalizers = mixture_normalizers()  # once, shared by both samplers' mixture models
    rows, cells, metrics = [], {}, {}
    for comp in ("product", "mixture", "negation"):
        model = build(comp, "energy", normalizers)
        target = TARGETS[comp]()
        ref = target.sample(REFERENCE_DRAWS, torch.Generator().manual_seed(1000 + seed))
        cells[(comp, "target")] = target.sample(n, torch.Generator().manual_seed(seed)).numpy()
        for sampler in ("reverse", "hmc"):
            r = sample(model, n, sampler, num_levels=num_levels,
                       num_steps=None if sampler == "reverse" else num_steps,
                       seed=seed, progress=progress)
            x = r.x.double()
            lp = target.log_prob(x)
            m = {"LL": float(lp.mean()),  # −inf if any sample left the [−1.1, 1.1]² window
                 "outside_window": float((~torch.isfinite(lp)).double().mean()),
                 "W2": wasserstein2(x, ref), "support": float(target.in_support(x).double()
                                                               .mean()),
                 "acceptance": r.info.mean_acceptance,
                 "grad_evals": r.info.network_score_evals,
                 "energy_evals": r.info.network_energy_evals, "time_s": r.info.wall_time}
            metrics[f"{comp}/{sampler}"] = m
            cells[(comp, sampler)] = r.x.numpy()
            acc = f"{m['acceptance']:.2f}" if sampler == "hmc" else "  – "
            rows.append(f"{comp:9s} {sampler:8s} {m['LL']:7.2f} {m['W2']:6.3f} "
                        f"{m['support']:8.2f} {acc:>6s} {m['grad_evals']:6d} "
                        f"{m['energy_evals']:6d} {m['time_s']:6.1f}")
    head = ("composition sampler      LL↑    W2↓  support↑   acc  grads energies  time(s)\n"
            + "-" * 78)
    table = head + "\n" + "\n".join(rows)
    config = {"command": "demo", "n": n, "num_levels": num_levels, "num_steps": num_steps,
              "seed": seed, "parameterization": "energy", "negation_alpha": 0.3}
    with run_folder(out, overwrite) as tmp:
        fig = scatter_grid(cells, ["product", "mixture", "negation"],
                           ["target", "reverse", "hmc"], size=2.6,
                           title=f"ring·bar, ½ left_bar + ½ right_bar, large_box / small_box^0.3"
                                 f": {n} samples (HMC: T = {num_levels}, K = {num_steps})")
        fig.savefig(tmp / "demo.png", dpi=120)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "table.txt").write_text(table + "\n")
        np.savez_compressed(tmp / "samples.npz",
                            **{f"{r}/{c}": v for (r, c), v in cells.items()})
    return table


def _check_n(ctx: click.Context, param: click.Parameter, n: int) -> int:
    try:
        check_chains(n)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return n


@click.command()
@click.option("--n", default=500, show_default=True, type=click.IntRange(2, 6000),
              callback=_check_n,
              help="Chains (samples) per composition and sampler: a divisor of 2000, 4000 or "
                   "6000 (W2 against 2,000 target draws is exact by assignment).")
@click.option("--levels", default=50, show_default=True, type=click.IntRange(1, 100_000),
              help="Noise levels T.")
@click.option("--mcmc-steps", default=5, show_default=True, type=click.IntRange(0, 10_000),
              help="HMC steps K per level.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Random seed.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Output folder (empty, new, or a previous run's with "
                                      "--overwrite).")
@overwrite_option
@quiet_option
@handle_errors
def demo(n: int, levels: int, mcmc_steps: int, seed: int, out: Path, overwrite: bool = False,
         quiet: bool = False) -> None:
    """Compose the shipped 2D models and compare reverse diffusion with annealed HMC.

    Product ring × bar, mixture of the left and right bars, negation large box / small box^0.3,
    energy models; prints a table (vs the exact target) and writes one figure grid.
    A reduced budget (T = 50, K = 5, 500 chains) keeps it under a minute; the full protocol
    is `python -m experiments.toy2d` in a clone of the repository.

    \b
    Example:
      recompose demo --n 1000 --out runs/demo
    """

    prepare_out(out, overwrite)
    t0 = time.perf_counter()
    table = run_demo(out, n=n, num_levels=levels, num_steps=mcmc_steps, seed=seed,
                     progress=not is_quiet(), overwrite=overwrite)
    click.echo(table)
    click.echo(f"\nfinished in {time.perf_counter() - t0:.0f} s; figure and metrics in "
               f"{out}/ (demo.png, metrics.json, config.json)")
