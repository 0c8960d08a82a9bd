"""MCMC kernels as pure ``init``/``step`` functions of explicit state (see :mod:`.base`)."""

from .base import HamiltonianState, Info, Kernel, LangevinState, Target
from .hmc import hmc
from .integrators import kinetic_energy, leapfrog, refresh_momentum
from .mala import mala
from .proposal import metropolis_hastings, select
from .step_sizes import AcceptanceAdapter, StepSizeRule
from .uhmc import uhmc
from .ula import ula

KERNELS = {"ula": ula, "mala": mala, "uhmc": uhmc, "hmc": hmc}

__all__ = [
    "Target",
    "Kernel",
    "Info",
    "LangevinState",
    "HamiltonianState",
    "ula",
    "mala",
    "uhmc",
    "hmc",
    "KERNELS",
    "leapfrog",
    "refresh_momentum",
    "kinetic_energy",
    "metropolis_hastings",
    "select",
    "StepSizeRule",
    "AcceptanceAdapter",
]
