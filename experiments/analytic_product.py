"""Issue-2 table: samplers on the exact product of two analytic 2D mixtures.

``A`` = ring of 8 Gaussians (radius 0.5, std 0.03); ``B`` = 2 Gaussians (std 0.1) on two of
the ring's modes, ``(0, ±0.5)``. The exact product ``A·B`` at ``t = 0`` is again a Gaussian
mixture (:func:`recompose.gmm_product`), so every metric is against exact samples / the exact
density. Budget as in R3: ``T = 100`` levels, ``K = 10`` MCMC steps per level.

Run: ``python -m experiments.analytic_product`` (prints the table, writes ``--out``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "analytic_product: samplers on an exact product of two mixtures, ≈ 1 min on "
         "2 cores with the checked-in protocol")

import json
import math
import statistics

import torch

from recompose import GaussianMixture, gmm_product, sample
from recompose.io import run_folder
from recompose.metrics import energy_distance, wasserstein2

from .common import markdown_table, parse_config, script

__all__ = ["problem", "run"]

SAMPLERS = ("reverse", "ula", "uhmc", "mala", "hmc")


def problem() -> tuple[GaussianMixture, GaussianMixture]:
    angles = [2 * math.pi * k / 8 for k in range(8)]
    ring = GaussianMixture([[0.5 * math.cos(a), 0.5 * math.sin(a)] for a in angles], 0.03,
                           name="ring")
    two = GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1, name="two")
    return ring, two


def on_modes(x: torch.Tensor) -> float:
    """Fraction of samples within 0.1 of the product's two modes (0, ±0.5)."""
    modes = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=x.dtype)
    return float((torch.cdist(x, modes).min(1).values < 0.1).double().mean())


def _row(xs: list[torch.Tensor], refs: list[torch.Tensor], exact: GaussianMixture) -> dict:
    ed = [1e3 * energy_distance(x, r) for x, r in zip(xs, refs)]
    w2 = [wasserstein2(x, r) for x, r in zip(xs, refs)]
    ll = [float(exact.log_prob(x).mean()) for x in xs]
    mode = [on_modes(x) for x in xs]

    def ms(v: list[float]) -> str:
        return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"

    return {"ED×1e3": ms(ed), "W2": ms(w2), "LL": ms(ll), "on modes": ms(mode)}


def run(n: int = 2000, seeds: tuple[int, ...] = (0, 1, 2), num_levels: int = 100,
        num_steps: int = 10, progress: bool = False) -> list[dict]:
    from tqdm.auto import tqdm

    ring, two = problem()
    model, exact = ring * two, gmm_product(ring, two)
    gen = torch.Generator().manual_seed(12345)
    refs = [exact.sample(n, gen) for _ in seeds]
    bar = tqdm(total=1 + len(SAMPLERS), desc="samplers", disable=not progress)
    bar.set_postfix_str("exact draws")
    rows = [{"sampler": "exact draws (floor)", **_row([exact.sample(n, gen) for _ in seeds],
                                                     refs, exact),
             "score evals": "–", "energy evals": "–", "time (s)": "–", "acceptance": "–"}]
    bar.update()
    for name in SAMPLERS:
        bar.set_postfix_str(name)
        results = [sample(model, n, name, num_levels=num_levels, seed=s,
                          num_steps=None if name == "reverse" else num_steps)
                   for s in seeds]
        info = results[0].info
        acc = statistics.mean(r.info.mean_acceptance for r in results)
        rows.append({"sampler": name, **_row([r.x for r in results], refs, exact),
                     "score evals": info.score_evals, "energy evals": info.energy_evals,
                     "time (s)": f"{statistics.mean(r.info.wall_time for r in results):.1f}",
                     "acceptance": f"{acc:.2f}" if name in ("mala", "hmc") else "–"})
        bar.update()
    bar.close()
    return rows


def markdown(rows: list[dict]) -> str:
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows])


@script
def main(argv: list[str] | None = None) -> None:
    config = parse_config("analytic_product", __doc__, argv)
    torch.set_num_threads(1)
    rows = run(config["n"], tuple(range(config["seeds"])), config["levels"],
               config["mcmc_steps"], progress=True)
    table = markdown(rows)
    with run_folder(config["out"], config["overwrite"]) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "table.md").write_text(table + "\n")
    print(table)
    print(f"\noutputs in {config['out']}/")


if __name__ == "__main__":
    main()
