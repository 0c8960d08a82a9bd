"""Plots as pure functions returning matplotlib Figures (the caller saves them).

* :func:`scatter_grid` — one scatter panel per (row, column) cell, like R3's 2D figure
  (a cell may instead hold a density image on a grid).
* :func:`acceptance_plot` — MH acceptance (and step size) per noise level; for a sampler
  without MCMC steps a figure that says so.
* :func:`density_levels` — heat-maps of a composed 2D target's density at a few levels.
* :func:`loss_plot` — a training run's loss against step (log scale).
* :func:`tile` — images ``(N, C, H, W)`` as one mosaic array; the image plots below use it:
  :func:`image_grid` (one mosaic) and :func:`image_panels` (one titled mosaic per entry).

Figures are built with the object-oriented :class:`matplotlib.figure.Figure` API, never
``pyplot``: no global figure registry, no backend to select, no side effects at import.
``fig.savefig(path)`` picks a canvas from the file extension.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

__all__ = ["scatter_grid", "acceptance_plot", "has_mcmc_steps", "ess_plot", "density_levels",
           "image_grid", "tile", "image_panels", "wrap", "loss_plot"]


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points (about
    0.55 em per character); existing line breaks are kept."""
    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def scatter_grid(cells: dict[tuple[str, str], np.ndarray], rows: Sequence[str],
                 cols: Sequence[str], lim: float = 1.2, size: float = 1.9,
                 titles: dict[tuple[str, str], str] | None = None,
                 title: str | None = None,
                 densities: dict[tuple[str, str], np.ndarray] | None = None,
                 density_lim: float | None = None, footnote: str | None = None) -> Figure:
    """``cells[(row, col)]`` is an ``(N, 2)`` array; missing cells are left blank. Axes in data
    units (ticks at −1, 0, 1), the same scale in every panel; ``title`` above the grid (wrapped
    to its width), ``footnote`` below it. ``titles[(row, col)]``: a note in the panel's corner.
    ``densities[(row, col)]``: a ``(G, G)`` array of a density on the regular grid over
    ``[−density_lim, density_lim]²`` (default ``lim``; rows along y, from the bottom), drawn
    as a grey image on a square-root scale (so low-mass regions stay visible)."""
    densities = densities or {}
    dlim = lim if density_lim is None else density_lim
    width = size * len(cols)
    fig = Figure(figsize=(width, size * len(rows) + (0.4 if title else 0)
                          + (0.15 * (wrap(footnote, width, 7).count("\n") + 1)
                             if footnote else 0)),
                 layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ticks = [v for v in (-1.0, 0.0, 1.0) if abs(v) <= lim]
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(labelsize=6, length=2, pad=1)
            ax.grid(alpha=0.2, linewidth=0.5)
            pts, dens = cells.get((r, c)), densities.get((r, c))
            if dens is not None:
                dens = np.asarray(dens, dtype=float)
                ax.imshow(dens, extent=(-dlim, dlim, -dlim, dlim), origin="lower",
                          cmap="Greys", norm=PowerNorm(0.5, vmin=0, vmax=dens.max()),
                          interpolation="bilinear")
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.5, color="C0" if j else "k",
                           rasterized=True)
            if pts is None and dens is None:
                ax.axis("off")
            elif titles and (r, c) in titles:
                ax.text(0.03, 0.03, titles[(r, c)], transform=ax.transAxes, fontsize=6,
                        va="bottom", bbox={"facecolor": "white", "alpha": 0.8, "pad": 1,
                                           "linewidth": 0})
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(r, fontsize=8)
    if title:
        fig.suptitle(wrap(title, width, 9), fontsize=9)
    if footnote:
        fig.supxlabel(wrap(footnote, width, 7), fontsize=7, ha="left", x=0.01,
                      multialignment="left")
    return fig


def has_mcmc_steps(settings: dict) -> bool:
    """Whether a run with these :class:`SampleInfo` ``settings`` took MCMC steps (annealed
    MCMC or SMC moves with ``num_steps`` ≥ 1); reverse diffusion, FKC without moves and
    ``num_steps=0`` took none, and their acceptance (1, or 0) and step sizes (NaN) mean
    nothing."""
    return int(settings.get("num_steps") or 0) > 0


def acceptance_plot(t: Sequence[float], acceptance: Sequence[float],
                    step_size: Sequence[float] | None = None, label: str = "", *,
                    metropolis: bool = True, steps: bool = True) -> Figure:
    """Mean MH acceptance against noise level ``t`` (and the step size on a second axis).

    ``metropolis=False`` (ULA, U-HMC: no accept step, acceptance 1 by construction): only the
    step size is drawn. ``steps=False`` (reverse diffusion, FKC without moves, zero MCMC
    steps; see :func:`has_mcmc_steps`), or step sizes all NaN with ``metropolis=False``: no
    lines, a figure that says the run had no MCMC steps."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    ax.set_xlabel("t (noise level)")
    sizes = None if step_size is None else np.asarray(step_size, dtype=float)
    finite = sizes is not None and bool(np.isfinite(sizes).any())
    name = label or "this sampler"
    if not steps or not (metropolis or finite):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.text(0.5, 0.5, wrap(f"{name}: no MCMC steps, so no acceptance rate or step size "
                               "to show", 4.5, 10),
                transform=ax.transAxes, ha="center", va="center", fontsize=10)
        ax.set_title("acceptance per level: not applicable", fontsize=9)
        return fig
    if metropolis:
        ax.plot(t, acceptance, color="C0", label=label or "acceptance")
        ax.set_ylabel("mean acceptance")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}: Metropolis acceptance and step size per level", fontsize=9)
        if finite:
            ax2 = ax.twinx()
            ax2.semilogy(t, sizes, color="C1", ls="--")
            ax2.set_ylabel("step size", color="C1")
    else:
        ax.semilogy(t, sizes, color="C1", ls="--")
        ax.set_ylabel("step size", color="C1")
        ax.set_title(wrap(f"{name}: step size per level (unadjusted: no accept step, so no "
                          "acceptance rate)", 4.5, 9), fontsize=9)
    return fig


def ess_plot(t: Sequence[float], ess: Sequence[float], n: int,
             resampled: Sequence[int] = ()) -> Figure:
    """SMC's effective sample size (fraction of ``n``) against ``t``; resampled levels marked."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    frac = np.asarray(ess, dtype=float) / n
    ax.plot(t, frac, color="C0", label="ESS / n (before resampling)")
    idx = list(resampled)
    if idx:
        ax.plot(np.asarray(t)[idx], frac[idx], "v", color="C3", ms=4, label="resampled")
    ax.set_xlabel("t (noise level)")
    ax.set_ylabel("ESS / n")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return fig


def loss_plot(losses: Sequence[float], title: str = "") -> Figure:
    """Training loss against step (step ``i + 1`` has ``losses[i]``): every step's loss, thin,
    and its running mean over about 2 % of the run; log scale when every loss is positive."""
    y = np.asarray(losses, dtype=float)
    steps = np.arange(1, len(y) + 1)
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    window = max(1, len(y) // 50)
    ax.plot(steps, y, color="C0", lw=0.5 if window > 1 else 1.2, alpha=0.4 if window > 1 else 1,
            label="loss")
    if window > 1:
        mean = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], mean, color="C0", lw=1.5, label=f"mean of {window} steps")
        ax.legend(fontsize=7)
    if len(y) and np.all(np.isfinite(y) & (y > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.2, linewidth=0.5)
    fig.tight_layout()
    return fig


@torch.no_grad()
def density_levels(model: object, ts: Sequence[float], lim: float = 1.5,
                   grid: int = 120, title: str | None = None) -> Figure:
    """Heat-maps of ``exp(−E(x, t))`` of a 2D energy model, or of ``|score|`` for a
    score-only model, at the given levels, each divided by its maximum over the window
    ``[−lim, lim]²`` (one colour bar, 0 to 1); axes in data units, one panel per ``t``."""
    axis = torch.linspace(-lim, lim, grid)
    xx = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    fig = Figure(figsize=(2.2 * len(ts) + 0.8, 2.9), layout="constrained")
    axes = fig.subplots(1, len(ts), squeeze=False, sharey=True)
    what = "density exp(−E(x, t))" if model.has_energy else "|score(x, t)|"
    image = None
    ticks = [v for v in (-1.0, 0.0, 1.0) if abs(v) <= lim]
    for j, (ax, t) in enumerate(zip(axes[0], ts)):
        if model.has_energy:
            e = model.energy(xx, float(t)).double()
            z = torch.exp(-(e - e.min()))
        else:
            z = model.score(xx, float(t)).norm(dim=1).double()
        z = (z / z.max()).reshape(grid, grid)
        image = ax.imshow(z.numpy(), extent=(-lim, lim, -lim, lim), origin="lower",
                          cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"t = {t:.2f}", fontsize=8)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=6, length=2, pad=1)
        ax.set_xlabel("x₁", fontsize=7)
        if j == 0:
            ax.set_ylabel("x₂", fontsize=7)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, pad=0.02)
    bar.set_label(f"{what.split(' ')[0]} ÷ its maximum", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    head = f"composed target: {what} at noise level t"
    width = 2.2 * len(ts) + 0.8
    fig.suptitle(wrap(f"{title}\n{head}" if title else head, width, 9), fontsize=9)
    return fig


def tile(x: torch.Tensor, nrow: int) -> np.ndarray:
    """Images ``(N, C, H, W)`` in about ``[−1, 1]`` as one ``(rows·(H+1)−1, nrow·(W+1)−1, C)``
    mosaic in ``[0, 1]``, row-major, with 1-pixel white gutters (``rows = ⌈N/nrow⌉``)."""
    if x.ndim != 4 or nrow < 1:
        raise ValueError(f"tile needs images (N, C, H, W) and nrow ≥ 1, got {tuple(x.shape)}, "
                         f"nrow={nrow}")
    x = x.detach().cpu().float().clamp(-1, 1).add(1).div(2)
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    out = np.ones((rows * (h + 1) - 1, nrow * (w + 1) - 1, c), dtype=np.float32)
    for k in range(n):
        r, q = divmod(k, nrow)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = \
            x[k].permute(1, 2, 0).numpy()
    return out


def _show_mosaic(ax: Axes, img: np.ndarray) -> None:
    """Draw a :func:`tile` mosaic on ``ax`` (grey-scale for one channel), without axes."""
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")


def image_grid(x: torch.Tensor, nrow: int = 8, title: str | None = None) -> Figure:
    """Images ``(N, C, H, W)`` with values in about ``[−1, 1]`` as one mosaic, ``nrow`` per
    row; ``title`` above it (wrapped to the figure's width)."""
    ncol = min(nrow, x.shape[0])
    rows = (x.shape[0] + ncol - 1) // ncol
    width = max(ncol, 3)
    text = wrap(title, width, 9) if title else None
    fig = Figure(figsize=(width, rows + (0.2 + 0.17 * text.count("\n") if text else 0)),
                 layout="constrained")
    _show_mosaic(fig.subplots(), tile(x, ncol))
    if text:
        fig.suptitle(text, fontsize=9)
    return fig


def image_panels(panels: dict[str, torch.Tensor], nrow: int = 10,
                 panel_width: float = 2.6, markers: torch.Tensor | None = None,
                 ncols: int | None = None) -> Figure:
    """One titled mosaic per entry (e.g. one per sampler), ``ncols`` per row (default: all in
    one row). ``markers`` ``(N, K, 2)``: positions in ``[0, 1]²`` (x right, y down) drawn as
    small rings on every panel (e.g. the requested object positions)."""
    ncols = ncols or len(panels)
    nrows = (len(panels) + ncols - 1) // ncols
    fig = Figure(figsize=(panel_width * ncols, (panel_width + 0.7) * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, x) in zip(axes.flat, panels.items()):
        _show_mosaic(ax, tile(x, nrow))
        if markers is not None:
            h, w = x.shape[-2:]
            for k, pos in enumerate(markers[: len(x)]):
                r, q = divmod(k, nrow)
                ax.scatter(q * (w + 1) + pos[:, 0] * w - 0.5, r * (h + 1) + pos[:, 1] * h - 0.5,
                           s=14, facecolors="none", edgecolors="white", linewidths=0.6)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
