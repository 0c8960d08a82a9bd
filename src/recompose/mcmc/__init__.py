"""MCMC kernels as pure ``init``/``step`` functions of explicit state (see :mod:`.base`).

Each factory (:func:`ula`, :func:`mala`, :func:`uhmc`, :func:`hmc`) returns a :class:`Kernel`
that carries its settings and its default step rule; pass it to
:class:`recompose.samplers.Annealed` (or as the sampler of :func:`recompose.sample`), or as
the moves of SMC / FKC.
"""

from .base import DIVERGENCE_THRESHOLD, HamiltonianState, Info, Kernel, LangevinState, Target
from .hmc import hmc
from .integrators import leapfrog
from .langevin import langevin_log_q, langevin_proposal
from .mala import mala
from .mass import kinetic_energy, refresh_momentum, sample_momentum
from .proposal import metropolis_hastings, select
from .step_sizes import AcceptanceAdapter, StepSizeRule
from .uhmc import uhmc
from .ula import ula

KERNELS = {"ula": ula, "mala": mala, "uhmc": uhmc, "hmc": hmc}

__all__ = ["Target", "Kernel", "Info", "LangevinState", "HamiltonianState", "DIVERGENCE_THRESHOLD",
           "ula", "mala", "uhmc", "hmc", "KERNELS", "leapfrog", "langevin_proposal",
           "langevin_log_q", "sample_momentum", "refresh_momentum", "kinetic_energy",
           "metropolis_hastings", "select", "StepSizeRule", "AcceptanceAdapter"]
