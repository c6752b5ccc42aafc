"""Streaming HDF5 trajectories: frames appended chunk by chunk, crash-consistent commits.

The layout is described once, in :mod:`tumorfield.io._reader`; the label and its digests in
:mod:`tumorfield.io._label`; every byte goes through :class:`~tumorfield.io._guard.GuardedFile`.

Commit protocol (``docs/cli.md`` gives the argument for every interruption point):

1. reserve the commit's bytes on disk (a full disk stops the run here, nothing written);
2. grow the datasets and write the new frames and per-step samples (rows past
   ``n_committed``, which no label references);
3. write the full state and its label (``frames``, ``scalars``, ``step``, ``t``, digests)
   into the checkpoint slot that is *not* live (the live one is the slot whose ``frames``
   equals ``n_committed``);
4. flush + fsync: everything of the commit is durable;
5. rewrite ``n_scalars_committed`` and ``n_committed`` in place (fixed-size attributes of
   the root object header): from here on the new slot is live;
6. flush + fsync.

The writer takes no HDF5 file lock (the output lock is the sidecar of
:mod:`tumorfield.io._lock`), so ``inspect``, ``plot`` or xarray can read a running file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ._guard import USERBLOCK, GuardedFile, StorageError, fault_point
from ._label import (
    DIGESTS,
    FORMAT,
    Streams,
    frame_names,
    live_slot,
    meta_digest,
    read_label,
    state_digest,
    verified_state,
)
from ._lock import FileBusy, OutputLock

__all__ = ["FORMAT", "STATUSES", "FileBusy", "StorageError", "TrajectoryFile"]

STATUSES = ("running", "complete", "interrupted", "failed")
_STATUS_DTYPE = "S16"  # fixed size: rewritten in place, never reallocated
_DIGEST_DTYPE = "S64"
_TEXT_ATTRIBUTES = ("message", "resumed", "warnings")
"""Variable-length strings, created empty: rewriting one changes its heap object, never the object
header's layout (which adding or deleting an attribute may reorganise, around the label)."""


def _text(value: str) -> np.ndarray:
    return np.array(value, dtype=h5py.string_dtype())


def _compression(output) -> dict[str, Any]:
    """h5py filter arguments for the field datasets of an ``[output]`` section: deflate (gzip,
    in every HDF5 build) with the byte-shuffle filter by default; ``lzf`` is h5py's own filter,
    which VTK/ParaView, netCDF-C, MATLAB and h5dump cannot read."""
    if output.compression == "none":
        return {}
    if output.compression == "lzf":
        return {"compression": "lzf"}
    return {"compression": "gzip", "compression_opts": output.gzip_level, "shuffle": True}


_BY_DIMENSION = re.compile(r"^(\S+) \(2D\) or (\S+) \(3D\)")


def cf_units(text: str, ndim: int) -> tuple[str, str]:
    """A model's units string as CF ``units`` and a description (``""`` if none).

    The convention of ``Field``/``Observable`` units (``tumorfield.models``): the units first, then optionally
    ``", description"`` or ``" (description)"``; ``mm^d`` is the grid's volume unit (mm² in
    2D, mm³ in 3D), written out here; ``"A (2D) or B (3D)"`` picks by ``ndim``; ``²``/``³``
    and ``·`` become UDUNITS ``2``/``3`` and a space.
    """
    text = str(text).strip()
    by_dimension = _BY_DIMENSION.match(text)
    if by_dimension:
        units, rest = by_dimension.group(1 if ndim < 3 else 2), text[by_dimension.end() :]
    else:
        cuts = [i for i in (text.find(", "), text.find(" (")) if i > 0]
        units, rest = (text[: min(cuts)], text[min(cuts) :]) if cuts else (text, "")
    rest = rest.strip().lstrip(",").strip()
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    units = units.replace("mm^d", "mm" if ndim == 1 else f"mm{ndim}")
    units = units.replace("²", "2").replace("³", "3").replace("·", " ")
    if units in ("normalised", "normalized", "dimensionless"):
        units, rest = "1", rest or units
    return units or "1", rest


def _describe(ds: h5py.Dataset, units_text: str, long_name: str, ndim: int, **extra) -> None:
    """CF attributes of a data variable: ``units``, ``long_name`` and, if the model's units string
    carries one, its description as ``comment``."""
    units, description = cf_units(units_text, ndim)
    ds.attrs.update(units=units, long_name=long_name, **extra)
    if description:
        ds.attrs["comment"] = description


RUN_SCALARS = {"substeps": ("1", "explicit sub-steps of the cell fields per step (0 at t = 0: no step yet)")}
"""Units and long names of the per-step series that the run records itself, not the model's ``observe``."""


def declared(model, table: str, name: str) -> tuple[str, str]:
    """``(units, long_name)`` of ``model.<table>[name]`` (``table``: ``"fields"`` or ``"observables"``).
    Raises ``ValueError`` naming the model and the key if it is not declared, so that no dataset is
    written with a made-up unit."""
    quantity = (getattr(model, table, None) or {}).get(name)
    if quantity is None and table == "observables" and name in RUN_SCALARS:
        return RUN_SCALARS[name]
    if quantity is None:
        kind = "Field" if table == "fields" else "Observable"
        model_name = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"model {model_name!r} declares no units for {table[:-1]} {name!r}: add "
            f"{name!r}: {kind}(units, long_name) to {type(model).__name__}.{table} (see docs/models.md)"
        )
    return quantity.units, quantity.long_name


_STANDARD_NAMES = {"t": "time"}
"""CF standard names of the coordinates (there is none for a tissue box's x, y, z)."""


def _create_axes(h5: h5py.File, grid) -> tuple[h5py.Dataset, list[h5py.Dataset]]:
    """``/t`` (frame times, days, resizable) and the cell-centre coordinates ``/z``, ``/y``, ``/x``
    (mm), each a dimension scale of its own name (a netCDF coordinate variable)."""
    t = h5.create_dataset("t", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
    t.attrs.update(units="days", long_name="time since the start of the run", standard_name="time", axis="T")
    t.make_scale("t")
    axes = []
    for axis, name in enumerate(grid.axis_names):
        coord = h5.create_dataset(name, data=grid.coordinates(axis))
        coord.attrs.update(units="mm", long_name=f"{name} (cell centre)", axis=name.upper())
        coord.make_scale(name)
        axes.append(coord)
    return t, axes


def carried_variables(model, scalar_names) -> dict[str, str]:
    """ODE variable → the per-step observable that records it (``Model.scalar_observables``,
    restricted to the observables being written): those variables get no per-frame dataset."""
    declared = getattr(model, "scalar_observables", None) or {}
    return {variable: name for variable, name in declared.items() if name in scalar_names}


def _create_frames(h5, t, axes, *, grid, system, model, output, fields) -> None:
    """One resizable ``(T, [z,] y, x)`` dataset per stored field (``(T,)`` float64 for scalar variables)."""
    dtype = np.dtype(output.precision)
    compression = _compression(output)
    for name in fields:
        scalar = name in system.scalars
        shape = () if scalar else grid.shape
        ds = h5.create_dataset(
            name,
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype="f8" if scalar else dtype,
            chunks=(1024,) if scalar else (1, *shape),
            **({} if scalar else compression),
        )
        _describe(ds, *declared(model, "fields", name), grid.ndim)
        ds.dims[0].attach_scale(t)
        for axis, coord in enumerate(axes if not scalar else []):
            ds.dims[axis + 1].attach_scale(coord)


def _create_constants(h5, axes, constant_fields, *, grid, output) -> None:
    """``/constant/<name>``: time-independent arrays on the grid, written once, with units and long_name."""
    group = h5.create_group("constant")
    for name, (data, units, long_name) in constant_fields.items():
        data = np.asarray(data)
        if data.shape != tuple(grid.shape):
            raise ValueError(f"constant field {name!r} has shape {data.shape}, the grid {tuple(grid.shape)}")
        ds = group.create_dataset(name, data=data, **_compression(output))
        _describe(ds, units, long_name, grid.ndim)
        for axis, coord in enumerate(axes):
            ds.dims[axis].attach_scale(coord)


def _create_scalars(h5, scalar_names, model, carried: dict[str, str], ndim: int) -> None:
    """``/scalars/t`` (its own dimension ``t``, days) and ``/scalars/<name>``: per-step diagnostics,
    float64, resizable. An observable that carries an ODE variable says so in ``state_variable``."""
    group = h5.create_group("scalars")
    st = group.create_dataset("t", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
    st.attrs.update(units="days", long_name="time of every step", standard_name="time", axis="T")
    st.make_scale("t")
    variable_of = {name: variable for variable, name in carried.items()}
    for name in scalar_names:
        units, long_name = declared(model, "observables", name)
        ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
        variable = variable_of.get(name)
        extra = {"state_variable": variable} if variable else {}
        _describe(ds, units, long_name, ndim, **extra)
        ds.dims[0].attach_scale(st)


def _create_checkpoint(h5, *, grid, system, model, state_dtypes) -> None:
    """``/checkpoint/0`` and ``/1``: slots for the full state, allocated (zeros) now, so that a
    commit rewrites them in place; label attrs ``frames``, ``scalars``, ``step``, ``t`` and the digests."""
    checkpoint = h5.create_group("checkpoint")
    for slot in ("0", "1"):
        g = checkpoint.create_group(slot)
        for key in ("frames", "scalars", "step"):
            g.attrs.create(key, np.int64(-1))
        g.attrs.create("t", np.float64(np.nan))
        for key in DIGESTS:
            g.attrs.create(key, np.array(b"", dtype=_DIGEST_DTYPE))
        for name in system.fields:
            shape = () if name in system.scalars else grid.shape
            ds = g.create_dataset(name, data=np.zeros(shape, state_dtypes[name]))  # contiguous, fixed size
            units, long_name = declared(model, "fields", name)
            _describe(ds, units, f"checkpoint of {long_name}", grid.ndim)


def _root_attributes(h5: h5py.File, metadata: Mapping[str, Any], warnings=()) -> None:
    """The label and status attributes first (fixed size, in the first object-header chunk), then ``metadata``;
    ``warnings`` (one per line) is the initial value of that text attribute."""
    h5.attrs["schema"] = FORMAT
    h5.attrs.create("n_committed", np.int64(0))
    h5.attrs.create("n_scalars_committed", np.int64(0))
    h5.attrs.create("status", np.array(b"running", dtype=_STATUS_DTYPE))
    for key in _TEXT_ATTRIBUTES:
        h5.attrs.create(key, _text("\n".join(warnings) if key == "warnings" else ""))
    for key, value in metadata.items():
        if key not in h5.attrs:
            h5.attrs[key] = value
    for key, value in _GLOBAL_ATTRIBUTES.items():
        if key not in h5.attrs:
            h5.attrs[key] = _text(value(metadata) if callable(value) else value)


_GLOBAL_ATTRIBUTES = {
    "Conventions": "CF-1.11",
    "title": lambda metadata: f"tumorfield {metadata.get('model', '')} trajectory".replace("  ", " "),
    "source": lambda metadata: f"tumorfield {metadata.get('tumorfield_version', '')}".strip(),
}
"""CF global attributes (netCDF users look for ``Conventions``)."""


@dataclass(frozen=True)
class _Series:
    """A dataset commits append to: ``per`` is ``"frame"`` or ``"sample"``; sizes in bytes."""

    ds: h5py.Dataset
    per: str
    chunk_rows: int
    row_bytes: int
    compressed: bool

    @classmethod
    def of(cls, ds: h5py.Dataset, per: str) -> _Series:
        return cls(ds, per, ds.chunks[0], ds.dtype.itemsize * math.prod(ds.shape[1:]), bool(ds.compression))

    @property
    def rewritten(self) -> int:
        """Bytes a commit may rewrite in place (the partly filled last chunk of a 1-D dataset)."""
        return self.chunk_rows * self.row_bytes if self.ds.ndim == 1 else 0

    def new_bytes(self, start: int, end: int) -> int:
        """Upper bound of the file space that writing rows ``start:end`` allocates (new chunks)."""
        new_chunks = max(0, math.ceil(end / self.chunk_rows) - math.ceil(start / self.chunk_rows))
        size = new_chunks * self.chunk_rows * self.row_bytes
        return int(size * 1.02) + 64 * new_chunks if self.compressed else size


class TrajectoryFile:
    """An open trajectory being written (:meth:`create`) or continued (:meth:`open_for_resume`)."""

    def __init__(self, h5: h5py.File, guard: GuardedFile, lock: OutputLock, owns_lock: bool, streams: Streams):
        self.h5, self._guard, self._lock, self._owns_lock, self._streams = h5, guard, lock, owns_lock, streams
        self._n, self._s = int(h5.attrs["n_committed"]), int(h5.attrs["n_scalars_committed"])
        self._frame_names = frozenset(frame_names(h5))
        group = self.h5["scalars"]
        self._series = {name: _Series.of(h5[name], "frame") for name in ("t", *self._frame_names)}
        self._series.update({f"scalars/{name}": _Series.of(ds, "sample") for name, ds in group.items()})
        self._scalar_names = frozenset(group) - {"t"}
        self._slot_bytes = sum(ds.nbytes for ds in h5["checkpoint/0"].values())
        self._meta = meta_digest(h5.attrs)  # written once at creation, never changed by a writer
        live = live_slot(h5, self._n)
        self._live = None if live is None else live.name.rsplit("/", 1)[-1]

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str,
        *,
        grid,
        system,
        model,
        output: Mapping[str, Any],
        metadata: Mapping[str, Any],
        scalar_names: tuple[str, ...],
        state_dtypes: Mapping[str, np.dtype],
        constant_fields: Mapping[str, tuple[np.ndarray, str, str]] | None = None,
        fields: tuple[str, ...] | None = None,
        lock: OutputLock | None = None,
        warnings: tuple[str, ...] = (),
    ) -> TrajectoryFile:
        """Create ``path`` (which must not exist) with no frames committed, under the output ``lock``
        (taken here if not given); ``warnings``: the root attribute's first value (one per line).

        ``fields`` (default: every field of ``system``) get per-frame datasets, except the ODE
        variables an observable of ``scalar_names`` records every step (:func:`carried_variables`:
        that series is stored once, under ``/scalars``); the checkpoint always holds every field.
        ``constant_fields`` maps name → (array of the grid's shape, units, long_name): each is
        written once as ``/constant/<name>``, with the grid's dimension scales.
        """
        owns_lock, lock = lock is None, lock or OutputLock.acquire(path)
        guard = h5 = None
        try:
            guard = GuardedFile(path, create=True)
            h5 = h5py.File(guard, "w", userblock_size=USERBLOCK)
            _root_attributes(h5, metadata, warnings)
            t, axes = _create_axes(h5, grid)
            carried = carried_variables(model, scalar_names)
            fields = tuple(f for f in (system.fields if fields is None else fields) if f not in carried)
            _create_frames(h5, t, axes, grid=grid, system=system, model=model, output=output, fields=fields)
            if constant_fields:
                _create_constants(h5, axes, constant_fields, grid=grid, output=output)
            _create_scalars(h5, scalar_names, model, carried, grid.ndim)
            _create_checkpoint(h5, grid=grid, system=system, model=model, state_dtypes=state_dtypes)
            h5.flush()
            guard.check()
        except BaseException:
            _abandon(h5, guard, lock if owns_lock else None, created=path)
            raise
        return cls(h5, guard, lock, owns_lock, Streams())

    # --- writing ---------------------------------------------------------------------------

    @property
    def n_committed(self) -> int:
        return self._n

    @property
    def n_scalars_committed(self) -> int:
        return self._s

    @property
    def frame_names(self) -> frozenset[str]:
        """The fields stored per frame (``output.fields``); a commit gives exactly these."""
        return self._frame_names

    @property
    def path(self) -> str:
        return self._guard.path

    def moved(self, path) -> None:
        """The file was renamed to ``path`` (by its output target): name it so in messages."""
        self._guard.path = str(path)

    def _flush(self) -> None:
        """HDF5 flush (ending in fsync, see :class:`GuardedFile`), then raise if any write failed."""
        self.h5.flush()
        self._guard.check()

    def _append(self, ds: h5py.Dataset, start: int, data: np.ndarray) -> None:
        end = start + data.shape[0]
        if ds.shape[0] != end:
            ds.resize(end, axis=0)
        ds[start:end] = data

    def commit(
        self,
        frames: Mapping[str, np.ndarray],
        t: np.ndarray,
        scalars_t: np.ndarray,
        scalars: Mapping[str, np.ndarray],
        state: Mapping[str, np.ndarray],
        step: int,
    ) -> None:
        """Append ``frames`` (one array per stored field, frames first) at times ``t`` and the
        per-step ``scalars`` at ``scalars_t``, checkpoint ``state`` at ``step``, then move the
        label — the protocol of the module docstring. Raises :class:`StorageError` if the disk
        is full or a write fails (the previous commit stays the valid one)."""
        if set(frames) != self._frame_names or set(scalars) != self._scalar_names or state is None:
            raise ValueError(
                f"a commit needs frames of {sorted(self._frame_names)}, scalars of "
                f"{sorted(self._scalar_names)} and a state; got {sorted(frames)}, {sorted(scalars)}"
            )
        n0, s0 = self._n, self._s
        n1, s1 = n0 + len(t), s0 + len(scalars_t)
        stored = {name: np.asarray(data, self._series[name].ds.dtype) for name, data in frames.items()}
        samples = {name: np.asarray(data, "f8") for name, data in scalars.items()}
        rows = {"t": np.asarray(t, "f8"), "scalars/t": np.asarray(scalars_t, "f8"), **stored}
        rows.update({f"scalars/{name}": data for name, data in samples.items()})
        self._guard.reserve(self._commit_bytes(len(t), len(scalars_t)))
        for name, data in rows.items():
            series = self._series[name]
            self._append(series.ds, n0 if series.per == "frame" else s0, data)
        streams = self._streams.copy()
        streams.add_frames(t, stored)
        streams.add_scalars(scalars_t, samples)
        slot = self._write_slot(state, n1, s1, step, float(t[-1]), streams)
        self._flush()
        self.h5.attrs.modify("n_scalars_committed", np.int64(s1))
        self.h5.attrs.modify("n_committed", np.int64(n1))
        self._flush()
        self._n, self._s, self._live, self._streams = n1, s1, slot, streams

    def _commit_bytes(self, frames: int, samples: int) -> int:
        """Upper bound of the new file space (bytes) a commit of ``frames`` frames and ``samples``
        per-step samples takes: new chunks, and the journal of what it rewrites in place (the
        checkpoint slot, the last chunk of every 1-D dataset)."""
        total = self._slot_bytes
        for series in self._series.values():
            start, k = (self._n, frames) if series.per == "frame" else (self._s, samples)
            total += series.new_bytes(start, start + k) + series.rewritten
        return total

    def check_space(self, frames: int, samples: int) -> None:
        """Raise :class:`StorageError`, writing nothing, if the disk cannot take a commit of ``frames``
        frames and ``samples`` per-step samples."""
        self._guard.require_free(self._commit_bytes(frames, samples))

    def _write_slot(self, state, n: int, s: int, step: int, t: float, streams: Streams) -> str:
        """The full state and its label into the checkpoint slot that the current label does not
        reference; returns that slot's name."""
        free = "1" if self._live == "0" else "0"
        slot = self.h5["checkpoint"][free]
        values = {name: np.asarray(value, slot[name].dtype) for name, value in state.items()}
        for name, value in values.items():
            slot[name][...] = value
        frames_sha, scalars_sha = streams.hexdigests()
        digests = {"meta_sha256": self._meta, "state_sha256": state_digest(values),
                   "frames_sha256": frames_sha, "scalars_sha256": scalars_sha}  # fmt: skip
        for key, value in digests.items():
            slot.attrs.modify(key, np.array(value.encode(), dtype=_DIGEST_DTYPE))
        for key, value in (("frames", np.int64(n)), ("scalars", np.int64(s)), ("step", np.int64(step))):
            slot.attrs.modify(key, value)
        slot.attrs.modify("t", np.float64(t))
        return free

    @property
    def warnings(self) -> list[str]:
        """The root attribute ``warnings``, one warning per line ([] if none, or a file without it)."""
        text = self.h5.attrs.get("warnings", b"")
        text = text.decode() if isinstance(text, bytes) else str(text)
        return [line for line in text.splitlines() if line.strip()]

    def set_status(self, status: str, message: str | None = None, *, resumed: str | None = None,
                   warnings=None) -> None:  # fmt: skip
        """Rewrite ``status`` (and ``message``, ``resumed``, ``warnings``: a list, one per line) in place and
        flush. ``warnings`` is not written to a file created before the attribute existed (adding an
        attribute may reorganise the object header around the label)."""
        assert status in STATUSES
        self.h5.attrs.modify("status", np.array(status.encode(), dtype=_STATUS_DTYPE))
        self._flush()  # in place, journaled in the userblock: works on a full disk
        lines = None if warnings is None or "warnings" not in self.h5.attrs else "\n".join(warnings)
        for key, value in (("message", message), ("resumed", resumed), ("warnings", lines)):
            if value is not None:
                self.h5.attrs.modify(key, _text(value))
        self._flush()

    def close(self) -> None:
        """Close the file and release the lock if this object took it; after a failed write, HDF5's
        last writes are dropped by the guard, so closing cannot fail or crash."""
        try:
            if self.h5.id.valid:
                self.h5.close()
        except Exception:
            if self._guard.error is None:
                raise
        finally:
            self._guard.close()
            if self._owns_lock:
                self._lock.release()

    # --- resuming --------------------------------------------------------------------------

    @classmethod
    def open_for_resume(
        cls, path: str, lock: OutputLock | None = None, verified: Streams | None = None
    ) -> TrajectoryFile:
        """Verify ``path`` read-only (label, run attributes, checkpoint, every committed frame and
        sample against their digests; ``verified``: the digests of a verification just done under
        the same lock), then open it read-write under the output lock; raises
        :class:`~tumorfield.io.NotATrajectory` (nothing written) for anything that does not verify."""
        from ._reader import open_trajectory

        owns_lock, lock = lock is None, lock or OutputLock.acquire(path)
        guard = h5 = None
        try:
            streams = verified
            if streams is None:
                with open_trajectory(path) as stored:
                    streams = stored.verify()
            guard = GuardedFile(path, create=False)
            h5 = h5py.File(guard, "r+")
        except BaseException:
            _abandon(h5, guard, lock if owns_lock else None)
            raise
        return cls(h5, guard, lock, owns_lock, streams)

    def last_state(self, names) -> dict[str, np.ndarray]:
        """The fields ``names`` of the last commit's state (its checkpoint slot, not verified; {} if none)."""
        if self._live is None:
            return {}
        slot = self.h5["checkpoint"][self._live]
        return {name: slot[name][()] for name in names if name in slot}

    def first_frame(self, names) -> dict[str, np.ndarray]:
        """Frame 0 of the per-frame fields among ``names`` ({} before the first commit)."""
        if self._n == 0:
            return {}
        return {name: self.h5[name][0] for name in names if name in self._frame_names}

    def checkpoint(self) -> tuple[dict[str, np.ndarray], int]:
        """The full state and step number of the last commit (verified against its digest)."""
        return verified_state(read_label(self.h5, self.path), self.path)


def _abandon(h5, guard: GuardedFile | None, lock: OutputLock | None, created: str | None = None) -> None:
    """Undo a failed :meth:`TrajectoryFile.create` or ``open_for_resume``: close without writing
    anything more, remove the file if it was ``created`` here (nothing is committed in it), release the lock."""
    if guard is not None:
        guard.error = guard.error or OSError("abandoned")  # the guard drops HDF5's closing writes
        try:
            if h5 is not None and h5.id.valid:
                h5.close()
        except Exception:
            pass
        guard.close()
        if created is not None:
            fault_point("unlink", created)
            os.unlink(created)
    if lock is not None:
        lock.release()
