"""Exceptions with messages that say what went wrong and what to do."""

from __future__ import annotations

__all__ = ["CapabilityError", "CompositionError", "ApproximationWarning", "first_line"]


class CapabilityError(TypeError):
    """A model lacks what an operation needs (e.g. an energy for a mixture or an MH sampler)."""


class CompositionError(ValueError):
    """Parts that cannot be composed (different schedules or data shapes, bad weights)."""


def first_line(err: BaseException) -> str:
    """An exception's first message line (its type name when it has no message), for one-line
    errors that wrap a library's multi-line ones."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class ApproximationWarning(UserWarning):
    """A composition that is only approximately the density it is written as (e.g. a negative
    power of a guidance-distilled network's view)."""
