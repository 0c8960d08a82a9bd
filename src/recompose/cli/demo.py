"""``recompose demo``: the shipped 2D models composed three ways, reverse diffusion vs HMC.

Compositions (:func:`build`; the 2D table of ``docs/results.md``): product ``ring * bar``;
mixture ``½ left_bar + ½ right_bar`` of energy models normalised by quadrature (a proper
mixture of the time-``t`` densities); negation ``large_box / small_box ** 0.3`` (the paper's
``q₁/q₂^α``; ``negation_r3`` is the R3 notebook's ``large_box ** 1.3 / small_box ** 0.3``).
Metrics against the exact smoothed targets of :mod:`recompose.data.targets2d` (log-likelihood
↑, the fraction of samples outside the window ``[−1.1, 1.1]²`` where that target has density,
W2 to 2,000 target draws ↓, fraction in support ↑); the budget is in :func:`demo`'s help.

Beside the samplers, two reference rows per composition: exact draws of the ideal target (their
W2 over a few independent sets: the floor, and W2's Monte-Carlo spread at this sample size)
and draws of the composed *learned* density at the cleanest level ``t₀ = 1/T`` — what annealed
MCMC targets last — computed on a grid (:func:`learned_density`) and passed through the
samplers' final denoising step (:func:`learned_draws`): what a perfect sampler of these models
returns. The figure shows that density beside the ideal target.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
import torch
from torch import Tensor

from ..compose import mixture
from ..data.targets2d import TARGETS, WINDOW
from ..io import json_safe, run_folder
from ..metrics import wasserstein2
from ..models.base import DiffusionModel
from ..models.loading import pretrained
from ..models.normalization import PROGRESS, Normalized, normalize_by_quadrature
from ..sampling import sample
from ..viz.plots import scatter_grid
from .common import handle_errors, is_quiet, overwrite_option, prepare_out, quiet_option

__all__ = ["COMPOSITIONS", "NEGATION_ALPHA", "READ_MORE", "build", "mixture_normalizers",
           "learned_density", "learned_draws", "run_demo", "demo", "REFERENCE_DRAWS",
           "check_chains"]

COMPOSITIONS = ("product", "mixture", "negation", "negation_r3")
NEGATION_ALPHA = 0.3
READ_MORE = ("Read more: docs/results.md §2 (every sampler at the paper's budget T = 100, "
             "K = 10, 3 seeds, and why negation fails); the full protocol is "
             "`python -m experiments.toy2d` in a clone of the repository (≈ 11 min on 2 cores).")
EXACT_SETS = 4  # independent sets of exact draws behind the W2 floor's mean ± sd
GRID_LIM, GRID = 1.5, 160  # the learned density's grid: [−1.5, 1.5]², 160² cells
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


@torch.no_grad()
def learned_density(model: DiffusionModel, t: float, lim: float = GRID_LIM, grid: int = GRID
                    ) -> tuple[Tensor, Tensor]:
    """``(centres (grid², 2), p (grid²,))``: ``exp(−E(x, t))`` of a 2D energy model on the
    cell centres of a regular grid over ``[−lim, lim]²`` (rows along y from the bottom),
    normalised to sum to 1 (the mass of each cell)."""
    h = 2 * lim / grid
    axis = -lim + h * (torch.arange(grid, dtype=torch.float32) + 0.5)
    xx = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    e = model.energy(xx, float(t)).double()
    p = torch.exp(-(e - e.min()))
    return xx, p / p.sum()


@torch.no_grad()
def learned_draws(model: DiffusionModel, num_levels: int, n: int, seed: int,
                  density: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``n`` draws of the composed learned density at the cleanest level ``t₀`` of a
    ``num_levels`` schedule (grid cells by their mass, uniform within a cell), then the
    samplers' final denoising step (Tweedie, as ``denoise=True``): float64 ``(n, 2)``."""
    levels = model.schedule.levels(num_levels)
    xx, p = density or learned_density(model, float(levels.t[0]))
    h = float(xx[1, 0] - xx[0, 0])
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(p, n, replacement=True, generator=g)
    x = xx[idx] + (torch.rand(n, 2, generator=g) - 0.5) * h
    return levels.posterior_step(x, model.score(x, float(levels.t[0])), 0).double()


def _row_metrics(x: Tensor, target: object, ref: Tensor, pool: Executor) -> dict:
    """LL (null when a sample left the window, with the count and the in-window mean beside
    it), the out-of-window fraction, W2 to ``ref`` (a future of ``pool``: the assignment
    runs beside the sampling, see :func:`run_demo`) and the fraction in the ideal support."""
    lp = target.log_prob(x)
    out = ~torch.isfinite(lp)
    m = {"LL": float(lp.mean()), "outside_window": float(out.double().mean())}
    if out.any():
        m["LL"] = None
        m["LL_in_window"] = float(lp[~out].mean()) if (~out).any() else None
        m["LL_note"] = (f"−inf: {int(out.sum())} of {len(x)} samples outside the window "
                        f"[{WINDOW.bounds[0]}, {WINDOW.bounds[1]}]², where the exact target "
                        "has no density; LL_in_window is the mean over the others")
    m["W2"] = pool.submit(wasserstein2, x, ref)
    m["support"] = float(target.in_support(x).double().mean())
    return m


def _fmt(v: float | None, spec: str, width: int) -> str:
    return f"{'–' if v is None else format(v, spec):>{width}s}"


HEADER = ("composition samples of       LL↑ out of window W2↓           support↑ accept  grads "
          "energies time(s)")


def _table_row(comp: str, what: str, m: dict) -> str:
    ll = "-inf*" if m["LL"] is None else f"{m['LL']:.2f}"
    w2 = f"{m['W2']:.3f}" + (f" ± {m['W2_sd']:.3f}" if "W2_sd" in m else "")
    return (f"{comp:11s} {what:13s} {ll:>6s} {m['outside_window']:13.3f} {w2:<13s} "
            f"{m['support']:8.2f} {_fmt(m.get('acceptance'), '.2f', 6)} "
            f"{_fmt(m.get('grad_evals'), 'd', 6)} {_fmt(m.get('energy_evals'), 'd', 8)} "
            f"{_fmt(m.get('time_s'), '.1f', 7)}")


def _notes(metrics: dict, n: int, t0: float) -> list[str]:
    """The paragraphs printed under the table (what the two reference rows are, LL −inf,
    W2's noise, how the learned negation differs from the ideal one, where to read more)."""
    sds = ", ".join(f"{c} ± {metrics[f'{c}/exact']['W2_sd']:.3f}"
                    for c in ("product", "mixture", "negation"))
    notes = [
        f"exact target: {n} draws of the ideal composition. Its W2 is the mean ± sd over "
        f"{EXACT_SETS} independent sets of {n} draws: the floor, and how much W2 on {n} "
        f"samples varies from draw to draw ({sds}); W2 differences smaller than about "
        "twice that are noise.",
        f"learned model: {n} draws of the composed learned density exp(−E(x, t)) at the "
        f"cleanest level t = {t0:.3g} (the density HMC targets last; on a grid, as in the "
        "figure's second column), then the samplers' final denoising step: what a perfect "
        "sampler of these models would return. A sampler can at best match this row (HMC at "
        "this reduced budget need not; §2's budget comes closer); the gap from it to the exact "
        "target is the models' and the operator's, not the sampler's.",
    ]
    outside = [(k, m) for k, m in metrics.items() if m["LL"] is None]
    if outside:
        which = "; ".join(f"{k} {round(m['outside_window'] * n)} of {n}, LL of the others "
                          + ("–" if m.get("LL_in_window") is None
                             else f"{m['LL_in_window']:.2f}") for k, m in outside)
        notes.append("LL -inf*: some samples fell outside the window [−1.1, 1.1]², where the "
                     "exact (smoothed) target has no density, so their log-likelihood is −inf; "
                     f"'out of window' is that fraction ({which}).")
    neg = metrics["negation/learned"]
    notes.append(
        "negation: the learned boxes' densities at t > 0 have Gaussian edges, so "
        "large_box / small_box^0.3 of the learned energies is not a box with a hole: "
        "small_box^−0.3 grows away from the small box until the large box's edge cuts it "
        "off, and the mass piles along the large box's edges, most of it at the corners "
        f"(learned model: {neg['support']:.0%} in the ideal support against the exact "
        f"target's {metrics['negation/exact']['support']:.0%}; HMC "
        f"{metrics['negation/hmc']['support']:.0%}). No sampler of these models can reach the "
        "ideal target. HMC's local moves rarely carry mass from one corner to another, so its "
        "split between the corners, and with it its W2, differs from the learned model's.")
    notes.append(READ_MORE)
    return notes


def _resolve_w2(metrics: dict, n: int) -> None:
    """Replace the W2 futures of :func:`_row_metrics` by their values; the exact rows' W2 is
    the mean over their sets, with the sd beside it."""
    for m in metrics.values():
        m["W2"] = m["W2"].result()
        if "W2_sets" in m:
            w2 = [w.result() for w in m["W2_sets"]]
            m |= {"W2": float(np.mean(w2)), "W2_sd": float(np.std(w2, ddof=1)), "W2_sets": w2,
                  "W2_note": f"mean and sd over {len(w2)} independent sets of {n} exact draws: "
                             "the floor and W2's Monte-Carlo spread"}


def run_demo(out: Path, n: int = 500, num_levels: int = 50, num_steps: int = 5, seed: int = 0,
             progress: bool = True, overwrite: bool = False) -> str:
    """Run the demo into ``out``; returns the printed table (with its notes). The W2
    assignments (about 0.6 s each, 21 of them) run in a worker thread while the samplers run
    (SciPy releases the GIL), which keeps the demo's wall time near the samplers'."""
    check_chains(n)
    token = PROGRESS.set(progress)
    try:
        normalizers = mixture_normalizers()  # once, shared by both samplers' mixture models
    finally:
        PROGRESS.reset(token)
    cells, densities, metrics = {}, {}, {}
    comps, names = ("product", "mixture", "negation"), ("exact", "learned", "reverse", "hmc")
    t0 = float("nan")
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            for comp in comps:
                model = build(comp, "energy", normalizers)
                target = TARGETS[comp]()
                ref = target.sample(REFERENCE_DRAWS, torch.Generator().manual_seed(1000 + seed))
                # exact draws: the panel's set and EXACT_SETS − 1 more for W2's spread
                sets = [target.sample(n, torch.Generator().manual_seed(seed + 7919 * k))
                        for k in range(EXACT_SETS)]
                m = _row_metrics(sets[0], target, ref, pool)
                m["W2_sets"] = [m["W2"]] + [pool.submit(wasserstein2, x, ref) for x in sets[1:]]
                metrics[f"{comp}/exact"] = m
                cells[(comp, "exact")] = sets[0].numpy()
                # the composed learned density at the cleanest level, and draws of it
                t0 = float(model.schedule.levels(num_levels).t[0])
                density = learned_density(model, t0)
                x = learned_draws(model, num_levels, n, seed, density)
                metrics[f"{comp}/learned"] = _row_metrics(x, target, ref, pool) | {"t": t0}
                densities[(comp, "learned")] = density[1].reshape(GRID, GRID).numpy()
                for sampler in ("reverse", "hmc"):
                    r = sample(model, n, sampler, num_levels=num_levels,
                               num_steps=None if sampler == "reverse" else num_steps,
                               seed=seed, progress=progress)
                    m = _row_metrics(r.x.double(), target, ref, pool)
                    m |= {"acceptance": r.info.mean_acceptance if sampler == "hmc" else None,
                          "grad_evals": r.info.network_score_evals,
                          "energy_evals": r.info.network_energy_evals,
                          "time_s": r.info.wall_time}
                    if sampler == "reverse":
                        m["acceptance_note"] = "reverse diffusion has no MCMC steps"
                    metrics[f"{comp}/{sampler}"] = m
                    cells[(comp, sampler)] = r.x.numpy()
            _resolve_w2(metrics, n)
        except BaseException:  # an error or Ctrl-C: drop the queued assignments
            pool.shutdown(cancel_futures=True)
            raise
    rows, notes = [], {}
    labels = {"exact": "exact target", "learned": "learned model"}
    for comp in comps:
        for name in names:
            m = metrics[f"{comp}/{name}"]
            rows.append(_table_row(comp, labels.get(name, name), m))
            notes[(comp, name)] = (f"in support {m['support']:.0%}"
                                   + (f"\nout of window {m['outside_window']:.1%}"
                                      if m["outside_window"] else ""))
    footer = "\n".join(textwrap.fill(p, 100, subsequent_indent="  ")
                       for p in _notes(metrics, n, t0))
    table = HEADER + "\n" + "-" * len(HEADER) + "\n" + "\n".join(rows) + "\n\n" + footer
    config = {"command": "demo", "n": n, "num_levels": num_levels, "num_steps": num_steps,
              "seed": seed, "parameterization": "energy", "negation_alpha": NEGATION_ALPHA,
              "learned_t": t0, "exact_sets": EXACT_SETS}
    safe, replaced = json_safe(metrics)  # LL −inf is already null with its note
    if replaced:
        safe["null_note"] = f"not finite, written as null: {', '.join(replaced)}"
    cols = {"exact": "exact target (ideal)", "learned": f"learned model, t = {t0:.3g}\n"
            "(HMC's last target)", "reverse": "reverse diffusion", "hmc": "HMC"}
    with run_folder(out, overwrite) as tmp:
        fig = scatter_grid(
            {(r, cols[c]): v for (r, c), v in cells.items()}, list(comps), list(cols.values()),
            size=2.6, titles={(r, cols[c]): v for (r, c), v in notes.items()},
            densities={(r, cols[c]): v for (r, c), v in densities.items()},
            density_lim=GRID_LIM,
            title=f"ring·bar, ½ left_bar + ½ right_bar, large_box / small_box^0.3: {n} samples "
                  f"(HMC: T = {num_levels}, K = {num_steps})",
            footnote="learned model: the composed density exp(−E(x, t)) of the learned energy "
                     f"models at the cleanest level t = {t0:.3g} (√ scale), which HMC targets; "
                     "a sampler can at best match it. Negation: learned densities have "
                     "Gaussian edges, so large_box / small_box^0.3 of learned energies is not "
                     "a box with a hole but piles mass at the large box's edges and corners. "
                     "Metrics: table.txt. " + READ_MORE)
        fig.savefig(tmp / "demo.png", dpi=120)
        (tmp / "metrics.json").write_text(json.dumps(safe, indent=2, allow_nan=False))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, allow_nan=False))
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
    energy models; prints a table (vs the exact target, beside exact draws and draws of the
    composed learned density that HMC targets) and writes one figure grid.
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
