"""Processes around one output: a second writer is refused naming the first, ``--overwrite``
interrupted by a signal keeps the older file, signals are honoured from the start, and a closed
stdout ends ``inspect`` quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from test_integrity_common import sha, tumorfield, write_config

from tumorfield.io import open_trajectory


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A run of 2 days in 201 one-frame chunks (seconds: long enough to act on while it goes)."""
    directory = tmp_path_factory.mktemp("process")
    return write_config(directory / "long.toml", directory / "cache", t_end=2.0, save_every=0.01, chunk=1)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tumorfield.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})  # fmt: skip


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def committed(path: Path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as h5:
            return int(h5.attrs["n_committed"])
    except (OSError, KeyError):
        return -1


def test_a_second_writer_is_refused_naming_the_first(tmp_path, config):
    out = tmp_path / "out.h5"
    first = start("run", config, "-o", out)
    wait_for(lambda: committed(out) >= 2, first)
    for args in (("run", config, "-o", out), ("run", config, "-o", out, "--overwrite"), ("resume", out)):
        code, err, _ = tumorfield(*args)
        assert code == 2 and len(err) == 1, err
        assert f"{out} is being written by another tumorfield process (PID {first.pid})" in err[0], err
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 75, stderr
    assert not (tmp_path / ".out.h5.lock").exists()
    code, err, _ = tumorfield("resume", out)  # the lock went with its process
    assert code == 0, err
    with open_trajectory(out) as run:
        assert run.status == "complete" and run.n_committed == 201


def test_a_stale_lock_of_a_killed_writer_is_no_obstacle(tmp_path, config):
    out = tmp_path / "out.h5"
    first = start("run", config, "-o", out)
    wait_for(lambda: committed(out) >= 2, first)
    first.kill()
    first.communicate()
    assert (tmp_path / ".out.h5.lock").exists()  # the sidecar stays, its lock is gone with the process
    code, err, _ = tumorfield("resume", out)
    assert code == 0, err
    assert not (tmp_path / ".out.h5.lock").exists()


def test_overwrite_interrupted_by_a_signal_keeps_the_older_complete_file(tmp_path, config):
    out = tmp_path / "out.h5"
    code, err, _ = tumorfield("run", config, "-o", out, "--set", "time.t_end=0.05")
    assert code == 0, err
    before = sha(out)
    proc = start("run", config, "-o", out, "--overwrite")
    wait_for(lambda: any(committed(p) >= 2 for p in tmp_path.glob(".out.h5.*.partial")), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr
    assert sha(out) == before  # --help: "replace OUTPUT once the new run has succeeded"
    (partial,) = tmp_path.glob(".out.h5.*.partial")
    assert f"tumorfield resume {partial}" in stderr
    code, err, _ = tumorfield("resume", partial)
    assert code == 0, err
    assert not partial.exists()
    with open_trajectory(out) as run:
        assert run.status == "complete" and run.n_committed == 201


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_is_honoured_and_leaves_nothing_misleading(tmp_path, config, sig):
    """The signal arrives while JAX compiles frame 0 (the lock is taken, no file yet): the run stops
    instead of running to the end, and leaves either nothing or a resumable file."""
    out = tmp_path / "out.h5"
    proc = start("run", config, "-o", out)
    wait_for(lambda: (tmp_path / ".out.h5.lock").exists(), proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr
    assert "Traceback" not in stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    if "nothing was written" in stderr:
        assert left == [], left
    else:  # the signal came after frame 0 was committed: a checkpoint, under the real name
        assert left == ["out.h5", "out.xdmf"] and 1 <= committed(out) < 201


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path, config):
    out = tmp_path / "out.h5"
    code, err, _ = tumorfield("run", config, "-o", out, "--set", "time.t_end=0.05")
    assert code == 0, err
    proc = start("inspect", out)
    proc.stdout.close()  # like `| head` having exited before inspect writes
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
