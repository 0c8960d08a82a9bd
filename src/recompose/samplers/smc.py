r"""Sequential Monte Carlo on the composed energies (weighted particles; needs energies).

Targets, as in annealed MCMC: at level ``t_i`` the composed density ``γ_i(x) = exp(−E_i(x))``
(``E_i = E_comp(·, t_i)``, e.g. ``Σ_k E_k`` for a product), normaliser ``Z_i = ∫ γ_i``. The
generic weighted step (normalisation, ESS, resampling, moves, evidence) is in
:mod:`.particles`; SMC supplies the arrival at each level:

**Start** (level ``T − 1``): ``x ~ q = N(0, v I)``, the path's prior, weight ``γ_{T−1}(x)/q(x)``.

**From level i + 1 to i**, two proposals:

* ``proposal="ais"`` (default; Neal 2001): keep the points and re-weight them,
  ``log w_i = E_{i+1}(x) − E_i(x)``; the moves then carry them toward ``γ_i``. This is annealed
  MCMC with weights and resampling (Zhang et al. 2026). It needs moves.
* ``proposal="ddpm"``: ``x' ~ N(μ_{i+1}(x), ṽ_{i+1} I)``, the reverse-diffusion (posterior)
  step with the composed score (:meth:`~recompose.schedules.Levels.posterior`), with the
  forward transition ``L_i(x | x') = N(x; a x', v I)`` (``a = α_{i+1}/α_i``, ``v = σ²_{i+1}
  − a² σ_i²``) as backward kernel (Del Moral, Doucet & Jasra 2006, eq. 31)::

      log w_i = −E_i(x') + E_{i+1}(x) + log N(x; a x', v I) − log N(x'; μ_{i+1}(x), ṽ I)

  If the ``γ_i`` were the marginals of one diffusion and the score exact, every ``w_i → 1`` as
  ``T`` grows: the weights correct what composing the time-``t`` densities breaks (R3 §3).
  Measured weakness: near ``t = 1`` the step divides by ``a`` (≈ 0.08 for the first step of the
  cosine schedule at ``T = 100``), which amplifies a product's score and collapses the weights
  (docs/results.md).

Either way the weighted particles at level ``i`` are consistent for ``γ_i / Z_i``; for
normalised leaves, ``Z_0`` of a product is the overlap ``∫ ∏_k p^k_{t_0}``.

**Moves**: ``num_steps`` steps of an MCMC kernel targeting ``γ_i`` after the reweighting and
resampling; at the last level they also separate the copies the resampling made. A
Metropolis-corrected kernel (MALA, HMC) leaves ``γ_i`` invariant, so the weights stay valid;
unadjusted kernels (ULA, U-HMC) are allowed but their discretisation bias is not corrected.

**Cost** per particle: one ``energy_and_score`` per level (``T`` network gradients, as many as
reverse diffusion; the moves' first step reuses it), plus the moves' own cost and, for
unadjusted moves, one energy (no gradient) per level.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import CapabilityError
from ..mcmc.base import Kernel, Target
from ..mcmc.step_sizes import AcceptanceAdapter
from ..models.base import DiffusionModel
from .annealed import Moves
from .base import Run, finite_or_raise, model_output_or_raise
from .particles import Particles, Weighted, cached, log_normal, resolve_moves

__all__ = ["SMC", "PROPOSALS"]

PROPOSALS = ("ais", "ddpm")


class SMC(Weighted):
    """SMC on the composed energies (module docstring).

    Args:
        moves: the MCMC moves after each level's reweighting: a kernel object or a kernel's
            name (``"hmc"`` by default; ``None`` for no moves).
        num_steps: moves per level (default 2 with moves; 0: none).
        ess_threshold: resample when the effective sample size falls under
            ``ess_threshold · n`` (1: every level, 0: never).
        resampling: ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``.
        proposal: ``"ais"`` (re-weight the same points; needs moves) or ``"ddpm"`` (the
            reverse-diffusion step as a proposal).
        step_size: ``c`` of the moves' step rule ``c · σ_t^p`` (as for
            :class:`~.annealed.Annealed`).
        step_power: ``p`` of the moves' step rule.
        adapt: adapt ``c`` toward ``target_accept`` (default: on for Metropolis moves).
        target_accept: the acceptance rate adaptation aims at (default: the kernel's).
        denoise: end with Tweedie's ``x̂₀``.
        **kernel_options: with ``moves`` given by name, its factory's options (e.g.
            ``num_leapfrog_steps``).
    """

    name = "smc"

    def __init__(self, moves: str | Kernel | None = "hmc", num_steps: int | None = None,
                 ess_threshold: float = 0.5, resampling: str = "systematic",
                 proposal: str = "ais", step_size: float | None = None,
                 step_power: float | None = None, adapt: bool | None = None,
                 target_accept: float | None = None, denoise: bool = True,
                 **kernel_options: object) -> None:
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {', '.join(PROPOSALS)}, got {proposal!r}")
        super().__init__(resolve_moves(moves, kernel_options), num_steps, 2,
                         ess_threshold, resampling, step_size, step_power, adapt,
                         target_accept, denoise)
        self.proposal = proposal
        if proposal == "ais" and self.num_steps == 0:
            raise ValueError("smc with proposal='ais' moves the particles only by its MCMC "
                             "moves: give moves and num_steps ≥ 1, or proposal='ddpm'")

    def check(self, model: DiffusionModel) -> None:
        if not model.has_energy:
            raise CapabilityError(
                f"SMC needs energies (it weights particles by energy differences) but "
                f"{model.describe()} is score-only; use energy-parameterised models, or the "
                "'fkc' (weighted, score-only), 'reverse', 'ode', 'ula' or 'uhmc' samplers")
        super().check(model)

    def settings(self) -> dict:
        return super().settings() | {"proposal": self.proposal}

    def _evaluate(self, run: Run, target: Target, x: Tensor, i: int) -> Particles:
        energy, score = target.energy_and_score(x)
        model_output_or_raise(score, x, i, run.levels)
        model_output_or_raise(energy[:, None], x, i, run.levels, "energy")
        run.count(score=1, energy=1)
        return Particles(x, energy, score)

    def arrive(self, run: Run, context: None, cur: Particles | None, i: int
               ) -> tuple[Particles, Tensor]:
        target = run.target(i)
        if cur is None:  # the noisiest level: importance sampling from the prior
            new = self._evaluate(run, target, run.x_init, i)
            prior = log_normal(run.x_init, run.levels.prior_variance())
            return new, -new.energy.to(torch.float64) - prior
        if self.proposal == "ais":  # the same points, level i + 1 → i
            new = self._evaluate(run, target, cur.x, i)
            return new, cur.energy.to(torch.float64) - new.energy.to(torch.float64)
        levels = run.levels
        mean, var = levels.posterior(cur.x, cur.score, i + 1, run.clip)
        z = torch.randn(cur.x.shape, generator=run.generator, device=cur.x.device,
                        dtype=cur.x.dtype)
        x = mean + var**0.5 * z
        finite_or_raise(x, i, levels, "the composed score is too large for the DDPM proposal; "
                                      "use more levels")
        new = self._evaluate(run, target, x, i)
        a, v = levels.transition(i + 1)
        log_backward = log_normal(cur.x - a * x, v)
        log_forward = log_normal(x - mean, var)
        return new, (cur.energy.to(torch.float64) - new.energy.to(torch.float64)
                     + log_backward - log_forward)

    def move(self, run: Run, context: None, cur: Particles, previous: NamedTuple | None,
             target: Target, adapter: AcceptanceAdapter | None, i: int
             ) -> tuple[Particles, NamedTuple, Moves]:
        start = cached(target, cur.x, cur.energy, cur.score)
        state, moved = self._kernel_moves(run, start, target, cur, previous, adapter, i)
        energy, extra = state.energy, 0
        if energy is None:  # unadjusted moves: the next weight needs E_i at the new points
            energy, extra = target.energy(state.x), 1
        return Particles(state.x, energy, state.score), state, moved._replace(
            energy_evals=moved.energy_evals + extra)
