"""The commit label of a trajectory, and the SHA-256 digests that let a reader verify it.

The label is ``n_committed`` (with ``n_scalars_committed``): the one checkpoint slot whose
``frames`` attribute equals it is *live* and holds the state, step and digests of that
commit; the writer only ever writes the other slot (see :mod:`tumorfield.io._writer`).
Each slot's label holds four digests (hex): ``meta_sha256`` of the run attributes
that define the computation (:data:`META_KEYS`: config, dt, precision, …), ``state_sha256``
of the checkpointed state, and ``frames_sha256``/``scalars_sha256`` of every committed frame
and per-step sample, in order. The two streams are defined record by record (frame ``k``:
``t[k]`` then each per-frame dataset's frame ``k`` in name order; sample ``s``: ``scalars/t[s]``
then each diagnostic in name order, all float64), so they do not depend on how frames were
grouped into commits, and a resumed writer continues them after re-reading the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

FORMAT = "tumorfield-trajectory/2"
"""The ``schema`` root attribute: format name and version of the files written here (2: an ODE
variable that an observable records every step is stored once, under ``/scalars``)."""
READABLE_VERSIONS = (1, 2)
"""Format versions the reader opens (1: every ODE variable also per frame; same layout otherwise)."""
AXES = ("z", "y", "x")
DIGESTS = ("meta_sha256", "state_sha256", "frames_sha256", "scalars_sha256")
"""The digest attributes of a checkpoint slot (hex, fixed-size bytes)."""


class NotATrajectory(ValueError):
    """The file is not a tumorfield trajectory this version can read; the message names the path and why."""


class DamagedTrajectory(NotATrajectory):
    """A trajectory whose last commit does not verify: counters, checksums or datasets disagree."""


META_KEYS = ("schema", "config", "model", "precision", "dt", "steps_per_save", "seed", "created", "command_line",
             "tumorfield_version", "git_commit", "jax_version", "device")  # fmt: skip
"""Root attributes written once at creation and covered by ``meta_sha256``."""
PROVENANCE_KEYS = ("grid_affine", "input_images")
"""Root attributes of the grid's place in world space and the input images (issue 22), also covered by
``meta_sha256``: a file that has either is hashed as ``tumorfield-meta/2`` over :data:`META_KEYS` and
these (absent ones marked), so deleting them fails as editing does; files written before them keep
their ``tumorfield-meta/1`` digest over :data:`META_KEYS` alone."""

_BLOCK_BYTES = 64 * 2**20  # frames read per block when re-hashing a file


def _scalar_text(value) -> str:
    if isinstance(value, np.ndarray) and value.ndim:  # every bit of an array attribute (grid_affine)
        value = np.ascontiguousarray(value)
        return f"ndarray:{value.dtype.str}:{value.shape}:{value.tobytes().hex()}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return f"{type(value).__name__}:{value!r}"


def meta_digest(attrs: Mapping) -> str:
    """Digest of the :data:`META_KEYS` (and :data:`PROVENANCE_KEYS`) attributes of ``attrs`` (a root
    ``h5py`` AttributeManager)."""
    current = any(key in attrs for key in PROVENANCE_KEYS)
    h = hashlib.sha256(b"tumorfield-meta/2" if current else b"tumorfield-meta/1")
    for key in META_KEYS + (PROVENANCE_KEYS if current else ()):
        h.update(f"\0{key}=".encode() + (_scalar_text(attrs[key]).encode() if key in attrs else b"\1absent"))
    return h.hexdigest()


def state_digest(state: Mapping[str, np.ndarray]) -> str:
    """Digest of a full state: every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256(b"tumorfield-state/1")
    for name in sorted(state):
        value = np.ascontiguousarray(state[name])
        h.update(f"\0{name}:{value.dtype.str}:{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


class Streams:
    """The running digests of the committed frames and of the committed per-step samples."""

    def __init__(self):
        self.frames = hashlib.sha256(b"tumorfield-frames/1")
        self.scalars = hashlib.sha256(b"tumorfield-scalars/1")

    def add_frames(self, t: np.ndarray, frames: Mapping[str, np.ndarray]) -> None:
        """Frames ``t`` (day) with ``frames[name][k]`` stored at ``t[k]``, in their stored dtypes."""
        names = sorted(frames)
        for k, tk in enumerate(np.asarray(t, "f8")):
            self.frames.update(tk.tobytes())
            for name in names:
                self.frames.update(np.ascontiguousarray(frames[name][k]).tobytes())

    def add_scalars(self, t: np.ndarray, scalars: Mapping[str, np.ndarray]) -> None:
        """Per-step samples at ``t`` (day): one float64 record ``(t, *values in name order)`` each."""
        columns = [np.asarray(t, "f8")] + [np.asarray(scalars[name], "f8") for name in sorted(scalars)]
        self.scalars.update(np.ascontiguousarray(np.column_stack(columns)).tobytes())

    def copy(self) -> Streams:
        other = Streams.__new__(Streams)
        other.frames, other.scalars = self.frames.copy(), self.scalars.copy()
        return other

    def hexdigests(self) -> tuple[str, str]:
        return self.frames.hexdigest(), self.scalars.hexdigest()

    @classmethod
    def of_file(cls, h5: h5py.File, frame_names: Sequence[str], n: int, s: int) -> Streams:
        """The digests of the first ``n`` frames (datasets ``frame_names`` and ``/t``) and ``s``
        per-step samples of ``h5``, read block by block."""
        streams = cls()
        per_frame = sum(h5[name].dtype.itemsize * int(np.prod(h5[name].shape[1:])) for name in frame_names) + 8
        block = max(1, _BLOCK_BYTES // per_frame)
        for a in range(0, n, block):
            b = min(n, a + block)
            streams.add_frames(h5["t"][a:b], {name: h5[name][a:b] for name in frame_names})
        group = h5["scalars"]
        names = [name for name in group if name != "t"]
        block = max(1, _BLOCK_BYTES // (8 * (len(names) + 1)))
        for a in range(0, s, block):
            b = min(s, a + block)
            streams.add_scalars(group["t"][a:b], {name: group[name][a:b] for name in names})
        return streams


def frame_names(h5: h5py.File) -> list[str]:
    """The per-frame datasets of ``h5`` (grid fields and scalar variables), in file order."""
    return [name for name, obj in h5.items() if isinstance(obj, h5py.Dataset) and name not in ("t", *AXES)]


def _text(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _count(h5: h5py.File, key: str) -> int:
    value = h5.attrs[key]
    if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.integer) or int(value) < 0:
        raise ValueError(f"attribute {key!r} = {value!r} is not a count")
    return int(value)


@dataclass(frozen=True)
class Label:
    """The last commit of a file: ``n`` frames, ``s`` per-step samples, its checkpoint ``slot``
    (None while nothing is committed) and that slot's digests (None in files written before them)."""

    n: int
    s: int
    slot: h5py.Group | None
    digests: dict[str, str] | None

    @property
    def step(self) -> int:
        return -1 if self.slot is None else int(self.slot.attrs["step"])


def live_slot(h5: h5py.File, n: int) -> h5py.Group | None:
    """The checkpoint slot that belongs to ``n`` committed frames (None: none or more than one does)."""
    slots = [g for g in h5["checkpoint"].values() if isinstance(g, h5py.Group) and _slot_frames(g) == n]
    return slots[0] if len(slots) == 1 else None


def _slot_frames(slot: h5py.Group) -> int | None:
    value = slot.attrs.get("frames")
    return None if value is None or np.ndim(value) != 0 else int(value)


def read_label(h5: h5py.File, path: str) -> Label:
    """The label of ``h5`` checked against its live slot, its run attributes and its datasets'
    lengths; raises :class:`DamagedTrajectory` naming ``path`` and what disagrees."""
    n, s = _count(h5, "n_committed"), _count(h5, "n_scalars_committed")
    short = [name for name in ("t", *frame_names(h5)) if h5[name].shape[0] < n]
    short += [f"scalars/{name}" for name, ds in h5["scalars"].items() if ds.shape[0] < s]
    if short:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory ({', '.join(short)} shorter than committed)")
    if n == 0:
        return Label(0, s, None, None)
    slot = live_slot(h5, n)
    if slot is None:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (no checkpoint matches n_committed = {n})")
    if not all(_text(slot.attrs.get(key, b"")) for key in DIGESTS):
        return Label(n, s, slot, None)
    digests = {key: _text(slot.attrs[key]) for key in DIGESTS}
    if int(slot.attrs["scalars"]) != s:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (n_scalars_committed = {s}, "
                                f"its checkpoint says {int(slot.attrs['scalars'])})")  # fmt: skip
    if meta_digest(h5.attrs) != digests["meta_sha256"]:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (the stored config or run attributes "
                                f"differ from what the run wrote: edited afterwards?)")  # fmt: skip
    return Label(n, s, slot, digests)


def verified_state(label: Label, path: str) -> tuple[dict[str, np.ndarray], int]:
    """The state and step of ``label``'s slot, checked against its ``state_sha256``."""
    if label.slot is None:
        raise DamagedTrajectory(f"{path}: no frame is committed, so there is no checkpoint")
    state = {name: ds[()] for name, ds in label.slot.items()}
    if label.digests is not None and state_digest(state) != label.digests["state_sha256"]:
        raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (the checkpoint of frame {label.n - 1} "
                                f"does not match its checksum)")  # fmt: skip
    return state, label.step


def verified_streams(h5: h5py.File, label: Label, path: str) -> Streams:
    """The digests of every committed frame and sample of ``h5``, checked against ``label``."""
    streams = Streams.of_file(h5, frame_names(h5), label.n, label.s)
    if label.digests is not None:
        frames, scalars = streams.hexdigests()
        for what, got, key in (("frames", frames, "frames_sha256"), ("per-step scalars", scalars, "scalars_sha256")):
            if got != label.digests[key]:
                raise DamagedTrajectory(f"{path}: damaged tumorfield trajectory (the committed {what} "
                                        f"do not match their checksum)")  # fmt: skip
    return streams
