"""``FIT.h5`` is written like a trajectory (the guarded writer): a full disk is exit 74 naming the file,
never a crash, nothing partial or locked left and an older ``FIT.h5`` untouched; a killed fit never
leaves a partial that says ``converged`` unless it is the complete result. The optimisation is
replaced by a made-up result (``_fake_fit.py``), so these tests compute nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from test_integrity_common import small_disk, write_fit_files

from tumorfield.io._guard import GuardedFile

CHILD = Path(__file__).parent / "_fake_fit.py"


def _child(*args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, CHILD, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def disk(tmp_path):
    """A 3 MiB file system (:func:`test_integrity_common.small_disk`)."""
    yield from small_disk(tmp_path)


LEVELS = [0, 4096, 8192, 12288, 16384, 24576, 65536]
"""Free bytes when writing starts: 8–16 KiB crashed h5py (SIGSEGV), 0 was exit 2 (the output lock)."""


def test_a_full_disk_while_writing_fit_h5_is_exit_74_never_a_crash(tmp_path, disk):
    fit = write_fit_files(tmp_path / "inputs")
    result = _child("full", disk, fit, *LEVELS)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # -11/139: a crash
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 3 + 2 * len(LEVELS), result.stdout
    older, first, *rest, roomy = records
    assert older["code"] == 0 and older["files"] == ["FIT.h5"], older
    assert first["code"] == 74 and not first["ran"], first  # refused before any compute
    assert "nothing was computed or written" in first["err"] and "No space left on device" in first["err"]
    for record in rest:
        assert record["files"] == ["FIT.h5"] and record["sha"] == older["sha"], record  # no partial, no lock left
        if record["what"] == "fit":
            assert record["code"] == 74 and record["ran"], record
            assert "Traceback" not in record["err"], record["err"]
            (line,) = [x for x in record["err"].splitlines() if x.startswith("tumorfield: error:")]
            assert line.startswith(f"tumorfield: error: {disk / 'FIT.h5'}: writing the result failed"), line
            assert "No space left on device" in line and f"{disk / 'FIT.h5'} is untouched" in line
        else:
            assert record["code"] == errno.ENOSPC and "StorageError" in record["err"], record
    assert roomy["code"] == 0 and roomy["files"] == ["FIT.h5"], roomy  # with room again, the same command
    with h5py.File(disk / "FIT.h5") as h5:
        assert h5.attrs["status"] == "converged" and h5["fit/history/loss"].shape == (100_000,)


def _status_and_content(path: Path, journal: bool):
    """The root ``status`` and every attribute and dataset of ``path`` (read as it is, or with a
    pending journal applied in memory, as readers of trajectories do); ``(None, None)`` if unreadable."""
    try:
        h5 = h5py.File(GuardedFile(path, create=False, read_only=True) if journal else path, "r")
    except (OSError, ValueError):
        return None, None
    with h5:
        content = {"/": dict(h5.attrs)}
        h5.visititems(
            lambda name, obj: content.update(
                {name: (dict(obj.attrs), obj[()] if isinstance(obj, h5py.Dataset) else None)}
            )
        )  # noqa: E501
        return h5.attrs.get("status"), repr(content)


def test_a_killed_fit_never_leaves_a_partial_marked_converged(tmp_path):
    """A kill at every write point (what each leaves: ``TUMORFIELD_FAULT_SNAPSHOTS``, docs/cli.md): the
    partial says ``writing`` (or cannot be opened), or it is the complete result lacking only its
    rename; the older ``FIT.h5`` is untouched throughout."""
    fit = write_fit_files(tmp_path / "inputs")
    out = tmp_path / "out"
    snapshots = tmp_path / "snapshots"
    result = _child("snapshots", fit, out / "FIT.h5", snapshots)
    assert result.returncode == 0 and result.stdout.split() == ["0", "0"], result.stderr
    _, final = _status_and_content(out / "FIT.h5", journal=False)
    points = sorted(snapshots.iterdir(), key=lambda p: int(p.name))
    older = _sha(points[0] / "FIT.h5")
    assert older != _sha(out / "FIT.h5")
    partials = [p for point in points for p in point.glob(".FIT.h5.*.partial")]
    assert len(partials) >= 20, [p.name for p in points]  # every write of FIT.h5 is a write point
    seen = set()
    for partial in partials:
        for journal in (False, True):
            status, content = _status_and_content(partial, journal)
            seen.add(status)
            assert status in (None, "writing", "converged"), (partial, status)
            if status == "converged":
                assert content == final, partial
    assert "writing" in seen
    for point in points:
        assert _sha(point / "FIT.h5") == older, point
