"""Plotting helpers (matplotlib ``Figure`` objects, no pyplot); every function returns a Figure."""

from .plots import acceptance_plot, density_levels, image_grid, scatter_grid

__all__ = ["scatter_grid", "acceptance_plot", "density_levels", "image_grid"]
