"""Plots: no side effects at import; one mosaic helper behind the image plots."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from recompose.viz.plots import (
    acceptance_plot,
    density_levels,
    image_grid,
    image_panels,
    scatter_grid,
    tile,
)


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


def _texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_acceptance_plot_draws_no_lines_without_mcmc_steps():
    t, nan = [0.25, 0.5, 0.75, 1.0], [float("nan")] * 4
    fig = acceptance_plot(t, [1.0] * 4, nan, label="reverse", steps=False)
    assert all(not ax.lines for ax in fig.axes) and "no MCMC steps" in _texts(fig)
    # unadjusted samplers (ULA, U-HMC): the step size only, no acceptance line of 1s
    fig = acceptance_plot(t, [1.0] * 4, [0.1, 0.2, 0.3, 0.4], label="ula", metropolis=False)
    (line,) = [ln for ax in fig.axes for ln in ax.lines]
    assert np.allclose(line.get_ydata(), [0.1, 0.2, 0.3, 0.4])
    fig = acceptance_plot(t, [0.6, 0.7, 0.6, 0.9], [0.1, 0.2, 0.3, 0.4], label="hmc")
    assert len([ln for ax in fig.axes for ln in ax.lines]) == 2


def test_density_levels_has_axes_a_colorbar_and_a_title_per_level():
    import recompose as rc

    model = rc.GaussianMixture([[0.0, 0.5], [0.0, -0.5]], 0.1, name="two")
    ts = [0.1, 0.5, 1.0]
    fig = density_levels(model, ts, grid=20)
    assert len(fig.axes) == len(ts) + 1  # one panel per level and the colour bar
    panels = fig.axes[: len(ts)]
    assert [ax.get_title() for ax in panels] == ["t = 0.10", "t = 0.50", "t = 1.00"]
    assert all(len(ax.get_xticks()) and ax.get_xlabel() for ax in panels)
    assert all(ax.images[0].get_array().max() == pytest.approx(1.0) for ax in panels)


def test_long_titles_are_wrapped_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    title = "2000 samples of " + " * ".join(f"normalize(model_{i}):0.3" for i in range(6))
    fig = scatter_grid({("r", "c"): np.zeros((3, 2))}, ["r"], ["c"], size=4.0, title=title)
    FigureCanvasAgg(fig).draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_scatter_grid_draws_density_cells_as_images():
    dens = np.outer(np.hanning(10), np.hanning(10))
    fig = scatter_grid({("r", "pts"): np.zeros((3, 2))}, ["r"], ["pts", "density"],
                       densities={("r", "density"): dens}, density_lim=1.5, lim=1.2,
                       footnote="a note under the grid")
    ax = fig.axes[1]
    assert ax.images and ax.images[0].get_extent() == [-1.5, 1.5, -1.5, 1.5]
    assert ax.get_xlim() == (-1.2, 1.2) and ax.axison
