r"""Procedural CLEVR-like scenes: shaded spheres and cubes on a plain background (no download).

A scene is ``size × size`` RGB (default 16), values in ``[−1, 1]``, shape ``(3, H, W)``, with
1–5 objects at non-overlapping positions. An object is a sphere (a disc with a diffuse shading
gradient lit from the upper left) or a cube (a square with a lit top edge), radius ``radius``
pixels, one of six colours. Positions are object centres in image coordinates normalised to
``[0, 1]``: ``p = (column + ½, row + ½) / size``, i.e. ``p = (x, y)`` with ``x`` to the right
and ``y`` downwards. Centres lie in ``[margin, 1 − margin]`` and are at least ``min_dist``
(normalised) apart, so objects never touch.

:func:`make_scenes` draws scenes from a ``torch.Generator`` (fully seeded) and returns the
images with every object's position (padded with NaN) and a count. :class:`ClevrPositions` is
the training set of the position model, as in R3: each image is labelled with the position of
*one* of its objects (uniformly chosen at every draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SceneSpec", "make_scenes", "object_positions", "render", "ClevrPositions",
           "COLOURS"]

COLOURS = torch.tensor([[0.85, 0.2, 0.2], [0.2, 0.75, 0.25], [0.2, 0.4, 0.9],
                        [0.9, 0.8, 0.2], [0.7, 0.3, 0.8], [0.2, 0.8, 0.85]])
BACKGROUND = 0.45


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn (module docstring): ``size × size`` images, object ``radius`` in
    pixels, ``min_objects``–``max_objects`` objects per scene, centres in
    ``[margin, 1 − margin]²`` and at least ``min_dist`` apart (both normalised to ``[0, 1]``)."""

    size: int = 16
    radius: float = 2.0  # pixels
    min_objects: int = 1
    max_objects: int = 5
    margin: float = 2.5 / 16  # normalised
    min_dist: float = 5.0 / 16  # normalised, centre to centre


def object_positions(n: int, k: Tensor, spec: SceneSpec, gen: torch.Generator,
                     tries: int = 512) -> Tensor:
    """``(n, max_objects, 2)`` centres (NaN-padded): per scene, the first of ``tries`` uniform
    candidate sets whose centres are all ``min_dist`` apart (rounds repeat for failures)."""
    m = spec.max_objects
    out = torch.full((n, m, 2), float("nan"))
    todo = torch.arange(n)
    lo, hi = spec.margin, 1 - spec.margin
    while len(todo):
        cand = lo + (hi - lo) * torch.rand(len(todo), tries, m, 2, generator=gen)
        d = torch.cdist(cand, cand)  # (t, tries, m, m)
        used = torch.arange(m)[None, :] < k[todo][:, None]  # (t, m)
        pair = used[:, None, :, None] & used[:, None, None, :] & ~torch.eye(m, dtype=torch.bool)
        ok = ((d >= spec.min_dist) | ~pair).flatten(2).all(-1)  # (t, tries)
        found = ok.any(1)
        first = ok.float().argmax(1)
        chosen = cand[torch.arange(len(todo)), first]  # (t, m, 2)
        chosen[~used] = float("nan")
        out[todo[found]] = chosen[found]
        todo = todo[~found]
    return out


def render(pos: Tensor, shape: Tensor, colour: Tensor, spec: SceneSpec,
           chunk: int = 256) -> Tensor:
    """Images ``(n, 3, H, W)`` in ``[−1, 1]`` from centres ``(n, m, 2)`` (NaN = absent),
    shapes ``(n, m)`` (0 sphere, 1 cube) and colours ``(n, m, 3)``; 4× supersampled."""
    if len(pos) > chunk:  # bounded temporaries
        return torch.cat([render(pos[i:i + chunk], shape[i:i + chunk], colour[i:i + chunk],
                                 spec, chunk) for i in range(0, len(pos), chunk)])
    n, m, _ = pos.shape
    s, ss = spec.size, 4
    grid = (torch.arange(s * ss) + 0.5) / (s * ss)  # normalised pixel centres
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    r = spec.radius / s
    img = torch.full((n, 3, s * ss, s * ss), BACKGROUND)
    for j in range(m):
        present = ~torch.isnan(pos[:, j, 0])
        if not present.any():
            continue
        cx = pos[:, j, 0].nan_to_num(-10.0)[:, None, None]
        cy = pos[:, j, 1].nan_to_num(-10.0)[:, None, None]
        dx, dy = (gx - cx) / r, (gy - cy) / r  # in object radii
        sphere = dx**2 + dy**2 <= 1
        cube = (dx.abs() <= 0.85) & (dy.abs() <= 0.85)
        is_cube = (shape[:, j] == 1)[:, None, None]
        mask = torch.where(is_cube, cube, sphere) & present[:, None, None]
        # Shading: spheres darken away from a highlight up-left; cubes have a lit top band.
        light = torch.where(is_cube, torch.where(dy < -0.45, 1.15, 0.8),
                            1.1 - 0.45 * ((dx + 0.35) ** 2 + (dy + 0.35) ** 2).sqrt())
        col = colour[:, j][:, :, None, None] * light[:, None]
        img = torch.where(mask[:, None], col.clamp(0, 1), img)
    img = torch.nn.functional.avg_pool2d(img, ss)
    return img * 2 - 1


def make_scenes(n: int, generator: torch.Generator, spec: SceneSpec = SceneSpec(),
                num_objects: int | None = None) -> dict[str, Tensor]:
    """``{"x": (n, 3, H, W), "pos": (n, max_objects, 2) NaN-padded, "count": (n,)}``."""
    if num_objects is None:
        k = torch.randint(spec.min_objects, spec.max_objects + 1, (n,), generator=generator)
    else:
        k = torch.full((n,), num_objects)
    pos = object_positions(n, k, spec, generator)
    shape = torch.randint(0, 2, (n, spec.max_objects), generator=generator)
    colour = COLOURS[torch.randint(0, len(COLOURS), (n, spec.max_objects), generator=generator)]
    colour = colour * (0.85 + 0.3 * torch.rand(n, spec.max_objects, 1, generator=generator))
    return {"x": render(pos, shape, colour, spec), "pos": pos, "count": k}


class ClevrPositions:
    """Training data of the position model: ``(x, p)`` with ``p`` one object's centre, from a
    fixed, seeded set of scenes (built once, then sampled with replacement)."""

    name = "clevr"
    num_scenes = 20000
    seed = 12345

    def __init__(self, spec: SceneSpec = SceneSpec()) -> None:
        self.spec = spec
        scenes = make_scenes(self.num_scenes, torch.Generator().manual_seed(self.seed), spec)
        self.x, self.pos, self.count = scenes["x"], scenes["pos"], scenes["count"]
        self.event_shape = (3, spec.size, spec.size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` draws with replacement: scenes ``(n, 3, H, W)`` and the centre ``(n, 2)`` of one
        object of each, chosen uniformly."""
        idx = torch.randint(self.num_scenes, (n,), generator=generator)
        which = (torch.rand(n, generator=generator) * self.count[idx]).long()
        return self.x[idx], self.pos[idx, which]
