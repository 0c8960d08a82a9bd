r"""Spatial composition (R3's tapestry): canvases larger than the models, one condition per crop.

A canvas density is the product of crop densities (:func:`recompose.tapestry`,
``overlap="product"``); the usual shortcut, reverse diffusion on crop scores averaged per pixel
(MultiDiffusion), is the ``reverse-average`` cell (``overlap="average"``).

**CLEVR canvases** from the 16×16 position model (§6), each window the conjunction of the
positions it must hold, ``p(x)^{1−K} Π_k p(x | p_k)`` (``experiments.clevr.compose_positions``):

* ``wide``: 16×40 from four 16×16 windows at column stride 8. Objects sit in five 3-px-wide
  column strips centred at x = 4, 12, 20, 28, 36 (any row in [2.5, 13.5]), one object per strip:
  every window holds its two strips' objects whole (≥ 2.5 px from its edges, as in training
  scenes), and no object touches a window that does not request it. So each window requests
  K = 2 and the five objects are each requested by one or two windows.
* ``square``: 24×24 from four 16×16 windows at offsets (0|8, 0|8) — four 16×16 windows cannot
  overlap on 32×32 — with objects in the four corner cells and the centre cell of the 3×3 grid
  of 3×3-px cells at 8-px pitch: each window requests its corner and the shared centre (K = 2);
  the four edge cells, each in the overlap of two windows, stay empty.

Metrics, with the ``clevr-checker`` (§6): canvas accuracy (every window holds all of its
requested objects, the checker run on each window), window accuracy, spurious objects per canvas
(detections on the whole canvas farther than 1.5 px from every requested object) and the share
of them in overlaps (pixels covered by two or more windows: the seams), and the Fréchet distance
of windows to windows of real canvases (the checker's pooled features: mean and max of its last
hidden layer; real canvases are rendered with the same layout, another seed; the real-vs-real
distance at the same sample size is the floor).

**Digit strips**: 8×20 from three 8×8 crops at column stride 6 (two shared columns between
neighbours; three 8×8 crops cannot overlap on 8×24), each crop its own digit under classifier-
free guidance of the class-conditional digits model (§5), ``cfg(A.given(y_k), A, w)``, with
``x̂₀`` clipped to ``[−1, 1]`` in every DDPM step as for CLEVR (``--digits-clip 0``: unclipped,
as in §5). Metrics:
the evaluator's accuracy per crop and per strip (all three digits right), FD of crops to
held-out digits.

Cells are ``MODEL/SAMPLER`` (``score`` / ``energy`` models; ``hmc-path`` is score-only HMC,
§8), ``SAMPLER-average`` for averaged crop scores, ``@T`` for a cell with its own number of
levels (``score/reverse-average@1250``: the shortcut at the compute of ``score/hmc-path``).

Run: ``python -m experiments.tapestry`` (protocol: ``experiments/configs/tapestry.json``);
``--probe 1 --out runs/tapestry_probe``: where each model puts one object near a window's sides,
and whether it keeps an object two windows share (:func:`shared_object_probe`).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "tapestry: CLEVR canvases and digit strips from crop models, ≈ 55 min on 2 "
         "cores with the checked-in protocol (loading, then each layout's real canvases and "
         "cells)")

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import recompose as rc
from recompose.data.clevr import COLOURS, SceneSpec, render
from recompose.data.digits import digits_split
from recompose.io import run_folder
from recompose.metrics import frechet_distance
from recompose.models.base import DiffusionModel

from .clevr import Checker, compose_positions, load_clevr
from .common import markdown_table, parse_config, sampler_args, script
from .digits import Evaluator, load_digits

__all__ = ["LAYOUTS", "draw_layout", "window_requests", "clevr_canvas", "digit_strip",
           "real_canvases", "score_canvases", "shared_object_probe", "run", "main"]

WINDOW = 16


# ------------------------------------------------------------------ CLEVR layouts
# (canvas height, width), window offsets (row, column), object cells (row, column) at 8-px pitch;
# a row of None means "anywhere in the window's rows" (a one-window-high canvas).
LAYOUTS: dict[str, dict] = {
    "wide": {"canvas": (16, 40), "offsets": [(0, 0), (0, 8), (0, 16), (0, 24)],
             "cells": [(None, j) for j in range(5)]},
    "square": {"canvas": (24, 24), "offsets": [(0, 0), (0, 8), (8, 0), (8, 8)],
               "cells": [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]},
}


def draw_layout(layout: str, n: int, seed: int) -> Tensor:
    """``(n, M, 2)`` object centres ``(x, y)`` in canvas pixels (continuous; pixel ``c`` spans
    ``[c, c+1)``): each cell's object uniform in its 3×3-px cell (or 3 px × 11 px strip)."""
    cells = LAYOUTS[layout]["cells"]
    u = torch.rand(n, len(cells), 2, generator=torch.Generator().manual_seed(seed),
                   dtype=torch.float64)
    lo = torch.tensor([[8 * j + 2.5, 2.5 if i is None else 8 * i + 2.5] for i, j in cells],
                      dtype=torch.float64)
    span = torch.tensor([[3.0, 11.0 if i is None else 3.0] for i, _ in cells],
                        dtype=torch.float64)
    return (lo + span * u).float()


def _inside(pos: Tensor, offset: tuple[int, int]) -> Tensor:
    """``(n, M)``: the object lies ≥ 2.5 px inside the window at ``offset``."""
    oy, ox = offset
    return ((pos[..., 0] - 2.5 >= ox) & (pos[..., 0] + 2.5 <= ox + WINDOW)
            & (pos[..., 1] - 2.5 >= oy) & (pos[..., 1] + 2.5 <= oy + WINDOW))


def window_requests(pos: Tensor, offset: tuple[int, int]) -> Tensor:
    """``(n, K, 2)`` the objects wholly inside the window at ``offset``, in the window's
    normalised coordinates (as the position model's conditions)."""
    oy, ox = offset
    inside = _inside(pos, offset)
    k = inside.sum(1)
    if not (k == k[0]).all():
        raise ValueError("a layout must give every canvas the same count per window")
    picked = pos[inside].reshape(len(pos), int(k[0]), 2)
    return (picked - torch.tensor([ox, oy], dtype=pos.dtype)) / WINDOW


def clevr_canvas(model: DiffusionModel, layout: str, pos: Tensor, overlap: str = "product"
                 ) -> rc.Tapestry:
    """The canvas model: each window the conjunction of its requested positions."""
    spec = LAYOUTS[layout]
    regions = []
    for offset in spec["offsets"]:
        wpos = window_requests(pos, offset)
        regions.append((offset, compose_positions(model, wpos) if wpos.shape[1] else model))
    return rc.tapestry((3, *spec["canvas"]), regions, overlap=overlap, name=f"{layout} canvas")


def real_canvases(layout: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` rendered canvases of the layout (random shapes and colours) and their centres."""
    h, w = LAYOUTS[layout]["canvas"]
    pos = draw_layout(layout, n, seed)
    size = max(h, w)
    gen = torch.Generator().manual_seed(seed + 1)
    m = pos.shape[1]
    shape = torch.randint(0, 2, (n, m), generator=gen)
    colour = COLOURS[torch.randint(0, len(COLOURS), (n, m), generator=gen)]
    colour = colour * (0.85 + 0.3 * torch.rand(n, m, 1, generator=gen))
    x = render(pos / size, shape, colour, SceneSpec(size=size, max_objects=m))
    return x[:, :, :h, :w], pos


def _features(checker: Checker, x: Tensor) -> Tensor:
    """Pooled features of the checker's last hidden layer: mean and max over space."""
    with torch.no_grad():
        h = checker.net.body[:-1](x.float().clamp(-1, 1))
    return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


def _windows(x: Tensor, layout: str) -> list[Tensor]:
    return [x[:, :, oy:oy + WINDOW, ox:ox + WINDOW] for oy, ox in LAYOUTS[layout]["offsets"]]


def _coverage(layout: str) -> Tensor:
    h, w = LAYOUTS[layout]["canvas"]
    cover = torch.zeros(h, w)
    for oy, ox in LAYOUTS[layout]["offsets"]:
        cover[oy:oy + WINDOW, ox:ox + WINDOW] += 1
    return cover


def score_canvases(x: Tensor, pos: Tensor, layout: str, checker: Checker) -> dict:
    """Per canvas: all windows hold all their requests; per window accuracy; spurious objects
    on the whole canvas and how many of them sit in overlaps; recall on the whole canvas of the
    objects one window requests and of those several windows share."""
    held = []
    for offset, crop in zip(LAYOUTS[layout]["offsets"], _windows(x, layout)):
        held.append(checker.holds_object(crop, window_requests(pos, offset)).all(1))
    held = torch.stack(held, 1)  # (n, windows)
    prob = checker.presence(x)  # (n, H, W), the checker is fully convolutional
    width = prob.shape[-1]  # the checker normalises both coordinates by the width
    cover = _coverage(layout)
    spurious, at_seams = [], []
    for det, req in zip(checker.detections(prob), pos):
        centres = det * width  # (D, 2) detected centres (x, y) in canvas pixels
        far = torch.cdist(centres, req).min(1).values > checker.match_px
        spurious.append(int(far.sum()))
        ij = centres[far].long()  # pixel (column, row) of each spurious detection
        at_seams.append(int((cover[ij[:, 1], ij[:, 0]] > 1).sum()))
    found = checker.holds_object(x, pos / width, prob)  # (n, M) on the whole canvas
    shared = sum(_inside(pos, o).long() for o in LAYOUTS[layout]["offsets"]) > 1
    acc = held.all(1).float()
    return {"canvas_accuracy": float(acc.mean()),
            "canvas_se": float((acc.mean() * (1 - acc.mean()) / len(acc)).sqrt()),
            "window_accuracy": float(held.float().mean()),
            "window_se": float((held.float().mean() * (1 - held.float().mean())
                                / held.numel()).sqrt()),
            "spurious": float(np.mean(spurious)), "spurious_at_seams": float(np.mean(at_seams)),
            "recall_single": float(found[~shared].float().mean()),
            "recall_shared": float(found[shared].float().mean())}


def _cell_options(cell: str, num_levels: int = 0) -> tuple[str, str, str, dict, int]:
    """``"score/reverse-average@1250"`` -> (parameterisation, sampler, overlap, kernel options,
    levels): ``-average`` averages the crop scores, ``@T`` overrides the number of levels."""
    cell, _, levels = cell.partition("@")
    model, sampler = cell.split("/")
    overlap = "average" if sampler.endswith("-average") else "product"
    name, options = sampler_args(sampler.removesuffix("-average"))
    return model, name, overlap, options, int(levels) if levels else num_levels


def _sample(model: DiffusionModel, n: int, sampler: str, options: dict, seed: int,
            num_levels: int, num_steps: int, clip: tuple[float, float] | None) -> rc.SampleResult:
    return rc.sample(model, n, sampler, num_levels=num_levels, seed=seed,
                     num_steps=None if sampler == "reverse" else num_steps, clip=clip,
                     progress=False, **options)


def run_clevr(cells: list[str], layouts: list[str], n: int, seed: int, num_levels: int,
              num_steps: int, progress: bool = True) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    checker = Checker()
    models = {p: load_clevr(p) for p in {_cell_options(c)[0] for c in cells}}
    rows, floors = [], {}
    for layout in layouts:
        bar = tqdm(cells, desc=f"{layout} canvases", disable=not progress)
        bar.set_postfix_str("real canvases")
        pos = draw_layout(layout, n, seed=1000 + seed)
        real, _ = real_canvases(layout, 5 * n, seed=2000 + seed)
        real_b, pos_b = real_canvases(layout, n, seed=3000 + seed)
        f_real = _features(checker, torch.cat(_windows(real, layout)))
        floors[layout] = {**score_canvases(real_b, pos_b, layout, checker),
                          "fd": frechet_distance(_features(checker, torch.cat(
                              _windows(real_b, layout))), f_real)}
        for cell in bar:
            bar.set_postfix_str(cell)
            p, sampler, overlap, options, levels = _cell_options(cell, num_levels)
            tap = clevr_canvas(models[p], layout, pos, overlap)
            r = _sample(tap, n, sampler, options, seed, levels, num_steps, (-1.0, 1.0))
            x = r.x.clamp(-1, 1)
            metrics = score_canvases(x, pos, layout, checker)
            metrics["fd"] = frechet_distance(_features(checker, torch.cat(_windows(x, layout))),
                                             f_real)
            rows.append({"layout": layout, "cell": cell, **metrics,
                         "network_evals": r.info.network_score_evals
                         + r.info.network_energy_evals,
                         "acceptance": r.info.mean_acceptance, "wall_time": r.info.wall_time,
                         "x": x.numpy(), "pos": pos.numpy()})
    return rows, floors


# ------------------------------------------------------------------ digit strips
STRIP = {"canvas": (1, 8, 20), "offsets": [(0, 0), (0, 6), (0, 12)]}


def digit_strip(cond: DiffusionModel, labels: Tensor, scale: float, overlap: str = "product"
                ) -> rc.Tapestry:
    """``labels`` ``(n, 3)``: crop ``k`` is ``cfg(A.given(labels[:, k]), A, scale)``."""
    regions = [(o, rc.cfg(cond.given(labels[:, k], name=f"A|y{k + 1}"), cond, scale))
               for k, o in enumerate(STRIP["offsets"])]
    return rc.tapestry(STRIP["canvas"], regions, overlap=overlap, name="digit strip")


def _crops(x: Tensor) -> list[Tensor]:
    return [x[:, :, :, ox:ox + 8] for _, ox in STRIP["offsets"]]


def score_strips(x: Tensor, labels: Tensor, ev: Evaluator) -> dict:
    right = torch.stack([ev.predict(c) == labels[:, k] for k, c in enumerate(_crops(x))], 1)
    strip = right.all(1).float()
    crop = right.float()
    return {"strip_accuracy": float(strip.mean()),
            "strip_se": float((strip.mean() * (1 - strip.mean()) / len(strip)).sqrt()),
            "crop_accuracy": float(crop.mean()),
            "crop_se": float((crop.mean() * (1 - crop.mean()) / crop.numel()).sqrt()),
            "fd": frechet_distance(ev.features(torch.cat(_crops(x))), ev.f_test)}


def run_digits(cells: list[str], n: int, seed: int, scale: float, num_levels: int,
               num_steps: int, clip: bool = True, progress: bool = True
               ) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    ev = Evaluator()
    labels = torch.randint(0, 10, (n, 3), generator=torch.Generator().manual_seed(4000 + seed))
    models = {p: load_digits(p)["cond"] for p in {_cell_options(c)[0] for c in cells}}
    rows = []
    for cell in (bar := tqdm(cells, desc="digit strips", disable=not progress)):
        bar.set_postfix_str(cell)
        p, sampler, overlap, options, levels = _cell_options(cell, num_levels)
        strip = digit_strip(models[p], labels, scale, overlap)
        r = _sample(strip, n, sampler, options, seed, levels, num_steps,
                    (-1.0, 1.0) if clip else None)
        x = r.x.clamp(-1, 1)
        rows.append({"layout": "digits", "cell": cell, **score_strips(x, labels, ev),
                     "network_evals": r.info.network_score_evals + r.info.network_energy_evals,
                     "acceptance": r.info.mean_acceptance, "wall_time": r.info.wall_time,
                     "x": x.numpy(), "labels": labels.numpy()})
    x_train, _ = digits_split("train")
    floor = {"fd": frechet_distance(ev.features(x_train[: 3 * n]), ev.f_test),
             "evaluator_held_out_accuracy": ev.accuracy_on_held_out()}
    return rows, floor


# ------------------------------------------------------------------ shared-object probe
def shared_object_probe(parameterization: str, n: int = 100, seed: int = 0,
                        num_levels: int = 50) -> dict:
    """Where a model puts one requested object near a window's left (x = 0.25) and right
    (x = 0.75) side (reverse diffusion, K = 1): recall and the mean offset (px) of the nearest
    detection from the request; then one object shared by two windows of a 16×24 canvas (at
    x = 12 px: 0.75 in the first window, 0.25 in the second) and its recall."""
    checker, model = Checker(), load_clevr(parameterization)
    y = 2.5 / 16 + 11 / 16 * torch.rand(n, generator=torch.Generator().manual_seed(seed))
    out = {}
    for side in (0.25, 0.75):
        pos = torch.stack([torch.full((n,), side), y], 1)[:, None]
        x = _sample(compose_positions(model, pos), n, "reverse", {}, seed, num_levels, 0,
                    (-1.0, 1.0)).x.clamp(-1, 1)
        prob = checker.presence(x)
        offsets = [(d[torch.cdist(d, q).argmin(0)] - q)[0] * 16
                   for d, q in zip(checker.detections(prob), pos) if len(d)]
        dx = float(torch.stack(offsets)[:, 0].mean()) if offsets else float("nan")
        out[f"x={side}"] = {"recall": float(checker.holds_object(x, pos, prob).float().mean()),
                            "mean_dx_px": dx}
    centre = torch.stack([torch.full((n,), 12.0), 16 * y], 1)  # canvas pixels
    regions = [((0, ox), compose_positions(
        model, ((centre - torch.tensor([float(ox), 0.0])) / WINDOW)[:, None])) for ox in (0, 8)]
    x = _sample(rc.tapestry((3, 16, 24), regions), n, "reverse", {}, seed, num_levels, 0,
                (-1.0, 1.0)).x.clamp(-1, 1)
    held = checker.holds_object(x, centre[:, None] / x.shape[-1])  # width-normalised
    out["shared"] = {"recall": float(held.float().mean())}
    return out


# ------------------------------------------------------------------ tables and figures
def _pm(v: float, se: float) -> str:
    return f"{v:.2f} ± {se:.2f}"


def markdown(rows: list[dict], floors: dict, n: int) -> str:
    parts = []
    for layout in dict.fromkeys(r["layout"] for r in rows):
        group = [r for r in rows if r["layout"] == layout]
        floor = floors[layout]
        if layout == "digits":
            parts += [f"Digit strips 8×20 (three 8×8 crops, stride 6), {n} strips per cell:", "",
                      markdown_table(["model / sampler", "strip accuracy", "crop accuracy",
                                      "FD (crops)", "net evals / strip", "acceptance"],
                                     [[r["cell"], _pm(r["strip_accuracy"], r["strip_se"]),
                                       _pm(r["crop_accuracy"], r["crop_se"]), f"{r['fd']:.1f}",
                                       r["network_evals"], _acc(r)] for r in group]), "",
                      f"Real digits: FD {floor['fd']:.1f}; evaluator held-out accuracy "
                      f"{floor['evaluator_held_out_accuracy']:.3f}.", ""]
            continue
        h, w = LAYOUTS[layout]["canvas"]
        parts += [f"CLEVR {layout} canvas {h}×{w} (four 16×16 windows), {n} canvases per cell:",
                  "", markdown_table(
                      ["model / sampler", "canvas accuracy", "window accuracy",
                       "recall: one window / shared", "spurious", "of which at seams",
                       "FD (windows)", "net evals / canvas", "acceptance"],
                      [[r["cell"], _pm(r["canvas_accuracy"], r["canvas_se"]),
                        _pm(r["window_accuracy"], r["window_se"]),
                        f"{r['recall_single']:.2f} / {r['recall_shared']:.2f}",
                        f"{r['spurious']:.2f}",
                        f"{r['spurious_at_seams']:.2f}", f"{r['fd']:.2f}", r["network_evals"],
                        _acc(r)] for r in group]), "",
                  f"Real canvases of this layout: canvas accuracy "
                  f"{floor['canvas_accuracy']:.2f}, spurious {floor['spurious']:.2f}, FD "
                  f"{floor['fd']:.2f} (the floor at this sample size).", ""]
    return "\n".join(parts)


def _acc(row: dict) -> str:
    """The Metropolis acceptance (a dash for samplers without an accept step)."""
    a, sampler = row["acceptance"], _cell_options(row["cell"])[1]
    if sampler in ("reverse", "ula", "uhmc") or a is None or math.isnan(a):
        return "—"
    return f"{a:.2f}"


def _figures(out: Path, rows: list[dict]) -> None:
    from recompose.viz.plots import image_panels

    for layout in dict.fromkeys(r["layout"] for r in rows):
        group = [r for r in rows if r["layout"] == layout]
        count = 12 if layout == "square" else 8
        panels = {r["cell"]: torch.as_tensor(r["x"][:count]) for r in group}
        markers = None
        if layout != "digits":
            h, w = LAYOUTS[layout]["canvas"]
            markers = torch.as_tensor(group[0]["pos"][:count]) / torch.tensor([w, h])
        nrow = 4 if layout == "square" else 2
        fig = image_panels(panels, nrow=nrow, panel_width=3.0, markers=markers, ncols=3)
        title = ("requested objects (rings)" if layout != "digits" else
                 "requested digits, first row: " + " ".join(
                     "".join(map(str, y)) for y in group[0]["labels"][:4]))
        fig.suptitle(f"{layout} tapestry — {title}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.savefig(out / f"tapestry_{layout}.png", dpi=130)


def run(out: Path, cells: list[str], digit_cells: list[str], layouts: list[str], n: int = 100,
        seed: int = 0, num_levels: int = 50, num_steps: int = 4, digits_scale: float = 3.0,
        digits_levels: int = 100, digits_steps: int = 3, digits_clip: bool = True,
        threads: int = 2,
        overwrite: bool = False, progress: bool = True) -> dict:
    torch.set_num_threads(threads)
    config = {"n": n, "seed": seed, "cells": cells, "digit_cells": digit_cells,
              "layouts": layouts, "num_levels": num_levels, "num_steps": num_steps,
              "digits_scale": digits_scale, "digits_levels": digits_levels,
              "digits_steps": digits_steps, "digits_clip": digits_clip, "threads": threads,
              "clip": [-1.0, 1.0]}
    start = time.perf_counter()
    rows, floors = run_clevr(cells, layouts, n, seed, num_levels, num_steps, progress) \
        if cells and layouts else ([], {})
    if digit_cells:
        digit_rows, floors["digits"] = run_digits(digit_cells, n, seed, digits_scale,
                                                  digits_levels, digits_steps, digits_clip,
                                                  progress)
        rows += digit_rows
    elapsed = time.perf_counter() - start
    table = markdown(rows, floors, n)
    with run_folder(out, overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(
            {"rows": [{k: v for k, v in r.items() if k not in ("x", "pos", "labels")}
                      for r in rows], "floors": floors, "elapsed_s": elapsed}, indent=1))
        np.savez_compressed(tmp / "samples.npz", **{f"{r['layout']}/{r['cell']}": r["x"]
                                                    for r in rows})
        (tmp / "table.md").write_text(table + "\n")
        _figures(tmp, rows)
    return {"rows": rows, "floors": floors, "table": table, "elapsed_s": elapsed}


@script
def main(argv: list[str] | None = None) -> None:
    c = parse_config("tapestry", __doc__, argv)
    if c["probe"]:  # the shared-object diagnostic of §11 instead of the tables
        from tqdm.auto import tqdm

        torch.set_num_threads(c["threads"])
        res = {p: shared_object_probe(p, c["n"], c["seed"], c["levels"])
               for p in tqdm(("score", "energy"), desc="shared-object probe")}
        with run_folder(c["out"], c["overwrite"]) as tmp:
            (tmp / "probe.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    res = run(c["out"], c["cells"], c["digit_cells"], c["layouts"], n=c["n"], seed=c["seed"],
              num_levels=c["levels"], num_steps=c["mcmc_steps"],
              digits_scale=c["digits_scale"], digits_levels=c["digits_levels"],
              digits_steps=c["digits_steps"], digits_clip=bool(c["digits_clip"]),
              threads=c["threads"], overwrite=c["overwrite"])
    print(res["table"])
    print(f"\n{res['elapsed_s']:.0f} s; outputs in {c['out']}")


if __name__ == "__main__":
    main()
