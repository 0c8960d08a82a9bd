"""Exceptions with messages that say what went wrong and what to do."""

from __future__ import annotations

__all__ = ["CapabilityError", "CompositionError"]


class CapabilityError(TypeError):
    """A model lacks what an operation needs (e.g. an energy for a mixture or an MH sampler)."""


class CompositionError(ValueError):
    """Parts that cannot be composed (different schedules or data shapes, bad weights)."""
