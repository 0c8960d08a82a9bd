"""The tapestry experiment: layouts keep every object whole in the windows that request it and
away from the others, real canvases score perfectly, and a tiny run writes every output."""

import json

import pytest
import torch

from experiments.clevr import Checker
from experiments.tapestry import (
    LAYOUTS,
    WINDOW,
    clevr_canvas,
    draw_layout,
    real_canvases,
    score_canvases,
    window_requests,
)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_objects_are_whole_in_requesting_windows_and_clear_of_the_rest(layout):
    """An object (radius 2 px) is either ≥ 2.5 px inside a window (requested there) or does not
    touch it; each window requests two objects; objects are ≥ 5 px apart (as in training)."""
    pos = draw_layout(layout, 500, seed=0)
    for oy, ox in LAYOUTS[layout]["offsets"]:
        dx = torch.minimum(pos[..., 0] - ox, ox + WINDOW - pos[..., 0])  # depth inside, px
        dy = torch.minimum(pos[..., 1] - oy, oy + WINDOW - pos[..., 1])
        inside = (dx >= 2.5) & (dy >= 2.5)
        clear = (dx <= -2.0) | (dy <= -2.0)
        assert bool((inside | clear).all())
        assert window_requests(pos, (oy, ox)).shape == (500, 2, 2)
    d = torch.cdist(pos, pos) + 99 * torch.eye(pos.shape[1])
    assert float(d.min()) >= 5.0


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_real_canvases_score_perfectly_and_empty_ones_fail(layout):
    checker = Checker()
    x, pos = real_canvases(layout, 60, seed=1)
    real = score_canvases(x, pos, layout, checker)
    assert real["canvas_accuracy"] >= 0.95 and real["spurious"] <= 0.05
    assert real["recall_single"] >= 0.95 and real["recall_shared"] >= 0.95
    empty = score_canvases(torch.full_like(x, 2 * 0.45 - 1), pos, layout, checker)
    assert empty["canvas_accuracy"] == 0.0 and empty["window_accuracy"] == 0.0
    assert empty["recall_single"] == 0.0 and empty["recall_shared"] == 0.0
    # erase the shared objects only (wide: the middle three strips, which reach columns
    # 8.5-31.5; square: the centre cell's object, rows and columns 8.5-15.5)
    erased = x.clone()
    rows = slice(0, 16) if layout == "wide" else slice(8, 16)
    cols = slice(8, 32) if layout == "wide" else slice(8, 16)
    erased[:, :, rows, cols] = 2 * 0.45 - 1
    part = score_canvases(erased, pos, layout, checker)
    assert part["recall_single"] >= 0.95 and part["recall_shared"] == 0.0
    # objects the canvas does not request are spurious, and the edge cells of `square` sit
    # in two windows' overlap: an object there counts as one at a seam
    if layout == "square":
        extra = real_canvases(layout, 60, seed=1)[0]
        extra[:, :, 10:14, 2:6] = extra[:, :, 2:6, 2:6]  # copy the top-left object to (1, 0)
        scored = score_canvases(extra, pos, layout, checker)
        assert scored["spurious"] >= 0.9 and scored["spurious_at_seams"] >= 0.9


def test_canvas_model_is_one_network_call_per_evaluation():
    from conftest import CallCounter
    from experiments.clevr import load_clevr

    model = load_clevr("score")
    pos = draw_layout("wide", 3, seed=2)
    tap = clevr_canvas(model, "wide", pos)
    counter = CallCounter(model.net)
    s = tap.score(torch.zeros(3, 3, 16, 40), 0.5)
    assert counter.calls == 1 and s.shape == (3, 3, 16, 40)
    assert tap.num_networks == 12  # four windows of p^(1-2) p(x|p1) p(x|p2)


def test_a_tiny_run_writes_its_outputs(tmp_path):
    from experiments.tapestry import main

    out = tmp_path / "tap"
    main(["--n", "3", "--levels", "2", "--mcmc-steps", "1", "--digits-levels", "2",
          "--digits-steps", "1", "--layouts", "wide", "--cells", "score/reverse-average",
          "energy/hmc", "--digit-cells", "energy/reverse", "energy/mala", "--out", str(out)])
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [(r["layout"], r["cell"]) for r in rows] == [
        ("wide", "score/reverse-average"), ("wide", "energy/hmc"), ("digits", "energy/reverse"),
        ("digits", "energy/mala")]
    assert json.loads((out / "config.json").read_text())["n"] == 3
    for name in ("tapestry_wide.png", "tapestry_digits.png", "samples.npz", "table.md"):
        assert (out / name).stat().st_size > 0


def test_the_shared_object_probe_writes_its_report(tmp_path):
    from experiments.tapestry import main

    out = tmp_path / "probe"
    main(["--probe", "1", "--n", "3", "--levels", "2", "--out", str(out)])
    report = json.loads((out / "probe.json").read_text())
    assert set(report) == {"score", "energy"}
    assert set(report["energy"]) == {"x=0.25", "x=0.75", "shared"}
    assert 0 <= report["score"]["shared"]["recall"] <= 1
