"""``tumorfield plot``: field snapshots (2D maps; 3D mid-slices and maximum-intensity projections),
the constant maps once, and one panel per time series (PNG, Agg)."""

from __future__ import annotations

import os

import numpy as np

from ..io import StoredTrajectory
from ._common import colour_range, extent, frames_to_show, gaps, open_with_frames, pyplot, series, units_label
from ._overlay import overlay_fields, plot_overlay, wants_overlay

DESCRIPTION = "tumorfield: "
"""Prefix of the PNG ``Description`` that lists what a figure shows (fields or series, in order)."""
PLANES = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}
"""3D: the axis a view cuts (or projects) along → the (horizontal, vertical) axes of the image."""


def plot_file(path: str, directory: str, n_snapshots: int = 4) -> list[str]:
    """Write the figures of the trajectory ``path`` into ``directory``; returns the paths written.

    - ``<field>.png`` for every time-dependent grid field of the model: ``n_snapshots`` frames
      on one colour scale (1D: profiles; 2D: maps; 3D: the three orthogonal mid-slices);
    - ``<field>_mip.png`` (3D only): maximum-intensity projections along z, y and x;
    - ``<field>_overlay.png`` (runs on an image's grid, :func:`._overlay.wants_overlay`): the last
      frame over the anatomy, orthogonal slices through its centre of mass, axes in world mm
      (``tumor`` only where the model has it);
    - ``constants.png``: the time-independent maps (``/constant``, e.g. a prescribed vessel
      map), once, if the run has any;
    - ``scalars.png``: one panel per time series, each series once (:func:`._common.series`).

    Only committed frames are read, so a running or failed run plots too.
    """
    plt = pyplot()
    with open_with_frames(path) as run:
        os.makedirs(directory, exist_ok=True)
        shown = frames_to_show(run.n_committed, n_snapshots)
        written = []
        for name in run.field_names:
            written += _plot_field(plt, run, name, shown, directory)
        if wants_overlay(run):
            written += [plot_overlay(plt, run, name, directory, _save) for name in overlay_fields(run)]
        if run.constants:
            written.append(_plot_constants(plt, run, directory))
        data = series(run)
        if data:
            written.append(plot_series(plt, data, os.path.join(directory, "scalars.png")))
    return written


def _image(ax, run: StoredTrajectory, plane: np.ndarray, horizontal: str, vertical: str, lo: float, hi: float):
    image = ax.imshow(plane, origin="lower", extent=extent(run, horizontal, vertical), vmin=lo, vmax=hi)
    ax.set_xlabel(f"{horizontal} (mm)", fontsize=8)
    ax.set_ylabel(f"{vertical} (mm)", fontsize=8)
    ax.tick_params(labelsize=7)
    return image


def mid_slices(volume: np.ndarray) -> dict[str, np.ndarray]:
    """The three orthogonal mid-plane slices of a ``(z, y, x)`` volume, each ``(vertical, horizontal)``
    as in :data:`PLANES`."""
    nz, ny, nx = volume.shape
    return {"z": volume[nz // 2], "y": volume[:, ny // 2, :], "x": volume[:, :, nx // 2]}


def projections(volume: np.ndarray) -> dict[str, np.ndarray]:
    """Maximum-intensity projections of a ``(z, y, x)`` volume along z, y and x."""
    return {axis: np.nanmax(volume, axis=i) for i, axis in enumerate(("z", "y", "x"))}


def _plot_field(plt, run: StoredTrajectory, name: str, shown: list[int], directory: str) -> list[str]:
    field = run.field(name)
    frames = [field[k] for k in shown]
    if len(run.axes) == 3:
        return [
            _plot_views(plt, run, name, shown, [mid_slices(f) for f in frames], "mid-plane slices", directory, name),
            _plot_views(plt, run, name, shown, [projections(f) for f in frames],
                        "maximum-intensity projections", directory, f"{name}_mip"),
        ]  # fmt: skip
    lo, hi = colour_range(frames)
    fig, panels = plt.subplots(1, len(shown), figsize=(3.0 * len(shown) + 1.2, 3.2), squeeze=False,
                               sharey=True)  # fmt: skip
    fig.subplots_adjust(**gaps(fig))
    image = None
    for ax, k, frame in zip(panels[0], shown, frames, strict=True):
        if frame.ndim == 1:
            ax.plot(run.coordinates["x"], frame)
            ax.set_ylim(lo, hi)
            ax.set_xlabel("x (mm)")
        else:
            image = _image(ax, run, frame, "x", "y", lo, hi)
        ax.set_title(f"t = {run.t[k]:.4g} day", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=panels[0].tolist(), label=f"{name} ({units_label(field.units)})", shrink=0.85)
    else:
        panels[0][0].set_ylabel(f"{name} ({units_label(field.units)})")
    fig.suptitle(field.long_name, fontsize=10)
    return [_save(plt, fig, os.path.join(directory, f"{name}.png"), [name])]


def _plot_views(plt, run, name, shown, views, what, directory, stem) -> str:
    """3D: one row per shown frame, one column per view axis (z, y, x), one colour scale."""
    field = run.field(name)
    lo, hi = colour_range([plane for v in views for plane in v.values()])
    fig, panels = plt.subplots(len(shown), 3, figsize=(9.6, 2.9 * len(shown) + 0.6), squeeze=False)
    fig.subplots_adjust(**gaps(fig))
    image = None
    for row, k, view in zip(panels, shown, views, strict=True):
        for ax, (axis, plane) in zip(row, view.items(), strict=True):
            horizontal, vertical = PLANES[axis]
            image = _image(ax, run, plane, horizontal, vertical, lo, hi)
            where = f"{axis} = {run.coordinates[axis][len(run.coordinates[axis]) // 2]:.3g} mm" if "slice" in what \
                else f"max over {axis}"  # fmt: skip
            ax.set_title(f"t = {run.t[k]:.4g} day, {where}", fontsize=8)
    fig.colorbar(
        image, ax=panels.ravel().tolist(), label=f"{name} ({units_label(field.units)})", shrink=0.6, fraction=0.04
    )
    fig.suptitle(f"{field.long_name}: {what}", fontsize=10)
    return _save(plt, fig, os.path.join(directory, f"{stem}.png"), [name])


def _plot_constants(plt, run: StoredTrajectory, directory: str) -> str:
    """``constants.png``: every ``/constant`` map once (3D: its mid-slices)."""
    names = list(run.constants)
    three_d = len(run.axes) == 3
    ncols = 3 if three_d else len(names)
    nrows = len(names) if three_d else 1
    fig, panels = plt.subplots(nrows, ncols, figsize=(3.3 * ncols + 1.0, 3.0 * nrows + 0.4), squeeze=False)
    fig.subplots_adjust(**gaps(fig))
    for i, name in enumerate(names):
        data, units, long_name = run.constants[name], run.constants.units[name], run.constants.long_names[name]
        views = mid_slices(data) if three_d else {"z": data}
        lo, hi = colour_range(list(views.values()))
        axes = panels[i] if three_d else [panels[0][i]]
        for ax, (axis, plane) in zip(axes, views.items(), strict=True):
            if plane.ndim == 1:
                ax.plot(run.coordinates["x"], plane)
                ax.set_xlabel("x (mm)")
                continue
            horizontal, vertical = PLANES[axis]
            image = _image(ax, run, plane, horizontal, vertical, lo, hi)
            ax.set_title(long_name + (f" ({axis} mid-slice)" if three_d else ""), fontsize=8)
            fig.colorbar(image, ax=ax, label=f"{name} ({units_label(units, 20)})", shrink=0.8)
    fig.suptitle("time-independent fields", fontsize=10)
    return _save(plt, fig, os.path.join(directory, "constants.png"), names)


def plot_series(plt, data: dict[str, tuple], out: str, ncols_max: int = 4) -> str:
    """``out``: one small panel per time series (name → times in days, values, units, long_name)."""
    ncols = min(ncols_max, len(data))
    nrows = -(-len(data) // ncols)
    fig, panels = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.5 * nrows), sharex=True, squeeze=False)
    fig.subplots_adjust(**gaps(fig))
    for ax, (name, (ts, values, units, _)) in zip(panels.flat, data.items(), strict=False):
        ax.plot(ts, values)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(units_label(units), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_gid(name)  # the series a panel shows, for tests and SVG users
    for ax in panels.flat[len(data) :]:
        ax.set_visible(False)
    for ax in panels[-1]:
        ax.set_xlabel("t (day)")
    return _save(plt, fig, out, list(data))


def _save(plt, fig, out: str, shown: list[str]) -> str:
    """Save ``fig`` as PNG with the names of what it shows in the ``Description`` text chunk
    (``"tumorfield: a, b, …"``: readable with PIL's ``Image.open(out).text``)."""
    fig.savefig(out, dpi=100, metadata={"Description": DESCRIPTION + ", ".join(shown)})
    plt.close(fig)
    return out
