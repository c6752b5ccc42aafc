"""``tumorfield export``: frames of a trajectory file as NIfTI images, ``DIR/<field>_t<DAY>.nii.gz``;
the images of a calibration's ``FIT.h5`` (schema ``tumorfield-fit/2``): :func:`export_calibration`."""

from __future__ import annotations

import os
import tomllib

import numpy as np
from tumorfield_kernels import Grid

from .io import StoredTrajectory
from .io._image import write_nifti
from .io._reader import GRID_AFFINE, grid_from

__all__ = [
    "CALIBRATION_SCHEMA",
    "GRID_AFFINE",
    "ExportError",
    "export_calibration",
    "export_nifti",
    "frame_numbers",
    "is_calibration",
    "stored_grid",
]

CALIBRATION_SCHEMA = "tumorfield-fit/2"
"""The root ``schema`` of a calibration's ``FIT.h5`` (:data:`tumorfield.fit._output.CALIBRATION_FORMAT`)."""


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


def is_calibration(path) -> bool:
    """Whether ``path`` is an HDF5 file whose root ``schema`` is :data:`CALIBRATION_SCHEMA` (False for any other
    file, a trajectory or not)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            schema = h5.attrs.get("schema")
    except OSError:
        return False
    return (schema.decode() if isinstance(schema, bytes) else str(schema)) == CALIBRATION_SCHEMA


def _grid_of(shape, affine) -> Grid:
    """The grid of an array of ``shape`` placed by ``affine`` (4×4, mm): the cell centres along each axis
    from the affine's voxel sizes, then :func:`grid_from` — the grid a run file of that grid reads back."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, : len(shape)], axis=0)
    axes = tuple(f"a{i}" for i in range(len(shape)))
    coordinates = {a: (np.arange(n) + 0.5) * dx for a, n, dx in zip(axes, shape, spacing, strict=True)}
    return grid_from(axes, coordinates, affine)


def _day(t) -> str:
    return format(float(t), "g")


def _calibration_images(h5, fields) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(file name, array, grid affine)`` of every image of the calibration ``h5``, in the order written."""
    arms = {name: np.reshape(group.attrs["grid_affine"], (4, 4)) for name, group in h5["fit/arms"].items()}
    order = list(tomllib.loads(h5.attrs["config"])["fit"]["arms"]) if "config" in h5.attrs else list(arms)
    first = arms[order[0]]  # the origin and the maps live on the first arm's grid (maps: every arm's)
    fit = h5["fit"]
    out = []
    scans = fit.get("scans", {})
    for index in sorted(scans, key=int):
        scan = scans[index]
        arm, field = str(scan.attrs["arm"]), str(scan.attrs["field"])
        if fields and field not in fields:
            continue
        affine = np.reshape(scan.attrs.get("grid_affine", arms[arm]), (4, 4))
        for key in ("prediction", "observed"):
            out.append((f"{arm}_{field}_t{_day(scan.attrs['t'])}_{key}", scan[key][()], affine))
    if "origin/initial" in fit:
        initial = fit["origin/initial"]
        field = str(initial.attrs.get("field", "origin"))
        if not fields or field in fields:
            out.append((f"initial_{field}", initial[()], first))
    for name, group in fit.get("maps", {}).items():
        out.append((f"map_{name}", group["estimate"][()], first))
        out.append((f"map_{name}_sd", group["sd"][()], first))
    for arm, days in fit.get("forecast", {}).items():
        for day, group in days.items():
            stem = f"forecast_{arm}_t{_day(group.attrs.get('t', day))}"
            out.append((stem, group["estimate"][()], arms[arm]))
            out.append((f"{stem}_probability", group["probability"][()], arms[arm]))
    return out


def export_calibration(path, directory, fields=None) -> list[str]:
    """Write the images of the calibration ``path`` (``FIT.h5``, :data:`CALIBRATION_SCHEMA`) to ``directory``,
    each with its arm's grid affine (mm; 2D grids as ``(n0, n1, 1)``, as :func:`export_nifti` writes them):

    - ``<arm>_<field>_t<DAY>_prediction.nii.gz`` and ``..._observed.nii.gz``: every scan (``fields``: only
      the scans and origin of these fields; default every one);
    - ``initial_<field>.nii.gz``: the recovered origin (the seed at the estimate);
    - ``map_<name>.nii.gz`` and ``map_<name>_sd.nii.gz``: each map's estimate and the posterior sd of its log;
    - ``forecast_<arm>_t<DAY>.nii.gz`` and ``..._probability.nii.gz``: the field at the estimate and the
      probability of presence.

    Existing files are replaced. Returns the paths written."""
    import h5py

    if not is_calibration(path):
        raise ExportError(f"{path}: not a calibration file (root attribute schema = {CALIBRATION_SCHEMA!r})")
    with h5py.File(path, "r") as h5:
        images = _calibration_images(h5, set(fields or ()))
    names = [name for name, _, _ in images]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ExportError(f"{path}: several images would be named {', '.join(clashes)} (scans of one field at one day)")
    os.makedirs(directory, exist_ok=True)
    return [
        write_nifti(os.path.join(directory, f"{name}.nii.gz"), array, _grid_of(array.shape, affine))
        for name, array, affine in images
    ]
