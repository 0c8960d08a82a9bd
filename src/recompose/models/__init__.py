"""Models: the contract (:mod:`.base`), exact oracles (:mod:`.analytic`), parameterisations."""

from .analytic import GaussianMixture, gmm_product
from .base import DiffusionModel, model_device_dtype

__all__ = ["DiffusionModel", "GaussianMixture", "gmm_product", "model_device_dtype"]
