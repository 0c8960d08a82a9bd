"""recompose: compose trained diffusion models as densities and sample them correctly.

Quick map: models (:class:`DiffusionModel`, :class:`GaussianMixture`) on Gaussian paths
(:mod:`.schedules`: VP, rectified flow, VE), the algebra (``a * b``, ``a ** w``, ``a / b``,
:func:`mixture`, :func:`cfg`, :func:`guide`, :func:`normalize`, :func:`tapestry` for canvases
of crops, :func:`reward` for verifiers as factors; the same algebra as text: :func:`parse`),
samplers as objects (:mod:`.samplers`: reverse diffusion, the probability-flow ODE, annealed
ULA / U-HMC / MALA / HMC, SMC, FKC, best-of-N) and one entry point :func:`sample`.

Importing recompose before torch makes torch's OpenMP threads sleep rather than spin while they
wait (``OMP_WAIT_POLICY=PASSIVE``, unless the variable is already set): with spinning threads a
run slows 10-60× as soon as another process shares the cores (docs/results.md §4). Set
``OMP_WAIT_POLICY=ACTIVE`` to keep spinning; the variable only counts before torch is loaded.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads OpenMP

from . import mcmc, samplers  # noqa: E402
from .compose import (
    Mixture,
    Power,
    Product,
    Superposition,
    cfg,
    conjunction,
    guide,
    mixture,
    power,
    product,
    superpose,
)
from .errors import ApproximationWarning, CapabilityError, CompositionError
from .expression import ExpressionError, parse
from .models import DiffusionModel, GaussianMixture, gmm_product
from .models.denoiser import from_denoiser
from .models.loading import load_model, pretrained
from .models.normalization import normalize
from .rewards import Reward, Tilted, reward
from .samplers import SampleInfo, SampleResult
from .sampling import SAMPLERS, sample
from .schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    RectifiedFlowSchedule,
    Schedule,
    SigmaSchedule,
    VESchedule,
    get_schedule,
)
from .tapestry import Tapestry, tapestry

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``rc.from_diffusers``, ``rc.from_pretrained`` and ``rc.from_pipeline`` import the
    optional diffusers backend (:mod:`recompose.integrations.diffusers`) only when first used."""
    if name in ("from_diffusers", "from_pretrained", "from_pipeline"):
        from .integrations import diffusers as backend

        return getattr(backend, name)
    raise AttributeError(f"module 'recompose' has no attribute {name!r}")



__all__ = ["DiffusionModel", "GaussianMixture", "gmm_product", "pretrained", "load_model",
           "Product", "Power", "Mixture", "Superposition", "product", "power", "mixture",
           "superpose", "cfg", "guide",
           "conjunction", "tapestry", "Tapestry", "normalize", "parse", "sample", "SAMPLERS",
           "SampleResult", "SampleInfo", "Schedule", "CosineSchedule", "LinearSchedule",
           "DiscreteSchedule", "RectifiedFlowSchedule", "VESchedule", "SigmaSchedule",
           "get_schedule", "CapabilityError", "CompositionError", "ExpressionError", "mcmc",
           "samplers", "from_diffusers", "from_pretrained", "from_pipeline", "from_denoiser",
           "ApproximationWarning", "reward", "Reward", "Tilted"]
