r"""Score-only Metropolis tests against exact energies on an exact oracle.

Target: the analytic product ``A · B`` of :mod:`tests.test_smc` — ``A`` two Gaussians at
``(±2, 0)`` with stds 0.2 and 1.0, ``B`` one Gaussian at the origin with std 0.5 — whose time-t
energies are known in closed form, so the score-only runs (``energy="path"``: ΔE by quadrature
of the score along each proposal, :mod:`recompose.mcmc.path`) can be compared with the same
kernels using the exact energies: same seed, same step sizes (no adaptation), annealed over
``T`` levels with ``K`` steps each.

Per kernel, step multiplier ``c`` (0: the defaults, each run adapting its step toward the
target acceptance, so the two runs' steps differ) and rule: mean acceptance, the largest
per-level acceptance gap to exact MH, and the mass on ``x₁ < 0`` (the narrow mode) with its
paired difference to exact MH ± one Monte-Carlo standard error (chains paired by seed).

Run: ``python -m experiments.path_mh`` (config ``experiments/configs/path_mh.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "path_mh: score-only Metropolis against exact Metropolis on the oracle, ≈ 1 "
         "min on 2 cores")

import torch

import recompose as rc
from recompose.models.base import DiffusionModel

from .common import markdown_table, parse_config, script, write_results

__all__ = ["oracle", "ScoreOnly", "compare", "main"]


def oracle() -> DiffusionModel:
    a = rc.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], [0.2, 1.0], name="A")
    b = rc.GaussianMixture([[0.0, 0.0]], 0.5, name="B")
    return a * b


class ScoreOnly(DiffusionModel):
    """A model with its energy hidden: what a score network offers."""

    has_energy = False

    def __init__(self, inner: DiffusionModel) -> None:
        super().__init__()
        self.inner, self.schedule, self.event_shape = inner, inner.schedule, inner.event_shape
        self.name = f"score-only {inner.describe()}"

    def score(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        return self.inner.score(x, t)


def compare(kernel: str, step: float, quadrature: str, n: int, levels: int, steps: int,
            seed: int) -> dict:
    model = oracle()
    options = {"num_levels": levels, "num_steps": steps, "seed": seed, "adapt": False,
               "step_size": step}
    if step == 0:  # the defaults: each run adapts its own step toward the target acceptance
        options = {"num_levels": levels, "num_steps": steps, "seed": seed}
    exact = rc.sample(model, n, kernel, **options)
    path = rc.sample(ScoreOnly(model), n, kernel, energy="path", quadrature=quadrature,
                     **options)
    left_e, left_p = (exact.x[:, 0] < 0).double(), (path.x[:, 0] < 0).double()
    d = left_p - left_e
    gaps = [abs(a - b) for a, b in zip(exact.info.acceptance, path.info.acceptance)]
    return {"kernel": kernel, "step": step, "quadrature": quadrature,
            "acceptance_exact": exact.info.mean_acceptance,
            "acceptance_path": path.info.mean_acceptance, "max_level_gap": max(gaps),
            "left_exact": left_e.mean().item(), "left_path": left_p.mean().item(),
            "left_diff": d.mean().item(), "left_diff_se": d.std().item() / n**0.5,
            "score_evals_exact": exact.info.score_evals,
            "score_evals_path": path.info.score_evals}


@script
def main(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    c = parse_config("path_mh", __doc__.split("\n\n")[0], argv)
    torch.set_num_threads(c["threads"])
    runs = [(kernel, step, rule) for kernel, step in zip(c["kernels"], c["steps"])
            for rule in ("trapezoid", "simpson")]
    rows = [compare(kernel, step, rule, c["n"], c["levels"], c["mcmc_steps"], c["seed"])
            for kernel, step, rule in tqdm(runs, desc="comparisons")]
    table = markdown_table(
        ["kernel", "c", "rule", "acceptance exact / path", "max level gap", "P(x₁<0) exact",
         "P(x₁<0) path − exact", "score evals exact / path"],
        [[r["kernel"], f"{r['step']:g}" if r["step"] else "adapted", r["quadrature"],
          f"{r['acceptance_exact']:.3f} / {r['acceptance_path']:.3f}",
          f"{r['max_level_gap']:.3f}", f"{r['left_exact']:.3f}",
          f"{r['left_diff']:+.3f} ± {r['left_diff_se']:.3f}",
          f"{r['score_evals_exact']} / {r['score_evals_path']}"] for r in rows])
    write_results(c, rows, table)
    print(table)


if __name__ == "__main__":
    main()
