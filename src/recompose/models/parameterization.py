r"""Adapters from networks to the model contract: score (ε) and energy parameterisations, and
conditional views of one network.

Both wrap a network ``f_θ(x, t)`` with the shape of ``x``; ``σ_t`` comes from the schedule.

* :class:`ScoreModel`: the network predicts ``ε`` (default), ``x₀``, ``v``, a flow-matching
  velocity or the score on its path (:mod:`.predictions` converts any of them to ``ε̂``), and
  ``s = −ε̂ / σ_t`` (:func:`~.predictions.score_from_epsilon`). No energy.
* :class:`EnergyModel` (R3 §3): a scalar ``U_θ(x, t)`` per sample whose gradient is the
  ε-prediction, ``ε̂ = ∇ₓ U_θ``. Then ``s = −∇ₓU_θ/σ_t``, so the model's energy is
  ``E(x, t) = U_θ(x, t) / σ_t`` (``p_t ∝ e^{−E}``, up to an unknown ``c(t)``), and its score is
  ``s = −∇ₓE`` by autograd. Forms:

  - ``"ae"`` (default; the R3 2D notebook): ``U_θ = ‖f_θ(x, t) − x‖²`` (no ½);
  - ``"l2"`` (the R3 PyTorch code at HEAD): ``U_θ = ½‖f_θ(x, t)‖²``.

:func:`epsilon_prediction` gives ``ε̂`` for training (with ``create_graph`` for the energy model,
since the DSM loss differentiates through ``∇ₓU_θ``).

**Conditions.** A conditional network ``f_θ(x, t, c)`` (see :mod:`.networks`) trained with
condition dropout defines ``p_t(x | c)`` plus the unconditional ``p_t(x)`` (the null condition
``c = ∅``, written ``None``). Every method takes an optional encoded condition batch ``c``;
``model.given(c)`` is the leaf model ``p_t(x | c)`` (:class:`Conditioned`), ``model`` itself is
``p_t(x)``.

**Batched terms.** A product over ``K`` conditions of one network, each raised to ``w_k``
(CLEVR: one factor per object position; classifier-free guidance: ``p(x)^{1−w} p(x|y)^w``), has

    E(x, t) = Σ_k w_k E_θ(x, t, c_k),        s(x, t) = Σ_k w_k s_θ(x, t, c_k).

Both conversions are linear in the network output, so this is the conversion of
``Σ_k w_k U_θ(x, t, c_k)`` (or of ``Σ_k w_k ε̂``): the ``K`` copies of ``x`` are stacked into
one ``(K·B, *D)`` batch with conditions ``(c_1…c_1, …, c_K…c_K)``, the network is called once,
and :func:`weighted_sum` reduces its ``(K·B, …)`` output with the weights
(:meth:`~_Learned.stacked`). Autograd through the stacking sums the gradients of the copies, so
a score obtained as ``−∇ₓE`` is exact. A network whose condition enters late (its
``shares_trunk`` is true) computes the condition-free trunk on ``x`` once and only its head on
the ``K·B`` rows, so ``K`` terms cost one trunk and ``K`` heads. A leaf joins such a call
through its :attr:`~recompose.models.base.DiffusionModel.batch_slot`, and
:class:`~recompose.compose.Product` groups its factors by that slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import CapabilityError
from ..schedules import Schedule
from ..utils import (
    append_dims,
    as_time,
    batch_sum,
    check_event_shape,
    energy_and_score_autograd,
    graph_kept,
)
from .base import BatchSlot, DiffusionModel, model_device_dtype
from .predictions import Prediction, get_prediction, score_from_epsilon

__all__ = ["ScoreModel", "EnergyModel", "Conditioned", "epsilon_prediction",
           "training_output", "condition_batch", "stack_conditions", "weighted_sum"]


class _Learned(DiffusionModel):
    """What score and energy models share: the network call with an optional condition."""

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 name: str | None = None) -> None:
        super().__init__()
        self.net, self.schedule, self.event_shape, self.name = net, schedule, event_shape, name

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.net, "conditional", False))

    def _check_call(self, x: Tensor, c: Tensor | None) -> None:
        """Refuse inputs of another event shape, and a condition for an unconditional net."""
        check_event_shape(x, self.event_shape, self.describe())
        if c is not None and not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")

    def _net(self, x: Tensor, t: Tensor, c: Tensor | None) -> Tensor:
        self._check_call(x, c)
        return self.net(x, t) if c is None else self.net(x, t, c)

    def _net_copies(self, x: Tensor, t: Tensor, c: Tensor | None, copies: int
                    ) -> tuple[Tensor, Tensor]:
        """``(xs, out)``: ``copies`` stacked copies of ``x`` (``(K·B, *D)``) and the network's
        output on them with the ``K·B`` conditions ``c`` (``copies = 1``: ``x`` itself). A
        network that ``shares_trunk`` is given ``x`` once (:meth:`PositionUNet.forward_copies`);
        the stacked ``xs`` is what an energy's ``x`` term differentiates through either way."""
        if copies == 1:
            return x, self._net(x, t, c)
        xs = torch.cat([x] * copies)
        if getattr(self.net, "shares_trunk", False):
            check_event_shape(x, self.event_shape, self.describe())
            return xs, self.net.forward_copies(x, t, c)
        return xs, self._net(xs, t.repeat(copies), c)

    def given(self, value: object, name: str | None = None) -> DiffusionModel:
        """``p_t(x | c = value)`` as a leaf model; ``value`` is one condition or one per chain."""
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} was not trained with conditions; load a "
                                  "conditional model (trained with label dropout) to use .given()")
        return Conditioned(self, value, name=name)

    @property
    def batch_slot(self) -> BatchSlot | None:
        """A conditional network's null-condition view (``p_t(x)``) shares its calls with the
        views ``self.given(c)``; an unconditional network has nothing to share with."""
        return BatchSlot(self, None) if self.conditional else None

    def stacked(self, conditions: Sequence[Tensor | None], weights: Sequence[float]
                ) -> DiffusionModel:
        """``∏_k p_t(x | c_k)^{w_k}`` from one network call: energy ``(Σ_k w_k U_θ(x, t, c_k))
        / σ_t`` (energy model) or score ``−(Σ_k w_k ε̂(x, t, c_k)) / σ_t`` (score model)."""
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")
        if len(conditions) != len(weights) or not conditions:
            raise ValueError(f"stacking {self.describe()} needs one weight per condition, got "
                             f"{len(conditions)} conditions and {len(weights)} weights")
        return _Stacked(self, conditions, weights)

    def rows(self, conditions: Sequence[Tensor | None], batch: int) -> DiffusionModel:
        """This network as one model on ``K·batch`` rows whose block ``k`` (rows ``k·batch …
        (k+1)·batch − 1``) has encoded condition ``conditions[k]`` (``None`` = null): one call
        for views of the network applied to *different* inputs (the crops of a tapestry)."""
        if not self.conditional:
            raise CapabilityError(f"{self.describe()} is not a conditional model")
        return _Rows(self, conditions, batch)


class ScoreModel(_Learned):
    """A network as a score-only model; ``prediction`` says what it outputs on its path
    (``"epsilon"``, ``"x0"``, ``"v"``, ``"velocity"``, ``"score"``; :mod:`.predictions`)."""

    has_energy = False

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 name: str | None = None, prediction: str | Prediction = "epsilon") -> None:
        super().__init__(net, schedule, event_shape, name)
        self.prediction = get_prediction(prediction)

    def output(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        """The network's raw prediction (what training regresses)."""
        return self._net(x, as_time(t, x.shape[0], x), c)

    def epsilon(self, x: Tensor, t: float | Tensor, c: Tensor | None = None,
                copies: int = 1) -> Tensor:
        """``ε̂``; with ``copies = K``, on ``K`` copies of ``x`` with ``K·B`` conditions ``c``."""
        t = as_time(t, x.shape[0], x)
        xs, out = self._net_copies(x, t, c, copies)
        if self.prediction.name == "epsilon":
            return out
        ts = t if copies == 1 else t.repeat(copies)
        return self.prediction.to_epsilon(out, xs, ts, self.schedule)

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return score_from_epsilon(self.epsilon(x, t, c), sigma)

    def denoised_terms(self, x: Tensor, t: Tensor, c: Tensor | None = None,
                       copies: int = 1) -> tuple[float, Tensor]:
        """``(1, x̂₀)`` from the network's own prediction (defined at ``α = 0`` for x₀, v,
        velocity and flow predictions); with ``copies = K``, ``(K·B, *D)`` on ``K`` copies of
        ``x`` with ``K·B`` conditions ``c``."""
        xs, out = self._net_copies(x, t, c, copies)
        return 1.0, self.prediction.to_x0(out, xs, t.repeat(copies), self.schedule)


class EnergyModel(_Learned):
    """Energy-parameterised model, ``E(x, t) = U_θ(x, t)/σ_t`` with ``∇ₓU_θ = ε̂``."""

    has_energy = True

    def __init__(self, net: nn.Module, schedule: Schedule, event_shape: tuple[int, ...],
                 form: str = "ae", name: str | None = None) -> None:
        if form not in ("ae", "l2"):
            raise ValueError(f"energy form must be 'ae' or 'l2', got {form!r}")
        super().__init__(net, schedule, event_shape, name)
        self.form = form
        self._gradient: tuple | None = None  # set by compile_gradient()

    def potential(self, x: Tensor, t: float | Tensor, c: Tensor | None = None,
                  copies: int = 1) -> Tensor:
        """``U_θ(x, t)``, shape ``(B,)`` (ε-scale; the energy divides it by ``σ_t``); with
        ``copies = K``, ``(K·B,)`` on ``K`` copies of ``x`` with ``K·B`` conditions ``c``."""
        t = as_time(t, x.shape[0], x)
        xs, out = self._net_copies(x, t, c, copies)
        if self.form == "ae":
            return batch_sum((out - xs) ** 2)
        return 0.5 * batch_sum(out**2)

    def energy(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        return self.potential(x, t, c) / sigma

    def energy_and_score(self, x: Tensor, t: float | Tensor,
                         c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self._gradient is None or graph_kept():  # the compiled gradient has no graph
            return energy_and_score_autograd(lambda z: self.energy(z, t, c), x)
        t = as_time(t, x.shape[0], x)
        self._check_call(x, c)
        with torch.no_grad():
            u, epsilon = self._gradient[0](self.net, self.form, x, t, c)  # ∇ₓU = ε̂
        sigma = self.schedule(t)[1]
        return u / sigma, score_from_epsilon(epsilon, sigma)

    def compile_gradient(self, **options: object) -> EnergyModel:
        """Evaluate :meth:`energy_and_score` (and so :meth:`score`) with a hand-derived backward
        pass under ``torch.compile(**options)`` instead of autograd; returns ``self``.

        Same values to float rounding, faster where the compiler fuses the elementwise work
        (benchmarks/gradient_cost.py). The first call per input shape compiles (seconds);
        needs a C++ compiler on CPU. Residual-MLP networks only
        (:mod:`.explicit_gradient`); training is unaffected (it never calls this method).
        """
        from .explicit_gradient import resmlp_potential_and_gradient
        from .networks import ResMLP

        if not isinstance(self.net, ResMLP):
            raise CapabilityError(f"{self.describe()}: compile_gradient() is written for the "
                                  f"residual MLP, not {type(self.net).__name__}; use the "
                                  "model as it is (autograd)")
        # a tuple, not an attribute nn.Module would register: state_dict stays the network's
        self._gradient = (torch.compile(resmlp_potential_and_gradient, **options),)
        return self

    def score(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        return self.energy_and_score(x, t, c)[1]

    def epsilon(self, x: Tensor, t: float | Tensor, create_graph: bool = False,
                c: Tensor | None = None) -> Tensor:
        """``ε̂ = ∇ₓU_θ(x, t)`` by autograd, the shape of ``x``; ``create_graph=True`` keeps the
        graph (for a training loss)."""
        _, grad = energy_and_score_autograd(lambda z: self.potential(z, t, c), x, create_graph)
        return -grad


def condition_batch(model: _Learned, cond: Tensor | None, n: int) -> Tensor:
    """Encoded conditions for ``n`` chains: the null condition, one broadcast, or per chain."""
    net = model.net
    if cond is None:
        return net.null_condition(n)
    event_ndim = getattr(net, "condition_ndim", 0)
    if cond.ndim == event_ndim:
        return cond.expand((n,) + tuple(cond.shape))
    if cond.shape[0] != n:
        raise ValueError(f"{model.describe()}: got conditions for {cond.shape[0]} chains but {n} "
                         "chains")
    return cond


class Conditioned(DiffusionModel):
    """``p_t(x | c)`` for a fixed condition ``c`` (one value, or one per chain)."""

    def __init__(self, parent: _Learned, value: object, name: str | None = None) -> None:
        super().__init__()
        self.parent, self.value, self.cond = parent, value, parent.net.encode_condition(value)
        self.schedule, self.event_shape = parent.schedule, tuple(parent.event_shape)
        self.has_energy = parent.has_energy
        if name is None:
            small = not isinstance(value, Tensor) or value.numel() <= 4
            shown = (value.tolist() if isinstance(value, Tensor) else value) if small else "…"
            name = f"{parent.describe()}|{shown}"
        self.name = name

    @property
    def per_chain(self) -> bool:
        return self.cond.ndim > getattr(self.parent.net, "condition_ndim", 0)

    @property
    def batch_slot(self) -> BatchSlot:
        """A view of the parent's network: it joins the parent's batched call with ``c``."""
        return BatchSlot(self.parent, self.cond)

    def _c(self, x: Tensor) -> Tensor:
        return condition_batch(self.parent, self.cond.to(x.device), x.shape[0])

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)  # raises the capability error
        return self.parent.energy(x, t, self._c(x))

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.parent.score(x, t, self._c(x))

    def energy_and_score(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_energy:
            return super().energy_and_score(x, t)
        return self.parent.energy_and_score(x, t, self._c(x))

    def denoised_terms(self, x: Tensor, t: Tensor) -> tuple[float, Tensor]:
        if isinstance(self.parent, ScoreModel):
            return self.parent.denoised_terms(x, t, self._c(x))
        return super().denoised_terms(x, t)


def stack_conditions(model: _Learned, conditions: Sequence[Tensor | None], batch: int,
                     device: torch.device) -> Tensor:
    """``(K·batch, …)`` encoded conditions, block ``k`` from ``conditions[k]`` (``None`` = null;
    one value or one per chain)."""
    return torch.cat([condition_batch(model, None if c is None else c.to(device), batch)
                      for c in conditions])


class _Rows(Conditioned):
    """A conditional network with one condition per row: ``K`` blocks of ``batch`` rows (built
    by ``model.rows``); its inputs are ``(K·batch, *D)``, each block its own input."""

    def __init__(self, parent: _Learned, conditions: Sequence[Tensor | None], batch: int) -> None:
        DiffusionModel.__init__(self)
        self.parent, self.value = parent, None
        device = model_device_dtype(parent)[0]
        self.cond = stack_conditions(parent, conditions, batch, device)
        self.schedule, self.event_shape = parent.schedule, tuple(parent.event_shape)
        self.has_energy = parent.has_energy
        self.name = f"rows({parent.describe()}, K={len(conditions)})"

    @property
    def batch_slot(self) -> None:
        return None  # already a batched call

    def _c(self, x: Tensor) -> Tensor:
        if x.shape[0] != self.cond.shape[0]:
            raise ValueError(f"{self.describe()} takes {self.cond.shape[0]} rows, got "
                             f"{x.shape[0]}")
        return self.cond.to(x.device)


def weighted_sum(stacked: Tensor, weights: Sequence[float]) -> Tensor:
    """``Σ_k w_k v_k`` of a ``(K·B, …)`` batch of ``K`` blocks of ``B`` rows -> ``(B, …)``."""
    k = len(weights)
    v = stacked.reshape((k, stacked.shape[0] // k) + tuple(stacked.shape[1:]))
    w = torch.tensor(list(weights), dtype=v.dtype, device=v.device)
    return (append_dims(w, v.ndim) * v).sum(0)


class _Stacked(DiffusionModel):
    """``∏_k p_t(x | c_k)^{w_k}`` over conditions of one network (built by ``model.stacked``);
    held by a :class:`~recompose.compose.Product` beside its factors, not as a submodule. An
    energy network gives the energy (the score by autograd), a score network the score only."""

    def __init__(self, network: _Learned, conditions: Sequence[Tensor | None],
                 weights: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.conditions = list(conditions)
        self.weights = [float(w) for w in weights]
        self.schedule = network.schedule
        self.event_shape = tuple(network.event_shape)
        self.has_energy = network.has_energy

    def _sum(self, x: Tensor, t: float | Tensor, output: str) -> tuple[Tensor, Tensor]:
        """``σ_t`` and ``Σ_k w_k`` of the network's ``output`` (potential or epsilon)."""
        t = as_time(t, x.shape[0], x)
        _, sigma = self.schedule(t)
        cs = stack_conditions(self.network, self.conditions, x.shape[0], x.device)
        out = getattr(self.network, output)(x, t, cs, copies=len(self.conditions))
        return sigma, weighted_sum(out, self.weights)

    def energy(self, x: Tensor, t: float | Tensor) -> Tensor:
        if not self.has_energy:
            return super().energy(x, t)  # raises the capability error
        sigma, potential = self._sum(x, t, "potential")
        return potential / sigma

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        if self.has_energy:
            return super().score(x, t)
        sigma, epsilon = self._sum(x, t, "epsilon")
        return score_from_epsilon(epsilon, sigma)

    def denoised_terms(self, x: Tensor, t: Tensor) -> tuple[float, Tensor]:
        if not isinstance(self.network, ScoreModel):
            return super().denoised_terms(x, t)
        cs = stack_conditions(self.network, self.conditions, x.shape[0], x.device)
        _, x0 = self.network.denoised_terms(x, t, cs, copies=len(self.conditions))
        return sum(self.weights), weighted_sum(x0, self.weights)

    def view_scores(self, x: Tensor, t: float | Tensor) -> Tensor:
        """``(K, B, *D)``: each view's own score ``s_k(x, t)``, in one network call on ``K·B``
        rows (for weights that need the terms, not only their sum)."""
        k, b = len(self.conditions), x.shape[0]
        rows = self.network.rows(self.conditions, b)
        scores = rows.score(torch.cat([x] * k), as_time(t, b, x).repeat(k))
        return scores.reshape((k, b) + tuple(x.shape[1:]))

    def describe(self) -> str:
        return f"stacked({self.network.describe()}, K={len(self.conditions)})"


def epsilon_prediction(model: DiffusionModel, x: Tensor, t: Tensor,
                       c: Tensor | None = None) -> Tensor:
    """``ε̂(x, t[, c])`` with a graph to the parameters (distillation compares ``ε̂``)."""
    extra = {} if c is None else {"c": c}
    if isinstance(model, EnergyModel):
        return model.epsilon(x, t, create_graph=True, **extra)
    if isinstance(model, ScoreModel):
        return model.epsilon(x, t, **extra)
    raise TypeError(f"cannot train a {type(model).__name__}; wrap a network in a "
                    "Score/EnergyModel")


def training_output(model: DiffusionModel, x: Tensor, t: Tensor, c: Tensor | None = None
                    ) -> tuple[Tensor, Prediction]:
    """What the DSM loss regresses, with a graph to the parameters: the raw prediction of a
    score model and its :class:`~.predictions.Prediction`, or an energy model's ``∇U = ε̂``."""
    if isinstance(model, ScoreModel):
        return model.output(x, t, c), model.prediction
    return epsilon_prediction(model, x, t, c), get_prediction("epsilon")
