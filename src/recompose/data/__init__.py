"""Data: seeded generators with exact densities (2D toys), bundled digits, CLEVR-like scenes.

:func:`get_dataset` maps a name to a training sampler with ``sample(n, generator)`` (``x`` or
``(x, condition)``) and ``event_shape``.
"""

from .toy2d import TOY2D, Box, Ring, Toy2D, get_toy2d

__all__ = ["TOY2D", "Toy2D", "Box", "Ring", "get_toy2d", "get_dataset", "DATASETS",
           "dataset_event_shape"]

DATASETS = (*TOY2D, "digits", "clevr")


def get_dataset(name: str) -> object:
    """The training sampler called ``name`` (a 2D toy, ``digits`` or ``clevr``)."""
    if name in TOY2D:
        return get_toy2d(name)
    if name == "digits":
        from .digits import Digits

        return Digits("train")
    if name == "clevr":
        from .clevr import ClevrPositions

        return ClevrPositions()
    raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def dataset_event_shape(name: str) -> tuple[int, ...]:
    """The ``event_shape`` of :func:`get_dataset`'s ``name``, without building the data."""
    if name in TOY2D:
        return tuple(Toy2D.event_shape)
    if name == "digits":
        from .digits import Digits

        return tuple(Digits.event_shape)
    if name == "clevr":
        from .clevr import SceneSpec

        size = SceneSpec().size
        return (3, size, size)
    raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
