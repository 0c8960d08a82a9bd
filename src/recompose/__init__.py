"""recompose: compose trained diffusion models as densities and sample them correctly.

Quick map: models (:class:`DiffusionModel`, :class:`GaussianMixture`), the algebra
(``a * b``, ``a ** w``, ``a / b``, :func:`mixture`, :func:`cfg`, :func:`guide`,
:func:`normalize`; the same algebra as text: :func:`parse`), and one
sampler entry point :func:`sample` (reverse diffusion, ULA, U-HMC, MALA, HMC).
"""

from . import mcmc
from .compose import Mixture, Power, Product, cfg, conjunction, guide, mixture, power, product
from .diffusion import SampleInfo, SampleResult
from .errors import CapabilityError, CompositionError
from .expression import ExpressionError, parse
from .models import DiffusionModel, GaussianMixture, gmm_product
from .models.loading import load_model, pretrained
from .models.normalization import normalize
from .sampling import SAMPLERS, sample
from .schedules import CosineSchedule, LinearSchedule, Schedule, get_schedule

__version__ = "0.1.0"

__all__ = ["DiffusionModel", "GaussianMixture", "gmm_product", "pretrained", "load_model",
           "Product", "Power", "Mixture", "product", "power", "mixture", "cfg", "guide",
           "conjunction", "normalize", "parse", "sample", "SAMPLERS", "SampleResult", "SampleInfo",
           "Schedule", "CosineSchedule", "LinearSchedule", "get_schedule", "CapabilityError",
           "CompositionError", "ExpressionError", "mcmc"]
