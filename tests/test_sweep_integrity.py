"""Sweeps and ``collect`` are as trustworthy as ``run`` (issue 25): a member file counts only if it is
that member's run and verifies; ``collect`` checks every member and never replaces what it reads;
status changes are appended to a journal; a full disk ends a sweep with exit 74, every file closed.

Every test uses the 8×8 test model of ``_sweep_models`` (one compile per process, from a shared
persistent cache): a completed three-member sweep is made once per module and copied per test.
"""

from __future__ import annotations

import csv
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _sweep_models
import h5py
import numpy as np
import pytest
from _sweep_models import write_base

from tumorfield._schema import ConfigError
from tumorfield.io import open_trajectory
from tumorfield.io._lock import OutputLock
from tumorfield.run import OutputError
from tumorfield.run._signals import _early
from tumorfield.sweep import SweepRunner, collect
from tumorfield.sweep._manifest import JOURNAL, MANIFEST, Manifest, member_file

HERE = Path(__file__).resolve().parent
QUIET = {"log": lambda m: None}


def _sweep_file(directory: Path, values: str = "[0.1, 0.2, 0.3]", extra: str = "", t_end: float = 0.6) -> Path:
    base = write_base(directory, t_end=t_end)
    path = directory / "sweep.toml"
    path.write_text(
        f'[sweep]\nbase = "{base}"\ndesign = "list"\n{extra}\n[sweep.parameters]\n"parameters.r" = {values}\n'
    )
    return path


@pytest.fixture(scope="module")
def model():
    _sweep_models.register()
    yield
    _sweep_models.unregister()


@pytest.fixture(scope="module")
def done(tmp_path_factory, model):
    """A complete sweep of three members: its sweep file and directory (copy before changing them)."""
    root = tmp_path_factory.mktemp("done")
    sweep = _sweep_file(root)
    results = SweepRunner(sweep, root / "out", **QUIET).run()
    assert [r.status for r in results.values()] == ["complete"] * 3
    return sweep, root / "out"


@pytest.fixture
def copy(done, tmp_path):
    """A copy of the complete sweep in ``tmp_path``: its sweep file (the same base config) and directory."""
    sweep, out = done
    shutil.copytree(out, tmp_path / "out")
    shutil.copy(sweep, tmp_path / "sweep.toml")
    return tmp_path / "sweep.toml", tmp_path / "out"


def _table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cli(argv: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import _sweep_models; _sweep_models.register(); "
            f"from tumorfield.cli import main; sys.exit(main({argv!r}))")  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def _set_status(path: Path, status: str) -> None:
    with h5py.File(path, "r+") as h5:
        h5.attrs.modify("status", np.array(status.encode(), dtype="S16"))


# --- finding 1: a member file is checked against its manifest row ----------------------------------


def test_the_manifest_digest_is_the_sha256_of_the_stored_config(copy):
    _, out = copy
    rows = _table(out / MANIFEST)
    for row in rows:
        with open_trajectory(out / row["file"]) as stored:
            assert row["digest"] == hashlib.sha256(stored.config_text.encode()).hexdigest()


@pytest.mark.parametrize("status", ["complete", "interrupted"])
def test_another_members_file_is_refused_naming_the_member_and_the_key(copy, status):
    sweep, out = copy
    shutil.copy(out / "member-0002.h5", out / "member-0000.h5")
    _set_status(out / "member-0000.h5", status)  # interrupted: it was resumed with its own config
    before = (out / "member-0000.h5").read_bytes()
    with pytest.raises(ConfigError, match=r"member 0.s file holds another run \(parameters\.r = 0\.3 there, 0\.1 in"):
        SweepRunner(sweep, out, **QUIET).run()
    assert (out / "member-0000.h5").read_bytes() == before


def test_a_damaged_complete_member_is_refused(copy):
    sweep, out = copy
    with h5py.File(out / "member-0001.h5", "r+") as h5:
        h5["scalars/total"][3] += 1.0
    with pytest.raises(ConfigError, match=r"member 1.s file does not verify"):
        SweepRunner(sweep, out, **QUIET).run()


def test_new_values_without_a_manifest_do_not_adopt_the_old_members(copy):
    sweep, out = copy
    sweep.write_text(sweep.read_text().replace("[0.1, 0.2, 0.3]", "[0.1, 0.25, 0.3]"))
    with pytest.raises(ConfigError, match="another sweep's manifest"):
        SweepRunner(sweep, out, **QUIET)
    (out / MANIFEST).unlink()
    (out / JOURNAL).unlink()
    with pytest.raises(ConfigError, match=r"member 1.s file holds another run \(parameters\.r = 0\.2 there, 0\.25 in"):
        SweepRunner(sweep, out, **QUIET).run()


def test_a_lost_manifest_of_the_same_sweep_is_rebuilt(copy):
    sweep, out = copy
    (out / MANIFEST).write_text("member,parameters.r,digest,file,status\n0,0.1")  # truncated
    results = SweepRunner(sweep, out, **QUIET).run()
    assert set(results.values()) == {"complete"}
    assert [r["status"] for r in _table(out / MANIFEST)] == ["complete"] * 3


# --- finding 4: collect -o follows run's rules ------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "overwrite", "fragment"),
    [
        ("out/member-0001.h5", True, "file of the sweep directory"),
        ("out/manifest.csv", True, "file of the sweep directory"),
        ("out/manifest.journal", True, "file of the sweep directory"),
        ("out/member-0007.h5", False, "file of the sweep directory"),
        ("elsewhere.h5", True, "HDF5 file"),
        ("table.csv", False, "exists; pass --overwrite"),
        ("a-directory", True, "is a directory"),
        ("link.csv", True, "symbolic link"),
        ("missing/x.csv", False, "does not exist"),
    ],
)
def test_collect_output_is_checked_like_runs(copy, target, overwrite, fragment):
    _, out = copy
    root = out.parent
    shutil.copy(out / "member-0000.h5", root / "elsewhere.h5")
    (root / "table.csv").write_text("keep me\n")
    (root / "a-directory").mkdir()
    (root / "link.csv").symlink_to(root / "table.csv")
    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    with pytest.raises((ConfigError, OutputError), match=fragment):
        collect(out, root / target, overwrite=overwrite)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()} == snapshot
    assert not list(root.rglob("*.tmp"))


def test_collect_replaces_a_table_with_overwrite_and_refuses_a_device(copy):
    _, out = copy
    table = out.parent / "table.csv"
    assert collect(out, table) == 3
    with pytest.raises(OutputError, match="exists"):
        collect(out, table)
    assert collect(out, table, overwrite=True) == 3
    with pytest.raises(OutputError, match="not a regular file|symbolic link"):
        collect(out, "/dev/stdout", overwrite=True)
    result = _cli(["collect", str(out), "-o", str(out.parent / "missing" / "x.csv")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr


# --- finding 5: collect verifies what it reports -----------------------------------------------------


def test_collect_refuses_a_member_that_does_not_verify(copy):
    _, out = copy
    with h5py.File(out / "member-0002.h5", "r+") as h5:
        h5["scalars/total"][-1] = 42.0
    with pytest.raises(ConfigError, match=r"member 2.s file does not verify"):
        collect(out, out.parent / "t.csv")
    assert not (out.parent / "t.csv").exists()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda text: text.replace(",0.2,", ",0.7,"), "edited since the sweep wrote them"),
        (lambda text: text.replace("member-0001.h5", "../elsewhere.h5"), "expected member 1 in member-0001.h5"),
        (lambda text: text.replace("member-0001.h5", "member-0000.h5"), "expected member 1 in member-0001.h5"),
        (lambda text: "\n".join(text.splitlines()[:-1]) + "\n", "2 rows for the sweep's 3 members"),
    ],
)
def test_collect_refuses_an_edited_or_truncated_manifest(copy, edit, fragment):
    _, out = copy
    (out / MANIFEST).write_text(edit((out / MANIFEST).read_text()))
    with pytest.raises(ConfigError, match=fragment):
        collect(out, out.parent / "t.csv")


def test_collect_swept_values_come_from_the_member_files(copy):
    _, out = copy
    shutil.copy(out / "member-0002.h5", out / "member-0001.h5")  # another member's file
    with pytest.raises(ConfigError, match=r"member 1.s file holds another run \(parameters\.r = 0\.3 there, 0\.2 in"):
        collect(out, out.parent / "t.csv")


def test_collect_tells_a_killed_member_from_a_running_one_and_says_when(copy):
    _, out = copy
    _set_status(out / "member-0001.h5", "running")  # its process was killed: nobody holds the lock
    _set_status(out / "member-0002.h5", "running")
    lock = OutputLock.acquire(out / "member-0002.h5")  # a live writer
    try:
        collect(out, out.parent / "t.csv")
    finally:
        lock.release()
    rows = _table(out.parent / "t.csv")
    assert [r["status"] for r in rows] == ["complete", "interrupted", "running"]
    assert [r["parameters.r"] for r in rows] == ["0.1", "0.2", "0.3"]
    assert all(float(r["t_final"]) == pytest.approx(0.6) and r["n_committed"] == "7" for r in rows)


# --- finding 9: statuses are appended, validation stops on a signal, the manifest has a size cap -------


def test_status_changes_append_to_the_journal_and_leave_the_csv(tmp_path):
    n = 20_000
    rows = lambda: ((str(i), (str(i * 0.5),), f"{i:064x}", member_file(i)) for i in range(n))  # noqa: E731
    manifest = Manifest.check(tmp_path / "d", ("parameters.x",), rows, n)
    manifest.ensure(rows, log=lambda m: None)
    before = os.stat(tmp_path / "d" / MANIFEST)
    started = time.perf_counter()
    for i in range(200):
        manifest.record({i: "running"})
    assert time.perf_counter() - started < 10  # one short append each (a CSV rewrite each took minutes)
    after = os.stat(tmp_path / "d" / MANIFEST)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    lines = (tmp_path / "d" / JOURNAL).read_text().splitlines()
    assert len(lines) == 201 and lines[-1] == "199 running"
    manifest.publish(rows)  # the CSV gets the statuses once, at the end
    table = _table(tmp_path / "d" / MANIFEST)
    assert [r["status"] for r in table[198:202]] == ["running", "running", "pending", "pending"]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        [JOURNAL, MANIFEST]
    )  # no lock or temporary left


def test_a_design_beyond_the_manifest_cap_is_refused(tmp_path, model):
    base = write_base(tmp_path)
    path = tmp_path / "big.toml"
    path.write_text(f'[sweep]\nbase = "{base}"\ndesign = "lhs"\nsamples = 1000000\n[sweep.parameters]\n'
                    f'"parameters.r" = [0.1, 0.5]\n')  # fmt: skip
    from tumorfield.sweep import load_sweep

    with pytest.raises(ConfigError, match="would take 1.. MiB and exceed 64 MiB"):
        load_sweep(path)


def test_sigterm_stops_the_member_checks_within_a_second(tmp_path):
    base = write_base(tmp_path)
    path = tmp_path / "many.toml"
    path.write_text(f'[sweep]\nbase = "{base}"\ndesign = "lhs"\nsamples = 100000\n[sweep.parameters]\n'
                    f'"parameters.r" = [0.1, 0.5]\n')  # fmt: skip
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import _sweep_models; _sweep_models.register(); "
        f"from tumorfield.cli import main; sys.exit(main(['sweep', {str(path)!r}, '-o', {str(tmp_path / 'o')!r}]))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"checking 100000 member configs" not in seen and time.monotonic() < deadline:
            if select.select([process.stderr], [], [], 1.0)[0]:
                seen += os.read(process.stderr.fileno(), 4096)
        assert b"checking 100000 member configs" in seen, seen
        time.sleep(0.5)
        sent = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[1].decode()
        waited = time.perf_counter() - sent
    finally:
        process.kill()
    assert process.returncode == 75 and "interrupted by SIGTERM while checking member" in rest, rest
    assert waited < 2.0, waited  # ~0.6 s on 2 shared cores, most of it the interpreter's exit
    assert not (tmp_path / "o").exists()  # nothing written


# --- minor ------------------------------------------------------------------------------------------


def test_an_unknown_member_is_refused_before_anything_is_written(tmp_path, model):
    sweep = _sweep_file(tmp_path)
    with pytest.raises(ConfigError, match=r"--member.*\[0, 2\]"):
        SweepRunner(sweep, tmp_path / "out", **QUIET).run([7])
    assert not (tmp_path / "out").exists()


def test_a_damaged_journal_is_reported_as_damaged(copy):
    sweep, out = copy
    (out / JOURNAL).write_bytes(b"\x00garbage\n")
    with pytest.raises(ConfigError, match=r"manifest\.journal is damaged"):
        SweepRunner(sweep, out, **QUIET)
    (out / JOURNAL).unlink()
    (out / MANIFEST).write_bytes(b"\xff\xfe not a table")
    with pytest.raises(ConfigError, match=r"manifest\.csv is damaged"):
        SweepRunner(sweep, out, **QUIET)


def test_no_lock_or_temporary_file_is_left(copy):
    sweep, out = copy
    SweepRunner(sweep, out, **QUIET).run()
    collect(out, out / "table.csv")
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == []


def test_a_signal_in_one_batch_starts_no_other(tmp_path, model):
    sweep = _sweep_file(tmp_path, values="[0.1, 0.2, 0.3, 0.4]", extra="batch = 2", t_end=2.0)
    messages = []

    def log(message: str) -> None:
        messages.append(message)
        if message.startswith("first chunk"):
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the batch: it stops after this chunk

    try:
        results = SweepRunner(sweep, tmp_path / "out", log=log).run()
    finally:
        _early["signal"] = None
    assert [results[i] if isinstance(results[i], str) else results[i].status for i in range(4)] == [
        "interrupted", "interrupted", "pending", "pending"
    ]  # fmt: skip
    assert not any("before frame 0" in m for m in messages)
    assert [r["status"] for r in _table(tmp_path / "out" / MANIFEST)] == ["interrupted", "interrupted", "pending",
                                                                           "pending"]  # fmt: skip
    assert not (tmp_path / "out" / "member-0002.h5").exists()


# --- finding 2: a full disk during a sweep: exit 74, every member file closed ---------------------------

_ENOSPC = """
import errno, sys
sys.path.insert(0, {here!r})
import _sweep_models
_sweep_models.register()
from tumorfield.io import _guard, _writer
commits = {{"n": 0}}
commit, write_at = _writer.TrajectoryFile.commit, _guard.GuardedFile._write_at
def counting(self, *args, **kwargs):
    if "member-0001" in self.path:
        commits["n"] += 1
    return commit(self, *args, **kwargs)
def failing(self, view, where):
    if "member-0001" in self.path and commits["n"] >= 3:  # inside HDF5's writes of its third commit
        raise OSError(errno.ENOSPC, "No space left on device")
    return write_at(self, view, where)
_writer.TrajectoryFile.commit, _guard.GuardedFile._write_at = counting, failing
from tumorfield.cli import main
sys.exit(main({argv!r}))
"""


def test_a_full_disk_in_a_batch_exits_74_with_every_file_closed(tmp_path, model):
    sweep = _sweep_file(tmp_path, t_end=2.0)
    argv = ["sweep", str(sweep), "-o", str(tmp_path / "out")]
    code = _ENOSPC.format(here=str(HERE), argv=argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert result.returncode == 74, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert "member-0001.h5" in last and "No space left on device" in last, last
    out = tmp_path / "out"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # every lock released, no temporary
    for i in range(3):
        with open_trajectory(out / member_file(i)) as stored:
            stored.verify()
            assert stored.status == "interrupted" if i != 1 else stored.status in ("interrupted", "running")
    again = _cli(argv)  # room again: the rerun resumes them
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["status"] for r in _table(out / MANIFEST)] == ["complete"] * 3
