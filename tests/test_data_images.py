"""Image data: the bundled digits split and the procedural CLEVR-like scenes."""

import torch

from recompose.data import get_dataset
from recompose.data.clevr import BACKGROUND, SceneSpec, make_scenes, render
from recompose.data.digits import HELD_OUT_PER_CLASS, digits_split


def test_digits_split_is_fixed_disjoint_and_balanced():
    xtr, ytr = digits_split("train")
    xte, yte = digits_split("test")
    assert xtr.shape == (1297, 1, 8, 8) and xte.shape == (500, 1, 8, 8)
    assert torch.equal(yte.bincount(), torch.full((10,), HELD_OUT_PER_CLASS))
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0
    # disjoint: no held-out image equals a training image with the same index in the raw set
    x2, _ = digits_split("test")
    assert torch.equal(x2, xte)  # deterministic
    flat_tr = {tuple(v.tolist()) + (int(c),) for v, c in zip(xtr.flatten(1), ytr)}
    overlap = sum(tuple(v.tolist()) + (int(c),) in flat_tr for v, c in zip(xte.flatten(1), yte))
    assert overlap <= 2  # sklearn's digits hold a couple of exact duplicates across writers


def test_scene_positions_and_labels_agree():
    spec = SceneSpec()
    scenes = make_scenes(300, torch.Generator().manual_seed(0), spec)
    x, pos, count = scenes["x"], scenes["pos"], scenes["count"]
    assert x.shape == (300, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    valid = ~torch.isnan(pos[..., 0])
    assert torch.equal(valid.sum(1), count) and int(count.min()) >= 1 and int(count.max()) <= 5
    assert bool(valid[:, 0].all())  # objects fill slots from the front
    # non-overlapping, inside the margins
    p = pos[valid]
    assert float(p.min()) >= spec.margin and float(p.max()) <= 1 - spec.margin
    d = torch.cdist(pos.nan_to_num(0), pos.nan_to_num(0))
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(5, dtype=torch.bool)
    assert float(d[pair].min()) >= spec.min_dist
    # the pixel under every labelled centre shows an object, a pixel far from all shows none
    bg = 2 * BACKGROUND - 1
    ij = (pos * spec.size).floor().long().clamp(0, spec.size - 1)
    for b in range(50):
        for k in range(int(count[b])):
            col, row = ij[b, k]
            assert float((x[b, :, row, col] - bg).abs().max()) > 0.1
    from experiments.evaluators import presence_map

    empty = presence_map(pos, spec, hit_radius=spec.radius + 1.5)[:, 0] == 0
    assert float((x - bg).abs().amax(1)[empty].max()) < 1e-6


def test_rendered_object_sits_where_the_position_says():
    spec = SceneSpec()
    pos = torch.tensor([[[0.25, 0.75]]])  # x = 4 px from the left, y = 12 px from the top
    img = render(pos, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, 3), spec)[0]
    mass = (img - (2 * BACKGROUND - 1)).abs().sum(0)
    rows, cols = torch.meshgrid(torch.arange(16.0) + 0.5, torch.arange(16.0) + 0.5,
                                indexing="ij")
    centre = torch.stack([(mass * cols).sum(), (mass * rows).sum()]) / mass.sum() / 16
    torch.testing.assert_close(centre, pos[0, 0], atol=0.03, rtol=0)


def test_position_training_labels_are_objects_of_their_scene(monkeypatch):
    from recompose.data.clevr import ClevrPositions

    monkeypatch.setattr(ClevrPositions, "num_scenes", 400)  # the real set has 20,000
    data = get_dataset("clevr")
    gen = torch.Generator().manual_seed(0)
    x, p = data.sample(64, gen)
    assert x.shape == (64, 3, 16, 16) and p.shape == (64, 2)
    # every label is one of the scene's centres: find the scene by image equality
    for b in range(8):
        idx = int(torch.nonzero((data.x == x[b]).flatten(1).all(1))[0, 0])
        d = (data.pos[idx] - p[b]).norm(dim=-1).nan_to_num(9.0)
        assert float(d.min()) < 1e-6
