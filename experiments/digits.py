r"""Guidance on sklearn's 8×8 digits: classifier guidance and classifier-free guidance,
reverse diffusion vs annealed MCMC (the CPU-scale version of R3's ImageNet experiment).

Guided targets, built with the algebra from the shipped digits models
(:mod:`.digits_models`); ``y`` is the requested class, one per chain (``i mod 10``):

* classifier guidance  ``p_t(x) · p_t(y | x)^λ``        ``guide(uncond, ClassifierFactor, λ)``
* classifier-free      ``p_t(x) · (p_t(x|y)/p_t(x))^w``  ``cfg(cond.given(y), cond, w)``

(``p_t(x)`` is the unconditional energy model for classifier guidance; for CFG it is the
conditional network's null condition, so both terms cost one batched call.) Kind ``none`` is
the unconditional model alone (its FD measures the model, not the guidance). ``models``
picks the networks: ``energy`` (trained from scratch, the default), ``distilled`` (energies
distilled from the score models) or ``score``. All five samplers
run on the same energy-parameterised composite: T levels, K MCMC steps per level after a DDPM
predictor step, Tweedie denoising at the end; samples are clipped to the data range ``[−1, 1]``.

Evaluation uses only the separately trained clean CNN ``digits-evaluator`` and the held-out
split (500 images, 50 per class), never anything used in generation:

* accuracy — evaluator's argmax equals the requested class;
* FD — Fréchet distance in the evaluator's 32-d feature space to the held-out digits, overall
  and averaged over the 10 per-class distances (100 samples vs 50 real per class: noisy, read
  it against the real-data floor);
* diversity — mean pairwise pixel distance between samples of the same requested class,
  averaged over classes (real held-out digits give the reference).

The "real data" row scores the 1,297 training digits exactly like samples (the floor).

Run: ``python -m experiments.digits`` (protocol: ``experiments/configs/digits.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "digits: guidance on 8×8 digits, ≈ 38 min on 2 cores with the checked-in "
         "protocol (loading, cells in workers, evaluation)")

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recompose.compose import cfg, guide
from recompose.data.digits import digits_split
from recompose.io import run_folder
from recompose.metrics import frechet_distance, mean_pairwise_distance
from recompose.models.base import DiffusionModel
from recompose.models.classifier import ClassifierFactor
from recompose.models.loading import load_model, shipped_path
from recompose.sampling import sample
from recompose.training.classifier import load_classifier

from .common import (
    VARIANTS,
    map_in_workers,
    markdown_table,
    mean_or_none,
    parse_config,
    sampler_args,
    script,
)
from .evaluators import load_evaluator

__all__ = ["KINDS", "SAMPLERS", "SCALES", "digits_file", "load_digits", "guided",
           "evaluate", "run", "main"]

KINDS = ("classifier", "cfg", "none")
# the config runs the first five
SAMPLERS = ("reverse", "ula", "uhmc", "mala", "hmc", "smc", "fkc")
SCALES = (1.0, 3.0, 10.0)
ORDER = SAMPLERS + tuple(VARIANTS)  # table order, with the score-only Metropolis variants


def digits_file(name: str) -> Path:
    """Path of a shipped digits file (``digits-energy``, ``digits-evaluator``, …)."""
    return shipped_path(name)


def load_digits(parameterization: str = "energy") -> dict:
    """The generation models: ``uncond``, ``cond`` (CFG network) and ``noisy_clf``."""
    uncond = load_model(digits_file(f"digits-{parameterization}"), name="p(x)")
    cond = load_model(digits_file(f"digits-cond-{parameterization}"), name="p(x|∅)")
    clf, _ = load_classifier(digits_file("digits-noisy-clf"))
    return {"uncond": uncond, "cond": cond, "noisy_clf": clf}


def guided(kind: str, scale: float, labels: Tensor, models: dict) -> DiffusionModel:
    """The guided composite for requested ``labels`` (one per chain)."""
    if kind == "classifier":
        u = models["uncond"]
        factor = ClassifierFactor(models["noisy_clf"], labels, u.schedule, u.event_shape,
                                  name="p(y|x)")
        return guide(u, factor, scale)
    if kind == "cfg":
        c = models["cond"]
        return cfg(c.given(labels, name="p(x|y)"), c, scale)
    if kind == "none":
        return models["uncond"]
    raise KeyError(f"unknown guidance kind {kind!r}; choose one of {KINDS}")


def labels_for(n: int) -> Tensor:
    return torch.arange(n) % 10


class Evaluator:
    """The clean evaluator and the held-out reference features."""

    def __init__(self) -> None:
        self.net, self.config = load_evaluator("digits-evaluator")
        self.x_test, self.y_test = digits_split("test")
        self.f_test = self.features(self.x_test)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.net(x.float()).argmax(1)

    def accuracy_on_held_out(self) -> float:
        return float((self.predict(self.x_test) == self.y_test).float().mean())


def evaluate(x: Tensor, y: Tensor, ev: Evaluator) -> dict:
    """Accuracy, FD (overall, mean per class) and diversity of samples ``x`` for labels ``y``."""
    x = x.clamp(-1, 1)
    f = ev.features(x)
    per_class_fd, diversity = [], []
    for c in range(10):
        mask, ref = y == c, ev.y_test == c
        per_class_fd.append(frechet_distance(f[mask], ev.f_test[ref]))
        diversity.append(mean_pairwise_distance(x[mask]))
    return {"accuracy": float((ev.predict(x) == y).float().mean()),
            "fd": frechet_distance(f, ev.f_test),
            "fd_class": statistics.mean(per_class_fd), "fd_per_class": per_class_fd,
            "diversity": statistics.mean(diversity)}


def _run_cell(task: dict) -> dict:
    models = load_digits(task.get("models", "energy"))
    y = labels_for(task["n"])
    model = guided(task["kind"], task["scale"], y, models)
    name, options = sampler_args(task["sampler"])
    if name in ("smc", "fkc"):  # one population per label (chains with the same target)
        options = {**options, "groups": y}
    r = sample(model, task["n"], name, num_levels=task["num_levels"],
               num_steps=None if name in ("reverse", "fkc") else task["num_steps"],
               seed=task["seed"], progress=False, **options)
    return {**task, "x": r.x.clamp(-1, 1).numpy(), "info": r.info.to_dict()}


def _summary(cells: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(c["kind"], c["scale"], c["sampler"]) for c in cells},
                  key=lambda k: (KINDS.index(k[0]), k[1], ORDER.index(k[2])))
    for kind, scale, sampler in keys:
        group = sorted((c for c in cells if (c["kind"], c["scale"], c["sampler"])
                        == (kind, scale, sampler)), key=lambda c: c["seed"])
        ms = [c["metrics"] for c in group]
        info = group[0]["info"]
        row = {"kind": kind, "scale": scale, "sampler": sampler, "seeds": len(group),
               "network_evals": info["network_score_evals"],
               "network_energy_evals": info["network_energy_evals"],
               "acceptance": mean_or_none([c["info"]["mean_acceptance"] for c in group]),
               "wall_time": statistics.mean(c["info"]["wall_time"] for c in group)}
        for k in ("accuracy", "fd", "fd_class", "diversity"):
            vals = [m[k] for m in ms]
            row[k] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append(row)
    return rows


def real_floor(ev: Evaluator) -> dict:
    x, y = digits_split("train")
    return evaluate(x, y, ev) | {"evaluator_held_out_accuracy": ev.accuracy_on_held_out()}


def markdown(rows: list[dict], floor: dict) -> str:
    head = ["guidance", "scale", "sampler", "accuracy ↑", "FD ↓", "FD per class ↓", "diversity",
            "net evals / sample", "acceptance"]
    lines = [["real digits (train split)", "–", "–", f"{floor['accuracy']:.3f}",
              f"{floor['fd']:.2f}", f"{floor['fd_class']:.2f}", f"{floor['diversity']:.2f}",
              "–", "–"]]
    for r in rows:
        mh = sampler_args(r["sampler"])[0] in ("mala", "hmc", "smc")
        acc = f"{r['acceptance']:.2f}" if mh else "–"
        lines.append([r["kind"], f"{r['scale']:g}", r["sampler"],
                      f"{r['accuracy'][0]:.3f} ± {r['accuracy'][1]:.3f}",
                      f"{r['fd'][0]:.2f} ± {r['fd'][1]:.2f}",
                      f"{r['fd_class'][0]:.2f} ± {r['fd_class'][1]:.2f}",
                      f"{r['diversity'][0]:.2f}", r["network_evals"], acc])
    return markdown_table(head, lines)


def _figures(out: Path, cells: list[dict], scales: tuple[float, ...]) -> None:
    from recompose.viz.plots import image_panels

    for kind in {c["kind"] for c in cells}:
        for scale in scales:
            panels = {}
            for s in ORDER:
                hit = [c for c in cells if (c["kind"], c["scale"], c["sampler"], c["seed"])
                       == (kind, scale, s, 0)]
                if hit:  # rows = classes 0…9, 10 samples each
                    x = torch.as_tensor(hit[0]["x"][:100])
                    order = torch.argsort(labels_for(len(x)), stable=True)
                    panels[s] = x[order]
            if panels:
                fig = image_panels(panels, nrow=10)
                fig.suptitle(f"{kind} guidance, scale {scale:g} (row = requested digit)",
                             fontsize=10)
                fig.tight_layout(rect=(0, 0, 1, 0.92))
                fig.savefig(out / f"digits_{kind}_scale{scale:g}.png", dpi=110)


def run(out: Path, n: int = 1000, seeds: tuple[int, ...] = (0, 1, 2),
        scales: tuple[float, ...] = SCALES, kinds: tuple[str, ...] = KINDS,
        samplers: tuple[str, ...] = SAMPLERS, num_levels: int = 100, num_steps: int = 3,
        workers: int = 2, progress: bool = True, overwrite: bool = False,
        models: str = "energy") -> dict:
    """Sample every cell in worker processes, evaluate, write outputs atomically into ``out``."""
    from tqdm.auto import tqdm

    out = Path(out)
    config = {"n": n, "seeds": list(seeds), "scales": list(scales), "kinds": list(kinds),
              "samplers": list(samplers), "num_levels": num_levels, "num_steps": num_steps,
              "workers": workers, "labels": "i mod 10", "clip": [-1, 1], "models": models}
    start = time.perf_counter()
    ev = Evaluator()
    tasks = [{"kind": k, "scale": float(w), "sampler": s, "seed": seed, "n": n,
              "num_levels": num_levels, "num_steps": num_steps, "models": models}
             for k in kinds for w in (scales if k != "none" else (1.0,)) for s in samplers
             for seed in seeds]
    cost = {"reverse": 1, "fkc": 1, "ula": 4, "uhmc": 4, "mala": 4, "hmc": 10, "smc": 10,
            "mala-path": 7, "mala-trapezoid": 4, "hmc-path": 19, "hmc-trapezoid": 10,
            "fkc-ula": 3, "fkc-uhmc": 5}
    tasks.sort(key=lambda t: -cost[t["sampler"]] * (2 if t["kind"] == "cfg" else 1))
    cells = map_in_workers(_run_cell, tasks, workers, "digits cells", progress)
    for cell in tqdm(cells, desc="evaluate cells", disable=not progress):
        cell["metrics"] = evaluate(torch.as_tensor(cell["x"]), labels_for(n), ev)
    rows = _summary(cells)
    floor = real_floor(ev)
    table = markdown(rows, floor)
    elapsed = time.perf_counter() - start
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(
            {"rows": rows, "real": floor, "elapsed_s": elapsed,
             "cells": [{k: v for k, v in c.items() if k != "x"} for c in cells]}, indent=1))
        np.savez_compressed(tmp / "samples.npz", **{
            f"{c['kind']}/{c['scale']:g}/{c['sampler']}/{c['seed']}": c["x"] for c in cells})
        (tmp / "table.md").write_text(table + "\n")
        _figures(tmp, cells, scales)
    return {"rows": rows, "real": floor, "table": table, "elapsed_s": elapsed}


@script
def main(argv: list[str] | None = None) -> None:
    c = parse_config("digits", __doc__, argv)
    res = run(c["out"], n=c["n"], seeds=tuple(range(c["seeds"])), scales=tuple(c["scales"]),
              kinds=tuple(c["kinds"]), samplers=tuple(c["samplers"]), num_levels=c["levels"],
              num_steps=c["mcmc_steps"], workers=c["workers"], overwrite=c["overwrite"],
              models=c["models"])
    print(res["table"])
    print(f"\n{res['elapsed_s']:.0f} s; outputs in {c['out']}")


if __name__ == "__main__":
    main()
