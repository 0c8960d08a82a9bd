r"""Can any gradient field fit the CLEVR teacher's condition contrast better than the student?

At one noise level ``t`` the score (ε) teacher's condition contrast is

    Δ_T(x_t, c) = ε̂_T(x_t, t, c) − ε̂_T(x_t, t, ∅),     x_t = α_t x₀ + σ_t ε,

the part of its field that places an object at the position ``c`` (R3's product over positions
is ``ε̂(∅) + Σ_k Δ(c_k)``). An energy model's contrast is a gradient, ``∇ₓ[U(x, c) − U(x, ∅)]``.
This script fits a second, independent gradient field to ``Δ_T`` at that one ``t`` only: a
convolutional energy ``V_φ(x, c)`` (``(B,)``; the position enters as a Gaussian bump and two
offset maps, 3 extra input channels) with

    L(φ) = mean ‖∇ₓV_φ(x_t, c) − Δ_T(x_t, c)‖²

on ``n_train`` fixed noised draws, and reports the relative error
``‖∇ₓV_φ − Δ_T‖² / ‖Δ_T‖²`` on ``n_test`` held-out draws along training (and on 2,048 of
the training draws, to show over-fitting), beside the shipped energy models' contrast errors
on the same held-out draws and the teacher's ``ρ`` there (:mod:`recompose.conservative`; 0 for
a gradient). If the second fit, with all its capacity spent on one ``t``, stalls at about the
student's error, the part of ``Δ_T`` both miss is out of reach of gradient fields, not of
one network's capacity.

Run: ``python -m experiments.contrast_fit`` (config ``experiments/configs/contrast_fit.json``;
≈ 15 min on 2 threads).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "contrast_fit: a gradient field fitted to the CLEVR teacher's condition "
         "contrast, ≈ 15 min on 2 cores with the checked-in protocol (teacher's contrasts, the "
         "fit, the shipped students, ρ)")

import json

import torch
from torch import Tensor, nn

from recompose.data import get_dataset
from recompose.models.loading import pretrained

from .common import echo, markdown_table, parse_config, script, write_results
from .conservative import rho
from .distillation import _contrast

__all__ = ["BumpEnergy", "contrast_draws", "relative_error", "fit", "check_config", "main"]

SIZE = 16  # the CLEVR scenes' side, pixels


def contrast_draws(teacher: object, t: float, n: int, seed: int, chunk: int = 512,
                   desc: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, positions, Δ_T)``: ``n`` seeded training scenes noised to ``t`` with the
    position each is labelled with, and the teacher's contrast there (ε units); ``desc``: a
    progress bar of that name."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    x0, pos = get_dataset("clevr").sample(n, gen)
    alpha, sigma = teacher.schedule(torch.tensor(t))
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=gen)
    tt = torch.full((n,), t)
    with torch.no_grad():
        delta = torch.cat([_contrast(teacher, xt[i:i + chunk], tt[i:i + chunk], pos[i:i + chunk])
                           for i in tqdm(range(0, n, chunk), desc=desc, disable=desc is None)])
    return xt, pos, delta


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``‖estimate − reference‖² / ‖reference‖²``, pooled over the batch."""
    return float(((estimate - reference) ** 2).sum() / (reference ** 2).sum())


class BumpEnergy(nn.Module):
    """``V_φ(x, c)``, shape ``(B,)``: a dilated CNN on ``x`` (``(B, 3, 16, 16)``) stacked with
    a Gaussian bump at ``c`` and the offsets to ``c``, summed over pixels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(6, width, 3, padding=1), nn.SiLU()]
        for dilation in (1, 2, 4, 1):  # receptive field 17 px: the whole scene
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))
        centres = (torch.arange(SIZE) + 0.5) / SIZE
        rows, cols = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("cols", cols)
        self.register_buffer("rows", rows)

    def position_maps(self, pos: Tensor) -> Tensor:
        """``(B, 3, 16, 16)``: a bump of width 2 px at ``c = (x, y)``, then the offsets
        ``x − c_x`` and ``y − c_y``."""
        dx = self.cols - pos[:, 0, None, None]
        dy = self.rows - pos[:, 1, None, None]
        bump = torch.exp(-(dx ** 2 + dy ** 2) / (2 * (2.0 / SIZE) ** 2))
        return torch.stack([bump, dx, dy], 1)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return self.net(torch.cat([x, self.position_maps(pos)], 1)).sum((1, 2, 3))

    def gradient(self, x: Tensor, pos: Tensor, create_graph: bool = False) -> Tensor:
        """``∇ₓV_φ(x, c)``, the shape of ``x``."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self(x, pos).sum(), x, create_graph=create_graph)[0]


def _fit_error(model: BumpEnergy, x: Tensor, pos: Tensor, target: Tensor,
               chunk: int = 512) -> float:
    grads = torch.cat([model.gradient(x[i:i + chunk], pos[i:i + chunk])
                       for i in range(0, len(x), chunk)])
    return relative_error(grads, target)


def fit(train: tuple[Tensor, Tensor, Tensor], test: tuple[Tensor, Tensor, Tensor],
        config: dict, progress: bool = False) -> list[dict]:
    """Train :class:`BumpEnergy` on ``train`` (Adam, cosine learning rate); the learning curve
    every ``eval_every`` steps as ``{"step", "train", "test"}`` relative errors (printed)."""
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = BumpEnergy(config["width"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config["steps"], 1))
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    seen = [v[:2048] for v in train]
    curve = []
    bar = tqdm(total=config["steps"], desc="fit", disable=not progress)
    for step in range(config["steps"] + 1):
        if step % config["eval_every"] == 0 or step == config["steps"]:
            curve.append({"step": step, "train": _fit_error(model, *seen),
                          "test": _fit_error(model, *test)})
            echo(json.dumps(curve[-1]))
        if step == config["steps"]:
            break
        idx = torch.randint(len(train[0]), (config["batch_size"],), generator=gen)
        x, pos, target = (v[idx] for v in train)
        loss = ((model.gradient(x, pos, create_graph=True) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
    bar.close()
    return curve


def shipped_errors(test: tuple[Tensor, Tensor, Tensor], t: float) -> dict[str, float]:
    """The shipped energy models' contrast errors on the held-out draws (ε units)."""
    x, pos, target = test
    tt = torch.full((len(x),), t)
    return {name: relative_error(_contrast(pretrained("clevr", name), x, tt, pos), target)
            for name in ("distilled", "energy")}


def teacher_rho(teacher: object, test: tuple[Tensor, Tensor, Tensor], t: float, n: int,
                probes: int, seed: int) -> tuple[float, float]:
    """``ρ`` of the teacher's contrast field on the first ``n`` held-out draws."""
    x, pos, _ = test
    return rho(teacher.given(pos[:n]) / teacher, x[:n], t, seed, probes)


def check_config(config: dict) -> None:
    """Refuse settings the fit cannot run with (``ValueError``, one line)."""
    if not 0 < config["t"] <= 1:
        raise ValueError(f"t must lie in (0, 1], got {config['t']}")
    for key in ("steps", "eval_every", "n_train", "n_test", "batch_size", "width", "rho_n",
                "probes", "threads"):
        if config[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    if config["rho_n"] > config["n_test"]:
        raise ValueError(f"rho_n ({config['rho_n']}) draws come from the n_test "
                         f"({config['n_test']}) held-out ones: lower rho_n or raise n_test")
    if not config["lr"] > 0:
        raise ValueError(f"lr must be positive, got {config['lr']}")


@script
def main(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    config = parse_config("contrast_fit", __doc__.split("\n\n")[0], argv, check_config)
    torch.set_num_threads(config["threads"])
    teacher = pretrained("clevr", "score")
    t = config["t"]
    train = contrast_draws(teacher, t, config["n_train"], config["seed"] + 10,
                           desc="teacher's contrast, training draws")
    test = contrast_draws(teacher, t, config["n_test"], config["seed"] + 11,
                          desc="teacher's contrast, held-out draws")
    curve = fit(train, test, config, progress=True)
    with tqdm(total=2, desc="shipped students, teacher's ρ") as bar:
        shipped = shipped_errors(test, t)
        bar.update()
        rho = teacher_rho(teacher, test, t, config["rho_n"], config["probes"], config["seed"])
        bar.update()
    results = {"t": t, "curve": curve, "shipped": shipped, "teacher_rho": rho}
    rows = [[f"gradient fit at t = {t} only, step {p['step']}", f"{p['test']:.3f}",
             f"{p['train']:.3f}"] for p in curve]
    rows += [[f"shipped clevr-{name} (all t)", f"{err:.3f}", "–"]
             for name, err in shipped.items()]
    text = markdown_table(["contrast model", "held-out error", "error on training draws"], rows)
    text += f"\n\nTeacher's contrast at t = {t}: ρ = {rho[0]:.3f} ± {rho[1]:.3f}."
    write_results(config, results, text)
    print(text)


if __name__ == "__main__":
    main()
