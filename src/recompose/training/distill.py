r"""Energy distillation: an energy network whose gradient matches a trained score model
(Thornton et al., AISTATS 2025, "Controlled generation with distilled diffusion energies").

A score (ε) teacher ``ε̂_T(x, t)`` has no energy; the student is an
:class:`~recompose.models.parameterization.EnergyModel`, ``ε̂_θ = ∇ₓU_θ`` and
``E_θ = U_θ/σ_t``. Distillation regresses the student's gradient on the teacher's field at
noised data, with the same ``t`` and noise draws as denoising score matching::

    x_t = α_t x₀ + σ_t ε,     t ~ U(t_min, t_max),  x₀ ~ data,  ε ~ N(0, I)
    L(θ) = E mean_d ‖∇ₓU_θ(x_t, t) − ε̂_T(x_t, t)‖²  +  λ · E mean_d ‖∇ₓU_θ(x_t, t) − ε‖²

The first term is score matching against the teacher in ε units (``‖s_θ − s_T‖² σ_t²``); its
target has no noise, so it converges faster than the second (plain DSM, weight
``λ = dsm_weight``, 0 by default). Its minimiser over all fields would be ``ε̂_T`` itself; over
gradient fields it is the ``L²(p_t)``-closest conservative field, the gradient part of the
teacher's field (a Helmholtz-like projection), so where the teacher is nearly conservative
the student inherits its sample quality and adds energies for Metropolis tests and weights.

A score student (``parameterization="score"``) is plain knowledge distillation of the field
into another network, e.g. a position model whose condition enters late (docs/results.md §6.1:
trained by DSM alone, its head barely learned to use the position, whose part of ε is small
beside DSM's noisy target).
Conditional teachers give conditional students: each drawn condition is encoded by both
networks, the same condition-dropout mask replaces it by the null condition in both, so the
student learns ``p_t(x | c)`` and ``p_t(x)`` (the null view) as the teacher defines them.

**Condition contrast** (``contrast_weight = γ > 0``). Compositions use a conditional model
through its contrasts: R3's product over conditions has ``ε̂ = ε̂(∅) + Σ_k (ε̂(c_k) − ε̂(∅))``
and classifier-free guidance adds ``w (ε̂(c) − ε̂(∅))``. These contrasts are a small part of
``ε̂`` (on the CLEVR position model about 0.2 % of ``‖ε̂‖²``), so the plain loss hardly sees
them and a student can match the teacher's field yet miss its contrast (docs/results.md §8.5).
With ``γ > 0`` every row is evaluated under its condition and under the null one
(``e = ε̂_θ − ε̂_T``, twice the network work) and the loss gains the contrast error::

    L(θ) = E mean_d [ ‖e(x_t, t, c)‖² + γ ‖e(x_t, t, c) − e(x_t, t, ∅)‖² ]  (+ the DSM term)

Over all fields the minimiser is still the teacher's own (zero error in both views); over
gradient fields the term shifts the projection toward the teacher's contrasts, and in training
it decides what the student gets right first.

The teacher is named in the config (``TrainConfig.distill_from``: a shipped name such as
``"clevr"``, ``"ring:score"``, or a model file), so runs resume and reproduce like any other
training run (:class:`~recompose.training.trainer.Trainer`; the entry point is
:func:`recompose.training.distill_energy`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import TrainConfig
from ..io import CheckpointError, read_model_file
from ..models.base import DiffusionModel
from ..models.loading import load_model, model_file
from ..models.parameterization import EnergyModel, ScoreModel, epsilon_prediction
from ..utils import append_dims, batch_sum
from .losses import noised

__all__ = ["distillation_loss", "distillation_terms", "load_teacher", "teacher_config",
           "check_teacher"]


def load_teacher(spec: str) -> DiffusionModel:
    """Load the teacher a config names (eval mode, no gradients)."""
    return load_model(model_file(spec, "score"))


def teacher_config(spec: str, **overrides: object) -> TrainConfig:
    """A student config from the teacher file's own training config: same data, network,
    schedule, batch, steps and condition dropout, energy-parameterised, ``distill_from=spec``;
    ``overrides`` replace any entry (e.g. ``steps=2000``)."""
    _, meta = read_model_file(model_file(spec, "score"))
    train = dict(meta.get("train") or {})
    if not train:
        raise CheckpointError(f"teacher {spec!r} records no training config; build the student "
                              "config yourself (TrainConfig(..., distill_from=...))")
    known = set(TrainConfig.__dataclass_fields__)
    train = {k: v for k, v in train.items() if k in known}
    return TrainConfig(**{**train, "parameterization": "energy", "distill_from": spec,
                          **overrides})


def check_teacher(student: DiffusionModel, teacher: DiffusionModel) -> None:
    """Refuse a teacher the student cannot learn from, saying why."""
    if not isinstance(student, (EnergyModel, ScoreModel)):
        raise ValueError("distillation trains an energy or a score (ε) model, got "
                         f"{type(student).__name__}")
    if tuple(teacher.event_shape) != tuple(student.event_shape):
        raise ValueError(f"teacher {teacher.describe()} has event shape "
                         f"{tuple(teacher.event_shape)}, the student {tuple(student.event_shape)}")
    t = torch.linspace(0.01, 1.0, 11)
    if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-7)
               for a, b in zip(teacher.schedule(t), student.schedule(t))):
        raise ValueError(f"teacher {teacher.describe()} uses another noise schedule than the "
                         "student; give the student the teacher's schedule")
    if student.conditional and not getattr(teacher, "conditional", False):
        raise ValueError(f"the student is conditional but teacher {teacher.describe()} is not")


def _teacher_epsilon(teacher: DiffusionModel, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
    """``ε̂_T = −σ_t s_T(x, t[, c])``, detached (any teacher: score, energy or composite)."""
    _, sigma = teacher.schedule(t)
    with torch.no_grad():
        score = teacher.score(x, t) if c is None else teacher.score(x, t, c)
    return -append_dims(sigma, x.ndim) * score.detach()


def distillation_loss(
    model: EnergyModel, teacher: DiffusionModel, x0: Tensor,
    generator: torch.Generator | None = None, t_min: float = 1e-3, c: Tensor | None = None,
    c_teacher: Tensor | None = None, dsm_weight: float = 0.0, contrast_weight: float = 0.0,
) -> Tensor:
    """Per-sample ``mean_d ‖ε̂_θ − ε̂_T‖² + λ mean_d ‖ε̂_θ − ε‖²`` (plus the contrast term),
    shape ``(B,)``; ``c`` / ``c_teacher``: the same conditions encoded by the student's and
    the teacher's network."""
    return distillation_terms(model, teacher, *noised(x0, model, generator, t_min), c,
                              c_teacher, dsm_weight, contrast_weight)


def distillation_terms(
    model: EnergyModel, teacher: DiffusionModel, xt: Tensor, t: Tensor, noise: Tensor,
    c: Tensor | None = None, c_teacher: Tensor | None = None, dsm_weight: float = 0.0,
    contrast_weight: float = 0.0,
) -> Tensor:
    """:func:`distillation_loss` at given noised inputs ``(x_t, t, ε)``."""
    if contrast_weight:
        eps, err, err_null = _both_views(model, teacher, xt, t, c, c_teacher)
        loss = batch_sum(err ** 2) + contrast_weight * batch_sum((err - err_null) ** 2)
    else:
        eps = epsilon_prediction(model, xt, t, c)
        loss = batch_sum((eps - _teacher_epsilon(teacher, xt, t, c_teacher)) ** 2)
    if dsm_weight:
        loss = loss + dsm_weight * batch_sum((eps - noise) ** 2)
    return loss / xt[0].numel()


def _both_views(model: EnergyModel, teacher: DiffusionModel, xt: Tensor, t: Tensor,
                c: Tensor | None, c_teacher: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(ε̂_θ(c), e(c), e(∅))`` with ``e = ε̂_θ − ε̂_T``: every row under its condition and
    under the null condition, in one call per network on ``2B`` rows."""
    if c is None or c_teacher is None:
        raise ValueError("the contrast term compares conditional and null views: it needs a "
                         "conditional student and teacher")
    n = xt.shape[0]
    xs, ts = torch.cat([xt, xt]), torch.cat([t, t])
    eps = epsilon_prediction(model, xs, ts, torch.cat([c, model.net.null_condition(n)]))
    target = _teacher_epsilon(teacher, xs, ts,
                              torch.cat([c_teacher, teacher.net.null_condition(n)]))
    err = eps - target
    return eps[:n], err[:n], err[n:]
