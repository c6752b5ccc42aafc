"""``tumorfield export``: frames of a trajectory file as NIfTI images, ``DIR/<field>_t<DAY>.nii.gz``."""

from __future__ import annotations

import os

from tumorfield_kernels import Grid

from .io import StoredTrajectory
from .io._image import write_nifti
from .io._reader import GRID_AFFINE, grid_from

__all__ = ["GRID_AFFINE", "ExportError", "export_nifti", "frame_numbers", "stored_grid"]


class ExportError(ValueError):
    """Bad export request (unknown field, frame out of range, clashing names): the CLI's exit 2."""


def stored_grid(run: StoredTrajectory) -> Grid:
    """The grid of a trajectory: shape and spacing from its cell-centre coordinates (mm), the
    affine from the root attribute :data:`GRID_AFFINE` (none: the box's identity orientation)."""
    if isinstance(run, StoredTrajectory):
        return run.grid
    return grid_from(run.axes, run.coordinates, run.metadata.get(GRID_AFFINE))


def frame_numbers(frames: str, n: int, path: str) -> list[int]:
    """Frame indices of ``frames``: ``"all"``, ``"last"`` or a comma-separated list of frame
    numbers (0 is the first frame; negative ones count from the end) of a file of ``n`` frames."""
    if n == 0:
        raise ExportError(f"{path}: no committed frame to export")
    if frames == "all":
        return list(range(n))
    if frames == "last":
        return [n - 1]
    try:
        chosen = [int(item) for item in frames.split(",")]
    except ValueError:
        raise ExportError(f"--frames {frames!r}: 'all', 'last' or frame numbers such as 0,5,-1 are expected") from None
    wrong = [k for k in chosen if not -n <= k < n]
    if wrong:
        raise ExportError(f"--frames {frames!r}: {path} has frames 0 to {n - 1} (or -{n} to -1); not {wrong}")
    return sorted({k % n for k in chosen})


def export_nifti(run: StoredTrajectory, directory, fields=None, frames: str = "last") -> list[str]:
    """Write ``fields`` (default: every field) at ``frames`` (:func:`frame_numbers`) of ``run`` to
    ``directory/<field>_t<DAY>.nii.gz`` (DAY: ``format(t, "g")``, in days) with the grid's world
    affine (mm); existing files are replaced. Returns the paths written."""
    fields = list(run.field_names if not fields else fields)
    unknown = [name for name in fields if name not in run.fields]
    if unknown:
        raise ExportError(f"{run.path}: no field {', '.join(map(repr, unknown))}; fields are {', '.join(run.fields)}")
    chosen = frame_numbers(frames, run.n_committed, run.path)
    days = [format(float(run.t[k]), "g") for k in chosen]
    if len(set(days)) < len(days):
        raise ExportError(f"{run.path}: frames {chosen} do not all have distinct names t<DAY> ({days}); choose fewer")
    grid = stored_grid(run)
    os.makedirs(directory, exist_ok=True)
    written = []
    for name in fields:
        for k, day in zip(chosen, days, strict=True):
            written.append(write_nifti(os.path.join(directory, f"{name}_t{day}.nii.gz"), run.field(name)[k], grid))
    return written
