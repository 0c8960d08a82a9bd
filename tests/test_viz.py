"""Plots: no side effects at import; one mosaic helper behind the image plots."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from recompose.viz.plots import image_grid, image_panels, tile


def test_import_sets_no_backend_and_loads_no_pyplot():
    code = ("import sys, matplotlib; before = matplotlib.rcParams._get('backend'); "
            "import recompose.viz.plots; "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert matplotlib.rcParams._get('backend') == before")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tile_layout_is_exact():
    x = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # (3, 1, 2, 3)
    out = tile(x, nrow=2)
    assert out.shape == (2 * 3 - 1, 2 * 4 - 1, 1)  # rows·(H+1)−1, nrow·(W+1)−1
    assert np.all(out[0:2, 0:3] == 0.0) and np.all(out[0:2, 4:7] == 0.5)
    assert np.all(out[3:5, 0:3] == 1.0)
    assert np.all(out[2] == 1.0) and np.all(out[:, 3] == 1.0)  # white gutters
    assert np.all(out[3:5, 4:7] == 1.0)  # the empty cell stays white
    assert tile(torch.full((1, 3, 2, 2), 5.0), 4).max() == 1.0  # clamped to [−1, 1]
    with pytest.raises(ValueError):
        tile(torch.zeros(2, 2, 2), 2)


def test_image_plots_are_figures_that_save(tmp_path):
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    for fig in (image_grid(x, 3), image_panels({"a": x, "b": x[:2]}, nrow=2,
                                               markers=torch.rand(5, 2, 2))):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 0
    shown = image_grid(x, 3).axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), tile(x, 3).squeeze(-1))


def test_ess_plot_draws_the_fraction_and_marks_resampled_levels():
    from recompose.viz.plots import ess_plot

    fig = ess_plot([0.1, 0.2, 0.3], [50.0, 20.0, 100.0], 100, resampled=[1])
    line, marks = fig.axes[0].lines
    assert np.allclose(line.get_ydata(), [0.5, 0.2, 1.0])
    assert np.allclose(marks.get_xdata(), [0.2]) and np.allclose(marks.get_ydata(), [0.2])
