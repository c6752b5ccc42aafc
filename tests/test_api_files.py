"""A run made through the API as a run file (issue 26): ``tumorfield.io.write_trajectory`` writes
what ``inspect``, ``plot``, ``compare``, xarray and ParaView read; the XDMF that VTK reads without an
error (its constant maps said "Dimensions of Attribute not set" once per frame); no sidecar for a file
without fields; ``inspect``'s columns (``paclitaxel_boundfloat32``)."""

from __future__ import annotations

import contextlib
import os
import tempfile

import h5py
import numpy as np
import pytest
import xarray as xr
from _api_files import blob, write

import tumorfield as tf
from tumorfield import cli, models
from tumorfield.io import open_trajectory, write_trajectory, write_xdmf
from tumorfield.problem import Observer

GRID = tf.Grid((8, 12), (1.0, 1.5))


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """fisher_kpp through ``tf.simulate``, with its observables, written with the model (units) and a map."""
    model = models.get("fisher_kpp").from_sections({"parameters": {"D": 0.02, "r": 1.0, "chi": 0.01},
                                                    "initial": {"radius": 0.4}})  # fmt: skip
    params = model.params(GRID)
    observe = Observer(model.observe, GRID)
    traj = tf.simulate(model.system, GRID, model.initial_state(GRID), t_end=0.2, dt=0.05, params=params,
                       saveat=tf.SaveAt(every=0.1, observe=observe))  # fmt: skip
    vessels = 0.5 + np.asarray(GRID.mesh()[1])
    path = tmp_path_factory.mktemp("api") / "api.h5"
    with pytest.warns(UserWarning, match="'u' reaches the walls of the box at t = 0.2 day"):  # a 1 × 1.5 mm box
        written = write_trajectory(path, traj, GRID, model=model, params=params,
                                   constants={"vessels": (vessels, "1", "vessel density")})  # fmt: skip
    assert written == path
    return path, traj, vessels


def test_an_api_run_is_a_run_file_for_every_reader(api_run, tmp_path, capsys):
    path, traj, vessels = api_run
    with open_trajectory(path) as run:
        run.verify()
        assert run.status == "complete" and run.n_committed == 3 and run.field_names == ("c", "u")
        for name in ("u", "c"):
            np.testing.assert_array_equal(run.field(name)[:], np.asarray(traj[name]))
        np.testing.assert_allclose(run.t, [0.0, 0.1, 0.2], rtol=0, atol=1e-15)  # on the steps, as a CLI run
        np.testing.assert_array_equal(run.scalars["tumour_burden"], np.asarray(traj.observed["tumour_burden"]))
        assert run.fields["u"].units == "1" and run.scalars.units["tumour_burden"] == "mm2"  # from the model
        assert run.metadata["writer"] == "tumorfield.io.write_trajectory" and run.config_text == ""
        assert run.metadata["model"] == "fisher_kpp" and '"D"' in run.metadata["parameters"]
        np.testing.assert_array_equal(run.constants["vessels"], vessels)
        assert len(run.warnings) == 1 and run.warnings[0].startswith("'u' reaches the walls")  # as a CLI run
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "status:      complete" in out and "writer:" in out and "3 committed" in out
    assert "config:      none (written by tumorfield.io.write_trajectory from an API run" in out
    assert cli.main(["plot", str(path), "-o", str(tmp_path / "figures")]) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "c.png",
        "constants.png",
        "scalars.png",
        "u.png",
    ]
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["u"].values, np.asarray(traj["u"]))
        assert ds["u"].dims == ("t", "y", "x") and ds["u"].attrs["units"] == "1"
    capsys.readouterr()
    assert cli.main(["resume", str(path)]) == 2  # no config: refused, naming why and what to do instead
    err = capsys.readouterr().err
    assert "an API run" in err and "tumorfield.advance" in err and len(err.splitlines()) == 1
    with pytest.raises(Exception, match="exists; pass --overwrite"):
        write_trajectory(path, traj, GRID)


def test_what_the_api_does_not_say_is_written_as_unknown_and_a_failed_run_keeps_its_valid_frames(tmp_path):
    u = blob(GRID, 3)
    u[2, 3, 4] = np.nan  # frame 2 is the non-finite one: frames 0 and 1 are valid
    path = write(tmp_path / "failed.h5", GRID, {"u": u, "s": np.array([0.0, 1.0, np.nan])}, n_valid=2,
                 failed=True, series={"total": [1.0, 2.0, 3.0, 4.0]}, units={"s": "cells"})  # fmt: skip
    with open_trajectory(path) as run:
        assert run.status == "failed" and run.n_committed == 2 and "not finite" in run.message
        assert run.fields["u"].units == "unknown" and run.variables["s"].units == "cells"
        assert run.scalars.units["total"] == "unknown" and run.n_scalars_committed == 2  # up to frame 1
        np.testing.assert_array_equal(run.field("u")[:], u[:2])


def _vtk_messages(xdmf) -> tuple[str, list[str]]:
    """Read every time step of ``xdmf`` with VTK's XDMF reader (ParaView's); return what it printed —
    through VTK's output window and on the process's stderr, where the XDMF library writes its errors —
    and the arrays of the last step."""
    vtk_xdmf = pytest.importorskip("vtkmodules.vtkIOXdmf2")
    from vtkmodules.vtkCommonCore import vtkOutputWindow, vtkStringOutputWindow
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline

    window, previous = vtkStringOutputWindow(), vtkOutputWindow.GetInstance()
    vtkOutputWindow.SetInstance(window)
    with tempfile.TemporaryFile("w+b") as captured, _stderr_to(captured):
        try:
            reader = vtk_xdmf.vtkXdmfReader()
            reader.SetFileName(str(xdmf))
            reader.UpdateInformation()
            times = reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS()) or []
            for time in times:
                reader.UpdateTimeStep(time)
            data = reader.GetOutputDataObject(0).GetPointData()
            names = [data.GetArrayName(i) for i in range(data.GetNumberOfArrays())]
        finally:
            vtkOutputWindow.SetInstance(previous)
        captured.seek(0)
        printed = captured.read().decode(errors="replace")
    return window.GetOutput() + printed, names


@contextlib.contextmanager
def _stderr_to(file):
    """File descriptor 2 redirected to ``file`` (C++ libraries write there, not to ``sys.stderr``)."""
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_vtk_reads_the_sidecar_without_an_error_and_constants_are_referenced_once(api_run):
    path, _, _ = api_run
    xdmf = path.with_suffix(".xdmf")
    messages, names = _vtk_messages(xdmf)
    assert messages == "", messages  # before: one "Dimensions of Attribute not set" per frame, for vessels
    assert sorted(names) == ["c", "u", "vessels"]
    assert xdmf.read_text().count(":/constant/vessels<") == 1


def test_a_file_without_fields_gets_no_sidecar_and_loses_a_stale_one(tmp_path):
    stale = tmp_path / "member.xdmf"
    stale.write_text("<Xdmf/>")  # an earlier run's, of this name
    path = write(tmp_path / "member.h5", GRID, {"s": np.array([0.0, 1.0, 2.0])}, series={"total": [1.0, 2.0]})
    assert not stale.exists() and write_xdmf(str(path)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member.h5"]


def test_inspect_keeps_its_columns_apart(tmp_path, capsys):
    fields = {"paclitaxel_bound": blob(GRID, 2), "u": blob(GRID, 2)}
    path = write(tmp_path / "long.h5", GRID, fields, series={"circulating_cells": [1.0, 2.0]},
                 units={"paclitaxel_bound": "nM"})  # fmt: skip
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("  paclitaxel_bound"))
    assert row.startswith("  paclitaxel_bound  float32  (2, 8, 12)  [nM]"), row
    u = next(line for line in out.splitlines() if line.startswith("  u "))
    assert u.index("float32") == row.index("float32") and u.index("[unknown]") == row.index("[nM]")
    series = next(line for line in out.splitlines() if "circulating_cells" in line)
    assert "circulating_cells  [unknown]" in series
    with h5py.File(path, "r") as h5:
        assert h5["paclitaxel_bound"].attrs["units"] == "nM"
