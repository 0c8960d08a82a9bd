r"""How well each shipped model fits: denoising loss, and distance to the score teacher.

For every shipped family (the six 2D shapes, ``digits``, ``digits-cond``, ``clevr``) and each of
its parameterisations — ``score`` (the teacher), ``energy`` (trained from scratch) and
``distilled`` (:mod:`recompose.training.distill`) — on ``n`` held-out draws of the data with
seeded ``t ~ U(10⁻³, 1)`` and noise, the same draws for every model:

* **DSM**: ``mean_d ‖ε̂(x_t, t) − ε‖²``, the training objective (lower is better; its floor is
  the data's irreducible denoising error, not 0);
* **vs teacher**: ``mean_d ‖ε̂(x_t, t) − ε̂_score(x_t, t)‖²``, i.e. ``σ_t² ‖s − s_teacher‖²``
  per dimension: how far a model's field is from the score model's.

Conditional families are evaluated with the drawn conditions (no condition dropout), and also
by their **condition contrast** ``Δ(x_t, t) = ε̂(x_t, t, c) − ε̂(x_t, t, ∅)``, the part of the
field that products over conditions and guidance use: the teacher's ``mean_d ‖Δ_score‖²`` (how
big it is) and each model's ``mean_d ‖Δ − Δ_score‖²`` (how well it is matched; below the
teacher's size means the model has the teacher's contrast, at least in part). Each cell is a
mean ± one standard error over the ``n`` draws.

Run: ``python -m experiments.distillation`` (config ``experiments/configs/distillation.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "distillation: distilled models against their teachers, ≈ 3 min on 2 cores "
         "with the checked-in protocol")

import json

import torch

from recompose.data import get_dataset
from recompose.models.loading import IMAGE_PRETRAINED, PRETRAINED, pretrained
from recompose.training.distill import distillation_loss
from recompose.training.losses import dsm_loss, noised

from .common import echo, markdown_table, parse_config, script, write_results

__all__ = ["evaluate", "main"]

DATA = {**{name: name for name in PRETRAINED}, "digits": "digits", "digits-cond": "digits",
        "clevr": "clevr"}


def _draws(family: str, n: int, seed: int) -> tuple[torch.Tensor, object]:
    batch = get_dataset(DATA[family]).sample(n, torch.Generator().manual_seed(seed))
    return batch if isinstance(batch, tuple) else (batch, None)


def _condition(model: object, raw: object) -> torch.Tensor | None:
    return model.net.encode_condition(raw) if raw is not None and model.conditional else None


def _contrast(model: object, xt: torch.Tensor, t: torch.Tensor, raw: object) -> torch.Tensor:
    """``Δ = ε̂(x_t, t, c) − ε̂(x_t, t, ∅)`` of a conditional model, per row."""
    cond = model.epsilon(xt, t, c=model.net.encode_condition(raw))
    null = model.epsilon(xt, t, c=model.net.null_condition(len(xt)))
    return (cond - null).detach()


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.detach().double()
    return v.mean().item(), v.std().item() / len(v) ** 0.5


def evaluate(family: str, n: int, seed: int) -> dict[str, dict[str, tuple[float, float]]]:
    """``{parameterisation: {"dsm": (mean, se), "vs_teacher": (mean, se)}}``, and for a
    conditional family ``"contrast": {"teacher_size": ‖Δ_score‖², param: ‖Δ − Δ_score‖²}``
    (mean, se per dimension) for the energy and distilled models, all on the same draws."""
    x0, raw = _draws(family, n, seed)
    teacher = pretrained(family, "score")
    c_teacher = _condition(teacher, raw)
    contrast = None
    if raw is not None and teacher.conditional:
        # the losses' own noised draws: the same generator seed and schedule
        xt, t, _ = noised(x0, teacher, torch.Generator().manual_seed(seed + 1))
        ref = _contrast(teacher, xt, t, raw)
        dims = tuple(range(1, ref.ndim))
        contrast = {"teacher_size": (ref ** 2).mean(dim=dims)}
    out = {}
    for param in ("score", "energy", "distilled"):
        model = pretrained(family, param)
        c = _condition(model, raw)
        losses = {"dsm": dsm_loss(model, x0, torch.Generator().manual_seed(seed + 1), c=c),
                  "vs_teacher": distillation_loss(model, teacher, x0,
                                                  torch.Generator().manual_seed(seed + 1),
                                                  c=c, c_teacher=c_teacher)}
        out[param] = {key: _mean_se(v) for key, v in losses.items()}
        if contrast is not None and param != "score":
            contrast[param] = ((_contrast(model, xt, t, raw) - ref) ** 2).mean(dim=dims)
    if contrast is not None:
        out["contrast"] = {key: _mean_se(v) for key, v in contrast.items()}
    return out


def _cell(mean: float, se: float) -> str:
    return f"{mean:.4g} ± {se:.2g}"


@script
def main(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    config = parse_config("distillation", __doc__.split("\n\n")[0], argv)
    torch.set_num_threads(config["threads"])
    families = [f for f in config["families"] if f in PRETRAINED + IMAGE_PRETRAINED]
    results, rows = {}, []
    for family in (bar := tqdm(families, desc="families")):
        bar.set_postfix_str(family)
        res = evaluate(family, config["n"], config["seed"])
        results[family] = res
        contrast = res.get("contrast")
        rows.append([family] + [_cell(*res[p]["dsm"]) for p in ("score", "energy", "distilled")]
                    + [_cell(*res[p]["vs_teacher"]) for p in ("energy", "distilled")]
                    + ([_cell(*contrast[k]) for k in ("teacher_size", "energy", "distilled")]
                       if contrast else ["–"] * 3))
        echo(f"{family} " + json.dumps({p: {k: round(v[0], 6) for k, v in r.items()}
                                        for p, r in res.items()}))
    table = markdown_table(["model", "DSM score", "DSM energy", "DSM distilled",
                            "vs teacher: energy", "vs teacher: distilled",
                            "contrast: teacher's size", "contrast error: energy",
                            "contrast error: distilled"], rows)
    write_results(config, results, table)
    print(table)


if __name__ == "__main__":
    main()
