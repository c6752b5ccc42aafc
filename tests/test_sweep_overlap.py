"""A batch's host work overlaps its compute (issue 24): the next chunk is dispatched before the previous
one is written, the members' files are created while the first chunk computes; nothing of the files'
integrity changes. Overlapped member files equal those of a batch whose every chunk is waited for; a
write that fails while the next chunk computes stops the batch at once, every file closed and every
earlier commit intact; a member that cannot be created stops the batch before anything else is written;
a signal during the commits stops after the chunk in flight, which is committed first.

The 8×8 model of ``_sweep_models`` (``u`` blows up for large ``r``), 20 frames in chunks of 4: frame 0
and five chunks per member; one persistent compilation cache for the module.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
from pathlib import Path

import _sweep_models
import h5py
import jax
import numpy as np
import pytest

from tumorfield.io import _guard, _writer, open_trajectory
from tumorfield.io._lock import is_locked
from tumorfield.run import StorageError
from tumorfield.run._signals import _early
from tumorfield.sweep import SweepRunner
from tumorfield.sweep import _sweep as sweep_module
from tumorfield.sweep._manifest import MANIFEST, member_file

QUIET = {"log": lambda m: None}
STEPS_PER_CHUNK = 4  # chunk_frames = 4, one step per frame (_sweep_models.write_base)
_VOLATILE = ("created", "command_line", "target", "meta_sha256")  # the moment and place of creation, their digest
_REFERENCES = ("DIMENSION_LIST", "REFERENCE_LIST")  # dimension scales' object references (pointers when read)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The test model's run config (t_end 2 days: 20 frames), with a compilation cache for the module."""
    _sweep_models.register()
    yield _sweep_models.write_base(tmp_path_factory.mktemp("base"), t_end=2.0)
    _sweep_models.unregister()


def _sweep_file(directory: Path, base: str, values: str) -> Path:
    path = directory / "sweep.toml"
    path.write_text(f'[sweep]\nbase = "{base}"\ndesign = "list"\n[sweep.parameters]\n"parameters.r" = {values}\n')
    return path


@pytest.fixture
def events(monkeypatch):
    """What happens, in order: ``("dispatch", step)`` as each batched chunk is dispatched (the call
    returning), ``("commit", member, frames)`` as a member's commit of ``frames`` frames begins."""
    seen: list[tuple] = []
    rollout, commit = sweep_module.batched_rollout, _writer.TrajectoryFile.commit

    def recording_rollout(*args, **kwargs):
        compiled = rollout(*args, **kwargs)

        def call(arrays, state, step):
            traj = compiled(arrays, state, step)
            seen.append(("dispatch", int(step)))
            return traj

        return call

    def recording_commit(self, frames, t, *args, **kwargs):
        seen.append(("commit", int(Path(self.path).name.split("-")[1][:4]), len(t)))
        return commit(self, frames, t, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "batched_rollout", recording_rollout)
    monkeypatch.setattr(_writer.TrajectoryFile, "commit", recording_commit)
    return seen


def _blocking(monkeypatch) -> None:
    """Make every batched chunk wait for its result before returning: nothing overlaps."""
    rollout = sweep_module.batched_rollout

    def waited(*args, **kwargs):
        compiled = rollout(*args, **kwargs)
        return lambda *call: jax.block_until_ready(compiled(*call))

    monkeypatch.setattr(sweep_module, "batched_rollout", waited)


def _value(value) -> object:
    """An attribute or dataset value, comparable across files: its type and bytes (strings as text)."""
    value = np.asarray(value)
    return [str(x) for x in value.ravel()] if value.dtype == object else (value.dtype.str, value.tobytes())


def _contents(path: Path) -> dict:
    """Every dataset and attribute of a member file, but the time and place of its creation."""
    found: dict = {}
    with h5py.File(path, "r") as h5:

        def visit(name, item):
            attrs = {k: _value(v) for k, v in item.attrs.items() if k not in _VOLATILE + _REFERENCES}
            found[name] = (_value(item[()]) if isinstance(item, h5py.Dataset) else None, attrs)

        h5.visititems(visit)
        visit("/", h5)
    return found


def _closed(out: Path) -> None:
    """Every member file unlocked, no lock file or temporary left, every file verifying."""
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    for path in out.glob("member-*.h5"):
        assert not is_locked(path), path
        with open_trajectory(path) as stored:
            stored.verify()


def _manifest_statuses(out: Path) -> list[str]:
    with open(out / MANIFEST, newline="") as f:
        return [row["status"] for row in csv.DictReader(f)]


def test_overlapped_members_equal_a_batch_that_waits_for_every_chunk(tmp_path, base, events, monkeypatch):
    values = "[0.1, 500.0, 0.2, 0.3]"  # member 1 blows up after a few frames; the others go on
    overlapped = SweepRunner(_sweep_file(tmp_path, base, values), tmp_path / "overlapped", **QUIET).run()
    assert [overlapped[i].status for i in range(4)] == ["complete", "failed", "complete", "complete"]
    # the pipeline: chunk 1 is dispatched before any file gets its frame 0, chunk k + 1 before chunk k is written
    dispatches = [i for i, e in enumerate(events) if e[0] == "dispatch"]
    assert [events[i][1] for i in dispatches] == [STEPS_PER_CHUNK * k for k in range(5)]
    assert events[1:5] == [("commit", i, 1) for i in range(4)]  # the frame 0s, after the first dispatch
    for k, at in enumerate(dispatches):  # member 0 has written frame 0 and chunks 1 … k - 1, not chunk k
        assert sum(e[:2] == ("commit", 0) for e in events[:at]) == k, (k, events)
    # the failing member's message names the field and the cell (its chunk's every field is copied)
    with open_trajectory(tmp_path / "overlapped" / member_file(1)) as failed:
        assert failed.status == "failed" and "field 'u' is not finite" in failed.message
        assert "at cell" in failed.message and 1 <= failed.n_committed < 21

    monkeypatch.undo()
    _blocking(monkeypatch)
    waited = SweepRunner(_sweep_file(tmp_path, base, values), tmp_path / "waited", **QUIET).run()
    assert [waited[i].status for i in range(4)] == ["complete", "failed", "complete", "complete"]
    for i in range(4):
        a, b = (_contents(tmp_path / where / member_file(i)) for where in ("overlapped", "waited"))
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == b[name], (i, name)
    _closed(tmp_path / "overlapped")


def _failing_write(monkeypatch, member: int, after_commits: int) -> None:
    """ENOSPC inside HDF5's writes of member ``member``'s commit number ``after_commits`` (1: frame 0),
    or of its file's creation (0)."""
    commits = {"n": 0}
    commit, write_at = _writer.TrajectoryFile.commit, _guard.GuardedFile._write_at
    name = member_file(member).removesuffix(".h5")

    def counting(self, *args, **kwargs):
        if name in self.path:
            commits["n"] += 1
        return commit(self, *args, **kwargs)

    def failing(self, view, where):
        if name in self.path and commits["n"] >= after_commits:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_at(self, view, where)

    monkeypatch.setattr(_writer.TrajectoryFile, "commit", counting)
    monkeypatch.setattr(_guard.GuardedFile, "_write_at", failing)


def test_a_write_failing_while_the_next_chunk_computes_stops_the_batch_with_every_file_closed(
    tmp_path, base, events, monkeypatch
):
    _failing_write(monkeypatch, member=1, after_commits=3)  # frame 0, chunk 1, then chunk 2 fails
    out = tmp_path / "out"
    with pytest.raises(StorageError) as raised:
        SweepRunner(_sweep_file(tmp_path, base, "[0.1, 0.2, 0.3]"), out, **QUIET).run()
    message = str(raised.value)
    assert "member-0001" in message and "No space left on device" in message
    assert "every member of the batch is closed" in message
    # it failed while chunk 3 computed: dispatched before member 1's third commit, and not waited for
    third = [i for i, e in enumerate(events) if e[:2] == ("commit", 1)][2]
    assert ("dispatch", 2 * STEPS_PER_CHUNK) in events[:third] and third == len(events) - 1  # stopped at once
    _closed(out)
    frames = {i: 1 + 2 * STEPS_PER_CHUNK if i == 0 else 1 + STEPS_PER_CHUNK for i in range(3)}
    for i in range(3):  # member 0 wrote chunk 2 before member 1 failed; member 2 never got to it
        with open_trajectory(out / member_file(i)) as stored:
            assert stored.n_committed == frames[i], i
            assert stored.status == "interrupted" if i != 1 else stored.status in ("interrupted", "running")
    assert _manifest_statuses(out) == ["interrupted"] * 3
    monkeypatch.undo()
    again = SweepRunner(_sweep_file(tmp_path, base, "[0.1, 0.2, 0.3]"), out, **QUIET).run()  # room again: resumed
    assert [again[i].status for i in range(3)] == ["complete"] * 3


def test_a_member_that_cannot_be_created_stops_the_batch_before_anything_else_is_written(tmp_path, base, monkeypatch):
    _failing_write(monkeypatch, member=2, after_commits=0)  # member 2's file cannot be created
    out = tmp_path / "out"
    with pytest.raises(StorageError) as raised:
        SweepRunner(_sweep_file(tmp_path, base, "[0.1, 0.2, 0.3, 0.4]"), out, **QUIET).run()
    assert f"{out / member_file(2)}: member 2 could not be started (No space left on device)" in str(raised.value)
    _closed(out)
    assert sorted(p.name for p in out.glob("member-*.h5")) == [member_file(0), member_file(1)]
    for i in range(2):  # created while chunk 1 computed: frame 0, ended resumable
        with open_trajectory(out / member_file(i)) as stored:
            assert stored.n_committed == 1 and stored.status == "interrupted"
    assert _manifest_statuses(out) == ["interrupted", "interrupted", "pending", "pending"]


def test_a_signal_during_the_commits_stops_after_the_chunk_in_flight(tmp_path, base, events, monkeypatch):
    commit = _writer.TrajectoryFile.commit

    def signalling(self, frames, t, *args, **kwargs):
        if self.path.endswith(member_file(0)) and self.n_committed == 1:  # chunk 1's first commit
            os.kill(os.getpid(), signal.SIGTERM)
        return commit(self, frames, t, *args, **kwargs)

    monkeypatch.setattr(_writer.TrajectoryFile, "commit", signalling)
    try:
        results = SweepRunner(_sweep_file(tmp_path, base, "[0.1, 0.2]"), tmp_path / "out", **QUIET).run()
    finally:
        _early["signal"] = None
    assert [results[i].status for i in range(2)] == ["interrupted"] * 2
    assert [e[1] for e in events if e[0] == "dispatch"] == [0, STEPS_PER_CHUNK]  # chunk 2 was in flight: no 3rd
    for i in range(2):
        with open_trajectory(tmp_path / "out" / member_file(i)) as stored:
            assert stored.n_committed == 1 + 2 * STEPS_PER_CHUNK and stored.message == "interrupted by SIGTERM"
    _closed(tmp_path / "out")


def test_members_computed_in_turn_equal_the_whole_batch_at_once(tmp_path, base):
    """``[sweep] at_once``: a batch of 4 computed 1 and 2 members at a time (``lax.map`` over groups)
    gives every member the values of the whole batch at once, the failing member included."""
    values = "[0.1, 500.0, 0.2, 0.3]"
    runs, logs = {}, {}
    for at_once in (0, 1, 3):  # 3: the largest divisor of 4 that is ≤ 3, groups of 2
        sweep = _sweep_file(tmp_path, base, values)
        sweep.write_text(sweep.read_text().replace("[sweep]\n", f"[sweep]\nat_once = {at_once}\n"))
        lines: list[str] = []
        out = tmp_path / f"at_once_{at_once}"
        runs[at_once] = SweepRunner(sweep, out, log=lines.append).run()
        logs[at_once] = " ".join(lines)
    assert "computed at most 1 at once" in logs[1] and "computed at most 3 at once" in logs[3]
    assert "at once" not in logs[0]  # auto on a CPU: 4 members of 8×8 fit any cache
    for at_once in (1, 3):
        assert [runs[at_once][i].status for i in range(4)] == ["complete", "failed", "complete", "complete"]
        for i in range(4):  # the same bytes: each member's arithmetic does not depend on its neighbours
            got, want = (_contents(tmp_path / where / member_file(i)) for where in (f"at_once_{at_once}", "at_once_0"))
            assert got.keys() == want.keys()
            for name in got:
                assert got[name] == want[name], (at_once, i, name)


def test_members_at_once_fit_the_last_level_cache_on_a_cpu_and_all_on_an_accelerator(tmp_path):
    from types import SimpleNamespace

    from tumorfield.config import load
    from tumorfield.sweep._batch import last_level_cache_bytes, members_at_once

    ptx = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015" / "ptx.toml"
    config = load(ptx, overrides=["grid.shape=[256, 256]"])
    state = 256 * 256 * len(config.model.system.fields) * 4  # float32 fields
    assert members_at_once(config, 0, "cpu", cache_bytes=32 * 2**20) == 32 * 2**20 // (2 * state) >= 1
    assert members_at_once(config, 0, "cpu", cache_bytes=2**20) == 1  # at least one
    assert members_at_once(config, 0, "gpu") is None and members_at_once(config, 0, "tpu") is None
    assert members_at_once(config, 5, "gpu") == 5  # asked for: as asked
    small = SimpleNamespace(grid=SimpleNamespace(n_cells=64), model=config.model, numerics=config.numerics)
    assert members_at_once(small, 0, "cpu", cache_bytes=2**20) > 100  # every member of any batch this small

    caches = tmp_path / "cache"
    for i, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K"), (3, "bogus")]):
        (caches / f"index{i}").mkdir(parents=True)
        (caches / f"index{i}" / "level").write_text(f"{level}\n")
        (caches / f"index{i}" / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(caches) == 32 * 2**20
    assert last_level_cache_bytes(tmp_path / "absent") is None


def test_a_base_that_splits_the_grid_says_the_sweep_does_not(tmp_path, base):
    """``[run] devices`` splits one run's grid; a sweep keeps members whole and says so, once per group."""
    split = tmp_path / "split.toml"
    split.write_text(Path(base).read_text().replace("[run]\n", "[run]\ndevices = 2\n"))
    assert "devices = 2" in split.read_text()
    lines: list[str] = []
    results = SweepRunner(_sweep_file(tmp_path, str(split), "[0.1, 0.2]"), tmp_path / "out", log=lines.append).run()
    assert [results[i].status for i in range(2)] == ["complete"] * 2
    notes = [line for line in lines if line.startswith("note: [run] devices = 2")]
    assert len(notes) == 1 and "[sweep] devices" in notes[0], lines
