"""``tumorfield compare``: the arms of a study (one trajectory file each) on shared axes."""

from __future__ import annotations

import os
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
        os.makedirs(directory, exist_ok=True)
        plt = pyplot()
        written = [_series_figure(plt, runs, labels, names, directory)]
        grids = {tuple((a, len(c), float(c[-1])) for a, c in run.coordinates.items()) for run in runs}
        if len(grids) == 1 and field is not None and len(runs[0].axes) >= 2:
            written.append(_final_fields(plt, runs, labels, field, directory))
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


def _series_figure(plt, runs, labels, names, directory: str) -> str:
    data = [series(run) for run in runs]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, panels = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.4), sharex=True, squeeze=False)
    fig.subplots_adjust(**gaps(fig))
    for ax, name in zip(panels.flat, names, strict=False):
        for label, arm in zip(labels, data, strict=True):
            ts, values, units, long_name = arm[name]
            ax.plot(ts, values, label=label)
        ax.set_title(textwrap_title(long_name), fontsize=9)
        ax.set_ylabel(f"{name} ({units_label(units, 18)})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_gid(name)
    for ax in panels.flat[len(names) :]:
        ax.set_visible(False)
    for ax in panels[-1]:
        ax.set_xlabel("t (day)")
    panels.flat[0].legend(fontsize=7)
    out = os.path.join(directory, "compare_series.png")
    fig.savefig(out, dpi=100, metadata={"Description": DESCRIPTION + ", ".join(names)})
    plt.close(fig)
    return out


def textwrap_title(text: str, width: int = 44) -> str:
    import textwrap

    return textwrap.shorten(text, width, placeholder="…")


def _final_fields(plt, runs, labels, name: str, directory: str) -> str:
    three_d = len(runs[0].axes) == 3
    finals = [run.field(name)[-1] for run in runs]
    planes = [projections(f)["z"] if three_d else f for f in finals]
    lo, hi = colour_range(planes)
    fig, panels = plt.subplots(1, len(runs), figsize=(3.0 * len(runs) + 1.2, 3.3), squeeze=False, sharey=True)
    fig.subplots_adjust(**gaps(fig))
    image = None
    for ax, run, label, plane in zip(panels[0], runs, labels, planes, strict=True):
        image = ax.imshow(np.asarray(plane), origin="lower", extent=extent(run, "x", "y"), vmin=lo, vmax=hi)
        ax.set_title(f"{label}, t = {run.t[-1]:.4g} day", fontsize=9)
        ax.set_xlabel("x (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    panels[0][0].set_ylabel("y (mm)", fontsize=8)
    field = runs[0].field(name)
    fig.colorbar(image, ax=panels[0].tolist(), label=f"{name} ({units_label(field.units)})", shrink=0.85)
    fig.suptitle(field.long_name + (" (max over z)" if three_d else "") + ", last frame", fontsize=10)
    out = os.path.join(directory, f"compare_{name}.png")
    fig.savefig(out, dpi=100, metadata={"Description": DESCRIPTION + ", ".join(labels)})
    plt.close(fig)
    return out
