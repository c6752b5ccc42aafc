"""Reading trajectory files: :func:`open_trajectory`, the one reader of the format.

Layout (format ``tumorfield-trajectory/2``, the root attribute ``schema``)::

    /<field>            (T, [z,] y, x) one dataset per field, the run's precision, one frame per
                        HDF5 chunk, resizable on T; attrs units, long_name
    /<variable>         (T,) float64: scalar ODE variables of the model, one value per frame,
                        unless an observable records it every step (``Model.scalar_observables``):
                        then it is stored once, as that ``/scalars/<name>`` (attr ``state_variable``)
    /t                  (T,) frame times (days); /z, /y, /x (n,) cell centres (mm): dimension scales
    /scalars/t          (S,) days, every step, t = 0 included, its own dimension scale ``t``;
                        /scalars/<name> (S,) float64 diagnostics
    /constant/<name>    ([z,] y, x) time-independent fields on the grid (optional), written once
    /checkpoint/0, /1   two slots, each the full state (every field in its run dtype) with the
                        label attrs ``frames`` (n_committed it belongs to), ``scalars``, ``step``,
                        ``t`` and the digests ``meta_sha256``, ``state_sha256``, ``frames_sha256``,
                        ``scalars_sha256`` (see :mod:`tumorfield.io._label`)
    root attrs          schema, n_committed, n_scalars_committed, status (fixed-size bytes),
                        message, resumed, config (resolved TOML), model, versions, device, ...,
                        grid_affine (16 float64, the row-major 4×4: the grid's voxel → world affine, mm) and
                        input_images (JSON list of {key, path, sha256, affine}: every image the
                        config read), both covered by ``meta_sha256``
    userblock           the first 64 KiB: the journal pointer of the writer (:mod:`tumorfield.io._guard`)

Every dataset has CF attributes ``units`` (UDUNITS spelling where the model's unit has one;
``mm2``/``mm3`` for the grid's volume unit), ``long_name`` and, where the model describes the
unit, ``comment``; coordinates also ``axis`` (and ``standard_name = "time"`` for ``t``); the
root has ``Conventions = "CF-1.11"``. Every field is deflate-compressed with the shuffle filter
unless ``output.compression`` says otherwise, so standard HDF5 readers (netCDF-C, VTK/ParaView,
h5dump) read it; ``xarray.open_dataset(path, engine="netcdf4" or "h5netcdf")`` decodes the
coordinates, ``group="scalars"`` the per-step series. Format 1 files (every ODE variable
also per frame under its own name) are read the same way. Only the first ``n_committed``
frames (and ``n_scalars_committed`` samples of ``/scalars``) are valid: after a ``kill -9``
datasets can be longer. The reader never returns anything past them. The commit protocol
that guarantees this is described in :mod:`tumorfield.io._writer`. Opening checks the
label (its checkpoint slot, its counters, the run attributes against ``meta_sha256``) and,
before any dataset is read, every dataset's shape against the grid and the stored config
(:func:`_check_layout`: a crafted file cannot make a reader allocate what its grid and config
do not plan);
:meth:`StoredTrajectory.checkpoint` checks the state it returns and
:meth:`StoredTrajectory.verify` every committed frame and sample.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import h5py
import numpy as np
from tumorfield_kernels import Grid

from .._inputs import parse_toml
from .._schema import LIMITS
from ._guard import GuardedFile, has_pending_journal
from ._label import AXES as _AXES
from ._label import (
    FORMAT,
    READABLE_VERSIONS,
    DamagedTrajectory,
    Label,
    Streams,
    frame_names,
    read_label,
    verified_state,
    verified_streams,
)
from ._label import NotATrajectory as NotATrajectory

GRID_AFFINE = "grid_affine"
"""Root attribute: the grid's 4×4 voxel → world affine (mm), ``Grid.world_affine()`` (every run since issue 22)."""
INPUT_IMAGES = "input_images"
"""Root attribute: JSON list of ``{key, path, sha256, affine}``, one per image the run's config read."""

_REQUIRED = ("n_committed", "n_scalars_committed", "status")
_STATUSES = ("running", "complete", "interrupted", "failed")
_DAMAGE = (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError, IndexError)
"""What h5py and numpy raise on a file whose structure is not what the writer made."""


def _text(value: Any) -> Any:
    """Attribute value with bytes decoded to ``str`` and numpy scalars as Python scalars."""
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _label(ds: h5py.Dataset, key: str, default: str) -> str:
    """The ``units`` or ``long_name`` attribute of ``ds`` as ``str``."""
    return str(_text(ds.attrs.get(key, default)))


def _problem(h5: h5py.File, path: str) -> str | None:
    """Why the open HDF5 file ``h5`` at ``path`` cannot be read as a trajectory (None: it can)."""
    schema = _text(h5.attrs.get("schema"))
    name, _, version = str(schema).rpartition("/")
    expected_name, _, expected_version = FORMAT.rpartition("/")
    if schema is None:
        return f"{path}: not a tumorfield trajectory (an HDF5 file without the 'schema' attribute)"
    if name != expected_name or not version.isdigit():
        return f"{path}: not a tumorfield trajectory (schema {schema!r}, expected {FORMAT!r})"
    if int(version) > int(expected_version):
        return f"{path}: written in format {schema!r}, newer than this tumorfield reads ({FORMAT!r}); upgrade it"
    if int(version) not in READABLE_VERSIONS:
        return f"{path}: not a tumorfield trajectory this version reads (format {schema!r}, expected {FORMAT!r})"
    missing = [f"attribute {a!r}" for a in _REQUIRED if a not in h5.attrs]
    missing += [f"/{p}" for p in ("t", "scalars/t", "checkpoint") if p not in h5]
    if missing:
        return f"{path}: damaged tumorfield trajectory (missing {', '.join(missing)})"
    status = _text(h5.attrs["status"])
    if status not in _STATUSES:
        return f"{path}: damaged tumorfield trajectory (status {status!r}, expected one of {', '.join(_STATUSES)})"
    return None


def _damaged(path: str, error: Exception) -> DamagedTrajectory:
    """The refusal of a file whose structure made h5py or numpy raise ``error``."""
    return DamagedTrajectory(f"{path}: damaged tumorfield trajectory ({type(error).__name__}: {error})")


def _open_read_only(path: str) -> h5py.File:
    """``path`` opened read-only without HDF5 file locking, so that a running writer does not block it;
    through :class:`~tumorfield.io._guard.GuardedFile` (in memory, nothing written) if a writer was
    killed while applying a flush's journal."""
    if has_pending_journal(path):
        return h5py.File(GuardedFile(path, create=False, read_only=True), "r")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as error:
        if "locking flag values don't match" not in str(error):
            raise
        return h5py.File(path, "r")  # this process holds it open already, with HDF5's default locking


def _open_checked(path: str) -> tuple[h5py.File, Label]:
    """``path`` opened read-only (:func:`_open_read_only`) and its label, after checking it is a
    trajectory whose label verifies (:func:`~tumorfield.io._label.read_label`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not os.path.isfile(path):
        raise NotATrajectory(f"{path}: not a tumorfield trajectory (not a regular file)")
    try:
        h5 = _open_read_only(path)
    except OSError as error:
        raise NotATrajectory(f"{path}: not a tumorfield trajectory (cannot be opened as HDF5: {error})") from None
    try:
        why = _problem(h5, path)
        if why is None:
            label = read_label(h5, path)
            _check_layout(h5, path, label)
            return h5, label
    except NotATrajectory:
        h5.close()
        raise
    except _DAMAGE as error:
        h5.close()
        raise _damaged(path, error) from None
    h5.close()
    raise NotATrajectory(why)


_CHUNK_BYTES = 2**20
"""Largest HDF5 chunk of a per-frame or per-step dataset beyond one frame (the writer's are one frame,
or 1024 and 4096 values): reading one frame never decompresses more than this or that frame."""


def _stored_config(h5: h5py.File, path: str) -> dict:
    """The stored config (the root attribute ``config``) parsed; ``{}`` if there is none."""
    text = _text(h5.attrs.get("config", ""))
    if not isinstance(text, str):
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (attribute 'config' is not text)")
    try:
        return parse_toml(text)
    except ValueError as error:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (attribute 'config' is not valid TOML: "
                                f"{error})") from None  # fmt: skip


def _planned(config: dict, path: str) -> tuple[int, int]:
    """``(frames, samples)`` the stored ``config`` plans (``[time]``: ``t_end / save_every + 1`` frames,
    ``t_end / dt + 1`` per-step samples); the limits of any run where its ``[time]`` is incomplete."""
    frames, samples = LIMITS["frames"], LIMITS["steps"] + 1
    time = config.get("time")
    values = [time.get(key) if isinstance(time, dict) else None for key in ("t_end", "dt", "save_every")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return frames, samples
    t_end, dt, save_every = (float(v) for v in values)
    with np.errstate(all="ignore"):
        steps, per_save = np.round(np.divide([t_end, save_every], dt)) if dt > 0 else (np.nan, np.nan)
    if not (np.isfinite(steps) and np.isfinite(per_save) and 1 <= per_save and 0 <= steps < samples):
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (the stored config's [time] plans no run "
                                f"of at most {LIMITS['steps']:,} steps: t_end = {t_end}, dt = {dt}, "
                                f"save_every = {save_every})")  # fmt: skip
    return min(frames, int(steps) // int(per_save) + 1), int(steps) + 1


def _configured_shape(config: dict) -> tuple[int, ...] | None:
    """``grid.shape`` of the stored config, if it gives one (a grid from an image does not)."""
    grid = config.get("grid")
    shape = grid.get("shape") if isinstance(grid, dict) else None
    ok = isinstance(shape, list) and shape and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
    return tuple(shape) if ok else None


def _check_layout(h5: h5py.File, path: str, label: Label) -> None:
    """Refuse, before any dataset is read, a file whose datasets the reader could not read in bounded
    memory and time: the grid (the cell-centre axes) within the limits of a run and equal to the stored
    config's ``grid.shape``; every per-frame dataset ``(T,)`` or ``(T, *grid)`` and every per-step one
    ``(S,)``, with ``T`` ≤ the frames and ``S`` ≤ the steps + 1 the config plans, ``n_committed`` ≤ T
    and ``n_scalars_committed`` ≤ S; constants and checkpoint arrays of the grid's shape (or ``()``);
    plain numbers; chunks of at most one frame or 1 MiB; every committed frame's chunks stored (an
    unallocated dataset reads as its fill value, of any size). A :class:`DamagedTrajectory` names the
    dataset and the rule."""
    config = _stored_config(h5, path)
    frames, samples = _planned(config, path)

    def refuse(what: str) -> DamagedTrajectory:
        return DamagedTrajectory(f"{path}: damaged tumorfield trajectory ({what})")

    if label.n > frames or label.s > samples:
        count, value, limit = ("frames", label.n, frames) if label.n > frames else ("samples", label.s, samples)
        key = "n_committed" if count == "frames" else "n_scalars_committed"
        raise refuse(f"{key} = {value:,}: more than the {limit:,} {count} its config plans")
    grid = []
    for axis in (a for a in _AXES if a in h5):
        ds = _numeric(h5[axis], refuse)
        if ds.ndim != 1 or not 2 <= ds.shape[0] <= LIMITS["axis_cells"]:
            raise refuse(f"dataset /{axis} has shape {ds.shape}; a grid axis has 2 to {LIMITS['axis_cells']:,} cells")
        _stored(ds, ds.shape[0], refuse)
        grid.append(ds.shape[0])
    grid = tuple(grid)
    if math.prod(grid) > LIMITS["cells"]:
        raise refuse(f"the grid {grid} has {math.prod(grid):,} cells; at most {LIMITS['cells']:,}")
    configured = _configured_shape(config)
    if configured is not None and configured != grid:
        raise refuse(f"the grid axes give the shape {grid}, the stored config grid.shape = {list(configured)}")
    series = [(h5[name], frames, label.n) for name in ("t", *frame_names(h5))]
    series += [(ds, samples, label.s) for ds in h5["scalars"].values()]
    for ds, most, committed in series:
        ds = _numeric(ds, refuse)
        if ds.ndim not in (1, 1 + len(grid)) or (ds.ndim > 1 and ds.shape[1:] != grid):
            raise refuse(f"dataset {ds.name} has shape {ds.shape}; a series is (T,) or (T, *grid) with the grid {grid}")
        if ds.shape[0] > most:
            raise refuse(f"dataset {ds.name} has {ds.shape[0]:,} rows, more than the {most:,} its config plans")
        row = ds.dtype.itemsize * math.prod(ds.shape[1:])
        if ds.chunks is not None and math.prod(ds.chunks) * ds.dtype.itemsize > max(row, _CHUNK_BYTES):
            raise refuse(f"dataset {ds.name} has chunks {ds.chunks}, larger than one frame and than 1 MiB")
        _stored(ds, committed, refuse)
    fixed = list(h5["constant"].values()) if "constant" in h5 else []
    fixed += [ds for slot in h5["checkpoint"].values() if isinstance(slot, h5py.Group) for ds in slot.values()]
    for ds in fixed:
        ds = _numeric(ds, refuse)
        if ds.shape not in ((), grid):
            raise refuse(f"dataset {ds.name} has shape {ds.shape}; the grid is {grid}")
        _stored(ds, ds.shape[0] if ds.shape else 1, refuse)


def _numeric(ds, refuse) -> h5py.Dataset:
    """``ds`` if it is a dataset of plain numbers (no strings, records or array elements)."""
    if not isinstance(ds, h5py.Dataset):
        raise refuse(f"{ds.name} is not a dataset")
    if ds.dtype.kind not in "biuf" or ds.dtype.itemsize > 8 or ds.dtype.shape != ():
        raise refuse(f"dataset {ds.name} has dtype {ds.dtype}; plain numbers of at most 8 bytes are stored")
    return ds


def _stored(ds: h5py.Dataset, rows: int, refuse) -> None:
    """Refuse ``ds`` unless its first ``rows`` rows are in the file (chunks allocated, or contiguous storage)."""
    if not ds.shape or ds.chunks is None:
        if ds.id.get_storage_size() < (ds.nbytes if rows else 0):
            raise refuse(f"dataset {ds.name} stores {ds.id.get_storage_size():,} of its {ds.nbytes:,} bytes")
        return
    needed = -(-rows // ds.chunks[0]) * math.prod(-(-n // c) for n, c in zip(ds.shape[1:], ds.chunks[1:], strict=True))
    if ds.id.get_num_chunks() < needed:
        raise refuse(f"dataset {ds.name} stores {ds.id.get_num_chunks():,} of the {needed:,} chunks of its "
                     f"{rows:,} committed rows")  # fmt: skip


def grid_from(axes, coordinates: Mapping[str, np.ndarray], affine=None) -> Grid:
    """The :class:`Grid` of a trajectory: shape and box from its cell-centre ``coordinates`` (mm) along
    ``axes``, placed by ``affine`` (4×4, mm); an affine that is the box's own identity orientation
    (what a run on ``[grid] shape``/``length`` records) gives the plain box (``affine=None``)."""
    centres = [np.asarray(coordinates[axis]) for axis in axes]
    shape, length = [len(c) for c in centres], [float(c[0] + c[-1]) for c in centres]  # first Δx/2, last L − Δx/2
    box = Grid(shape, length)
    if affine is None:
        return box
    affine = np.asarray(affine, dtype=np.float64).reshape(4, 4)  # stored flat: netCDF-C reads 1D attributes only
    if np.allclose(affine, box.world_affine(), rtol=1e-9, atol=1e-12):
        return box
    return Grid(shape, length, affine)


def parse_input_images(text: str | None, path: str = "") -> dict:
    """``key → InputImage`` of a file's :data:`INPUT_IMAGES` attribute (empty if it has none)."""
    import json

    from ._image import InputImage

    if not text:
        return {}
    try:
        records = json.loads(text)
        return {
            str(r["key"]): InputImage(
                str(r["path"]), str(r["sha256"]), tuple(tuple(map(float, a)) for a in r["affine"])
            )
            for r in records
        }
    except (ValueError, TypeError, KeyError) as error:
        why = f"attribute {INPUT_IMAGES!r}: {type(error).__name__}: {error}"
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory ({why})") from None


class StoredField:
    """One per-frame dataset, read lazily: ``[k]``, ``[a:b]``, ``[[i, j]]`` index committed frames only.

    ``shape`` is ``(n_committed, ...)``; the first index is checked against it, never
    against the (possibly longer) dataset. ``np.asarray(field)`` reads every committed frame.
    """

    def __init__(self, dataset: h5py.Dataset, n: int):
        self._ds, self._n = dataset, n

    @property
    def name(self) -> str:
        return self._ds.name.rsplit("/", 1)[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n_committed, [z,] y, x)`` for a grid field, ``(n_committed,)`` for a scalar variable."""
        return (self._n, *self._ds.shape[1:])

    @property
    def ndim(self) -> int:
        return self._ds.ndim

    @property
    def dtype(self) -> np.dtype:
        """The stored dtype (the run's ``output.precision`` for grid fields)."""
        return self._ds.dtype

    @property
    def units(self) -> str:
        return _label(self._ds, "units", "")

    @property
    def long_name(self) -> str:
        return _label(self._ds, "long_name", self.name)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"<StoredField {self.name!r} {self.shape} {self.dtype} [{self.units}]>"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if not key or key[0] is Ellipsis:
            return self._ds[: self._n][key]
        first, rest = key[0], key[1:]
        if not isinstance(first, slice) and np.ndim(first) == 0:
            first = operator.index(first)  # one frame number (a float or None is refused)
        frames = np.arange(self._n)[first]  # bounds-checked against n_committed, negatives resolved
        if frames.ndim == 0:
            return self._ds[(int(frames), *rest)]
        regular = _as_slice(frames)
        if regular is not None:
            return self._ds[(regular, *rest)]
        return np.stack([self._ds[(int(k), *rest)] for k in frames])


class _SampledField(StoredField):
    """An ODE variable stored once, as the per-step observable ``/scalars/<observable>`` that records
    it: frame ``k`` is the sample at the frame's time (row ``rows[k]``)."""

    def __init__(self, dataset: h5py.Dataset, rows: np.ndarray, variable: str):
        super().__init__(dataset, len(rows))
        self._rows, self._variable = rows, variable

    @property
    def name(self) -> str:
        return self._variable

    @property
    def observable(self) -> str:
        """The ``/scalars`` series this variable is read from."""
        return self._ds.name.rsplit("/", 1)[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n,)

    @property
    def ndim(self) -> int:
        return 1

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first = key[0] if key and key[0] is not Ellipsis else slice(None)
        if not isinstance(first, slice) and np.ndim(first) == 0:
            first = operator.index(first)
        rows = self._rows[np.arange(self._n)[first]]
        if rows.ndim == 0:
            return self._ds[int(rows)]
        regular = _as_slice(rows)
        return self._ds[regular] if regular is not None else self._ds[()][rows]


def _frame_rows(frame_t: np.ndarray, sample_t: np.ndarray) -> np.ndarray:
    """The per-step sample of every frame time (both in days, increasing): frames are saved every
    ``steps_per_save`` steps, so each frame time is a sample time; ValueError where one is not."""
    rows = np.clip(np.searchsorted(sample_t, frame_t), 0, max(len(sample_t) - 1, 0))
    lower = np.clip(rows - 1, 0, None)
    nearer = np.abs(sample_t[lower] - frame_t) < np.abs(sample_t[rows] - frame_t) if len(sample_t) else rows
    rows = np.where(nearer, lower, rows) if len(sample_t) else rows
    if len(frame_t) and (not len(sample_t) or np.any(np.abs(sample_t[rows] - frame_t) > 1e-9 * (1 + np.abs(frame_t)))):
        raise ValueError("a frame time has no per-step sample in /scalars/t")
    return rows.astype(np.int64)


def _as_slice(frames: np.ndarray) -> slice | None:
    """``frames`` (increasing, evenly spaced, or at most one) as a slice; None if they are not."""
    if len(frames) == 0:
        return slice(0, 0)
    step = int(frames[1] - frames[0]) if len(frames) > 1 else 1
    if step <= 0 or np.any(np.diff(frames) != step):
        return None
    return slice(int(frames[0]), int(frames[-1]) + 1, step)


class StoredArrays(Mapping):
    """Read-only mapping name → numpy array, read from the file on each access, with
    ``units`` and ``long_names`` (dicts name → str)."""

    def __init__(self, datasets: Mapping[str, h5py.Dataset], n: int | None):
        self._datasets, self._n = dict(datasets), n

    def __getitem__(self, name: str) -> np.ndarray:
        ds = self._datasets[name]
        return ds[()] if self._n is None else ds[: self._n]

    def __iter__(self) -> Iterator[str]:
        return iter(self._datasets)

    def __len__(self) -> int:
        return len(self._datasets)

    def __repr__(self) -> str:
        return f"<StoredArrays {list(self._datasets)}>"

    @cached_property
    def units(self) -> dict[str, str]:
        return {name: _label(ds, "units", "") for name, ds in self._datasets.items()}

    @cached_property
    def long_names(self) -> dict[str, str]:
        return {name: _label(ds, "long_name", name) for name, ds in self._datasets.items()}


class StoredTrajectory:
    """A trajectory file opened read-only (see :func:`open_trajectory`); a snapshot of its
    commits at opening: reopen to see frames committed since."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._h5, self._label = _open_checked(self.path)
        try:
            self._index()
        except _DAMAGE as error:
            self.close()
            raise _damaged(self.path, error) from None

    def _index(self) -> None:
        """The fields, variables, scalars and constants of the file (nothing read yet)."""
        attrs = self._h5.attrs
        self.n_committed: int = int(attrs["n_committed"])
        self.n_scalars_committed: int = int(attrs["n_scalars_committed"])
        self.axes: tuple[str, ...] = tuple(a for a in _AXES if a in self._h5)
        datasets = {
            name: obj
            for name, obj in self._h5.items()
            if isinstance(obj, h5py.Dataset) and name not in ("t", *self.axes)
        }
        self.fields: dict[str, StoredField] = {
            name: StoredField(ds, self.n_committed) for name, ds in datasets.items() if ds.ndim == 1 + len(self.axes)
        }
        self.variables: dict[str, StoredField] = {
            name: StoredField(ds, self.n_committed) for name, ds in datasets.items() if ds.ndim == 1
        }
        scalars = {name: ds for name, ds in self._h5["scalars"].items() if name != "t"}
        self.scalars = StoredArrays(scalars, self.n_scalars_committed)
        carried = {
            str(_text(ds.attrs["state_variable"])): ds for ds in scalars.values() if "state_variable" in ds.attrs
        }
        if carried:
            rows = _frame_rows(self.t, self.scalars_t)
            self.variables.update({v: _SampledField(ds, rows, v) for v, ds in carried.items()})
        self.constants = StoredArrays(dict(self._h5["constant"].items()) if "constant" in self._h5 else {}, None)

    # --- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; fields read after this raise."""
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> StoredTrajectory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StoredTrajectory {self.path!r} {self.status} {self.n_committed} frames>"

    # --- contents ----------------------------------------------------------------------------

    @property
    def field_names(self) -> tuple[str, ...]:
        """Time-dependent grid fields, in file order."""
        return tuple(self.fields)

    @property
    def variable_names(self) -> tuple[str, ...]:
        """Scalar ODE variables, one value per frame: ``(T,)`` root datasets, and (format 2) the
        variables that an observable records every step, read from ``/scalars`` at the frame times."""
        return tuple(self.variables)

    @property
    def carried(self) -> dict[str, str]:
        """ODE variable → the ``/scalars`` observable it is stored as (the same series, once)."""
        return {name: v.observable for name, v in self.variables.items() if isinstance(v, _SampledField)}

    def field(self, name: str) -> StoredField:
        """The grid field ``name``, lazily (committed frames only)."""
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"{self.path}: no field {name!r}; fields are {', '.join(self.fields)}") from None

    @cached_property
    def t(self) -> np.ndarray:
        """Times of the committed frames (day)."""
        return self._h5["t"][: self.n_committed]

    @cached_property
    def coordinates(self) -> dict[str, np.ndarray]:
        """Cell-centre coordinates (mm) per axis of :attr:`axes`."""
        return {axis: self._h5[axis][()] for axis in self.axes}

    @cached_property
    def scalars_t(self) -> np.ndarray:
        """Times of the committed per-step samples of :attr:`scalars` (day)."""
        return self._h5["scalars/t"][: self.n_scalars_committed]

    # --- attributes --------------------------------------------------------------------------

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Every root attribute (provenance, config, counters), bytes decoded to str."""
        return {key: _text(value) for key, value in self._h5.attrs.items()}

    @property
    def status(self) -> str:
        """``"running"``, ``"complete"``, ``"interrupted"`` or ``"failed"``."""
        return str(self.metadata["status"])

    @property
    def message(self) -> str | None:
        """Why the run failed or stopped, if it says."""
        message = self.metadata.get("message")
        return str(message) if message else None

    @property
    def warnings(self) -> list[str]:
        """What the run warned about, once each (root attribute ``warnings``, one per line; [] if none)."""
        return [line for line in str(self.metadata.get("warnings") or "").splitlines() if line.strip()]

    @cached_property
    def grid(self) -> Grid:
        """The run's :class:`Grid`: shape and box from the cell centres, the affine from the root
        attribute ``grid_affine`` (a box's own identity orientation, or none recorded: ``affine=None``)."""
        return grid_from(self.axes, self.coordinates, self._h5.attrs.get(GRID_AFFINE))

    @cached_property
    def input_images(self) -> dict:
        """``key path → InputImage(path, sha256, affine)`` of every image the run's config read
        (``{"grid.image": …}``), as recorded when the run started; empty for box runs and older files."""
        return parse_input_images(self.metadata.get(INPUT_IMAGES), self.path)

    @property
    def config_text(self) -> str:
        """The resolved TOML configuration of the run ('' if none was stored)."""
        return str(self.metadata.get("config", ""))

    @cached_property
    def config(self) -> dict[str, Any]:
        """:attr:`config_text` parsed (:func:`tumorfield._inputs.parse_toml`: nesting bounded)."""
        return parse_toml(self.config_text)

    @property
    def verifiable(self) -> bool:
        """Whether the file carries the digests of its last commit (files written before they existed
        do not; :meth:`verify` then checks only what it can read)."""
        return self._label.digests is not None

    def checkpoint(self) -> tuple[dict[str, np.ndarray], int]:
        """The full state (every field in its run dtype) and the step number of the last commit,
        checked against its digest (:class:`~tumorfield.io._label.DamagedTrajectory` if it does not match)."""
        return self._damage_as_error(verified_state, self._label, self.path)

    def verify(self) -> Streams:
        """Check the checkpoint and every committed frame and per-step sample against the digests of
        the last commit (reads the whole file); raises :class:`DamagedTrajectory` naming what
        disagrees. Files written before digests existed pass unchecked. Returns the digests."""
        streams = self._damage_as_error(verified_streams, self._h5, self._label, self.path)
        try:
            self.checkpoint()
        except DamagedTrajectory:
            if not self._superseded():
                raise
        return streams

    def _damage_as_error(self, function, *args):
        try:
            return function(*args)
        except NotATrajectory:
            raise
        except _DAMAGE as error:
            raise _damaged(self.path, error) from None

    def _superseded(self) -> bool:
        """Whether a writer has committed since this file was opened (then the checkpoint read at
        opening may be overwritten legitimately: the writer reuses a slot two commits later)."""
        try:
            with _open_read_only(self.path) as h5:
                return int(h5.attrs["n_committed"]) != self.n_committed
        except _DAMAGE:
            return False


def open_trajectory(path: str | os.PathLike) -> StoredTrajectory:
    """Open the trajectory file ``path`` read-only, also while a run is writing it.

    Raises :class:`NotATrajectory` for anything else (not HDF5, another or a newer format)
    and ``FileNotFoundError`` if there is no such file.

    Examples
    --------
    >>> with open_trajectory("out.h5") as run:  # doctest: +SKIP
    ...     u_last = run.field("u")[-1]  # (y, x) at run.t[-1] days
    ...     burden = run.scalars["tumour_burden"], run.scalars.units["tumour_burden"]
    """
    return StoredTrajectory(path)
