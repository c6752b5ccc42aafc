"""Trajectory files as the field's own tools read them: VTK's XDMF reader (ParaView's), netCDF-C
through xarray's ``netcdf4`` engine and h5py through ``h5netcdf``; every array of every frame is
compared with what h5py reads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr
from _viewer_runs import run

from tumorfield.io import open_trajectory

vtk_xdmf = pytest.importorskip("vtkmodules.vtkIOXdmf2")


def read_with_vtk(xdmf) -> tuple[list[float], list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], str]:
    """Every time step of ``xdmf`` through ``vtkXdmfReader``: the times, per step the point arrays
    (flat, x fastest) and the x, y, z coordinates, and the text of every VTK error or warning."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkOutputWindow, vtkStringOutputWindow
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline

    messages = vtkStringOutputWindow()
    previous = vtkOutputWindow.GetInstance()
    vtkOutputWindow.SetInstance(messages)
    try:
        reader = vtk_xdmf.vtkXdmfReader()
        reader.SetFileName(str(xdmf))
        reader.UpdateInformation()
        times = list(reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS()) or [])
        arrays, coordinates = [], []
        for time in times:
            reader.UpdateTimeStep(time)
            grid = reader.GetOutputDataObject(0)
            data = grid.GetPointData()
            arrays.append({data.GetArrayName(i): vtk_to_numpy(data.GetArray(i)).copy()
                           for i in range(data.GetNumberOfArrays())})  # fmt: skip
            coordinates.append({axis: vtk_to_numpy(getattr(grid, f"Get{axis.upper()}Coordinates")()).copy()
                                for axis in "xyz"})  # fmt: skip
    finally:
        vtkOutputWindow.SetInstance(previous)
    return times, arrays, coordinates, messages.GetOutput()


def viewer_problems(h5_path) -> list[str]:
    """What VTK's XDMF reader does not read as h5py does in the run ``h5_path`` (its sidecar):
    a missing time step, a missing, empty or different array (every grid field of every frame,
    every constant at every frame), wrong coordinates, any VTK error message. Empty: all read."""
    times, arrays, coordinates, messages = read_with_vtk(h5_path.with_suffix(".xdmf"))
    problems = [f"VTK reported: {line.strip()[:200]}" for line in messages.splitlines() if "ERR" in line]
    with h5py.File(h5_path, "r") as h5:
        n = int(h5.attrs["n_committed"])
        axes = [a for a in ("z", "y", "x") if a in h5]
        expected_t = h5["t"][:n]
        if not np.allclose(times, expected_t, rtol=0, atol=1e-12):
            return [*problems, f"time steps {times} instead of {list(expected_t)}"]
        names = [name for name, ds in h5.items() if isinstance(ds, h5py.Dataset) and ds.ndim == 1 + len(axes)]
        constants = list(h5["constant"]) if "constant" in h5 else []
        for k in range(n):
            for axis in axes:
                if not np.array_equal(coordinates[k][axis], h5[axis][()]):
                    problems.append(f"frame {k}: coordinate {axis} differs")
            expected = {name: h5[name][k] for name in names}
            expected.update({name: h5["constant"][name][()] for name in constants})
            for name, value in expected.items():
                got = arrays[k].get(name)
                if got is None or got.size == 0:
                    problems.append(f"frame {k}: {name} missing or empty")
                elif got.size != value.size or not np.array_equal(got.reshape(value.shape), value):
                    problems.append(f"frame {k}: {name} differs from h5py")
    return problems


@pytest.mark.parametrize("name", ["fisher_3d", "voloshin_ptx"])
def test_vtk_reads_every_array_of_every_frame(name):
    path = run(name)
    assert viewer_problems(path) == []
    with h5py.File(path, "r") as h5:  # the default: deflate with shuffle, which every HDF5 build has
        stored = [ds for ds in h5.values() if isinstance(ds, h5py.Dataset) and ds.ndim > 1]
        stored += list(h5["constant"].values()) if "constant" in h5 else []
        assert stored and all(ds.compression == "gzip" and ds.shuffle for ds in stored)
        if "constant" in h5:  # stored once, referenced by every frame of the sidecar, not per frame
            assert "vessels" in h5["constant"] and "vessels" not in h5
            text = path.with_suffix(".xdmf").read_text()
            assert text.count(":/constant/vessels<") == 1 and text.count('<Grid Name="frame') == h5.attrs["n_committed"]


def test_an_lzf_file_is_caught_by_the_viewer_check():
    """lzf is h5py's own filter: VTK's HDF5 cannot decode it, and the check above must say so."""
    path = run("fisher_3d_lzf")
    with h5py.File(path, "r") as h5:
        assert h5["u"].compression == "lzf"
    problems = viewer_problems(path)
    assert any("u missing or empty" in p or "u differs" in p for p in problems), problems


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
@pytest.mark.parametrize("name", ["fisher_3d", "voloshin_ptx"])
def test_xarray_decodes_coordinates_and_scalars(engine, name):
    path = run(name)
    with open_trajectory(path) as stored:
        fields = {n: stored.field(n)[:] for n in stored.field_names}
        t, coordinates, axes = stored.t, stored.coordinates, stored.axes
        scalars = {n: stored.scalars[n] for n in stored.scalars}
        scalars_t = stored.scalars_t
    with xr.open_dataset(path, engine=engine) as ds:
        assert dict(ds.sizes) == {"t": len(t), **{a: len(coordinates[a]) for a in axes}}
        assert set(ds.indexes) == {"t", *axes}  # coordinates decoded as index coordinates, no glue
        np.testing.assert_array_equal(ds["t"].values, t)
        assert ds["t"].attrs["units"] == "days" and ds["t"].attrs["axis"] == "T"
        for axis in axes:
            np.testing.assert_array_equal(ds[axis].values, coordinates[axis])
            assert ds[axis].attrs["units"] == "mm" and ds[axis].attrs["axis"] == axis.upper()
        assert set(fields) <= set(ds.data_vars)
        for field, value in fields.items():
            assert ds[field].dims == ("t", *axes) and ds[field].attrs["units"] and ds[field].attrs["long_name"]
            np.testing.assert_array_equal(ds[field].values, value)
        assert ds.attrs["Conventions"].startswith("CF-")
    with xr.open_dataset(path, engine=engine, group="scalars") as group:
        assert set(group.indexes) == {"t"} and group["t"].attrs["units"] == "days"
        np.testing.assert_array_equal(group["t"].values, scalars_t)
        assert set(group.data_vars) == set(scalars)
        for series, value in scalars.items():
            assert group[series].dims == ("t",) and group[series].attrs["units"]
            np.testing.assert_array_equal(group[series].values, value)


def test_each_series_is_stored_once():
    """voloshin2015's ODE scalars are its observables ``metastatic_burden`` … : one dataset each, with
    units; the reader still gives them per frame under the System's names, and resume verifies."""
    path = run("voloshin_ptx")
    with h5py.File(path, "r") as h5:
        root = set(h5)
        assert not {"burden", "circulating", "seeded"} & root
        for observable, variable in (("metastatic_burden", "burden"), ("circulating_cells", "circulating"),
                                     ("seeded_cells", "seeded")):  # fmt: skip
            ds = h5["scalars"][observable]
            assert ds.attrs["state_variable"] == variable and ds.attrs["units"] == "cells"
        assert h5["scalars/tumor_volume"].attrs["units"] == "mm2"  # the 2D grid's volume unit, spelled out
    with open_trajectory(path) as stored:
        assert stored.carried == {"burden": "metastatic_burden", "circulating": "circulating_cells",
                                  "seeded": "seeded_cells"}  # fmt: skip
        state, step = stored.checkpoint()
        sps = int(stored.metadata["steps_per_save"])
        for variable, observable in stored.carried.items():
            per_frame = stored.variables[variable][:]
            assert per_frame.shape == (stored.n_committed,)
            np.testing.assert_array_equal(per_frame, stored.scalars[observable][::sps])
            assert per_frame[-1] == state[variable]  # the checkpoint's state, at the last frame
            assert stored.variables[variable][-1] == per_frame[-1]
            np.testing.assert_array_equal(stored.variables[variable][[0, 2]], per_frame[[0, 2]])
        assert step == (stored.n_committed - 1) * sps
        stored.verify()  # every frame and sample against the digests resume checks
