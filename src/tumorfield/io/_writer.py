"""Streaming HDF5 trajectories: frames appended chunk by chunk, crash-consistent commits.

The layout is described once, in :mod:`tumorfield.io._reader`.

Commit protocol, so that ``kill -9`` at any moment leaves a readable file whose
first ``n_committed`` frames are valid: (1) grow the datasets and write the new
frames and scalars, (2) write the full state into the checkpoint slot *not*
referenced by the current ``n_committed``, (3) flush, (4) rewrite the fixed-size
``n_committed`` attribute in place, (5) flush. A kill before (5) leaves the old
``n_committed`` and its intact checkpoint slot; anything written past it is
ignored and truncated on resume. The writer takes no HDF5 file lock, so
``inspect``, ``plot`` or xarray can read committed frames while a run is going.
HDF5 has no journal, so a kill *during* a flush
could still leave metadata half-written; the flushes are short and the tests kill
runs at random moments to check it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

FORMAT = "tumorfield-trajectory/1"
"""The ``schema`` root attribute: format name and version of the files written here."""
STATUSES = ("running", "complete", "interrupted", "failed")
_STATUS_DTYPE = "S16"  # fixed size: rewritten in place, never reallocated


def _compression(output) -> dict[str, Any]:
    """h5py filter arguments for the field datasets of an ``[output]`` section."""
    if output.compression == "none":
        return {}
    if output.compression == "lzf":
        return {"compression": "lzf"}
    return {"compression": "gzip", "compression_opts": output.gzip_level}


class FileBusy(OSError):
    """Another process is writing this trajectory."""


def _lock(path: str) -> int:
    """An exclusive POSIX record lock on ``path``, so two writers (say, two ``resume``) never
    interleave. ``fcntl`` locks are independent of the ``flock`` locks HDF5 readers take,
    so readers are not blocked."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FileBusy(f"{path} is being written by another tumorfield process") from None
    return fd


def committed_checkpoint(h5: h5py.File) -> tuple[dict[str, np.ndarray], int]:
    """The full state (every field in its run dtype) and step number of the last commit of ``h5``."""
    n = int(h5.attrs["n_committed"])
    for slot in h5["checkpoint"].values():
        if int(slot.attrs["frames"]) == n:
            return {name: ds[()] for name, ds in slot.items()}, int(slot.attrs["step"])
    raise ValueError(f"{h5.filename}: no checkpoint matches n_committed={n}")


def _create_axes(h5: h5py.File, grid) -> tuple[h5py.Dataset, list[h5py.Dataset]]:
    """``/t`` (frame times, day, resizable) and the cell-centre coordinates ``/z``, ``/y``, ``/x`` (mm)."""
    t = h5.create_dataset("t", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
    t.attrs.update(units="day", long_name="time", axis="T")
    t.make_scale("t")
    axes = []
    for axis, name in enumerate(grid.axis_names):
        coord = h5.create_dataset(name, data=grid.coordinates(axis))
        coord.attrs.update(units="mm", long_name=f"{name} (cell centre)", axis=name.upper())
        coord.make_scale(name)
        axes.append(coord)
    return t, axes


def _create_frames(h5, t, axes, *, grid, system, model, output) -> None:
    """One resizable ``(T, [z,] y, x)`` dataset per field (``(T,)`` float64 for scalar variables)."""
    dtype = np.dtype(output.precision)
    compression = _compression(output)
    for name in system.fields:
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
        ds.attrs.update(units=model.field_units.get(name, "1"), long_name=model.field_long_names.get(name, name))
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
        ds.attrs.update(units=units, long_name=long_name)
        for axis, coord in enumerate(axes):
            ds.dims[axis].attach_scale(coord)


def _create_scalars(h5, scalar_names, model) -> None:
    """``/scalars/t`` and ``/scalars/<name>``: per-step diagnostics, float64, resizable."""
    group = h5.create_group("scalars")
    st = group.create_dataset("t", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
    st.attrs.update(units="day", long_name="time of every step")
    st.make_scale("t")
    for name in scalar_names:
        ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
        ds.attrs.update(units=model.scalar_units.get(name, "1"), long_name=name)
        ds.dims[0].attach_scale(st)


def _create_checkpoint(h5, *, grid, system, model, state_dtypes) -> None:
    """``/checkpoint/0`` and ``/1``: fixed-size slots for the full state, attrs ``frames``, ``step``, ``t``."""
    checkpoint = h5.create_group("checkpoint")
    for slot in ("0", "1"):
        g = checkpoint.create_group(slot)
        g.attrs.create("frames", np.int64(-1))
        g.attrs.create("step", np.int64(-1))
        g.attrs.create("t", np.float64(np.nan))
        for name in system.fields:
            shape = () if name in system.scalars else grid.shape
            # contiguous, fixed size: rewritten in place, no metadata change per commit
            ds = g.create_dataset(name, shape=shape, dtype=state_dtypes[name])
            ds.attrs.update(
                units=model.field_units.get(name, "1"),
                long_name=f"checkpoint of {model.field_long_names.get(name, name)}",
            )


class TrajectoryFile:
    """An open trajectory being written (``create``) or continued (``open_for_resume``)."""

    def __init__(self, h5: h5py.File, lock: int):
        self.h5, self._lock = h5, lock

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
    ) -> TrajectoryFile:
        """Create ``path`` (replacing it) with no frames committed, locked for writing.

        ``constant_fields`` maps name → (array of the grid's shape, units, long_name): each
        is written once as ``/constant/<name>``, with the grid's dimension scales.
        """
        h5 = h5py.File(path, "w", locking=False)
        self = cls(h5, _lock(path))
        h5.attrs["schema"] = FORMAT
        h5.attrs.create("status", np.array(b"running", dtype=_STATUS_DTYPE))
        h5.attrs.create("n_committed", np.int64(0))
        h5.attrs.create("n_scalars_committed", np.int64(0))
        for key, value in metadata.items():
            h5.attrs[key] = value
        t, axes = _create_axes(h5, grid)
        _create_frames(h5, t, axes, grid=grid, system=system, model=model, output=output)
        if constant_fields:
            _create_constants(h5, axes, constant_fields, grid=grid, output=output)
        _create_scalars(h5, scalar_names, model)
        _create_checkpoint(h5, grid=grid, system=system, model=model, state_dtypes=state_dtypes)
        h5.flush()
        return self

    # --- writing ---------------------------------------------------------------------------

    @property
    def n_committed(self) -> int:
        return int(self.h5.attrs["n_committed"])

    @property
    def n_scalars_committed(self) -> int:
        return int(self.h5.attrs["n_scalars_committed"])

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
        state: Mapping[str, np.ndarray] | None,
        step: int,
    ) -> None:
        """Append frames (and per-step scalars), checkpoint ``state`` at ``step``, then bump
        ``n_committed`` — in that order, with flushes between (see module docstring)."""
        n0, s0 = self.n_committed, self.n_scalars_committed
        n1, s1 = n0 + len(t), s0 + len(scalars_t)
        self._append(self.h5["t"], n0, np.asarray(t, "f8"))
        for name, data in frames.items():
            ds = self.h5[name]
            self._append(ds, n0, np.asarray(data, ds.dtype))
        self._append(self.h5["scalars/t"], s0, np.asarray(scalars_t, "f8"))
        for name, data in scalars.items():
            self._append(self.h5["scalars"][name], s0, np.asarray(data, "f8"))
        if state is not None:
            slot = self.h5["checkpoint"][str(n1 % 2)]
            for name, value in state.items():
                slot[name][...] = value
            slot.attrs.modify("frames", np.int64(n1))
            slot.attrs.modify("step", np.int64(step))
            slot.attrs.modify("t", np.float64(t[-1]))
        self.h5.flush()
        self.h5.attrs.modify("n_scalars_committed", np.int64(s1))
        self.h5.attrs.modify("n_committed", np.int64(n1))
        self.h5.flush()

    def set_status(self, status: str, message: str | None = None) -> None:
        assert status in STATUSES
        self.h5.attrs.modify("status", np.array(status.encode(), dtype=_STATUS_DTYPE))
        if message is not None:
            self.h5.attrs["message"] = message
        self.h5.flush()

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    # --- resuming --------------------------------------------------------------------------

    @classmethod
    def open_for_resume(cls, path: str) -> TrajectoryFile:
        """Open ``path`` read-write and drop anything written after the last commit."""
        lock = _lock(path)
        self = cls(h5py.File(path, "r+", locking=False), lock)
        n, s = self.n_committed, self.n_scalars_committed
        for _name, obj in list(self.h5.items()):
            if isinstance(obj, h5py.Dataset) and obj.maxshape and obj.maxshape[0] is None and obj.shape[0] > n:
                obj.resize(n, axis=0)
        for obj in self.h5["scalars"].values():
            if obj.shape[0] > s:
                obj.resize(s, axis=0)
        self.h5.flush()
        return self

    def checkpoint(self) -> tuple[dict[str, np.ndarray], int]:
        """The full state and step number of the last commit."""
        return committed_checkpoint(self.h5)
