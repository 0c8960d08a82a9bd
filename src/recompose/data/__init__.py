"""Data: seeded generators with exact densities (2D toys) and, later, image data."""

from .toy2d import TOY2D, Box, Ring, Toy2D, get_toy2d

__all__ = ["TOY2D", "Toy2D", "Box", "Ring", "get_toy2d"]
