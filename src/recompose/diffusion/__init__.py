"""Diffusion drivers: forward noising, the DDPM reverse step, and the level loops."""

from .annealed import SampleInfo, SampleResult, annealed_mcmc, reverse_diffusion
from .forward import q_sample
from .reverse import ddpm_step

__all__ = ["q_sample", "ddpm_step", "reverse_diffusion", "annealed_mcmc", "SampleInfo",
           "SampleResult"]
