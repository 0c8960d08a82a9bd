"""Training: the DSM loss, the resumable trainer, energy distillation, noisy classifiers.

``distill_energy(teacher, out)`` trains an energy model from a score model
(:mod:`.distill`).
"""

from .trainer import Trainer, distill_energy

__all__ = ["Trainer", "distill_energy"]
