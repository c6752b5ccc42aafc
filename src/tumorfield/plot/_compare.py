"""``tumorfield compare``: the arms of a study (one trajectory file each) on shared axes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from ._common import PlotError, colour_range, extent, gaps, open_with_frames, pyplot, series, units_label
from ._figures import DESCRIPTION, projections

STUDY_SERIES: dict[str, tuple[str, ...]] = {
    "voloshin2015": ("tumor_volume", "metastatic_burden", "m2_fraction", "mean_leakiness", "il1b_mean"),
}
"""The series a study compares by default, per model (the files' ``model`` attribute), where the
files record them: for voloshin2015 tumour growth, metastatic burden, the M2 fraction, vessel
leakiness and IL1β. Other models: every series the files share."""


STUDY_FIELD = "tumor"
"""The field whose last frames ``compare`` draws side by side, if the model has it (else the first)."""


def compare_files(paths, directory: str, labels=None, field: str | None = None, scalars=None) -> list[str]:
    """Write the comparison figures of the trajectories ``paths`` (one per arm) into ``directory``:

    - ``compare_series.png``: one panel per series in ``scalars`` (default: the model's
      :data:`STUDY_SERIES` where the files record them, else every series they share), one
      line per arm, shared axes, units from the files;
    - ``compare_<field>.png``: ``field``'s last frame in every arm on one colour scale (3D: the
      maximum-intensity projection along z), when the arms share the grid; ``field`` defaults
      to :data:`STUDY_FIELD` if the model has it, else the first field.

    Raises :class:`PlotError` for fewer than two files, a labels list of another length, a
    file that cannot be read or has no frames, arms of different models, an unknown ``field``,
    a name in ``scalars`` that some file does not record.
    """
    paths = [os.fspath(p) for p in paths]
    if len(paths) < 2:
        raise PlotError(f"compare needs at least two trajectory files (got {len(paths)})")
    labels = list(labels) if labels else [Path(p).stem for p in paths]
    if len(labels) != len(paths):
        raise PlotError(f"--labels: {len(labels)} labels for {len(paths)} files; give one label per file")
    runs = []
    try:
        for path in paths:
            runs.append(open_with_frames(path))
        models = {run.path: str(run.metadata.get("model", "")) for run in runs}
        if len(set(models.values())) > 1:
            raise PlotError(
                "compare: the files are runs of different models ("
                + ", ".join(f"{p}: {m}" for p, m in models.items())
                + "); compare arms of one model"
            )
        names = runs[0].field_names
        if field is not None and field not in names:
            raise PlotError(f"--field: no field {field!r} in {runs[0].path}; its fields are {', '.join(names)}")
        field = field or (STUDY_FIELD if STUDY_FIELD in names else (names[0] if names else None))
        names = compared_series(runs, scalars)
        check_units(runs, names)
        os.makedirs(directory, exist_ok=True)
        plt = pyplot()
        written = [_save(plt, series_figure(plt, runs, labels, names), directory, "compare_series.png", names)]
        grids = {tuple((a, len(c), float(c[-1])) for a, c in run.coordinates.items()) for run in runs}
        if len(grids) == 1 and field is not None and len(runs[0].axes) >= 2:
            figure = final_fields_figure(plt, runs, labels, field)
            written.append(_save(plt, figure, directory, f"compare_{field}.png", labels))
    finally:
        for run in runs:
            run.close()
    return written


def compared_series(runs, chosen=None) -> list[str]:
    """The series compared: ``chosen`` (each must be in every file), else the model's
    :data:`STUDY_SERIES` that every file records, else every series the files share."""
    recorded = [set(series(run)) for run in runs]
    shared = [name for name in series(runs[0]) if all(name in names for names in recorded)]
    if not shared:
        raise PlotError("compare: the files share no time series")
    if chosen:
        missing = [name for name in chosen if name not in shared]
        if missing:
            raise PlotError(
                f"--scalars: {', '.join(missing)} not recorded by every file; the series they share are "
                + ", ".join(shared)
            )
        return list(dict.fromkeys(chosen))
    default = STUDY_SERIES.get(str(runs[0].metadata.get("model", "")), ())
    return [name for name in default if name in shared] or shared


def _dimension(run) -> str:
    return f"{len(run.axes)}D"


def check_units(runs, names) -> None:
    """Refuse to draw a series on one axis where the files give it in different units (a 2D run's mm² and a
    3D run's mm³ are not one quantity): :class:`PlotError` naming the series, each file's units and grid."""
    for name in names:
        units = {run.path: series(run)[name][2] for run in runs}
        if len(set(units.values())) > 1:
            detail = ", ".join(f"{path} ({_dimension(run)}): {units[path]}" for path, run in
                               zip(units, runs, strict=True))  # fmt: skip
            dims = {_dimension(run) for run in runs}
            why = "a 2D and a 3D run do not share an axis" if len(dims) > 1 else "not one quantity"
            raise PlotError(
                f"compare: {name} is in different units ({detail}): {why}; compare runs of one dimension "
                "(--scalars can leave the series out)"
            )


def wrapped(text: str, width: int = 38) -> str:
    """A title wrapped onto lines of ``width`` characters (never cut short)."""
    return textwrap.fill(str(text), width, break_long_words=False, break_on_hyphens=False)


def _grid_of_panels(fig, count: int, ncols: int):
    """``count`` axes in rows of ``ncols``; a short last row is centred, so no slot stays empty."""
    nrows = -(-count // ncols)
    spec = fig.add_gridspec(nrows, 2 * ncols, **{k: v for k, v in gaps(fig).items() if k != "wspace"}, wspace=0.9)
    axes = []
    for i in range(count):
        row, col = divmod(i, ncols)
        in_row = min(ncols, count - row * ncols)
        start = (ncols - in_row) + 2 * col
        axes.append(fig.add_subplot(spec[row, start : start + 2], sharex=axes[0] if axes else None))
    return axes, nrows


def series_figure(plt, runs, labels, names):
    """The compared time series: one panel per series (no empty slot), one line per arm, titles wrapped."""
    data = [series(run) for run in runs]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = plt.figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.5))
    axes, nrows = _grid_of_panels(fig, len(names), ncols)
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        for label, arm in zip(labels, data, strict=True):
            ts, values, units, long_name = arm[name]
            ax.plot(ts, values, label=label)
        ax.set_title(wrapped(long_name), fontsize=8)
        ax.set_ylabel(f"{name} ({units_label(units, 18)})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_gid(name)
        if i >= len(names) - ncols or i // ncols == nrows - 1:  # the lowest panel of its column
            ax.set_xlabel("t (day)", fontsize=8)
    axes[0].legend(fontsize=7)
    return fig


def _save(plt, fig, directory: str, name: str, shown) -> str:
    out = os.path.join(directory, name)
    fig.savefig(out, dpi=100, metadata={"Description": DESCRIPTION + ", ".join(shown)})
    plt.close(fig)
    return out


def final_fields_figure(plt, runs, labels, name: str):
    """``name``'s last frame in every arm on one colour scale (3D: max over z), then the difference of every
    other arm from the first (``arm − first``, of those maps; a diverging scale symmetric about 0)."""
    three_d = len(runs[0].axes) == 3
    finals = [np.asarray(run.field(name)[-1], np.float64) for run in runs]
    planes = [projections(f)["z"] if three_d else f for f in finals]
    diffs = [(f"{label} − {labels[0]}", plane - planes[0]) for label, plane in zip(labels[1:], planes[1:], strict=True)]
    lo, hi = colour_range(planes)
    top = max((float(np.nanmax(np.abs(d))) for _, d in diffs), default=0.0) or 1.0
    n = len(planes) + len(diffs)
    fig, panels = plt.subplots(1, n, figsize=(2.6 * n + 1.2, 4.0), squeeze=False, sharey=True)
    fig.subplots_adjust(**{**gaps(fig, right=0.4, top=0.8, bottom=0.3), "wspace": 0.15})
    field = runs[0].field(name)
    ext = extent(runs[0], "x", "y")
    image = None
    for ax, run, label, plane in zip(panels[0], runs, labels, planes, strict=False):
        image = ax.imshow(plane, origin="lower", extent=ext, vmin=lo, vmax=hi)
        ax.set_title(wrapped(f"{label}, t = {run.t[-1]:.4g} day", 30), fontsize=8)
    fig.colorbar(image, ax=panels[0][: len(planes)].tolist(), label=f"{name} ({units_label(field.units)})",
                 shrink=0.85, location="bottom", pad=0.22, aspect=30)  # fmt: skip
    if diffs:
        difference = None
        for ax, (title, plane) in zip(panels[0][len(planes) :], diffs, strict=True):
            difference = ax.imshow(plane, origin="lower", extent=ext, vmin=-top, vmax=top, cmap="RdBu_r")
            ax.set_title(wrapped(title, 30), fontsize=8)
            ax.set_gid("difference")
        fig.colorbar(difference, ax=panels[0][len(planes) :].tolist(), label=f"difference ({units_label(field.units)})",
                     shrink=0.85, location="bottom", pad=0.22, aspect=15)  # fmt: skip
    for ax in panels[0]:
        ax.set_xlabel("x (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    panels[0][0].set_ylabel("y (mm)", fontsize=8)
    fig.suptitle(wrapped(field.long_name + (" (max over z)" if three_d else "") + ", last frame", 90), fontsize=10)
    return fig
