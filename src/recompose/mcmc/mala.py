r"""Metropolis-adjusted Langevin algorithm (MALA; Roberts & Tweedie 1996).

Proposal as ULA (:mod:`.langevin`), then a Metropolis–Hastings test that makes ``π`` exactly
invariant::

    x' = x + η s(x) + √(2η) ξ
    log q(x' | x) = −‖x' − x − η s(x)‖² / (4η)            (noise variance 2η ⇒ 4η, not 2η²)
    log r = −E(x') + E(x) + log q(x | x') − log q(x' | x)

Accept per chain with probability ``min(1, r)``; on rejection keep ``x``. Needs energies,
or ``energy="path"``: ``E(x') − E(x)`` estimated from scores on the segment ``x → x'``
(:mod:`.path`; the trapezoid rule is free and exact for Gaussians, Simpson's costs one score
at the midpoint). One step costs one ``energy_and_score`` evaluation (at ``x'``; ``"path"``:
one score, plus the midpoint's for Simpson). A proposal whose energy or
position is not finite is divergent (and rejected). Nothing is carried across noise levels.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import Tensor

from ..utils import per_chain
from .base import Info, Kernel, LangevinState, Target, not_finite, require_energy
from .langevin import langevin_log_q, langevin_proposal
from .path import check_energy_mode, check_quadrature, simpson, trapezoid
from .proposal import metropolis_hastings, select

__all__ = ["mala"]


def mala(energy: str = "exact", quadrature: str | None = None) -> Kernel:
    """The Metropolis-adjusted Langevin kernel.

    Args:
        energy: ``"exact"`` (the model's energies; needs an energy model) or ``"path"``
            (energy differences by quadrature of the score: works on score-only models).
        quadrature: for ``"path"``: ``"simpson"`` (default; one more score, at the midpoint)
            or ``"trapezoid"`` (free, larger bias).
    """
    path = check_energy_mode(energy, "MALA") == "path"
    quadrature = check_quadrature(quadrature, path, "MALA")
    simpson_rule = quadrature == "simpson"

    def init(x: Tensor, target: Target, generator: torch.Generator | None = None,
             previous: NamedTuple | None = None) -> LangevinState:
        if path:
            return LangevinState(x=x, energy=None, score=target.score(x))
        require_energy(target, "MALA")
        e, s = target.energy_and_score(x)
        return LangevinState(x=x, energy=e, score=s)

    def step(state: LangevinState, target: Target, step_size: Tensor | float,
             generator: torch.Generator | None = None) -> tuple[LangevinState, Info]:
        x = state.x
        eta = per_chain(step_size, x)
        x_prop = langevin_proposal(x, state.score, eta, generator)
        if path:
            s_prop = target.score(x_prop)
            delta = (simpson(x, x_prop, state.score, target.score(0.5 * (x + x_prop)), s_prop)
                     if simpson_rule else trapezoid(x, x_prop, state.score, s_prop))
        else:
            e_prop, s_prop = target.energy_and_score(x_prop)
            delta = e_prop.to(torch.float64) - state.energy.to(torch.float64)
        log_ratio = (-delta + langevin_log_q(x, x_prop, s_prop, eta)
                     - langevin_log_q(x_prop, x, state.score, eta))
        accepted, accept_prob = metropolis_hastings(log_ratio, generator)
        new = LangevinState(x=select(accepted, x_prop, x),
                            energy=None if path else torch.where(accepted, e_prop, state.energy),
                            score=select(accepted, s_prop, state.score))
        divergent = not_finite(x_prop, s_prop, delta)
        info = Info(accept_prob.to(x.dtype), accepted, divergent,
                    score_evals=2 if simpson_rule else 1, energy_evals=0 if path else 1)
        return new, info

    params = {"energy": energy} | ({"quadrature": quadrature} if path else {})
    return Kernel(name="mala", init=init, step=step, needs_energy=not path, metropolis=True,
                  step_size=0.05, step_power=2.0, target_accept=0.574,
                  params=MappingProxyType(params))
