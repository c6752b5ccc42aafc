"""Hostile or damaged files given to ``resume``, ``inspect`` and ``plot``: exit 2, one line, no
traceback, the file untouched (checksums before and after); paths never taken from a file's
contents; a full disk is exit 74 with every committed frame intact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_integrity_common import sha, small_disk, tumorfield, write_config

from tumorfield import cli
from tumorfield._schema import ConfigError
from tumorfield.io import open_trajectory
from tumorfield.io._label import meta_digest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


@pytest.fixture(scope="module")
def good(tmp_path_factory, cache) -> Path:
    """A complete 5-frame run, and (``good.with_name("half.h5")``) one interrupted after 3 frames."""
    directory = tmp_path_factory.mktemp("good")
    code, err, _ = tumorfield("run", write_config(directory / "run.toml", cache), "-o", directory / "good.h5")
    assert code == 0, err
    return directory / "good.h5"


def _interrupted(good: Path, path: Path) -> Path:
    """A copy of ``good`` as a run that stopped after 3 frames would have left it (status interrupted)."""
    shutil.copy(good, path)
    with h5py.File(path, "r+") as h5:  # the label of an earlier commit: the slot with frames = 3
        slot = next(g for g in h5["checkpoint"].values() if int(g.attrs["frames"]) == 3)
        h5.attrs.modify("n_committed", 3)
        h5.attrs.modify("n_scalars_committed", int(slot.attrs["scalars"]))
        h5.attrs.modify("status", np.array(b"interrupted", dtype="S16"))
    return path


def _chunk(h5: h5py.File, name: str, frame: int) -> tuple[int, int]:
    info = h5[name].id.get_chunk_info_by_coord((frame,) + (0,) * (h5[name].ndim - 1))
    return info.byte_offset, info.size


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


def _damage(kind: str, good: Path, path: Path) -> None:
    """Make ``path`` a file of the hostile or damaged ``kind``."""
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(7).bytes(len(data)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other-program":
        with h5py.File(path, "w") as h5:
            h5["data"] = np.arange(10.0)
            h5.attrs["n_committed"] = 3
    else:
        path.write_bytes(data)
        _edit(kind, path)


def _edit(kind: str, path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        if kind == "edited-config":
            h5.attrs["config"] = h5.attrs["config"].replace("r = 1.0", "r = 2.0")
        elif kind == "edited-dt":
            h5.attrs.modify("dt", 0.02)
        elif kind == "n-committed-too-large":
            h5.attrs.modify("n_committed", 99)
        elif kind == "n-committed-without-checkpoint":
            h5.attrs.modify("n_committed", 4)
        elif kind == "status-garbage":
            h5.attrs.modify("status", np.array(b"pwned", dtype="S16"))
        elif kind == "scalars-edited":
            h5["scalars/tumour_burden"][3] += 1.0
        elif kind == "checkpoint-edited":
            slot = next(g for g in h5["checkpoint"].values() if int(g.attrs["frames"]) == 5)
            slot["u"][0, 0] += 1.0
        elif kind in ("frame-bit-flip", "time-edited"):
            offset, size = _chunk(h5, "u", 2) if kind == "frame-bit-flip" else (None, None)
            if kind == "time-edited":
                h5["t"][2] = 0.11
        elif kind in _CRAFTED:
            _CRAFTED[kind](h5)
    if kind == "frame-bit-flip":
        _flip(path, offset + size // 2)


def _live(h5: h5py.File) -> h5py.Group:
    return next(g for g in h5["checkpoint"].values() if int(g.attrs["frames"]) == int(h5.attrs["n_committed"]))


def _unallocated(group: h5py.Group, name: str, shape: tuple, chunks: tuple) -> None:
    """Replace ``group[name]`` by a chunked float32 dataset of ``shape`` with no chunk written: a few
    hundred bytes in the file, read back as zeros of any size (``(5, 60000, 60000)``: 72 GB)."""
    del group[name]
    group.create_dataset(name, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks, dtype="f4")


def _grow(h5: h5py.File, frames: int = 0, samples: int = 0) -> None:
    """Claim ``frames`` committed frames or ``samples`` per-step samples: counters, the live label and
    the datasets' lengths agree (chunked datasets grow for free)."""
    slot = _live(h5)
    for name, key, count in (("n_committed", "frames", frames), ("n_scalars_committed", "scalars", samples)):
        if count:
            slot.attrs.modify(key, count)
            h5.attrs.modify(name, count)
    for ds in [h5["t"], h5["u"], h5["c"]] if frames else h5["scalars"].values():
        ds.resize(frames or samples, axis=0)


_CRAFTED = {
    "frames-beyond-the-grid": lambda h5: _unallocated(h5, "u", (5, 60000, 60000), (1, 1000, 1000)),
    "checkpoint-beyond-the-grid": lambda h5: _unallocated(_live(h5), "u", (5, 60000, 60000), (1, 1000, 1000)),
    "frames-not-stored": lambda h5: _unallocated(h5, "u", (5, 16, 16), (1, 16, 16)),
    "n-committed-huge": lambda h5: _grow(h5, frames=10**11),
    "n-scalars-committed-huge": lambda h5: _grow(h5, samples=10**9),
}
"""Memory bombs of a few hundred KB (issue 25): shapes beyond the grid and config, or unwritten chunks."""


KINDS = {
    "truncated": "not a tumorfield trajectory",
    "random-bytes": "not a tumorfield trajectory (cannot be opened as HDF5",
    "empty": "not a tumorfield trajectory",
    "other-program": "without the 'schema' attribute",
    "edited-config": "the stored config or run attributes differ from what the run wrote",
    "edited-dt": "the stored config or run attributes differ",
    "n-committed-too-large": "shorter than committed",
    "n-committed-without-checkpoint": "no checkpoint matches n_committed = 4",
    "status-garbage": "status 'pwned'",
    "scalars-edited": "the committed per-step scalars do not match their checksum",
    "checkpoint-edited": "the checkpoint of frame 4 does not match its checksum",
    "frame-bit-flip": "damaged tumorfield trajectory",
    "time-edited": "the committed frames do not match their checksum",
    "frames-beyond-the-grid": "dataset /u has shape (5, 60000, 60000); a series is (T,) or (T, *grid) with the "
    "grid (16, 16)",
    "checkpoint-beyond-the-grid": "has shape (5, 60000, 60000); the grid is (16, 16)",
    "frames-not-stored": "dataset /u stores 0 of the 5 chunks of its 5 committed rows",
    "n-committed-huge": "n_committed = 100,000,000,000: more than the 5 frames its config plans",
    "n-scalars-committed-huge": "n_scalars_committed = 1,000,000,000: more than the 21 samples its config plans",
}


@pytest.mark.parametrize("command", ["resume", "inspect", "plot"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_hostile_and_damaged_files_are_refused_untouched(tmp_path, good, kind, command):
    path = tmp_path / "file.h5"
    _damage(kind, good, path)
    before = sha(path)
    figures = tmp_path / "figures"
    code, err, out = tumorfield(command, path, *(["-o", figures] if command == "plot" else []))
    assert code == 2, (err, out)
    assert len(err) == 1 and err[0].startswith(f"tumorfield: error: {path}") and KINDS[kind] in err[0], err
    assert out == "" and sha(path) == before and not figures.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.h5"]  # no lock, no partial, no sidecar left


def test_a_directory_or_missing_file_is_refused(tmp_path):
    for command in ("resume", "inspect"):
        code, err, _ = tumorfield(command, tmp_path)
        assert code == 2 and "not a regular file" in err[0], err
        code, err, _ = tumorfield(command, tmp_path / "absent.h5")
        assert code == 2 and "does not exist" in err[0], err


def test_a_partial_with_no_committed_frame_is_refused_untouched(tmp_path, good):
    partial = tmp_path / ".out.h5.4242.partial"
    shutil.copy(good, partial)
    with h5py.File(partial, "r+") as h5:
        h5.attrs.modify("n_committed", 0)
        h5.attrs.modify("status", np.array(b"running", dtype="S16"))
    before = sha(partial)
    code, err, _ = tumorfield("resume", partial)
    assert code == 2 and "holds no committed frame" in err[0] and sha(partial) == before, err


def test_a_file_without_checksums_is_read_but_not_continued(tmp_path, good):
    """As written before the digests existed: ``inspect`` shows it, ``resume`` refuses it untouched."""
    path = _interrupted(good, tmp_path / "old.h5")
    with h5py.File(path, "r+") as h5:
        for slot in h5["checkpoint"].values():
            for key in ("meta_sha256", "state_sha256", "frames_sha256", "scalars_sha256"):
                slot.attrs.modify(key, np.array(b"", dtype="S64"))
    before = sha(path)
    code, err, out = tumorfield("inspect", path)
    assert code == 0 and "3 committed" in out, err
    code, err, _ = tumorfield("resume", path)
    assert code == 2 and len(err) == 1 and "written without checksums" in err[0], err
    assert sha(path) == before


def test_a_crafted_target_attribute_is_ignored(tmp_path, good):
    """``resume`` of ``.NAME.PID.partial`` moves it onto ``NAME`` next to it; the ``target`` in the
    file (here: a precious file elsewhere) is never used."""
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_text("precious\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    partial = _interrupted(good, runs / ".out.h5.4242.partial")
    with h5py.File(partial, "r+") as h5:
        h5.attrs["target"] = str(victim)
    code, err, _ = tumorfield("resume", partial)
    assert code == 0, err
    assert victim.read_text() == "precious\n" and sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in runs.iterdir()) == ["out.h5", "out.xdmf"]
    with open_trajectory(runs / "out.h5") as run, open_trajectory(good) as ref:
        assert run.status == "complete" and run.n_committed == 5
        np.testing.assert_array_equal(run.field("u")[:], ref.field("u")[:])


def test_an_interrupted_copy_resumes_bit_identically(tmp_path, good):
    """The fixture's way of making interrupted files is itself sound: resume gives the complete run."""
    path = _interrupted(good, tmp_path / "half.h5")
    code, err, _ = tumorfield("resume", path)
    assert code == 0, err
    with open_trajectory(path) as run, open_trajectory(good) as ref:
        for name in ("u", "c"):
            np.testing.assert_array_equal(run.field(name)[:], ref.field(name)[:])
        np.testing.assert_array_equal(run.scalars["tumour_burden"], ref.scalars["tumour_burden"])
        run.verify()


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tumorfield 0.1.0 (git ") and ", jax " in line and "default device cpu:" in line


# --- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path):
    """A 3 MiB file system (:func:`test_integrity_common.small_disk`)."""
    yield from small_disk(tmp_path)


def _filling_run(tmp_path: Path, cache: str) -> Path:
    """A 128² run of 41 lzf frames: about 7 MiB before compression, more than the small disk holds."""
    return write_config(tmp_path / "filling.toml", cache, n=128, t_end=2.0)


def test_a_full_disk_is_exit_74_with_every_committed_frame_intact(tmp_path, disk, cache):
    config = _filling_run(tmp_path, cache)
    out = disk / "out.h5"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "tumorfield.cli", "run", config, "-o", out],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 74, result.stderr  # not 139: no segfault
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert "Traceback" not in result.stderr and "No space left on device" in line
    assert "the last commit is intact" in line and f"tumorfield resume {out}" in line
    with open_trajectory(out) as run:
        n = run.n_committed
        assert 3 <= n < 41 and run.status == "interrupted" and "No space left" in run.message
        run.verify()
    # resume on the still-full disk: refused the same way, the file not even touched
    before = sha(out)
    code, err, _ = tumorfield("resume", out)
    assert code == 74 and "No space left on device" in err[-1] and sha(out) == before, err
    # with room again, it continues bit for bit
    roomy = tmp_path / "roomy.h5"
    shutil.copy(out, roomy)
    code, err, _ = tumorfield("resume", roomy)
    assert code == 0, err
    code, err, _ = tumorfield("run", config, "-o", tmp_path / "reference.h5")
    assert code == 0, err
    with open_trajectory(roomy) as run, open_trajectory(tmp_path / "reference.h5") as ref:
        assert run.n_committed == ref.n_committed == 41
        for name in ("u", "c"):
            np.testing.assert_array_equal(run.field(name)[:], ref.field(name)[:])
        np.testing.assert_array_equal(run.scalars["max_u"], ref.scalars["max_u"])


def test_a_full_disk_never_destroys_an_older_output(disk, tmp_path, cache):
    old = disk / "out.h5"
    code, err, _ = tumorfield("run", write_config(tmp_path / "run.toml", cache), "-o", old)
    assert code == 0, err
    before = sha(old)
    code, err, _ = tumorfield("run", _filling_run(tmp_path, cache), "-o", old, "--overwrite")
    assert code == 74 and "No space left on device" in err[-1], err
    assert sha(old) == before
    (partial,) = disk.glob(".out.h5.*.partial")  # the new run, resumable once there is room
    assert f"tumorfield resume {partial}" in err[-1]
    with open_trajectory(partial) as run:
        assert run.status == "interrupted" and run.n_committed >= 1


# --- no path or executable location from a file's contents -------------------------------------------


def test_resume_never_compiles_into_a_cache_the_file_names(tmp_path, good, cache):
    """JAX's persistent cache loads native code without checks: ``resume`` of a file whose stored config
    (digests recomputed, as a crafted file would have) names a cache directory neither creates nor uses
    it; the cache comes from the environment (here the module's, warm: every program is a hit)."""
    planted = tmp_path / "planted-cache"
    path = _interrupted(good, tmp_path / "crafted.h5")
    with h5py.File(path, "r+") as h5:
        config = h5.attrs["config"]
        start = config.index('compilation_cache = "')
        h5.attrs["config"] = config[:start] + f'compilation_cache = "{planted}"' + config[config.index("\n", start) :]
        live = next(g for g in h5["checkpoint"].values() if int(g.attrs["frames"]) == 3)
        live.attrs.modify("meta_sha256", np.array(meta_digest(h5.attrs).encode(), dtype="S64"))
    with open_trajectory(path) as run:
        assert str(planted) in run.config_text and run.verify()  # the file verifies: it is "genuine"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TUMORFIELD_COMPILATION_CACHE": cache}
    result = subprocess.run([sys.executable, "-m", "tumorfield.cli", "resume", path], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = [x for x in result.stderr.splitlines() if "persistent cache:" in x][-1]  # the whole run's count
    hits = int(line.split("persistent cache: ")[1].split(" hits")[0])
    assert not planted.exists() and hits > 0, line
    with open_trajectory(path) as run:
        assert run.status == "complete" and run.n_committed == 5


def test_the_compilation_cache_comes_from_the_command_line_then_the_environment(tmp_path, monkeypatch):
    from tumorfield import _compile_log
    from tumorfield.config._loader import loads

    for name in ("TUMORFIELD_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = loads(write_config(tmp_path / "run.toml", tmp_path / "configured").read_text())
    assert config.compilation_cache == str(tmp_path / "configured")  # the user's own config file
    assert _compile_log.cache_directory(None) == str(tmp_path / "xdg" / "tumorfield" / "jax")  # a stored config
    monkeypatch.setenv("TUMORFIELD_COMPILATION_CACHE", str(tmp_path / "environment"))
    assert config.compilation_cache == _compile_log.cache_directory(None) == str(tmp_path / "environment")
    args = cli._parser().parse_args(["resume", "--compilation-cache", "off", "x.h5"])
    _compile_log.request(args.compilation_cache)
    try:
        assert config.compilation_cache is None and _compile_log.cache_directory(None) is None
    finally:
        _compile_log.request(None)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="is writable by every user"):
        _compile_log.enable_persistent_cache(str(shared))
