r"""How much of a score teacher's field is not a gradient, and what its energy students match.

For each conditional family (``clevr``, ``digits-cond``) and each noise level ``t`` of the
config, on ``n`` seeded draws of the data noised to ``x_t = α_t x₀ + σ_t ε``:

* **ρ** (:func:`recompose.conservative.jacobian_asymmetry`): ``‖A‖²/‖S‖²`` of the Jacobian of
  the score (ε) teacher's field, for the null view ``s(x, ∅)``, the conditional view
  ``s(x, c)`` and their **contrast** ``Δ = s(x, c) − s(x, ∅)`` (the part of the field that
  products over conditions and guidance use). 0 for a gradient field.
* **contrast error** of each energy model (trained from scratch, and distilled from the
  teacher): ``‖Δ_model − Δ_teacher‖² / ‖Δ_teacher‖²`` pooled over the draws. An energy model's
  contrast is a gradient, so it cannot match the part of the teacher's that is not.
* ``other_teachers``: ``FAMILY=FILE`` entries, other score models of the family's data
  (e.g. the late-conditioning CLEVR model of docs/results.md §6.1), whose contrast's ``ρ`` is
  measured at the same draws: would one of them be a more conservative teacher?

Run: ``python -m experiments.conservative`` (config ``experiments/configs/conservative.json``).
"""

# ruff: noqa: E402 (the first line comes before the slow imports)
from __future__ import annotations

from .common import announce

announce(__name__, "conservative: how much of each teacher's field is a gradient, ≈ 3 min on 2 "
         "cores with the checked-in protocol")

import json
from collections.abc import Callable
from pathlib import Path

import torch

from recompose.conservative import asymmetry_ratio, asymmetry_terms, score_field
from recompose.models.loading import load_model, pretrained

from .common import echo, markdown_table, parse_config, script, write_results
from .distillation import DATA, _draws

__all__ = ["measure", "measure_teacher", "rho", "main"]


def _noised(x0: torch.Tensor, model: object, t: float, seed: int) -> torch.Tensor:
    alpha, sigma = model.schedule(torch.tensor(t))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return alpha * x0 + sigma * noise


def _contrast(model: object, raw: object) -> object:
    """``s(x, c) − s(x, ∅)`` as a model: the conditional view over the null one."""
    return model.given(raw) / model


def rho(model: object, xt: torch.Tensor, t: float, seed: int, probes: int) -> tuple[float, float]:
    """``ρ`` of ``model``'s score field at the points ``xt`` (estimate, standard error)."""
    return asymmetry_ratio(*asymmetry_terms(score_field(model, t), xt,
                                            torch.Generator().manual_seed(seed), probes))


def measure(family: str, ts: list[float], n: int, seed: int, probes: int,
            done: Callable[[], object] = lambda: None) -> list[dict]:
    """One row per ``t``: ``rho`` (estimate, standard error) of the teacher's three fields and
    the energy models' relative contrast errors, all at the same noised draws (``done()``
    after each)."""
    x0, raw = _draws(family, n, seed)
    teacher = pretrained(family, "score")
    students = {p: pretrained(family, p) for p in ("energy", "distilled")}
    rows = []
    for i, t in enumerate(ts):
        xt = _noised(x0, teacher, t, seed + 1 + i)
        fields = {"null": teacher, "conditional": teacher.given(raw),
                  "contrast": _contrast(teacher, raw)}
        ratios = {name: rho(m, xt, t, seed, probes) for name, m in fields.items()}
        with torch.no_grad():
            ref = fields["contrast"].score(xt, t)
            err = {p: float(((_contrast(m, raw).score(xt, t) - ref) ** 2).sum()
                            / (ref ** 2).sum()) for p, m in students.items()}
        rows.append({"family": family, "t": t, "rho": ratios, "contrast_error": err})
        done()
    return rows


def measure_teacher(family: str, path: str, ts: list[float], n: int, seed: int,
                    probes: int, done: Callable[[], object] = lambda: None) -> list[dict]:
    """``ρ`` of the condition contrast of another score model of ``family``'s data (a model
    file), at the same draws as :func:`measure`: would it be a better teacher?"""
    x0, raw = _draws(family, n, seed)
    model = load_model(path)
    rows = []
    for i, t in enumerate(ts):
        xt = _noised(x0, model, t, seed + 1 + i)
        rows.append({"family": family, "teacher": path, "t": t,
                     "rho_contrast": rho(_contrast(model, raw), xt, t, seed, probes)})
        done()
    return rows


def _conditional_family(family: str) -> None:
    if family not in DATA or not pretrained(family, "score").conditional:
        known = ", ".join(f for f in DATA if pretrained(f, "score").conditional)
        raise ValueError(f"{family!r} is not a conditional family (a contrast needs "
                         f"conditions); choose from {known}")


def check_config(config: dict) -> None:
    """Refuse families without conditions and ``other_teachers`` entries that are not
    ``FAMILY=FILE`` with an existing file (``ValueError``, one line)."""
    for family in config["families"]:
        _conditional_family(family)
    for entry in config["other_teachers"]:
        family, sep, path = entry.partition("=")
        if not sep or not path:
            raise ValueError(f"other_teachers entries are FAMILY=FILE, got {entry!r}")
        _conditional_family(family)
        if not Path(path).is_file():
            raise ValueError(f"other teacher {path!r}: no such file")


@script
def main(argv: list[str] | None = None) -> None:
    from tqdm.auto import tqdm

    config = parse_config("conservative", __doc__.split("\n\n")[0], argv, check_config)
    torch.set_num_threads(config["threads"])
    bar = tqdm(total=len(config["ts"]) * (len(config["families"])
                                          + len(config["other_teachers"])), desc="rows")
    results, table = [], []
    for family in config["families"]:
        for row in measure(family, config["ts"], config["n"], config["seed"],
                           config["probes"], bar.update):
            results.append(row)
            table.append([family, row["t"], *("{:.3f} ± {:.3f}".format(*row['rho'][k]) for k in
                                              ("null", "conditional", "contrast")),
                          *(f"{row['contrast_error'][p]:.3f}" for p in
                            ("energy", "distilled"))])
            echo(json.dumps(row))
    text = markdown_table(["family", "t", "ρ teacher: null", "ρ teacher: conditional",
                           "ρ teacher: contrast", "contrast error: energy",
                           "contrast error: distilled"], table)
    other = []
    for entry in config["other_teachers"]:
        family, _, path = entry.partition("=")
        for row in measure_teacher(family, path, config["ts"], config["n"], config["seed"],
                                   config["probes"], bar.update):
            results.append(row)
            other.append([family, path, row["t"], "{:.3f} ± {:.3f}".format(*row["rho_contrast"])])
            echo(json.dumps(row))
    bar.close()
    if other:
        text += "\n\nOther score models of the same data:\n\n" + markdown_table(
            ["family", "model file", "t", "ρ: contrast"], other)
    write_results(config, results, text)
    print(text)


if __name__ == "__main__":
    main()
