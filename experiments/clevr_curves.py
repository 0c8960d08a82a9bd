"""CLEVR composition accuracy against network evaluations per image, for several budgets.

The scene task of the equal-compute question (issue #11): the score model's
``A**(1 − K) · Π_k A|p_k`` (:mod:`experiments.clevr`) at K = 3, 4, 5 requested positions,
sampled by reverse diffusion, by FKC (the same steps with Feynman–Kac weights, one population
per layout) and by FKC with one ULA move per level, each at several numbers of levels ``T``.
A level costs ``K + 1`` network evaluations per image for reverse diffusion and FKC, three
times that for FKC + ULA (the move's score and the moved particles' weight rate).

Every (sampler, T) is one :func:`experiments.clevr.run` (``n`` layouts × ``particles`` images,
``seeds`` seeds) saved in ``cells_dir/<sampler>_T<T>``; a finished one is reused, so an
interrupted study resumes. Then ``out`` receives the table (accuracy ± standard error over
layouts, per K, against evaluations per image) and ``curves.png``.

Run: ``python -m experiments.clevr_curves`` (protocol: ``configs/clevr_curves.json``;
≈ 2 h on 2 cores when no cell is cached).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "clevr_curves: CLEVR accuracy against evaluations per image, ≈ 2 h on 2 "
         "cores when no cell is cached (finished cells are reused)")

import json
import time
from pathlib import Path

from recompose.io import run_folder

from . import clevr
from .common import markdown_table, parse_config, script

__all__ = ["run", "main"]


def _cell_dir(cells_dir: Path, sampler: str, levels: int) -> Path:
    return Path(cells_dir) / f"{sampler}_T{levels}"


def run(out: Path, cells_dir: Path, budgets: dict[str, list[int]], ks: tuple[int, ...],
        n: int, seeds: int, particles: int, threads: int = 2,
        overwrite: bool = False) -> dict:
    """Run the missing cells, then write the table and figure into ``out``."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    rows = []
    points = [(sampler, T) for sampler, levels in budgets.items() for T in levels]
    bar = tqdm(points, desc="clevr_curves points")
    for sampler, T in bar:
        bar.set_postfix_str(f"{sampler} T={T}")
        folder = _cell_dir(cells_dir, sampler, T)
        if not (folder / "metrics.json").exists():
            clevr.run(folder, n=n, seeds=tuple(range(seeds)), ks=ks,
                      table_cells=(("score", sampler),), num_levels=T, steps_sweep=(4,),
                      sweep_samplers=("hmc",), sweep_model="score", threads=threads,
                      particles=particles, overwrite=True)
        config = json.loads((folder / "config.json").read_text())
        if ((config["n"], config["seeds"], config["particles"])
                != (n, list(range(seeds)), particles) or not set(ks) <= set(config["ks"])):
            raise ValueError(f"{folder} was run with another protocol; delete it to rerun")
        for r in json.loads((folder / "metrics.json").read_text())["rows"]:
            rows.append({"sampler": sampler, "levels": T, "K": r["K"],
                         "evals": r["network_evals"], "accuracy": r["pooled_accuracy"],
                         "distinct_fraction": r["distinct_fraction"]})
    table = markdown(rows, ks, n * seeds, particles)
    elapsed = time.perf_counter() - start
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(
            {"budgets": budgets, "ks": list(ks), "n": n, "seeds": seeds,
             "particles": particles, "cells_dir": str(cells_dir)}, indent=2))
        (tmp / "metrics.json").write_text(json.dumps({"rows": rows, "elapsed_s": elapsed},
                                                     indent=1))
        (tmp / "table.md").write_text(table + "\n")
        figure(rows, ks).savefig(tmp / "curves.png", dpi=130)
    return {"rows": rows, "table": table, "elapsed_s": elapsed}


def markdown(rows: list[dict], ks: tuple[int, ...], layouts: int, particles: int) -> str:
    body = []
    for sampler, T in dict.fromkeys((r["sampler"], r["levels"]) for r in rows):
        cell = {r["K"]: r for r in rows if (r["sampler"], r["levels"]) == (sampler, T)}
        body.append([sampler, T, " / ".join(str(cell[k]["evals"]) for k in ks),
                     *(f"{cell[k]['accuracy'][0]:.2f} ± {cell[k]['accuracy'][1]:.2f}"
                       for k in ks),
                     f"{cell[ks[-1]]['distinct_fraction'] * particles:.1f} of {particles}"])
    head = ["sampler", "levels T", f"net evals / image (K = {', '.join(map(str, ks))})",
            *(f"K={k}" for k in ks), f"distinct images / layout (K={ks[-1]})"]
    return (f"Composition accuracy ± standard error over layouts ({layouts} layouts × "
            f"{particles} images per cell):\n\n" + markdown_table(head, body))


def figure(rows: list[dict], ks: tuple[int, ...]) -> object:
    """One panel per K: accuracy against network evaluations per image, one curve per
    sampler, error bars = one standard error."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(3.4 * len(ks), 3.0))
    axes = fig.subplots(1, len(ks), squeeze=False)[0]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    for ax, k in zip(axes, ks):
        for i, sampler in enumerate(samplers):
            pts = sorted((r["evals"], *r["accuracy"]) for r in rows
                         if r["sampler"] == sampler and r["K"] == k)
            e, acc, se = zip(*pts)
            ax.errorbar(e, acc, yerr=se, marker="o", ms=3, capsize=2, color=f"C{i}",
                        label=sampler)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
        ax.set_xlabel("network evaluations / image")
        ax.set_title(f"K = {k}: composition accuracy", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


@script
def main(argv: list[str] | None = None) -> None:
    c = parse_config("clevr_curves", __doc__, argv)
    budgets = {"reverse": c["reverse"], "fkc": c["fkc"], "fkc-ula": c["fkc_ula"]}
    res = run(c["out"], c["cells_dir"], budgets, tuple(c["ks"]), c["n"], c["seeds"],
              c["particles"], c["threads"], c["overwrite"])
    print(res["table"])
    print(f"\n{res['elapsed_s']:.0f} s; outputs in {c['out']}/ (cells in {c['cells_dir']}/)")


if __name__ == "__main__":
    main()
