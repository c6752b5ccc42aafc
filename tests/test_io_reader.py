"""``tumorfield.io.open_trajectory``: the one reader of trajectory files, against the writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from test_io_hdf5 import run_cli, write_config

import tumorfield as tf
from tumorfield import cli
from tumorfield.config import OutputSection
from tumorfield.io import FORMAT, NotATrajectory, StoredTrajectory, open_trajectory
from tumorfield.io._writer import TrajectoryFile
from tumorfield.models import Field, Observable

GRID = tf.Grid(shape=(6, 8), length=(0.6, 1.0))
SYSTEM = SimpleNamespace(fields=("c", "m", "u"), scalars=("m",))  # m: a scalar ODE variable
MODEL = SimpleNamespace(
    name="test",
    fields={
        "u": Field("cells/mm^2", "tumour cells"),
        "c": Field("pM", "chemokine"),
        "m": Field("cells", "metastatic cells"),
    },
    observables={"burden": Observable("mm^2", "burden")},
)
OUTPUT = OutputSection(compression="lzf", precision="float32", gzip_level=4)
CONFIG = '[model]\nname = "test"\n[time]\ndt = 0.5\n'
DTYPES = {"u": np.dtype("float32"), "c": np.dtype("float32"), "m": np.dtype("float64")}


def _write(path: Path, commits=(1, 2, 2), constant_fields=None, close=True):
    """A trajectory written by ``TrajectoryFile`` in ``len(commits)`` commits (frames per commit,
    two steps per frame); returns the open writer (or None) and everything it wrote."""
    traj = TrajectoryFile.create(
        str(path), grid=GRID, system=SYSTEM, model=MODEL, output=OUTPUT, metadata={"config": CONFIG, "seed": 7},
        scalar_names=("burden",), state_dtypes=DTYPES, constant_fields=constant_fields,
    )  # fmt: skip
    rng = np.random.default_rng(2015)
    expected = {"t": [], "scalars_t": [], "burden": [], **{name: [] for name in SYSTEM.fields}}
    n = 0
    for k in commits:
        t = 1.0 * np.arange(n, n + k)  # dt = 0.5 day, two steps per frame
        frames = {name: rng.random((k, *GRID.shape)).astype(DTYPES[name]) for name in ("u", "c")}
        frames["m"] = rng.random(k)
        step = 2 * (n + k - 1)
        st = 0.5 * np.arange(2 * n - 1, step + 1) if n else np.zeros(1)  # every step since the last commit
        burden = rng.random(len(st))
        state = {name: frames[name][-1] for name in SYSTEM.fields}
        traj.commit(frames, t, st, {"burden": burden}, state, step)
        for key, value in (("t", t), ("scalars_t", st), ("burden", burden), *frames.items()):
            expected[key].append(value)
        n += k
    expected = {key: np.concatenate(value) for key, value in expected.items()}
    expected["state"], expected["step"] = state, step
    traj.set_status("complete" if close else "running")
    if close:
        traj.close()
        return None, expected
    return traj, expected


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "written.h5"
    _, expected = _write(path)
    return path, expected


def test_reader_returns_what_the_writer_wrote(written):
    path, expected = written
    with open_trajectory(path) as run:
        assert isinstance(run, StoredTrajectory) and run.path == str(path)
        assert run.status == "complete" and type(run.status) is str and run.message is None
        assert run.n_committed == 5 and run.n_scalars_committed == 9
        np.testing.assert_array_equal(run.t, expected["t"])
        assert run.axes == ("y", "x") and run.field_names == ("c", "u") and run.variable_names == ("m",)
        np.testing.assert_array_equal(run.coordinates["x"], GRID.coordinates(1))
        for name in ("u", "c"):
            field = run.field(name)
            assert field.shape == (5, 6, 8) and field.dtype == np.float32 and len(field) == 5
            assert (field.units, field.long_name) == (MODEL.fields[name].units, MODEL.fields[name].long_name)
            np.testing.assert_array_equal(np.asarray(field), expected[name])
            np.testing.assert_array_equal(run.fields[name][1:4], expected[name][1:4])
        np.testing.assert_array_equal(run.variables["m"][:], expected["m"])
        assert run.variables["m"].units == "cells"
        np.testing.assert_array_equal(run.scalars_t, expected["scalars_t"])
        assert list(run.scalars) == ["burden"] and run.scalars.units == {"burden": "mm^2"}
        np.testing.assert_array_equal(run.scalars["burden"], expected["burden"])
        assert run.config == {"model": {"name": "test"}, "time": {"dt": 0.5}} and run.config_text == CONFIG
        meta = run.metadata
        assert meta["schema"] == FORMAT and meta["status"] == "complete" and meta["seed"] == 7
        assert meta["n_committed"] == 5 and type(meta["n_committed"]) is int
        assert run.constants == {}
        state, step = run.checkpoint()
        assert step == expected["step"] == 8 and state.keys() == set(SYSTEM.fields)
        for name, value in expected["state"].items():
            assert state[name].dtype == DTYPES[name]
            np.testing.assert_array_equal(state[name], value)
        with pytest.raises(KeyError, match="no field 'v'; fields are c, u"):
            run.field("v")


@pytest.mark.parametrize(
    "key",
    [0, -1, 4, slice(None), slice(1, 3), slice(-2, None), slice(0, 99), slice(None, None, 2), slice(None, None, -1),
     slice(3, 1), [0, 2, 3], [4, 0], np.array([True, False, True, False, True]), (2, 1), (slice(1, 3), 0, slice(2, 5)),
     (-1, Ellipsis, 3), Ellipsis, (Ellipsis, 0)],
)  # fmt: skip
def test_field_indexing_is_numpy_indexing_of_the_committed_frames(written, key):
    path, expected = written
    with open_trajectory(path) as run:
        got = run.field("u")[key]
    want = expected["u"][key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _grow_past_commit(path: Path) -> None:
    """What a writer killed between writing a chunk and committing it leaves: longer datasets."""
    with h5py.File(path, "r+") as h5:
        n, s = int(h5.attrs["n_committed"]), int(h5.attrs["n_scalars_committed"])
        for name in ("t", "u", "c", "m"):
            h5[name].resize(n + 1, axis=0)
            h5[name][n] = 99.0
        for ds in h5["scalars"].values():
            ds.resize(s + 2, axis=0)
            ds[s:] = 99.0


def test_reader_never_reads_past_n_committed(written):
    path, expected = written
    _grow_past_commit(path)
    with h5py.File(path, "r") as h5:
        assert h5["u"].shape[0] == 6 and h5["scalars/t"].shape[0] == 11  # the uncommitted frame is there
    with open_trajectory(path) as run:
        assert run.n_committed == 5 and len(run.t) == 5 and run.t[-1] != 99.0
        u = run.field("u")
        assert u.shape == (5, 6, 8) and u[:].shape == (5, 6, 8) and u[0:99].shape == (5, 6, 8)
        np.testing.assert_array_equal(u[-1], expected["u"][-1])
        with pytest.raises(IndexError):
            u[5]
        with pytest.raises(IndexError):
            u[[0, 5]]
        assert len(run.variables["m"][:]) == 5 and not np.any(run.variables["m"][:] == 99.0)
        assert len(run.scalars_t) == 9 and len(run.scalars["burden"]) == 9
        np.testing.assert_array_equal(run.scalars["burden"], expected["burden"])
        _, step = run.checkpoint()
        assert step == expected["step"]


_READ_IN_ANOTHER_PROCESS = """
import sys
from tumorfield.io import open_trajectory
with open_trajectory(sys.argv[1]) as run:
    print(run.status, run.n_committed, repr(float(run.field("u")[-1].sum())), run.checkpoint()[1])
"""


def _read_elsewhere(path: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _READ_IN_ANOTHER_PROCESS, str(path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_file_being_written_is_read_concurrently(tmp_path):
    path = tmp_path / "live.h5"
    traj, expected = _write(path, commits=(1, 2), close=False)
    try:
        status, n, total, step = _read_elsewhere(path)  # the writer holds its lock and the file open
        assert (status, int(n), float(total), int(step)) == ("running", 3, float(expected["u"][-1].sum()), 4)
        with open_trajectory(path) as run:  # in this process too
            assert run.n_committed == 3 and run.status == "running"
            np.testing.assert_array_equal(run.field("u")[:], expected["u"])
        frames = {"u": np.ones((1, *GRID.shape), "f4"), "c": np.zeros((1, *GRID.shape), "f4"), "m": np.ones(1)}
        state = {name: value[-1] for name, value in frames.items()}
        traj.commit(frames, np.array([3.0]), 0.5 * np.arange(5, 7), {"burden": np.ones(2)}, state, 6)
        assert _read_elsewhere(path) == ["running", "4", repr(float(GRID.n_cells)), "6"]
    finally:
        traj.close()


def test_constant_fields_round_trip(tmp_path):
    path = tmp_path / "constant.h5"
    vessels = np.linspace(0.0, 1.0, GRID.n_cells).reshape(GRID.shape)
    _write(path, constant_fields={"vessels": (vessels, "1", "prescribed vessel density")})
    with open_trajectory(path) as run:
        assert list(run.constants) == ["vessels"] and "vessels" not in run.field_names
        np.testing.assert_array_equal(run.constants["vessels"], vessels)
        assert run.constants.units["vessels"] == "1"
        assert run.constants.long_names["vessels"] == "prescribed vessel density"
    with h5py.File(path, "r") as h5:  # written once, on the grid axes
        ds = h5["constant/vessels"]
        assert ds.shape == GRID.shape and [d[0].name for d in ds.dims] == ["/y", "/x"]
    with pytest.raises(ValueError, match="'vessels' has shape"):
        _write(tmp_path / "bad.h5", constant_fields={"vessels": (vessels[:3], "1", "vessels")})


def test_inspect_shows_constants_and_variables(written, tmp_path, capsys):
    path, _ = written
    vessels = np.ones(GRID.shape)
    _write(tmp_path / "constant.h5", constant_fields={"vessels": (vessels, "1", "vessel density")})
    assert cli.main(["inspect", str(tmp_path / "constant.h5")]) == 0
    out = capsys.readouterr().out
    assert "status:      complete" in out and "5 committed" in out and "constants:" in out
    assert "  vessels" in out and "  m " in out and "[mm^2]  last" in out and 'name = "test"' in out


# --- a real run, through the CLI ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


def test_reader_agrees_with_the_file_of_a_cli_run(tmp_path, cache):
    out = tmp_path / "out.h5"
    run_cli("run", write_config(tmp_path), "-o", out, cache=cache)
    # also while this process holds the file open with HDF5's default locking
    with h5py.File(out, "r") as h5, tf.open_trajectory(out) as run:
        assert run.status == "complete" and run.n_committed == 5 and run.field_names == ("c", "u")
        assert run.config["model"]["name"] == "fisher_kpp" and run.metadata["model"] == "fisher_kpp"
        np.testing.assert_array_equal(run.t, h5["t"][:])
        np.testing.assert_array_equal(run.field("u")[:], h5["u"][:])
        assert run.field("u").dtype == np.float32 and run.field("u").long_name == h5["u"].attrs["long_name"]
        np.testing.assert_array_equal(run.scalars["tumour_burden"], h5["scalars/tumour_burden"][:])
        assert run.scalars.units["tumour_burden"] == h5["scalars/tumour_burden"].attrs["units"]
        state, step = run.checkpoint()
        assert step == 20
        np.testing.assert_array_equal(state["u"], h5["u"][4])


# --- foreign files -------------------------------------------------------------------------------


def _foreign(directory: Path, kind: str) -> Path:
    path = directory / f"{kind}.h5"
    if kind == "text":
        path.write_text("not a trajectory\n")
        return path
    with h5py.File(path, "w") as h5:
        h5.create_dataset("t", data=np.zeros(3))
        h5.attrs["n_committed"] = 3
        if kind != "no-schema":
            h5.attrs["schema"] = {"other": "other/1", "newer": "tumorfield-trajectory/99", "damaged": FORMAT}[kind]
    return path


FOREIGN = {
    "text": "cannot be opened as HDF5",
    "no-schema": "without the 'schema' attribute",
    "other": f"schema 'other/1', expected {FORMAT!r}",
    "newer": "'tumorfield-trajectory/99', newer than this tumorfield reads",
    "damaged": "damaged tumorfield trajectory (missing attribute 'n_scalars_committed'",
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_foreign_files_are_refused_naming_the_path_and_why(tmp_path, kind):
    path = _foreign(tmp_path, kind)
    with pytest.raises(NotATrajectory) as error:
        open_trajectory(path)
    assert str(error.value).startswith(str(path)) and FOREIGN[kind] in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_trajectory(tmp_path / "absent.h5")


@pytest.mark.parametrize("kind", list(FOREIGN))
@pytest.mark.parametrize("command", ["inspect", "plot"])
def test_cli_on_a_foreign_file_exits_2_with_one_line(tmp_path, capsys, kind, command):
    path = _foreign(tmp_path, kind)
    argv = [command, str(path)] + (["-o", str(tmp_path / "figures")] if command == "plot" else [])
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith(f"tumorfield: error: {path}") and FOREIGN[kind] in line


# --- the writer's protections, at its own level -------------------------------------------------


def test_commit_refuses_frames_that_are_not_the_stored_fields(tmp_path):
    traj = TrajectoryFile.create(
        str(tmp_path / "subset.h5"), grid=GRID, system=SYSTEM, model=MODEL, output=OUTPUT,
        metadata={"config": CONFIG}, scalar_names=("burden",), state_dtypes=DTYPES, fields=("u", "m"),
    )  # fmt: skip
    try:
        state = {"u": np.ones(GRID.shape, "f4"), "c": np.zeros(GRID.shape, "f4"), "m": np.ones(())}
        frames = {"u": np.ones((1, *GRID.shape), "f4"), "m": np.ones(1)}
        traj.commit(frames, np.zeros(1), np.zeros(1), {"burden": np.ones(1)}, state, 0)  # a subset of the grid fields
        with pytest.raises(ValueError, match="a commit needs frames of"):
            traj.commit({**frames, "c": frames["u"]}, np.ones(1), np.ones(1), {"burden": np.ones(1)}, state, 2)
    finally:
        traj.close()
    with open_trajectory(tmp_path / "subset.h5") as run:
        assert run.field_names == ("u",) and run.n_committed == 1
        checkpoint, _ = run.checkpoint()  # the checkpoint holds the full state all the same
        assert sorted(checkpoint) == ["c", "m", "u"]
        run.verify()


def test_a_pending_journal_is_redone_by_readers_in_memory_only(tmp_path):
    """A writer killed while applying a flush's journal: readers see the flushed state, without
    writing; the next writer applies it."""
    from tumorfield.io import _guard

    path = tmp_path / "journal.h5"
    traj, expected = _write(path, commits=(1, 2), close=False)
    before = path.read_bytes()
    apply, calls = _guard.GuardedFile._apply, []

    def killed_while_applying_the_label(self, entries):
        calls.append(len(entries))
        if len(calls) == 2:  # the commit's second flush: its journal is pending, nothing applied
            raise OSError("killed")
        apply(self, entries)

    mp = pytest.MonkeyPatch()
    mp.setattr(_guard.GuardedFile, "_apply", killed_while_applying_the_label)
    try:
        frames = {"u": np.ones((1, *GRID.shape), "f4"), "c": np.zeros((1, *GRID.shape), "f4"), "m": np.ones(1)}
        state = {name: value[-1] for name, value in frames.items()}
        with pytest.raises(OSError, match="writing failed"):
            traj.commit(frames, np.array([3.0]), 0.5 * np.arange(5, 7), {"burden": np.ones(2)}, state, 6)
    finally:
        mp.undo()
        traj.close()  # every write after the failure is dropped
    assert _guard.has_pending_journal(path) and path.read_bytes() != before
    pending = path.read_bytes()
    with open_trajectory(path) as run:  # the journal redone in memory: the last commit is there
        assert run.n_committed == 4 and run.checkpoint()[1] == 6
        run.verify()
    assert path.read_bytes() == pending
    with h5py.File(path, "r") as h5:  # a reader that knows nothing of the journal: the consistent state before it
        assert int(h5.attrs["n_committed"]) == 3
    TrajectoryFile.open_for_resume(str(path)).close()  # a writer applies it
    assert not _guard.has_pending_journal(path)
    with h5py.File(path, "r") as h5:
        assert int(h5.attrs["n_committed"]) == 4


@pytest.mark.parametrize("commits", [(1, 2, 2, 2), (1, 3, 3, 1)])
def test_each_commit_writes_the_slot_the_label_does_not_reference(tmp_path, commits):
    """After every commit both slots hold the last two commits: the live one is never overwritten
    (choosing by ``n_committed % 2`` overwrote it whenever a commit had an even number of frames)."""
    path = tmp_path / "slots.h5"
    _write(path, commits=commits)
    with h5py.File(path, "r") as h5:
        frames = sorted(int(g.attrs["frames"]) for g in h5["checkpoint"].values())
    total = sum(commits)
    assert frames == [total - commits[-1], total]


def test_format_1_files_are_still_read(tmp_path, monkeypatch):
    """Format 1 (before ODE variables recorded by an observable were stored once): its layout is
    format 2's without ``state_variable`` attributes, so the reader opens it as before."""
    import tumorfield.io._writer as writer

    monkeypatch.setattr(writer, "FORMAT", "tumorfield-trajectory/1")
    path = tmp_path / "format1.h5"
    _, expected = _write(path)
    with open_trajectory(path) as run:
        assert run.metadata["schema"] == "tumorfield-trajectory/1" and FORMAT == "tumorfield-trajectory/2"
        assert run.variable_names == ("m",) and run.carried == {}
        np.testing.assert_array_equal(run.variables["m"][:], expected["m"])
        np.testing.assert_array_equal(run.field("u")[:], expected["u"])
        run.verify()
