r"""Multi-object scenes from a single-object position model (R3's CLEVR experiment, 16 px).

Composition (R3 §1.3): with ``A`` the position-conditioned model and ``A`` itself its null
condition ``p_t(x)``,

    p_t(x | p_1, …, p_K) ∝ p_t(x) · Π_k p_t(x | p_k)/p_t(x) = p_t(x)^{1−K} · Π_k p_t(x | p_k),

built as ``A ** (1 − K) * A.given(p_1) * … * A.given(p_K)`` (:func:`compose_positions`);
the ``K + 1`` terms share one network, so every evaluation is one batched call on
``(K + 1)·B`` inputs (:mod:`recompose.models.parameterization`). ``plain=True`` gives the bare
product ``Π_k p_t(x | p_k)``.

Every sampler runs ``T`` levels with a DDPM predictor step between levels and Tweedie's
denoiser at the end, all with ``x̂₀`` clipped to the image range ``[−1, 1]`` (DDPM's
``clip_denoised``; without it, reverse diffusion at ``T = 50`` diverges even for ``K = 1``).

Evaluation: the separately trained ``clevr-checker`` (a presence detector trained only on
generator ground truth) finds objects; a requested position *holds an object* when the
checker's presence probability exceeds ½ within one pixel of it. Per image: composition
accuracy (all ``K`` requested positions hold an object), per-position recall, and spurious
objects (detections — local maxima of the presence map above ½ — farther than
``match_px`` from every requested position). Requested positions are drawn like real scenes
(non-overlapping, seeded per image). The checker's own accuracy on held-out real scenes is
reported with every run.

Run: ``python -m experiments.clevr`` (reduced protocol: ``experiments/configs/clevr.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "clevr: multi-object CLEVR-style scenes, ≈ 18 min on 2 cores with the "
         "checked-in protocol (loading the models and the checker, then the cells)")

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recompose.compose import conjunction
from recompose.data.clevr import SceneSpec, make_scenes, object_positions
from recompose.io import run_folder
from recompose.models.base import DiffusionModel
from recompose.models.loading import load_model, shipped_path
from recompose.sampling import sample

from .common import markdown_table, parse_config, sampler_args, script
from .evaluators import WEIGHTS_DIR, load_evaluator

__all__ = ["compose_positions", "Checker", "load_clevr", "position_effect", "request_positions",
           "score_images", "run", "main"]

CELLS = [("score", "reverse"), ("score", "ula"), ("score", "uhmc"),
         ("energy", "reverse"), ("energy", "ula"), ("energy", "uhmc"),
         ("energy", "mala"), ("energy", "hmc")]


def load_clevr(parameterization: str = "energy") -> DiffusionModel:
    """The shipped position model (``score``, ``energy`` or ``distilled``), or ``late-score``:
    the late-conditioned study model in ``experiments/weights`` (not shipped: it fails the
    accuracy it was built for, docs/results.md §6)."""
    path = WEIGHTS_DIR / f"clevr-{parameterization}.safetensors"
    return load_model(path if path.is_file() else shipped_path(f"clevr-{parameterization}"),
                      name="A")


def compose_positions(model: DiffusionModel, positions: Tensor, plain: bool = False
                      ) -> DiffusionModel:
    """``p(x)^{1−K} Π_k p(x | p_k)`` for positions ``(K, 2)`` or per chain ``(B, K, 2)``."""
    positions = torch.as_tensor(positions, dtype=torch.float32)
    k = positions.shape[-2]
    return conjunction(model, [positions[..., j, :] for j in range(k)], plain=plain,
                       names=[f"A|p{j + 1}" for j in range(k)])


def position_effect(model: DiffusionModel, ts: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8),
                    n: int = 64, seed: int = 1) -> dict[float, float]:
    """How much the position changes the network's ``ε̂``: ``‖ε̂(x_t, t, p) − ε̂(x_t, t, ∅)‖ /
    ‖ε̂(x_t, t, ∅)‖`` on noised empty scenes (all pixels −1), random positions, per ``t``."""
    net, out = model.net, {}
    for t in ts:
        gen = torch.Generator().manual_seed(seed)
        tt = torch.full((n,), t)
        alpha, sigma = (v[:, None, None, None] for v in model.schedule(tt))
        x = -alpha + sigma * torch.randn((n, *model.event_shape), generator=gen)
        c = net.encode_condition(torch.rand(n, 2, generator=gen) * 0.6 + 0.2)
        with torch.no_grad():
            cond, null = net(x, tt, c), net(x, tt, None)
        out[t] = float((cond - null).norm() / null.norm())
    return out


def request_positions(n: int, k: int, seed: int, spec: SceneSpec | None = None) -> Tensor:
    """``(n, k, 2)`` non-overlapping requested positions, drawn like real scenes."""
    spec = spec or SceneSpec()
    pos = object_positions(n, torch.full((n,), k), spec, torch.Generator().manual_seed(seed))
    return pos[:, :k]


class Checker:
    """Presence detector on images ``(B, 3, S, S)``; never trained on generated images."""

    def __init__(self, threshold: float = 0.5, match_px: float = 1.5) -> None:
        self.net, self.config = load_evaluator("clevr-checker")
        self.threshold, self.match_px = threshold, match_px

    @torch.no_grad()
    def presence(self, x: Tensor) -> Tensor:
        """``(B, S, S)`` probability that a pixel is within one pixel of an object centre."""
        return torch.sigmoid(self.net(x.float().clamp(-1, 1)))[:, 0]

    def holds_object(self, x: Tensor, positions: Tensor, prob: Tensor | None = None) -> Tensor:
        """``(B, K)`` bool: presence above threshold in the 3×3 pixels around each position."""
        prob = self.presence(x) if prob is None else prob
        s = prob.shape[-1]
        window = F.max_pool2d(prob[:, None], 3, stride=1, padding=1)[:, 0]
        ij = (positions * s).floor().long().clamp(0, s - 1)  # (B, K, 2) as (col, row)
        b = torch.arange(len(x))[:, None].expand(ij.shape[:2])
        return window[b, ij[..., 1], ij[..., 0]] > self.threshold

    def detections(self, prob: Tensor) -> list[Tensor]:
        """Per image, ``(D, 2)`` detected centres (normalised): local maxima above threshold."""
        peak = (prob == F.max_pool2d(prob[:, None], 3, stride=1, padding=1)[:, 0])
        peak &= prob > self.threshold
        s = prob.shape[-1]
        return [(torch.nonzero(p).flip(1).float() + 0.5) / s for p in peak]

    def spurious(self, x: Tensor, positions: Tensor, prob: Tensor | None = None) -> Tensor:
        """``(B,)`` detections not within ``match_px`` of any requested position."""
        prob = self.presence(x) if prob is None else prob
        s = prob.shape[-1]
        out = []
        for det, req in zip(self.detections(prob), positions):
            if len(det) == 0:
                out.append(0)
                continue
            d = torch.cdist(det, req.float()) * s
            out.append(int((d.min(1).values > self.match_px).sum()))
        return torch.tensor(out, dtype=torch.float32)


def score_images(x: Tensor, positions: Tensor, checker: Checker, particles: int = 1) -> dict:
    """Composition accuracy, per-position recall and spurious objects per image; with
    ``particles`` consecutive images per layout also each layout's accuracy and how many of its
    images are distinct (resampling duplicates particles)."""
    prob = checker.presence(x)
    held = checker.holds_object(x, positions, prob)
    spurious = checker.spurious(x, positions, prob)
    out = {"accuracy": float(held.all(1).float().mean()),
           "recall": float(held.float().mean()),
           "spurious": float(spurious.mean()),
           "exact": float((held.all(1) & (spurious == 0)).float().mean())}
    if particles > 1:
        per = x.reshape(-1, particles, x[0].numel())
        gaps = torch.cdist(per, per)  # (layouts, m, m)
        same = (gaps < 1e-3).float().sum(-1)  # copies of each image in its layout, itself incl.
        out["layout_accuracy"] = held.all(1).float().reshape(-1, particles).mean(1).tolist()
        out["distinct_fraction"] = float((1.0 / same).sum(-1).mean() / particles)
    return out


def checker_accuracy(checker: Checker, n: int = 1000, seed: int = 4242) -> dict:
    """The checker on held-out *real* scenes: recall at true centres, false-positive rate at
    random points ≥ 3 px from every object, exact object-count accuracy."""
    spec = SceneSpec()
    scenes = make_scenes(n, torch.Generator().manual_seed(seed), spec)
    x, pos, count = scenes["x"], scenes["pos"], scenes["count"]
    prob = checker.presence(x)
    valid = ~torch.isnan(pos[..., 0])
    held = checker.holds_object(x, pos.nan_to_num(0.5), prob)
    recall = float(held[valid].float().mean())
    gen = torch.Generator().manual_seed(seed + 1)
    q = spec.margin + (1 - 2 * spec.margin) * torch.rand(n, 1, 2, generator=gen)
    far = (q - pos.nan_to_num(-10.0)).norm(dim=-1).min(1).values * spec.size >= 3.0
    fp = float(checker.holds_object(x[far], q[far], prob[far]).float().mean())
    counts = torch.tensor([len(d) for d in checker.detections(prob)])
    return {"recall": recall, "false_positive_rate": fp,
            "balanced_accuracy": 0.5 * (recall + 1 - fp),
            "count_accuracy": float((counts == count).float().mean()), "scenes": n}


def _cell(model: DiffusionModel, sampler: str, k: int, n: int, seed: int, num_levels: int,
          num_steps: int, checker: Checker, particles: int = 1) -> dict:
    """``n`` layouts of ``k`` positions, each sampled as ``particles`` images (for SMC / FKC one
    weighted population per layout; every sampler gets the same images per layout)."""
    positions = request_positions(n, k, seed=10_000 * k + seed).repeat_interleave(particles, 0)
    comp = compose_positions(model, positions)
    name, options = sampler_args(sampler)
    if name in ("smc", "fkc"):
        options = {**options, "groups": torch.arange(n).repeat_interleave(particles)}
    r = sample(comp, n * particles, name, num_levels=num_levels, seed=seed,
               num_steps=None if name in ("reverse", "fkc") else num_steps,
               clip=(-1.0, 1.0), progress=False, **options)
    x = r.x.clamp(-1, 1)
    return {"sampler": sampler, "K": k, "seed": seed, "num_steps": num_steps,
            "metrics": score_images(x, positions, checker, particles),
            "network_evals": r.info.network_score_evals,
            "network_energy_evals": r.info.network_energy_evals,
            "acceptance": r.info.mean_acceptance, "wall_time": r.info.wall_time,
            "x": x.numpy(), "positions": positions.numpy()}


def _agg(cells: list[dict], key: str) -> tuple[float, float]:
    vals = [c["metrics"][key] for c in cells]
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _pooled(cells: list[dict]) -> tuple[float, float]:
    """Accuracy over all images of the cell's seeds and its standard error: binomial for one
    image per layout; with several, from the spread of the layouts' accuracies (the images of
    one layout are not independent)."""
    images = sum(len(c["x"]) for c in cells)
    p = sum(c["metrics"]["accuracy"] * len(c["x"]) for c in cells) / images
    layouts = [a for c in cells for a in c["metrics"].get("layout_accuracy", [])]
    if len(layouts) > 1:
        return p, statistics.stdev(layouts) / len(layouts) ** 0.5
    return p, (p * (1 - p) / images) ** 0.5


def run(out: Path, n: int = 32, seeds: tuple[int, ...] = (0,),
        ks: tuple[int, ...] = (1, 2, 3, 4, 5),
        table_cells: tuple[tuple[str, str], ...] = tuple(CELLS),
        num_levels: int = 50, num_steps: int = 4, steps_sweep: tuple[int, ...] = (1, 2, 4, 8),
        sweep_k: int = 4, sweep_samplers: tuple[str, ...] = ("ula", "mala", "hmc"),
        threads: int = 2, progress: bool = True, overwrite: bool = False,
        sweep_model: str = "energy", particles: int = 1) -> dict:
    """Accuracy vs K for every sampler cell, accuracy vs MCMC steps, image grids; all outputs
    written atomically into ``out``."""
    from tqdm.auto import tqdm

    torch.set_num_threads(threads)
    out = Path(out)
    config = {"n": n, "seeds": list(seeds), "ks": list(ks), "num_levels": num_levels,
              "num_steps": num_steps, "steps_sweep": list(steps_sweep), "sweep_k": sweep_k,
              "sweep_samplers": list(sweep_samplers), "sweep_model": sweep_model,
              "composition": "A**(1-K) * Π A|p_k",
              "cells": [f"{p}/{s}" for p, s in table_cells],
              "clip": [-1.0, 1.0], "particles": particles,
              "threads": threads}
    start = time.perf_counter()
    checker = Checker()
    models = {p: load_clevr(p) for p in {p for p, _ in table_cells} | {sweep_model}}
    jobs = [("k", p, s, k, seed, num_steps) for p, s in table_cells for k in ks
            for seed in seeds]
    jobs += [("steps", sweep_model, s, sweep_k, seed, m) for s in sweep_samplers
             for m in steps_sweep if m != num_steps for seed in seeds]
    cells = []
    for kind, p, s, k, seed, m in tqdm(jobs, desc="clevr cells", disable=not progress):
        cells.append({"table": kind, "parameterization": p,
                      **_cell(models[p], s, k, n, seed, num_levels, m, checker, particles)})
    floor = checker_accuracy(checker)
    rows = []
    for p, s in table_cells:
        for k in ks:
            group = [c for c in cells if (c["table"], c["parameterization"], c["sampler"],
                                          c["K"]) == ("k", p, s, k)]
            rows.append({"parameterization": p, "sampler": s, "K": k,
                         **{key: _agg(group, key) for key in ("accuracy", "recall", "spurious")},
                         "pooled_accuracy": _pooled(group),
                         "distinct_fraction": statistics.mean(
                             c["metrics"].get("distinct_fraction", 1.0) for c in group),
                         "network_evals": group[0]["network_evals"],
                         "acceptance": statistics.mean(c["acceptance"] for c in group)})
    sweep = []
    for s in sweep_samplers:
        for m in sorted(set(steps_sweep) | {num_steps}):
            group = [c for c in cells if c["parameterization"] == sweep_model
                     and c["sampler"] == s and c["K"] == sweep_k and c["num_steps"] == m]
            if group:
                sweep.append({"sampler": s, "num_steps": m,
                              "accuracy": _agg(group, "accuracy"),
                              "recall": _agg(group, "recall"),
                              "network_evals": group[0]["network_evals"]})
    rev = [c for c in cells if (c["parameterization"], c["sampler"], c["K"]) ==
           (sweep_model, "reverse", sweep_k)]
    if rev and sweep:
        sweep.insert(0, {"sampler": "reverse", "num_steps": 0,
                         "accuracy": _agg(rev, "accuracy"), "recall": _agg(rev, "recall"),
                         "network_evals": rev[0]["network_evals"]})
    elapsed = time.perf_counter() - start
    tables = markdown(rows, sweep, floor, ks, n * len(seeds), particles)
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(
            {"rows": rows, "sweep": sweep, "checker": floor, "elapsed_s": elapsed}, indent=1))
        np.savez_compressed(tmp / "samples.npz", **{
            f"{c['parameterization']}/{c['sampler']}/K{c['K']}/m{c['num_steps']}/s{c['seed']}":
            c["x"] for c in cells})
        (tmp / "table.md").write_text(tables + "\n")
        _figures(tmp, cells, 3 if 3 in ks else ks[-1], num_steps)
    return {"rows": rows, "sweep": sweep, "checker": floor, "table": tables,
            "elapsed_s": elapsed}


def markdown(rows: list[dict], sweep: list[dict], floor: dict, ks: tuple[int, ...],
             layouts: int, particles: int = 1) -> str:
    head = ["model", "sampler", *(f"K={k}" for k in ks), "recall", "spurious",
            "net evals / image (K=max)"] + (["distinct images / layout"] if particles > 1 else [])
    table = []
    for p, s in dict.fromkeys((r["parameterization"], r["sampler"]) for r in rows):
        cell = [r for r in rows if (r["parameterization"], r["sampler"]) == (p, s)]
        if cell:
            last = cell[-1]
            table.append([p, s, *(f"{r['pooled_accuracy'][0]:.2f} ± "
                                  f"{r['pooled_accuracy'][1]:.2f}" for r in cell),
                          f"{last['recall'][0]:.2f}", f"{last['spurious'][0]:.2f}",
                          last["network_evals"]]
                         + ([f"{last['distinct_fraction'] * particles:.1f} of {particles}"]
                            if particles > 1 else []))
    steps = [[r["sampler"], r["num_steps"], f"{r['accuracy'][0]:.2f}",
              f"{r['recall'][0]:.2f}", r["network_evals"]] for r in sweep]
    per = (f"{layouts} layouts × {particles} images per cell (standard error over layouts)"
           if particles > 1 else f"{layouts} images per cell (binomial standard error)")
    return "\n".join([
        f"Composition accuracy (all K objects present) ± standard error, {per}; recall / "
        "spurious objects per image at K = max:", "",
        markdown_table(head, table), "",
        *(["Accuracy against MCMC steps per level:", "",
           markdown_table(["sampler", "steps / level", "accuracy", "recall",
                           "net evals / image"], steps), ""] if steps else []),
        f"Checker on {floor['scenes']} held-out real scenes: recall {floor['recall']:.3f}, "
        f"false-positive rate {floor['false_positive_rate']:.3f}, balanced accuracy "
        f"{floor['balanced_accuracy']:.3f}, exact object count {floor['count_accuracy']:.3f}."])


def _figures(out: Path, cells: list[dict], k: int, num_steps: int) -> None:
    from recompose.viz.plots import image_panels

    panels, markers = {}, None
    for p, s in dict.fromkeys((c["parameterization"], c["sampler"]) for c in cells):
        hit = [c for c in cells if (c["parameterization"], c["sampler"], c["K"], c["seed"],
                                    c["num_steps"]) == (p, s, k, 0, num_steps)]
        if hit:
            panels[f"{s} ({p})"] = torch.as_tensor(hit[0]["x"][:16])
            markers = torch.as_tensor(hit[0]["positions"][:16])
    if panels:
        fig = image_panels(panels, nrow=4, panel_width=2.4, markers=markers, ncols=4)
        fig.suptitle(f"K = {k} requested positions (rings)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        fig.savefig(out / f"clevr_K{k}.png", dpi=130)


@script
def main(argv: list[str] | None = None) -> None:
    c = parse_config("clevr", __doc__, argv)
    table_cells = tuple(tuple(cell.split("/")) for cell in c["cells"])
    res = run(c["out"], n=c["n"], seeds=tuple(range(c["seeds"])), ks=tuple(c["ks"]),
              table_cells=table_cells,
              num_levels=c["levels"], num_steps=c["mcmc_steps"],
              steps_sweep=tuple(c["steps_sweep"]), sweep_k=c["sweep_k"],
              sweep_samplers=tuple(c["sweep_samplers"]), threads=c["threads"],
              overwrite=c["overwrite"], sweep_model=c["sweep_model"],
              particles=c["particles"])
    print(res["table"])
    print(f"\n{res['elapsed_s']:.0f} s; outputs in {c['out']}")


if __name__ == "__main__":
    main()
