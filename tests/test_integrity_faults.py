"""Fault injection at write granularity: a run killed at any write point is resumed bit-identically
or refused cleanly, never continued wrong.

The writer's test hook (``tumorfield.io._guard.fault_point``) numbers every write point of a
run: each write, truncate and fsync of the trajectory file (HDF5's own writes, the journal, the
journal pointer), each file creation, rename and removal. ``TUMORFIELD_FAULT_SNAPSHOTS`` copies
the output directory at every point, before the point's operation, which is exactly what a
``kill -9`` there leaves on disk; ``TUMORFIELD_FAULT_AFTER_WRITES=N`` really kills the process
(SIGKILL) at the N-th point, to show that the two agree. Each state is then resumed the way a user
would (``tumorfield resume NAME``, or the hidden partial when ``NAME`` is not there) and must end
either bit-identical to an uninterrupted run (every field, ``t``, ``/scalars``) or refused with
exit 2, one line, the file untouched, and an older complete output untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_integrity_common import sha, tumorfield, write_config

from tumorfield.io import _guard


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


def config_file(directory: Path, cache: str, chunk: int, r: float = 1.0) -> Path:
    return write_config(directory / f"run{chunk}.toml", cache, chunk=chunk, r=r)


def contents(path: Path) -> dict[str, np.ndarray]:
    """Every committed frame of every per-frame dataset, ``t``, and every per-step sample."""
    with h5py.File(path, "r") as h5:
        n, s = int(h5.attrs["n_committed"]), int(h5.attrs["n_scalars_committed"])
        data = {name: ds[:n] for name, ds in h5.items() if isinstance(ds, h5py.Dataset) and name not in ("x", "y")}
        data.update({f"scalars/{name}": ds[:s] for name, ds in h5["scalars"].items()})
        data["status"] = np.array(h5.attrs["status"])
    return data


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def snapshot_run(tmp: Path, config: Path, extra=(), old: Path | None = None) -> tuple[Path, list[str]]:
    """Run ``config`` once with a snapshot of the output directory at every write point; returns the
    snapshots' directory and the kind of every point (index 1 first)."""
    out, snaps, trace = tmp / "out", tmp / "snaps", tmp / "trace.txt"
    out.mkdir(parents=True)
    if old is not None:
        shutil.copy(old, out / "o.h5")
    mp = pytest.MonkeyPatch()
    mp.setenv("TUMORFIELD_FAULT_SNAPSHOTS", str(snaps))
    mp.setenv("TUMORFIELD_FAULT_TRACE", str(trace))
    mp.setitem(_guard._points, "n", 0)
    try:
        code, err, _ = tumorfield("run", config, "-o", out / "o.h5", *extra)
    finally:
        mp.undo()
    assert code == 0, err
    return snaps, [line.split()[1] for line in trace.read_text().splitlines()]


def outcome(state: Path, reference: dict, old_sha: str | None) -> str:
    """Resume the killed state in directory ``state`` as a user would; classify the result."""
    final = state / "o.h5"
    partials = sorted(state.glob(".o.h5.*.partial"))
    old_kept = old_sha is not None and final.exists() and sha(final) == old_sha
    if old_kept or not final.exists():  # the new run is only in its partial, if anywhere
        if not partials:
            return "nothing written"
        target = partials[0]
    else:
        target = final
    before = sha(target)
    code, err, _ = tumorfield("resume", target)
    if code == 2:
        assert len(err) == 1 and "Traceback" not in "".join(err) and err[0].startswith("tumorfield: error: "), err
        assert sha(target) == before, "a refused resume modified the file"
        assert old_sha is None or sha(final) == old_sha, "an older complete output was touched"
        return "refused"
    assert code == 0, err
    assert identical(contents(final), reference), f"silently wrong after resume: {err}"
    assert not list(state.glob(".o.h5.*.partial")) and not (state / ".o.h5.lock").exists()
    return "identical"


def flush_ends(kinds: list[str]) -> list[int]:
    """The point that ends each flush of the file (the fsync after HDF5's truncate)."""
    return [i + 1 for i, kind in enumerate(kinds, 1) if kind == "truncate"]


def chosen(kinds: list[str], whole_commit: bool, every: int) -> list[int]:
    """Points to resume: every point up to frame 0's commit (creation, the frame-0 data flush, its
    label flush: the third flush), every point of the next commit if ``whole_commit``, the last 16
    points (the last commit, status, close, rename) and every ``every``-th point otherwise."""
    flushes = flush_ends(kinds)
    frame0 = set(range(1, flushes[2] + 2))
    next_commit = set(range(flushes[2] + 1, flushes[4] + 2)) if whole_commit else set()
    last = set(range(len(kinds) - 15, len(kinds) + 1))
    return sorted(frame0 | next_commit | last | set(range(1, len(kinds) + 1, every)))


def check_every_point(tmp: Path, config: Path, reference: dict, extra=(), old=None, whole_commit=True) -> dict:
    snaps, kinds = snapshot_run(tmp, config, extra, old)
    points = chosen(kinds, whole_commit, every=8 if whole_commit else 5)
    old_sha = sha(old) if old is not None else None
    counts, first_label = {}, None
    for n in points:
        state = tmp / "state" / str(n)
        _guard.copy_directory(snaps / str(n), state)
        result = outcome(state, reference, old_sha)
        counts[result] = counts.get(result, 0) + 1
        if result == "identical" and first_label is None:
            first_label = n
        # once frame 0's label is durable, every later state resumes bit for bit
        assert first_label is None or result == "identical", (n, kinds[n - 1], result)
        shutil.rmtree(state)
    counts["points"], counts["resumed"] = len(kinds), len(points)
    print(f"{config.name} {' '.join(extra)}: {counts}")
    return counts


def test_kill_at_every_write_point_even_chunks(tmp_path, cache):
    """chunk_frames = 2 (even: the case where choosing the slot by n_committed % 2 overwrote the live one)."""
    config = config_file(tmp_path, cache, chunk=2)
    code, err, _ = tumorfield("run", config, "-o", tmp_path / "reference.h5")
    assert code == 0, err
    reference = contents(tmp_path / "reference.h5")
    counts = check_every_point(tmp_path / "fresh", config, reference)
    assert counts["points"] >= 40 and counts["resumed"] >= 40 and counts["identical"] >= 40


def test_kill_at_every_write_point_odd_chunks_over_an_older_output(tmp_path, cache):
    """chunk_frames = 3, ``--overwrite`` of an older complete file: it survives every kill untouched
    until the new run is complete."""
    config = config_file(tmp_path, cache, chunk=3)
    code, err, _ = tumorfield("run", config, "-o", tmp_path / "reference.h5")
    assert code == 0, err
    reference = contents(tmp_path / "reference.h5")
    code, err, _ = tumorfield("run", config_file(tmp_path / "old", cache, chunk=3, r=2.0), "-o", tmp_path / "old.h5")
    assert code == 0, err
    counts = check_every_point(tmp_path / "over", config, reference, ("--overwrite",), old=tmp_path / "old.h5",
                               whole_commit=False)  # fmt: skip
    assert counts["identical"] >= 15


def test_real_kills_at_write_points_resume_bit_identically(tmp_path, cache):
    """SIGKILL (``TUMORFIELD_FAULT_AFTER_WRITES``) in a subprocess at points spread over the run: the
    kernel releases the output lock, and these states resume like the snapshots; a run killed before
    frame 0 was committed leaves nothing that stops running it again."""
    config = config_file(tmp_path, cache, chunk=2)
    _, kinds = snapshot_run(tmp_path / "probe", config)
    reference = contents(tmp_path / "probe" / "out" / "o.h5")
    results = []
    flushes = flush_ends(kinds)
    # creation, frame 0's label being applied (its journal pending), the next commit's data, the end
    for n in (5, flushes[2] - 2, (flushes[2] + flushes[3]) // 2, len(kinds) - 3):
        state = tmp_path / f"killed{n}"
        state.mkdir()
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "TUMORFIELD_FAULT_AFTER_WRITES": str(n)}
        killed = subprocess.run([sys.executable, "-m", "tumorfield.cli", "run", config, "-o", state / "o.h5"],
                                env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert killed.returncode == -9, killed.stderr
        results.append(outcome(state, reference, None))
        if results[-1] != "identical":
            code, err, _ = tumorfield("run", config, "-o", state / "o.h5")
            assert code == 0, err
            assert identical(contents(state / "o.h5"), reference)
            assert not list(state.glob(".o.h5.*")), "a stale partial or lock was left behind"
    print(f"real kills at {len(kinds)} points: {results}")
    assert results[0] in ("refused", "nothing written") and results[1:] == ["identical"] * 3
