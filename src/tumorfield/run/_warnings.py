"""What a run warns about, once per run: in the log and in the file's root attribute ``warnings``.

A warning is not an error: the run is computed as configured, but a number it gives is likely
to mislead. Both checks look at the model's *confined* fields (``Model.confined``: the fields that
start inside the box and should stay away from its walls, e.g. the tumour):

- at t = 0, :func:`initial_warnings`: a confined field narrower than :data:`MIN_CELLS` cells along an
  axis (its width: the integral along the line through its peak over the peak value, the diameter
  of a ball; a 0.5 mm tumour on a 24³ grid of an 8 mm box is 3 cells across): the grid
  under-resolves it, and growth, invasion and every ratio measured on it depend on the grid;
- at the end (status ``complete`` or ``failed``), :func:`final_warnings`: a confined field whose
  largest value on a wall of the box is at least :data:`WALL_FRACTION` of its largest value anywhere
  (and more than at t = 0): the box is too small, the zero-flux walls hold the field back, and
  every total and ratio depends on the box.
"""

from __future__ import annotations

import numpy as np

MIN_CELLS = 4.0
"""A confined field narrower than this many cells (along any axis) at t = 0 is warned about."""
WALL_FRACTION = 0.1
"""A confined field whose wall value reaches this fraction of its maximum at the end is warned about."""


def confined(model, fields) -> tuple[str, ...]:
    """The model's confined fields among ``fields`` (grid fields only)."""
    return tuple(name for name in getattr(model, "confined", ()) or () if name in fields)


def _width_cells(value: np.ndarray, axis: int) -> float:
    """The field's width in cells along ``axis``: the sum along the line through its peak over the peak."""
    peak = np.unravel_index(int(np.argmax(value)), value.shape)
    line = value[tuple(slice(None) if a == axis else i for a, i in enumerate(peak))]
    top = float(line.max())
    return float(np.sum(line) / top) if top > 0 else float("inf")


def initial_warnings(model, grid, frame) -> list[str]:
    """Warnings about frame 0: a confined field narrower than :data:`MIN_CELLS` cells."""
    out = []
    for name in confined(model, frame):
        value = np.asarray(frame[name], np.float64)
        if value.ndim == 0 or not np.any(value > 0):
            continue
        widths = {axis: _width_cells(value, a) for a, axis in enumerate(grid.axis_names)}
        axis, cells = min(widths.items(), key=lambda item: item[1])
        if cells < MIN_CELLS:
            dx = grid.spacing[grid.axis_names.index(axis)]
            out.append(
                f"the initial {name!r} is {cells:.1f} cells across along {axis} ({cells * dx:.3g} mm at "
                f"Δ{axis} = {dx:.3g} mm; fewer than {MIN_CELLS:g}): the grid under-resolves it, so results depend "
                "on the grid; use a finer grid.shape (or a larger initial feature)"
            )
    return out


def _walls(value: np.ndarray) -> np.ndarray:
    """The cells next to a wall of the box (every face of every axis)."""
    on_wall = np.zeros(value.shape, bool)
    for axis in range(value.ndim):
        for end in (0, -1):
            index = [slice(None)] * value.ndim
            index[axis] = end
            on_wall[tuple(index)] = True
    return value[on_wall]


def final_warnings(model, state, start, t: float) -> list[str]:
    """Warnings about the last state (at ``t`` days): a confined field on the walls (``start``: frame 0,
    or None where it is not at hand; then the wall value at t = 0 is taken as 0)."""
    out = []
    for name in confined(model, state):
        value = np.asarray(state[name], np.float64)
        top = float(np.max(value)) if value.size else 0.0
        if value.ndim == 0 or not top > 0:
            continue
        wall = float(np.max(_walls(value)))
        before = float(np.max(_walls(np.asarray(start[name])))) if start is not None and name in start else 0.0
        if wall >= WALL_FRACTION * top and wall > before:
            out.append(
                f"{name!r} reaches the walls of the box at t = {t:.6g} day: {wall:.3g} there, {wall / top:.0%} of "
                f"its maximum {top:.3g} (warned from {WALL_FRACTION:.0%}): the box is too small for the run and the "
                "zero-flux walls hold it back; enlarge grid.length (with grid.shape) or end earlier"
            )
    return out
