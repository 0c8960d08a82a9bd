r"""Rewards as factors: steering compositions with a scorer, graded by a different one (§16).

Two tables, each at equal network evaluations per returned image:

* ``attributes`` — §9's DDPM attribute model, ``AND = P("red cube") · P("blue sphere") / U``.
  The reward is the §9 checker's (:func:`experiments.attributes.load_checker` ``"reward"``)
  per-object colour–shape presence, ``r(x) = log σ(ℓ_red cube) + log σ(ℓ_blue sphere)``. The
  table is graded by the *second* checker (``"eval"``: another architecture and seed, trained
  only on ground-truth scenes), never by the reward's own; the reward checker's verdict is
  shown beside it, so the gap between the two is visible.
* ``clevr`` — §6's score model composing ``K`` requested positions. The reward counts what a
  *pixel* detector (:func:`blobs`: connected regions away from the plain background; no
  training) finds: ``r = −(missing requested objects + spurious objects)``. It is graded by §6's
  trained checker (``clevr-checker``).

Methods (per returned image): ``reverse`` (1×); ``guided`` (reverse diffusion with the
reward's gradient through ``x̂₀`` added to the score: 1× forward, plus a backward pass through
the network per level; differentiable rewards only); ``best-of-N`` (N reverse-diffusion candidates,
the highest reward kept: N×); ``fkc`` (a population of N particles per image, Feynman–Kac
weights of the composition only: N×); ``fkc+reward`` (the same with the reward factor's
potentials: N×; one image per population is returned). Populations are independent, so the
standard error is binomial over the images (one per population) of all seeds.

Beside them, ``oracle``: an indicator reward on a two-mode Gaussian mixture, every potential
option against the exactly tilted mode weight.

Commands: ``python -m experiments.rewards attributes`` (config
``configs/rewards_attributes.json``), ``python -m experiments.rewards clevr``
(``configs/rewards_clevr.json``) and
``python -m experiments.rewards oracle`` (``configs/rewards_oracle.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "rewards: reward factors on the attribute and CLEVR compositions "
         "(attributes ≈ 30 min, clevr ≈ 15 min on 2 cores); loading torch")

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import recompose as rc
from recompose.data.clevr import BACKGROUND, SceneSpec, make_scenes
from recompose.models.base import DiffusionModel

from .common import echo, markdown_table, parse_config, script, write_results

__all__ = ["presence_reward", "blobs", "count_reward", "method", "main"]


# ----------------------------------------------------------------- rewards
def presence_reward(checker: torch.nn.Module, pairs: list[tuple[int, int]]
                    ) -> Callable[[Tensor], Tensor]:
    """``r(x) = Σ_pairs log σ(ℓ_pair(x))``: the log-probability, by ``checker``, that each
    requested (colour, shape) pair is present (differentiable)."""
    def bound(x: Tensor) -> Tensor:
        logits = checker(x.float().clamp(-1, 1))
        return sum(F.logsigmoid(logits[:, c, s]) for c, s in pairs).double()
    return bound


def blobs(x: Tensor, threshold: float = 0.3, min_pixels: int = 3) -> list[Tensor]:
    """Per image, the ``(D, 2)`` centroids (normalised ``(x, y)``) of the connected regions of
    pixels whose colour is farther than ``threshold`` from the plain background: a detector
    from the renderer's one fact (the background is uniform), no training. Regions smaller than
    ``min_pixels`` are noise."""
    x = x.float().clamp(-1, 1)
    b, _, s, _ = x.shape
    fg = (x - (2 * BACKGROUND - 1)).abs().amax(1) > threshold  # (B, S, S)
    ids = torch.arange(1, s * s + 1, dtype=torch.float32).view(1, s, s).expand(b, s, s)
    label = torch.where(fg, ids, torch.zeros(()))
    for _ in range(s * s):  # propagate the largest id through each 4-connected region
        grown = label.clone()
        grown[:, 1:, :] = torch.maximum(grown[:, 1:, :], label[:, :-1, :])
        grown[:, :-1, :] = torch.maximum(grown[:, :-1, :], label[:, 1:, :])
        grown[:, :, 1:] = torch.maximum(grown[:, :, 1:], label[:, :, :-1])
        grown[:, :, :-1] = torch.maximum(grown[:, :, :-1], label[:, :, 1:])
        grown = torch.where(fg, grown, torch.zeros(()))
        if torch.equal(grown, label):
            break
        label = grown
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    out = []
    for img in label:
        centres = []
        for v in img.unique():
            if v == 0:
                continue
            m = img == v
            if int(m.sum()) < min_pixels:
                continue
            centres.append(torch.stack([(cols[m].float().mean() + 0.5) / s,
                                        (rows[m].float().mean() + 0.5) / s]))
        out.append(torch.stack(centres) if centres else torch.zeros(0, 2))
    return out


def count_errors(x: Tensor, positions: Tensor, match_px: float = 2.0) -> Tensor:
    """``(B,)`` requested objects the pixel detector misses plus the objects it finds away
    from every requested position (``positions`` ``(B, K, 2)``)."""
    s = x.shape[-1]
    errors = []
    for det, req in zip(blobs(x), positions):
        if len(det) == 0:
            errors.append(float(len(req)))
            continue
        d = torch.cdist(det, req.float()) * s  # (D, K) in pixels
        missing = int((d.min(0).values > match_px).sum())
        spurious = int((d.min(1).values > match_px).sum())
        errors.append(float(missing + spurious))
    return torch.tensor(errors, dtype=torch.float64)


def count_reward(positions: Tensor) -> Callable[[Tensor], Tensor]:
    """``r(x) = −(missing + spurious)`` per chain (row ``j`` is graded against
    ``positions[j]``): an integer count, not differentiable."""
    def count(x: Tensor) -> Tensor:
        return -count_errors(x, positions)
    return count


def detector_accuracy(n: int = 1000, seed: int = 4343) -> dict:
    """The pixel detector on held-out real scenes: how often its count of errors is 0 (every
    object found, nothing else)."""
    scenes = make_scenes(n, torch.Generator().manual_seed(seed), SceneSpec())
    exact = []
    for x, pos, k in zip(scenes["x"], scenes["pos"], scenes["count"]):
        exact.append(float(count_errors(x[None], pos[None, :int(k)])[0] == 0))
    return {"exact_count": sum(exact) / n, "scenes": n}


# ----------------------------------------------------------------- methods
def method(name: str) -> tuple[str, int, str | None]:
    """``(kind, N, potential)`` of a method name: ``reverse``, ``guided`` (reverse diffusion
    following the reward's gradient), ``best-of-N``, ``fkc-N``, ``fkc+reward-N`` or
    ``fkc+reward:POTENTIAL-N``."""
    if name in ("reverse", "guided"):
        return name, 1, None
    head, _, count = name.rpartition("-")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"unknown method {name!r}: reverse, best-of-N, fkc-N, fkc+reward-N, "
                         "fkc+reward:max-N")
    if head == "best-of":
        return "best-of", int(count), None
    if head == "fkc":
        return "fkc", int(count), None
    if head.startswith("fkc+reward"):
        potential = head.partition(":")[2] or "difference"
        return "fkc+reward", int(count), potential
    raise ValueError(f"unknown method {name!r}")


def draw(model: Callable[[int], DiffusionModel], reward_fn: Callable[[int], Callable],
         name: str, n: int, seed: int, levels: int, temperature: float,
         ess_threshold: float = 0.5) -> tuple[Tensor, dict]:
    """``n`` images by method ``name`` and its cost per image (network evaluations, reward
    calls). ``model(m)`` and ``reward_fn(m)`` are the composition and the reward for runs whose
    rows hold each image's condition ``m`` times in a row (a population of ``m`` particles)."""
    kind, k, potential = method(name)
    t0 = time.perf_counter()
    if kind == "reverse":
        r = rc.sample(model(1), n, "reverse", num_levels=levels, seed=seed, clip=(-1.0, 1.0))
        x, per_image = r.x, 1
    elif kind == "guided":  # one backward pass through the network per level on top
        tilted = model(1) * rc.reward(reward_fn(1), temperature=temperature,
                                      differentiable=True)
        r = rc.sample(tilted, n, "reverse", num_levels=levels, seed=seed, clip=(-1.0, 1.0))
        x, per_image = r.x, 1
    elif kind == "best-of":
        tilted = model(1) * rc.reward(reward_fn(1), temperature=temperature)
        r = rc.sample(tilted, n, rc.samplers.BestOf("reverse", k), num_levels=levels,
                      seed=seed, clip=(-1.0, 1.0))
        x, per_image = r.x, 1  # BestOf counts its candidates already
    else:
        groups = torch.arange(n * k) // k
        target = model(k)
        if kind == "fkc+reward":
            target = target * rc.reward(reward_fn(k), temperature=temperature,
                                        potential=potential)
        r = rc.sample(target, n * k, "fkc", num_levels=levels, seed=seed, clip=(-1.0, 1.0),
                      groups=groups, ess_threshold=ess_threshold)
        x, per_image = r.x[::k], k  # one image per population
    cost = {"network_evals": r.info.network_score_evals * per_image,
            "reward_evals": r.info.reward_evals * per_image,
            "wall_time": time.perf_counter() - t0}
    return x.clamp(-1, 1), cost


def _rate(values: list[float]) -> tuple[float, float]:
    """Mean of 0/1 outcomes over independent images and its binomial standard error."""
    p = statistics.fmean(values)
    return p, math.sqrt(p * (1 - p) / len(values))


def _mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


# ----------------------------------------------------------------- the oracle
def oracle(argv: list[str] | None = None) -> None:
    """The exact check beside the tables: an indicator reward on a two-mode mixture, each
    potential option and reading interval, against the exactly tilted mode weight."""
    from torch.distributions import Normal

    config = parse_config("rewards_oracle", "reward potentials on the oracle", argv)
    torch.set_num_threads(config["threads"])
    means, std, weights, lam = [[-2.0, 0.0], [2.0, 0.0]], 0.5, [0.7, 0.3], config["temperature"]
    model = rc.GaussianMixture(means, stds=std, weights=weights, name="two")
    p = sum(w * (1 - float(Normal(m[0], std).cdf(torch.tensor(0.0))))
            for w, m in zip(weights, means))
    exact = math.exp(1 / lam) * p / (1 - p + math.exp(1 / lam) * p)

    def right(x: Tensor) -> Tensor:
        return (x[:, 0] > 0).double()

    rows, cells = [], []

    def seeds(variant: str, target: DiffusionModel, want: float, **options: object) -> None:
        """One row: the fraction on the right over the seeds, against ``want``."""
        fractions, ess, calls = [], [], 0
        for seed in range(config["seeds"]):
            r = rc.sample(target, config["n"], seed=seed, **options)
            fractions.append(float((r.x[:, 0] > 0).double().mean()))
            ess.append(min(r.info.ess) / config["n"])
            calls = r.info.reward_evals
        mean, se = _mean_se(fractions)
        cells.append({"variant": variant, "fractions": fractions, "min_ess": ess})
        rows.append([variant, f"{mean:.4f} ± {se:.4f}", f"{(mean - want) / se:+.1f}",
                     f"{statistics.fmean(ess):.2f}", calls])

    for variant in config["variants"]:
        potential, _, interval = variant.partition("/")
        factor = rc.reward(right, temperature=lam, potential=potential,
                           interval=int(interval or 1))
        seeds(variant, model * factor, exact, sampler="fkc", num_levels=config["levels"])
    for levels in config["smc_levels"]:  # SMC with the DDPM proposal (no moves)
        smc = {"sampler": "smc", "proposal": "ddpm", "moves": None, "num_levels": levels}
        seeds(f"smc, {levels} levels", model * rc.reward(right, temperature=lam), exact, **smc)
        seeds(f"smc, {levels} levels, no reward", model, p, **smc)
    text = markdown_table(["potential / interval", "P(x₁ > 0)", "(mean − exact) / se",
                           "lowest ESS / n (mean)", "reward calls / chain"], rows)
    text += (f"\n\nExact tilted P(x₁ > 0) = {exact:.4f} (untilted {p:.4f}, the reference of "
             f"the 'no reward' rows); FKC with {config['levels']} levels unless named; "
             f"{config['seeds']} seeds × {config['n']} particles.")
    print(text)
    write_results(config, {"exact": exact, "untilted": p, "cells": cells}, text)


# ----------------------------------------------------------------- attributes
def attributes(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    from recompose.integrations.diffusers import from_pretrained
    from recompose.viz.plots import image_panels

    from .attributes import BLUE, CUBE, RED, SPHERE, composition, correct, load_checker

    config = parse_config("rewards_attributes", "reward factors on attribute AND", argv)
    for name in config["methods"]:
        method(name)
    torch.set_num_threads(config["threads"])
    pipeline = from_pretrained(config["pipeline"])
    comp = composition(pipeline, "and")
    reward_checker, eval_checker = load_checker("reward"), load_checker("eval")
    for net in (reward_checker, eval_checker):
        net.requires_grad_(False)
    bound = presence_reward(reward_checker, [(RED, CUBE), (BLUE, SPHERE)])
    cells, images, samples = [], {}, {}
    jobs = [(m, s) for m in config["methods"] for s in config["seeds"]]
    for name, seed in tqdm(jobs, desc="attribute cells"):
        x, cost = draw(lambda m: comp, lambda m: bound, name, config["n"], seed,
                       config["levels"], config["temperature"], config["ess_threshold"])
        grid_eval, grid_reward = eval_checker.present(x), reward_checker.present(x)
        graded = correct(grid_eval, "and").double().tolist()
        steered = correct(grid_reward, "and").double().tolist()
        same_grid = (grid_eval == grid_reward).flatten(1).all(1).double().tolist()
        cells.append({"method": name, "seed": seed, "eval_correct": graded,
                      "reward_correct": steered, "same_grid": same_grid, **cost})
        samples[f"{name}/s{seed}"] = x.numpy()
        images.setdefault(name, x[:40])
        echo(f"{name:22s} seed {seed}: {statistics.fmean(graded):.2f} (eval checker), "
             f"{statistics.fmean(steered):.2f} (reward checker), {cost['network_evals']} evals"
             f" / image, {cost['wall_time']:.0f} s")
    rows = []
    for name in config["methods"]:
        group = [c for c in cells if c["method"] == name]
        graded = [v for c in group for v in c["eval_correct"]]
        steered = [v for c in group for v in c["reward_correct"]]
        p, se = _rate(graded)
        q, qse = _rate(steered)
        per_seed = [statistics.fmean(c["eval_correct"]) for c in group]
        rows.append([name, f"{p:.2f} ± {se:.2f}", " / ".join(f"{v:.2f}" for v in per_seed),
                     f"{q:.2f} ± {qse:.2f}", group[0]["network_evals"],
                     group[0]["reward_evals"],
                     f"{statistics.fmean(c['wall_time'] for c in group):.0f}"])
    agree = _checker_agreement(cells)
    grids = statistics.fmean(v for c in cells for v in c["same_grid"])
    text = markdown_table(["method", "AND (eval checker)", "per seed", "AND (reward checker)",
                           "net evals / image", "reward calls / image", "s / seed"], rows)
    text += (f"\n\nThe two checkers agree on AND for {agree:.3f} of all images graded "
             f"({len(cells) * config['n']}), and on all 8 colour–shape presences for "
             f"{grids:.3f}.")
    print(text)
    write_results(config, {"cells": cells, "checker_agreement": agree,
                           "grid_agreement": grids}, text)
    np.savez_compressed(Path(config["out"]) / "samples.npz", **samples)
    figures = Path(config["out"]) / "figures"
    figures.mkdir(exist_ok=True)
    image_panels(images, nrow=8, panel_width=2.4).savefig(figures / "and.png", dpi=110)


def _checker_agreement(cells: list[dict]) -> float:
    same = [a == b for c in cells for a, b in zip(c["eval_correct"], c["reward_correct"])]
    return sum(same) / len(same)


# ----------------------------------------------------------------- clevr
def clevr(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    from recompose.viz.plots import image_panels

    from .clevr import Checker, compose_positions, load_clevr, request_positions, score_images

    config = parse_config("rewards_clevr", "a count reward on CLEVR compositions", argv)
    for name in config["methods"]:
        method(name)
    torch.set_num_threads(config["threads"])
    model = load_clevr(config["parameterization"])
    checker = Checker()
    cells, images = [], {}
    jobs = [(m, k, s) for k in config["ks"] for m in config["methods"] for s in config["seeds"]]
    for name, k, seed in tqdm(jobs, desc="clevr cells"):
        positions = request_positions(config["n"], k, seed=10_000 * k + seed)
        x, cost = draw(
            lambda m, p=positions: compose_positions(model, p.repeat_interleave(m, 0)),
            lambda m, p=positions: count_reward(p.repeat_interleave(m, 0)), name,
            config["n"], seed, config["levels"], config["temperature"], config["ess_threshold"])
        metrics = score_images(x, positions, checker)
        held = checker.holds_object(x, positions).all(1).double().tolist()
        spurious = checker.spurious(x, positions).double().tolist()
        cells.append({"method": name, "K": k, "seed": seed, "accuracy": held,
                      "spurious": spurious, "exact": metrics["exact"],
                      "detector_errors": count_errors(x, positions).tolist(), **cost})
        if k == config["figure_k"]:
            images.setdefault(name, x[:32])
        echo(f"{name:22s} K={k} seed {seed}: accuracy {metrics['accuracy']:.2f}, spurious "
             f"{metrics['spurious']:.2f}, {cost['network_evals']} evals / image")
    rows_out = []
    for k in config["ks"]:
        for name in config["methods"]:
            group = [c for c in cells if c["method"] == name and c["K"] == k]
            acc, se = _rate([v for c in group for v in c["accuracy"]])
            sp, sp_se = _mean_se([v for c in group for v in c["spurious"]])
            exact = statistics.fmean(c["exact"] for c in group)
            rows_out.append([k, name, f"{acc:.2f} ± {se:.2f}", f"{sp:.2f} ± {sp_se:.2f}",
                             f"{exact:.2f}", group[0]["network_evals"],
                             group[0]["reward_evals"]])
    floor = detector_accuracy()
    text = markdown_table(["K", "method", "accuracy (checker)", "spurious / image (checker)",
                           "exact scenes", "net evals / image", "reward calls / image"],
                          rows_out)
    text += (f"\n\nThe pixel detector (the reward) counts every object of a real scene and "
             f"nothing else in {floor['exact_count']:.3f} of {floor['scenes']} held-out scenes.")
    print(text)
    write_results(config, {"cells": cells, "detector": floor}, text)
    figures = Path(config["out"]) / "figures"
    figures.mkdir(exist_ok=True)
    image_panels(images, nrow=8, panel_width=2.4).savefig(figures / "clevr.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"attributes": attributes, "clevr": clevr, "oracle": oracle}
    if not argv or argv[0] not in commands:
        raise SystemExit("usage: python -m experiments.rewards attributes|clevr|oracle "
                         "[--KEY VALUE ...] (configs/rewards_NAME.json)")
    script(commands[argv[0]])(argv[1:])


if __name__ == "__main__":
    main()
