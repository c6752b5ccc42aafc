"""Figures from a trajectory file: field snapshots and scalar time series (PNG, Agg)."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from .io import StoredTrajectory, open_trajectory


def _frames_to_show(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def plot_file(path: str, directory: str, n_snapshots: int = 4) -> list[str]:
    """Write ``<field>.png`` (snapshots; mid-plane z-slices in 3D) for every field and
    ``scalars.png`` (time series) into ``directory``; returns the paths written.

    Only the first ``n_committed`` frames are read, so partial runs plot too.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open_trajectory(path) as run:
        if run.n_committed == 0:
            raise ValueError(f"{path}: no committed frames to plot")
        os.makedirs(directory, exist_ok=True)
        shown = _frames_to_show(run.n_committed, n_snapshots)
        written = [_plot_field(plt, run, name, shown, directory) for name in run.field_names]
        # per-frame scalar variables, then the per-step diagnostics: (times, values, units)
        series = {name: (run.t, v[:], v.units) for name, v in run.variables.items()}
        series.update({name: (run.scalars_t, run.scalars[name], run.scalars.units[name]) for name in run.scalars})
        if series:
            written.append(_plot_series(plt, series, directory))
    return written


def _plot_field(plt, run: StoredTrajectory, name: str, shown: list[int], directory: str) -> str:
    """``<directory>/<name>.png``: the frames ``shown`` side by side, one colour scale; returns its path."""
    field, three_d = run.field(name), len(run.axes) == 3
    frames = [field[k] for k in shown]
    if three_d:
        frames = [f[f.shape[0] // 2] for f in frames]
    x, y = run.coordinates.get("x"), run.coordinates.get("y")
    fig, panels = plt.subplots(
        1, len(shown), figsize=(3.0 * len(shown) + 1.2, 3.2), squeeze=False, sharey=True, layout="constrained"
    )
    lo = min(float(np.nanmin(f)) for f in frames)
    hi = max(float(np.nanmax(f)) for f in frames)
    image = None
    for ax, k, frame in zip(panels[0], shown, frames, strict=True):
        if frame.ndim == 1:
            ax.plot(x, frame)
            ax.set_ylim(lo, hi if hi > lo else lo + 1)
        else:
            extent = (0, x[-1] + x[0], 0, y[-1] + y[0])
            image = ax.imshow(frame, origin="lower", extent=extent, vmin=lo, vmax=hi if hi > lo else lo + 1)
            if ax is panels[0][0]:
                ax.set_ylabel("y (mm)")
        ax.set_xlabel("x (mm)")
        ax.set_title(f"t = {run.t[k]:.4g} day")
    if image is not None:
        fig.colorbar(image, ax=panels[0].tolist(), label=f"{name} ({field.units})", shrink=0.85)
    fig.suptitle(field.long_name + (" (mid-plane z-slice)" if three_d else ""))
    out = os.path.join(directory, f"{name}.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plot_series(plt, series: dict[str, tuple[np.ndarray, np.ndarray, str]], directory: str) -> str:
    """``<directory>/scalars.png``: one small panel per time series (name → times, values, units)."""
    # a grid of small panels: models record tens of diagnostics
    ncols = min(4, len(series))
    nrows = -(-len(series) // ncols)
    fig, panels = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), sharex=True, squeeze=False, layout="constrained"
    )
    for ax, (name, (ts, values, units)) in zip(panels.flat, series.items(), strict=False):
        ax.plot(ts, values)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(textwrap.shorten(str(units), 28, placeholder="…"), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in panels.flat[len(series) :]:
        ax.set_visible(False)
    for ax in panels[-1]:
        ax.set_xlabel("t (day)")
    out = os.path.join(directory, "scalars.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
