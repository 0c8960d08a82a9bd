"""Samplers as objects (:mod:`.base`: the protocol and the one level loop).

``Reverse`` (reverse diffusion), ``ODE`` (probability-flow / DDIM), ``Annealed`` (annealed MCMC
with any kernel), ``SMC`` (weighted particles on energies) and ``FKC`` (reverse diffusion with
Feynman–Kac weights; scores suffice). Their names are shortcuts (:mod:`.shortcuts`).
``Reverse`` and ``FKC`` also track log-densities along their chains (:mod:`.tracking`), which
mixtures of score-only models and superpositions need. ``BestOf`` keeps the best of ``N``
candidates by a reward factor's reward (:mod:`recompose.rewards`).
"""

from .annealed import Annealed
from .base import Finished, Run, Sampler, run_levels
from .best_of import BestOf
from .fkc import FKC, FeynmanKac
from .ode import ODE
from .particles import Weighted
from .result import LevelRecord, SampleInfo, SampleResult, SamplingWarning
from .reverse import Reverse
from .shortcuts import SAMPLERS, make_sampler
from .smc import SMC

__all__ = ["Sampler", "Run", "Finished", "LevelRecord", "run_levels", "Reverse", "ODE",
           "Annealed", "SMC", "FKC", "BestOf", "Weighted", "FeynmanKac", "SAMPLERS",
           "make_sampler", "SampleInfo", "SampleResult", "SamplingWarning"]
