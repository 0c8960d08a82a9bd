r"""Issue-34 tables: OR and AND of score-only models with log-densities tracked along the
trajectory (the Itô density estimator, :mod:`recompose.samplers.tracking`).

Parts (``--parts``, all by default):

* ``estimator``: on the exact oracle (:class:`recompose.GaussianMixture` behind a score-only
  wrapper), ``P`` two narrow Gaussians (stds 0.15, 0.3) and ``Q`` two wide ones (0.6, 0.4), mixed
  0.3/0.7 and sampled by reverse diffusion with tracking. At the cleanest level each chain's
  tracked ``ℓ_k`` is compared with the exact ``log q^k_{t_0}(x)``: the spread over chains of
  ``ℓ_k − log q^k`` is the error of the differences between chains, its mean the offset they
  share; on the chains each model holds (``P``: ``x₁ < 0``) and on all chains. For ``T`` from 50
  to 400, on cosine VP, rectified flow and VE; the slope of the spreads against ``T`` (log–log,
  first to last ``T``).
* ``mass``: the mixture's mass on ``x₁ < 0`` (exact: 0.3 up to the tails) over seeds, for the
  tracked score-only mixture (``"fkc"``) and for the energy mixture of the same exact models
  (``"reverse"``; the same expression, the same density); mean ± standard error over seeds.
  Wider parts here (stds 0.25, 0.4 and 0.7, 0.5), as in the test.
* ``and``: SuperDiff's AND of two oracle mixtures ``A``, ``B`` for three ``κ`` ranges against the
  product ``A·B`` (``"fkc"``): the tracked ``|ℓ_A − ℓ_B|`` and the exact ``|log A − log B|`` at the
  cleanest level (median, 90 % quantile), and the estimator's error.
* ``dimension``: the estimator's bias against the dimension: two Gaussians of different shapes
  in ``d`` = 64 to 1,024 dimensions on the DDPM linear table, mixed 0.3 / 0.7 (and swapped);
  the fraction on each side and each model's tracked-minus-exact offset.
* ``toy2d``: the shipped 2D score models: ``mix(left_bar, right_bar)`` with weights 0.5/0.5 and
  0.3/0.7 (tracked, ``"reverse"`` = ``"fkc"`` here) beside the energy models' mixture normalised
  by quadrature (docs/results.md §2's construction) and ancestral draws (each chain's bar drawn
  with its weight, then that model's reverse diffusion): LL, W2 and in-support fraction against
  the exact smoothed target, and the weight error (mass on ``x₁ < 0`` minus the left weight); 500
  chains × 3 seeds, T = 100. And ``superpose(ring, bar)`` (AND) beside the product ``ring * bar``.
* ``attributes``: the §9 text-conditioned model: ``mix(P("red cube"), P("blue sphere"),
  weights=[0.3, 0.7])`` (one stacked UNet call per level), the checker's fraction of images with
  a red cube / a blue sphere / both, against the request (each prompt alone, mixed 0.3/0.7 by
  hand), the naive OR (reverse diffusion on the averaged score ``0.3 s_a + 0.7 s_b``),
  ``superpose(P("red cube"), P("blue sphere"))`` (AND) and §9's product; 100 images × 3 seeds,
  mean ± standard error over seeds.
* ``attribute_weights``: whether the tracked OR on the attribute model follows its weights
  (0.3/0.7, the parts swapped, 0.5/0.5, 0.1/0.9 at 50 levels, 0.3/0.7 at 200; one seed,
  100 images each) and the spread of the tracked ``ℓ_red − ℓ_blue`` over the chains.
* ``attributes_long``: the tracked OR on the attribute model with all 1,000 levels of its table
  and no clipping, beside each prompt alone (50 images, one seed; ≈ 12 min).

Run: ``python -m experiments.superdiff`` (config ``configs/superdiff.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "superdiff: score-only OR / AND with tracked log-densities (oracle, 2D "
         "models, attribute model), ≈ 6 min on 2 cores")

import math
import statistics
from collections.abc import Callable

import torch
from torch import Tensor

import recompose as rc
from recompose.models.base import DiffusionModel

from .common import echo, markdown_table, parse_config, script, write_results

__all__ = ["PATHS", "ScoreOnly", "oracle", "exact_left", "tracked_run", "estimator_rows",
           "mass_rows", "and_rows", "toy2d_rows", "attribute_rows"]

PATHS: dict[str, Callable[[], rc.Schedule]] = {
    "VP (cosine)": rc.CosineSchedule, "rectified flow": rc.RectifiedFlowSchedule,
    "VE": lambda: rc.VESchedule(0.01, 20.0)}
WEIGHTS = (0.3, 0.7)


class ScoreOnly(DiffusionModel):
    """A model with its energy hidden: the stand-in for a score network."""

    has_energy = False

    def __init__(self, inner: DiffusionModel, name: str) -> None:
        super().__init__()
        self.inner, self.name = inner, name
        self.schedule, self.event_shape = inner.schedule, inner.event_shape

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.inner.score(x, t)


def oracle(schedule: rc.Schedule, narrow: bool = True
           ) -> tuple[rc.GaussianMixture, rc.GaussianMixture]:
    """``P`` (narrow, left) and ``Q`` (wide, right), each a mixture of two Gaussians: stds
    0.15, 0.3 and 0.6, 0.4 (``narrow=False``: 0.25, 0.4 and 0.7, 0.5)."""
    sp, sq = ([0.15, 0.3], [0.6, 0.4]) if narrow else ([0.25, 0.4], [0.7, 0.5])
    p = rc.GaussianMixture([[-1.5, 0.0], [-1.0, 1.0]], sp, schedule=schedule, name="P")
    q = rc.GaussianMixture([[1.5, 0.0], [1.0, -1.2]], sq, schedule=schedule, name="Q")
    return p, q


def exact_left(parts: list[rc.GaussianMixture], weights: tuple[float, ...]) -> float:
    """``P(x₁ < 0)`` of ``Σ w_k part_k`` at ``t = 0`` (diagonal covariances)."""
    total = 0.0
    for w, m in zip(weights, parts):
        sd = m.covariances()[:, 0, 0].sqrt()
        cdf = torch.distributions.Normal(0.0, 1.0).cdf(-m.means[:, 0] / sd)
        total += w * float((m.log_weights.exp() * cdf).sum())
    return total


def tracked_run(model: DiffusionModel, n: int, levels: int, seed: int, sampler: str = "reverse"
                ) -> tuple[rc.SampleResult, Tensor]:
    """A run and its chains at the cleanest level (where ``log_density`` is)."""
    seen: dict[int, Tensor] = {}
    r = rc.sample(model, n, sampler, num_levels=levels, seed=seed,
                  callback=lambda d: seen.__setitem__(d["level"], d["x"]))
    return r, seen[0]


# ------------------------------------------------------------------ the oracle
def estimator_rows(n: int, levels: list[int], seed: int) -> list[dict]:
    rows = []
    for path, make in PATHS.items():
        p, q = oracle(make())
        mix = rc.mixture([ScoreOnly(p, "P"), ScoreOnly(q, "Q")], WEIGHTS)
        spread: dict[int, list[float]] = {}
        for T in levels:
            r, x = tracked_run(mix, n, T, seed)
            t0 = r.info.t[0]
            err = {k: r.log_density[k] - m.log_prob(x, t0) for k, m in (("P", p), ("Q", q))}
            own = {"P": x[:, 0] < 0, "Q": x[:, 0] >= 0}  # the chains each model holds
            spread[T] = [float(err[k][own[k]].std()) for k in "PQ"] + [
                float(err[k].std()) for k in "PQ"]
            rows.append({"path": path, "T": T, "network evals": r.info.network_score_evals,
                         **{f"{k}: spread / mean, own chains": (
                             f"{float(err[k][own[k]].std()):.3f} / "
                             f"{float(err[k][own[k]].mean()):+.3f}") for k in "PQ"},
                         **{f"{k}: spread / mean, all chains": (
                             f"{float(err[k].std()):.3f} / {float(err[k].mean()):+.3f}")
                            for k in "PQ"}})
        lo, hi = levels[0], levels[-1]
        slopes = [math.log(spread[hi][k] / spread[lo][k]) / math.log(hi / lo) for k in range(4)]
        rows[-1]["slope of the spreads (P, Q own; P, Q all)"] = ", ".join(
            f"{v:.2f}" for v in slopes)
        echo(f"estimator {path}: slopes " + ", ".join(f"{v:.2f}" for v in slopes))
    return rows


def _mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))


def mass_rows(n: int, seeds: int, levels: list[int]) -> list[dict]:
    rows = []
    for path in ("VP (cosine)", "rectified flow"):
        p, q = oracle(PATHS[path](), narrow=False)
        exact = exact_left([p, q], WEIGHTS)
        cases = {"score-only, tracked (fkc)": (rc.mixture([ScoreOnly(p, "P"), ScoreOnly(q, "Q")],
                                                          WEIGHTS), "fkc"),
                 "energy mixture (reverse)": (rc.mixture([p, q], WEIGHTS), "reverse")}
        for T in levels:
            for label, (model, sampler) in cases.items():
                left = [float((rc.sample(model, n, sampler, num_levels=T, seed=s).x[:, 0] < 0)
                              .double().mean()) for s in range(seeds)]
                m, se = _mean_se(left)
                rows.append({"path": path, "model": label, "T": T, "exact mass x₁ < 0":
                             round(exact, 4), "mass error": f"{m - exact:+.4f} ± {se:.4f}",
                             "error / SE": round((m - exact) / se, 1)})
    return rows


def and_rows(n: int, levels: list[int], seed: int) -> list[dict]:
    rows = []
    for path in ("VP (cosine)", "rectified flow"):
        schedule = PATHS[path]()
        a = rc.GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], [0.3, 0.3], schedule=schedule,
                               name="A")
        b = rc.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], [0.5, 0.2], schedule=schedule,
                               name="B")
        sa, sb = ScoreOnly(a, "A"), ScoreOnly(b, "B")
        for T in levels:
            for rng in ((0.0, 1.0), (-1.0, 2.0), (-5.0, 6.0)):
                r, x = tracked_run(rc.superpose([sa, sb], kappa_range=rng), n, T, seed)
                t0 = r.info.t[0]
                la, lb = r.log_density["A"], r.log_density["B"]
                ea, eb = a.log_prob(x, t0), b.log_prob(x, t0)
                rows.append(_and_row(path, T, f"superpose, κ ∈ [{rng[0]:g}, {rng[1]:g}]",
                                     (la - lb).abs(), (ea - eb).abs(),
                                     float(torch.cat([la - ea, lb - eb]).std())))
            r, x = tracked_run(sa * sb, n, T, seed, "fkc")  # x: the cleanest level, as above
            t0 = r.info.t[0]
            rows.append(_and_row(path, T, "product A·B (fkc)", None,
                                 (a.log_prob(x, t0) - b.log_prob(x, t0)).abs(), None))
    return rows


def _and_row(path: str, T: int, label: str, tracked: Tensor | None, exact: Tensor,
             error: float | None) -> dict:
    def q(v: Tensor, level: float) -> str:
        return f"{float(v.quantile(level)):.3f}"

    return {"path": path, "T": T, "sampler": label,
            "tracked |ℓ_A − ℓ_B| median": "–" if tracked is None else q(tracked, 0.5),
            "exact |log A − log B| median": q(exact, 0.5), "90 %": q(exact, 0.9),
            "estimator error (spread)": "–" if error is None else f"{error:.3f}"}


# ------------------------------------------------------------------ dimension
def dimension_rows(n: int, dims: list[int], levels: list[int], seed: int) -> list[dict]:
    """The estimator's bias differs between models and grows with the dimension ``d``.

    ``A`` and ``B``: one Gaussian each at ``±0.5`` on the first coordinate (std 0.02 there),
    of different shapes (``A``: one other coordinate of std 0.25, the rest 0.02; ``B``: half of
    the coordinates 0.25), on the DDPM linear table (1,000 steps, ``β`` from 1e-4 to 0.02, the
    attribute model's). Exact mass on ``A``'s side: the weight. Reverse diffusion of the tracked
    score-only mixture, weights 0.3 / 0.7 and swapped; the tracked-minus-exact log-density of
    each model on the chains it holds, mean over them (the offset the responsibilities see)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    schedule = rc.DiscreteSchedule(torch.cumprod(1 - betas, 0))

    def part(sign: float, wide: int, name: str, d: int) -> rc.GaussianMixture:
        mean = torch.zeros(1, d, dtype=torch.float64)
        mean[0, 0] = 0.5 * sign
        std = torch.full((1, d), 0.02, dtype=torch.float64)
        std[0, 1:wide] = 0.25
        return rc.GaussianMixture(mean, std, schedule=schedule, name=name)

    rows = []
    for d in dims:
        a, b = part(1.0, 2, "A", d), part(-1.0, d // 2, "B", d)
        for T in levels:
            for weights in ((0.3, 0.7), (0.7, 0.3)):
                mix = rc.mixture([ScoreOnly(a, "A"), ScoreOnly(b, "B")], list(weights))
                r, x = tracked_run(mix, n, T, seed)
                t0, in_a = r.info.t[0], x[:, 0] > 0
                off_a = float((r.log_density["A"] - a.log_prob(x, t0))[in_a].mean())
                off_b = float((r.log_density["B"] - b.log_prob(x, t0))[~in_a].mean())
                frac = float((r.x[:, 0] > 0).double().mean())
                rows.append({"d": d, "T": T, "weight of A": weights[0],
                             "fraction A": f"{frac:.3f}",
                             "error": f"{frac - weights[0]:+.3f} ± "
                                      f"{math.sqrt(weights[0] * weights[1] / n):.3f}",
                             "offset ℓ_A − log A (A's chains)": f"{off_a:+.2f}",
                             "offset ℓ_B − log B (B's chains)": f"{off_b:+.2f}"})
    return rows


# ------------------------------------------------------------------ shipped 2D models
def _ancestral(parts: list[DiffusionModel], weights: tuple[float, ...], n: int, levels: int,
               seed: int) -> tuple[Tensor, int]:
    """Each chain's part drawn with its weight, then that model's reverse diffusion."""
    g = torch.Generator().manual_seed(10_000 + seed)
    which = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=g)
    x = torch.empty(n, 2)
    for k, part in enumerate(parts):
        m = int((which == k).sum())
        if m:
            x[which == k] = rc.sample(part, m, "reverse", num_levels=levels,
                                      seed=seed * 10 + k).x
    return x, levels


def toy2d_rows(n: int, seeds: int, levels: list[int]) -> list[dict]:
    from recompose.cli.demo import mixture_normalizers
    from recompose.data.targets2d import MixtureTarget, ProductTarget
    from recompose.models.normalization import Normalized

    rows = []
    bars = ("left_bar", "right_bar")
    score = [rc.pretrained(b, "score") for b in bars]
    tables = mixture_normalizers("energy")
    energy = [Normalized(rc.pretrained(b, "energy"), torch.tensor(tables[b][0]),
                         torch.tensor(tables[b][1])) for b in bars]
    for weights in ((0.5, 0.5), WEIGHTS):
        target = MixtureTarget(weights)
        for T in levels:
            cells = {
                "score, tracked (reverse = fkc)": lambda s, w=weights, T=T: _sampled(
                    rc.mixture(score, list(w)), n, T, s),
                "energy, normalised (reverse)": lambda s, w=weights, T=T: _sampled(
                    rc.mixture(energy, list(w)), n, T, s),
                "score, ancestral (reverse)": lambda s, w=weights, T=T: _ancestral(
                    score, w, n, T, s)}
            for label, run in cells.items():
                rows.append(_toy2d_row(f"mix {weights[0]:g}/{weights[1]:g}", label, T, run,
                                       target, seeds, weights[0]))
    ring, bar = rc.pretrained("ring", "score"), rc.pretrained("bar", "score")
    product, T = ProductTarget(), levels[0]
    cells = {"superpose(ring, bar), AND (reverse)": lambda s: _sampled(
                 rc.superpose([ring, bar]), n, T, s),
             "ring * bar (fkc)": lambda s: _sampled(ring * bar, n, T, s, "fkc"),
             "ring * bar (reverse)": lambda s: _sampled(ring * bar, n, T, s)}
    for label, run in cells.items():
        rows.append(_toy2d_row("ring AND bar", label, T, run, product, seeds, None))
    return rows


def _sampled(model: DiffusionModel, n: int, levels: int, seed: int, sampler: str = "reverse"
             ) -> tuple[Tensor, int]:
    r = rc.sample(model, n, sampler, num_levels=levels, seed=seed)
    return r.x, r.info.network_score_evals


def _metrics(x: Tensor, target: object, ref: Tensor) -> dict:
    """LL (−∞ when a sample leaves the target's window), exact W2 to target draws, in-support
    fraction (the §2 protocol, ``experiments.toy2d``)."""
    from recompose.metrics import wasserstein2

    lp = target.log_prob(x)
    return {"LL": float(lp.mean()) if bool(torch.isfinite(lp).all()) else -math.inf,
            "W2": wasserstein2(x, ref), "support": float(target.in_support(x).double().mean())}


def _toy2d_row(composition: str, label: str, levels: int, run: Callable, target: object,
               seeds: int, left_weight: float | None) -> dict:
    metrics, evals = [], 0
    for s in range(seeds):
        x, evals = run(s)
        ref = target.sample(2000, torch.Generator().manual_seed(1000 + s))
        m = _metrics(x.double(), target, ref)
        m["left"] = float((x[:, 0] < 0).double().mean())
        metrics.append(m)

    def fmt(key: str, digits: int = 2, shift: float = 0.0) -> str:
        values = [m[key] - shift for m in metrics]
        if any(math.isinf(v) for v in values):
            return "−∞"
        mean, se = _mean_se(values)
        return f"{mean:+.{digits}f} ± {se:.{digits}f}" if shift else (
            f"{mean:.{digits}f} ± {se:.{digits}f}")

    return {"composition": composition, "model / sampler": label, "T": levels, "LL": fmt("LL"),
            "W2": fmt("W2", 3), "in support": fmt("support"),
            "weight error": "–" if left_weight is None else fmt("left", 3, left_weight),
            "network evals": evals}


# ------------------------------------------------------------------ the attribute model
def attribute_rows(n: int, levels: int, seeds: int, pipeline: str) -> list[dict]:
    from experiments.attributes import BLUE, CUBE, RED, SPHERE, load_checker
    from recompose.integrations.diffusers import from_pretrained

    model = from_pretrained(pipeline)
    checker = load_checker()
    red_cube, blue_sphere = model.prompt("red cube"), model.prompt("blue sphere")

    def kinds(model_: DiffusionModel) -> tuple[Tensor, int]:
        """Fractions (red cube, blue sphere, both) per seed, ``(3, seeds)``, and the evals."""
        per_seed, evals = [], 0
        for seed in range(seeds):
            r = rc.sample(model_, n, "reverse", num_levels=levels, seed=seed, clip=(-1.0, 1.0))
            present = checker.present(r.x.clamp(-1, 1))
            rc_, bs = present[:, RED, CUBE], present[:, BLUE, SPHERE]
            per_seed.append(torch.stack([rc_, bs, rc_ & bs]).double().mean(1))
            evals = r.info.network_score_evals
        return torch.stack(per_seed, 1), evals

    def row(label: str, k: Tensor, evals: int | None) -> dict:
        return _attr_row(label, k.mean(1), k.std(1) / seeds**0.5, evals)

    alone = {name: kinds(m) for name, m in (("red cube", red_cube),
                                            ("blue sphere", blue_sphere))}
    rows = [row(f'P("{name}") alone', k, evals) for name, (k, evals) in alone.items()]
    # The request: each prompt's own fractions mixed 0.3 / 0.7 (seed by seed).
    by_hand = WEIGHTS[0] * alone["red cube"][0] + WEIGHTS[1] * alone["blue sphere"][0]
    rows.append(row("request: 0.3 · red cube + 0.7 · blue sphere (from the rows above)",
                    by_hand, None))
    # The naive OR: reverse diffusion on the averaged score 0.3 s_a + 0.7 s_b.
    rows.append(row("averaged scores 0.3 s(red cube) + 0.7 s(blue sphere) (naive OR)",
                    *kinds(red_cube ** WEIGHTS[0] * blue_sphere ** WEIGHTS[1])))
    rows.append(row("mix(P(red cube), P(blue sphere), weights=[0.3, 0.7]), tracked",
                    *kinds(rc.mixture([red_cube, blue_sphere], list(WEIGHTS)))))
    rows.append(row("superpose(P(red cube), P(blue sphere)), AND",
                    *kinds(rc.superpose([red_cube, blue_sphere]))))
    rows.append(row("P(red cube) · P(blue sphere) / U (product, §9)",
                    *kinds(red_cube * blue_sphere / model)))
    return rows


def attribute_weight_rows(n: int, seed: int, pipeline: str) -> list[dict]:
    """Does the tracked OR follow its weights on the attribute model? One seed per row."""
    from experiments.attributes import BLUE, CUBE, RED, SPHERE, load_checker
    from recompose.integrations.diffusers import from_pretrained

    model = from_pretrained(pipeline)
    checker = load_checker()
    red, blue = model.prompt("red cube"), model.prompt("blue sphere")
    cases = [("0.3 / 0.7", [red, blue], [0.3, 0.7], 50),
             ("0.7 / 0.3, parts swapped (blue sphere first)", [blue, red], [0.7, 0.3], 50),
             ("0.5 / 0.5", [red, blue], [0.5, 0.5], 50),
             ("0.1 / 0.9", [red, blue], [0.1, 0.9], 50),
             ("0.3 / 0.7", [red, blue], [0.3, 0.7], 200)]
    rows = []
    for label, parts, weights, levels in cases:
        r = rc.sample(rc.mixture(parts, weights), n, "reverse", num_levels=levels, seed=seed,
                      clip=(-1.0, 1.0))
        present = checker.present(r.x.clamp(-1, 1))
        ell = r.log_density
        names = list(ell)
        first_red = parts[0] is red
        diff = (ell[names[0]] - ell[names[1]]) * (1 if first_red else -1)  # ℓ_red − ℓ_blue
        rows.append({"weights red cube / blue sphere": label, "T": levels,
                     "red cube": f"{float(present[:, RED, CUBE].double().mean()):.2f}",
                     "blue sphere": f"{float(present[:, BLUE, SPHERE].double().mean()):.2f}",
                     "ℓ_red − ℓ_blue: 10 % / median / 90 %": " / ".join(
                         f"{float(diff.quantile(q)):+.1f}" for q in (0.1, 0.5, 0.9))})
    return rows


def attribute_long_rows(n: int, levels: int, seed: int, pipeline: str) -> list[dict]:
    """The tracked OR with the model's whole table of levels and no clipping (which this model
    survives only at many levels), beside each prompt alone on the same settings."""
    from experiments.attributes import BLUE, CUBE, RED, SPHERE, load_checker
    from recompose.integrations.diffusers import from_pretrained

    model = from_pretrained(pipeline)
    checker = load_checker()
    red, blue = model.prompt("red cube"), model.prompt("blue sphere")
    fractions = {}
    for label, m in (("red cube alone", red), ("blue sphere alone", blue),
                     ("mix 0.3 / 0.7, tracked", rc.mixture([red, blue], list(WEIGHTS)))):
        r = rc.sample(m, n, "reverse", num_levels=levels, seed=seed)
        present = checker.present(r.x.clamp(-1, 1))
        fractions[label] = (present[:, RED, CUBE].double().mean(),
                            present[:, BLUE, SPHERE].double().mean(),
                            r.info.network_score_evals)
    def se(*terms: tuple[float, float]) -> float:  # Σ w_k p_k of independent binomials
        return math.sqrt(sum(w * w * float(p) * (1 - float(p)) / n for w, p in terms))

    rows = [{"T, no clip": levels, "composition": label,
             "red cube": f"{float(rc_):.2f} ± {se((1.0, rc_)):.2f}",
             "blue sphere": f"{float(bs):.2f} ± {se((1.0, bs)):.2f}", "network evals": evals}
            for label, (rc_, bs, evals) in fractions.items()]
    (r_red, b_red, _), (r_blue, b_blue, _) = (fractions["red cube alone"],
                                             fractions["blue sphere alone"])
    w_red, w_blue = WEIGHTS
    rows.append({"T, no clip": levels,
                 "composition": "request: 0.3 · red cube alone + 0.7 · blue sphere alone",
                 "red cube": f"{float(w_red * r_red + w_blue * r_blue):.2f} ± "
                             f"{se((w_red, r_red), (w_blue, r_blue)):.2f}",
                 "blue sphere": f"{float(w_red * b_red + w_blue * b_blue):.2f} ± "
                                f"{se((w_red, b_red), (w_blue, b_blue)):.2f}",
                 "network evals": "–"})
    return rows


def _attr_row(label: str, mean: Tensor, se: Tensor, evals: int | None) -> dict:
    cols = ("red cube", "blue sphere", "both")
    return {"composition (reverse diffusion; mean ± s.e. over seeds)": label,
            **{c: f"{float(m):.2f} ± {float(s):.2f}" for c, m, s in zip(cols, mean, se)},
            "network evals per seed": "–" if evals is None else evals}


# ------------------------------------------------------------------ entry point
PARTS = ("estimator", "mass", "and", "dimension", "toy2d", "attributes",
         "attribute_weights", "attributes_long")


@script
def main(argv: list[str] | None = None) -> None:
    def check(config: dict) -> None:
        unknown = set(config["parts"]) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")

    config = parse_config("superdiff", __doc__, argv, check)
    torch.set_num_threads(config["threads"])
    results, text = {}, []
    runs = {
        "estimator": lambda: estimator_rows(config["estimator_n"], config["estimator_levels"],
                                            config["seed"]),
        "mass": lambda: mass_rows(config["n"], config["seeds"], config["mass_levels"]),
        "and": lambda: and_rows(config["n"], config["and_levels"], config["seed"]),
        "dimension": lambda: dimension_rows(config["dimension_n"], config["dimension_dims"],
                                            config["dimension_levels"], config["seed"]),
        "toy2d": lambda: toy2d_rows(config["toy2d_n"], config["toy2d_seeds"],
                                    config["toy2d_levels"]),
        "attributes": lambda: attribute_rows(config["attributes_n"], config["attributes_levels"],
                                             config["attributes_seeds"], config["pipeline"]),
        "attributes_long": lambda: attribute_long_rows(config["attributes_long_n"],
                                                       config["attributes_long_levels"],
                                                       config["seed"], config["pipeline"]),
        "attribute_weights": lambda: attribute_weight_rows(config["attributes_n"],
                                                           config["seed"], config["pipeline"])}
    for part in config["parts"]:
        echo(f"part {part}")
        rows = runs[part]()
        results[part] = rows
        header = sorted({k for r in rows for k in r}, key=[k for r in rows for k in r].index)
        table = markdown_table(header, [[r.get(k, "") for k in header] for r in rows])
        text.append(f"### {part}\n\n{table}\n")
        print(text[-1])
    write_results(config, results, "\n".join(text))
    print(f"outputs in {config['out']}/")


if __name__ == "__main__":
    main()
