"""What the figures of a trajectory share: the headless backend, which series to draw, colour scales."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from ..io import NotATrajectory, StoredTrajectory, open_trajectory


def gaps(fig, left=0.75, right=1.25, bottom=0.55, top=0.6) -> dict[str, float]:
    """Margins in inches (room for tick labels, a colour bar on the right, the title) as
    ``subplots_adjust`` fractions of ``fig``: a fixed layout, since matplotlib's constrained
    layout costs about as much as drawing."""
    width, height = fig.get_size_inches()
    return {"left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
            "wspace": 0.45, "hspace": 0.6}  # fmt: skip


class PlotError(ValueError):
    """A trajectory that cannot be drawn as asked (no frames, an unknown field, files that do not
    compare); the message names the file and what is allowed."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed, also on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def open_with_frames(path) -> StoredTrajectory:
    """``path`` opened with :func:`tumorfield.io.open_trajectory`; :class:`PlotError` (a missing file,
    one that is not a trajectory, one without a committed frame)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PlotError(f"{path} does not exist")
    try:
        run = open_trajectory(path)
    except NotATrajectory as error:
        raise PlotError(str(error)) from None
    if run.n_committed == 0:
        run.close()
        raise PlotError(f"{path}: no committed frames to plot (status {run.status})")
    return run


def frames_to_show(n: int, k: int) -> list[int]:
    """``k`` frame numbers spread evenly over ``n`` frames, first and last included."""
    return sorted(set(np.linspace(0, n - 1, max(1, min(k, n))).round().astype(int).tolist()))


def series(run: StoredTrajectory) -> dict[str, tuple[np.ndarray, np.ndarray, str, str]]:
    """Every time series of ``run`` once: name → (times in days, values, units, long_name).

    The per-step ``/scalars`` series, then the per-frame ODE variables that no observable already
    records (a variable stored as an observable, :attr:`StoredTrajectory.carried`, is that series).
    """
    out = {
        name: (run.scalars_t, run.scalars[name], run.scalars.units[name], run.scalars.long_names[name])
        for name in run.scalars
    }
    for name, variable in run.variables.items():
        if name not in run.carried and name not in out:
            out[name] = (run.t, variable[:], variable.units, variable.long_name)
    return out


def colour_range(arrays) -> tuple[float, float]:
    """One colour scale for ``arrays`` (finite values only; a constant gets a unit-wide range)."""
    lo = min((float(np.nanmin(a)) for a in arrays if np.isfinite(a).any()), default=0.0)
    hi = max((float(np.nanmax(a)) for a in arrays if np.isfinite(a).any()), default=1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def units_label(units: str, width: int = 28) -> str:
    return textwrap.shorten(str(units), width, placeholder="…")


def extent(run: StoredTrajectory, horizontal: str, vertical: str) -> tuple[float, float, float, float]:
    """``imshow`` extent (mm) of a plane spanned by two axes: cell edges, from 0 to the box side."""
    h, v = run.coordinates[horizontal], run.coordinates[vertical]
    return (0.0, float(h[-1] + h[0]), 0.0, float(v[-1] + v[0]))
