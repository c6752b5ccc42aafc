"""Trajectory files: layout, xarray, XDMF sidecar, and consistency under ``kill -9``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from tumorfield import cli

CONFIG = """
[model]
name = "fisher_kpp"
[grid]
shape = {shape}
length = {length}
[time]
t_end = {t_end}
dt = 0.01
save_every = {save_every}
[parameters]
D = 1e-3
r = 1.0
chi = 0.01
[output]
compression = "{compression}"
precision = "{precision}"
[run]
chunk_frames = {chunk}
progress = "none"
"""


def write_config(directory: Path, name="run.toml", shape=(16, 16), length=(1.0, 1.0), t_end=0.2, save_every=0.05,
                 compression="lzf", precision="float32", chunk=2) -> Path:  # fmt: skip
    path = directory / name
    path.write_text(
        CONFIG.format(
            shape=list(shape), length=list(length), t_end=t_end, save_every=save_every, compression=compression,
            precision=precision, chunk=chunk,
        )
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


def popen(*args, cache: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tumorfield.cli", *map(str, args)]
    if args[0] == "run":
        command += ["--set", f'run.compilation_cache="{cache}"']
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )


def run_cli(*args, cache: str) -> subprocess.CompletedProcess:
    proc = popen(*args, cache=cache)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def committed(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        n, s = int(h5.attrs["n_committed"]), int(h5.attrs["n_scalars_committed"])
        data = {name: h5[name][:n] for name in ("t", "u", "c")}
        data.update({f"scalars/{k}": v[:s] for k, v in h5["scalars"].items()})
    return data


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory, cache) -> Path:
    directory = tmp_path_factory.mktemp("run2d")
    out = directory / "out.h5"
    run_cli("run", write_config(directory, compression="gzip", precision="float64"), "-o", out,
            "--set", "output.gzip_level=3", cache=cache)  # fmt: skip
    return out


def test_layout(run_2d):
    with h5py.File(run_2d, "r") as h5:
        attrs = h5.attrs
        for key in ("schema", "status", "n_committed", "config", "tumorfield_version", "git_commit", "jax_version",
                    "device", "precision", "seed", "command_line", "created"):  # fmt: skip
            assert key in attrs, key
        assert attrs["status"] == b"complete" and int(attrs["n_committed"]) == 5 and attrs["precision"] == "float64"
        assert "--set output.gzip_level=3" in attrs["command_line"]
        for name in ("u", "c"):
            ds = h5[name]
            assert ds.shape == (5, 16, 16) and ds.dtype == np.float64
            assert ds.chunks == (1, 16, 16) and ds.maxshape == (None, 16, 16)
            assert ds.compression == "gzip" and ds.compression_opts == 3 and ds.shuffle
            assert [d[0].name for d in ds.dims] == ["/t", "/y", "/x"]
        np.testing.assert_allclose(h5["x"][:], (np.arange(16) + 0.5) / 16)
        assert h5["scalars/tumour_burden"].dims[0][0].name == "/scalars/t"
        np.testing.assert_allclose(h5["scalars/t"][:], np.arange(21) * 0.01, atol=1e-12)

        def has_units(name, obj):
            if isinstance(obj, h5py.Dataset):
                assert "units" in obj.attrs and "long_name" in obj.attrs, name

        h5.visititems(has_units)
        # the checkpoint holds the final state: equal to the last frame, and the step number
        slot = next(g for g in h5["checkpoint"].values() if int(g.attrs["frames"]) == 5)
        assert int(slot.attrs["step"]) == 20
        np.testing.assert_array_equal(slot["u"][()], h5["u"][4])


def test_xarray_opens_with_coordinates(run_2d):
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(run_2d, engine="h5netcdf") as ds, h5py.File(run_2d, "r") as h5:
        assert ds["u"].dims == ("t", "y", "x")
        assert set(ds.coords) >= {"t", "y", "x"}
        np.testing.assert_array_equal(ds["t"].values, h5["t"][:])
        np.testing.assert_array_equal(ds["u"].values, h5["u"][:])
        assert ds["u"].attrs["units"] == "1" and ds["x"].attrs["units"] == "mm"
        assert ds.attrs["model"] == "fisher_kpp"
    with xr.open_dataset(run_2d, engine="h5netcdf", group="scalars") as ds, h5py.File(run_2d, "r") as h5:
        assert ds["tumour_burden"].dims == ("t",)
        np.testing.assert_array_equal(ds["t"].values, h5["scalars/t"][:])


def _resolve(root, item):
    """The Domain-level ``DataItem`` that ``item`` references (``Reference="XML"``), or ``item``."""
    if item.get("Reference") != "XML":
        return item
    name = item.text.split('@Name="')[1].split('"')[0]
    (target,) = root.findall(f"Domain/DataItem[@Name='{name}']")
    return target


def _check_xdmf(xdmf: Path, h5path: Path) -> None:
    root = ET.parse(xdmf).getroot()
    assert root.tag == "Xdmf"
    series = root.find("Domain/Grid")
    assert series.get("CollectionType") == "Temporal"
    frames = series.findall("Grid")
    with h5py.File(h5path, "r") as h5:
        n = int(h5.attrs["n_committed"])
        axes = [a for a in ("z", "y", "x") if a in h5]
        shape = tuple(h5[a].shape[0] for a in axes)
        assert len(frames) == n
        for k, grid in enumerate(frames):
            assert float(grid.find("Time").get("Value")) == h5["t"][k]
            assert tuple(map(int, grid.find("Topology").get("Dimensions").split())) == shape
            coords = [_resolve(root, c) for c in grid.findall("Geometry/DataItem")]  # defined once, referenced
            assert [c.text.split(":")[1] for c in coords] == [f"/{a}" for a in reversed(axes)]  # x first
            for c in coords:
                file, dataset = c.text.split(":")
                assert (xdmf.parent / file).resolve() == h5path.resolve()
                assert h5[dataset].shape == (int(c.get("Dimensions")),)
            names = set()
            for attribute in grid.findall("Attribute"):
                names.add(attribute.get("Name"))
                slab = attribute.find("DataItem")
                selection, source = slab.findall("DataItem")
                start, stride, count = (list(map(int, row.split())) for row in selection.text.strip().splitlines())
                assert start == [k] + [0] * len(shape) and stride == [1] * (len(shape) + 1)
                assert count == [1, *shape]
                file, dataset = source.text.split(":")
                ds = h5[dataset]
                assert tuple(map(int, source.get("Dimensions").split())) == (n, *ds.shape[1:])
                assert ds.shape[0] >= n
                assert int(source.get("Precision")) == ds.dtype.itemsize
                assert ds[k].shape == shape
            assert names == {"u", "c"}


def test_xdmf_sidecar_references_the_datasets(run_2d):
    _check_xdmf(run_2d.with_suffix(".xdmf"), run_2d)


def test_3d_run_in_process_under_strict_settings(tmp_path):
    """The whole CLI path in this process (tests' strict dtype/rank promotion), on a 3D grid."""
    config = write_config(tmp_path, shape=(4, 6, 8), length=(0.5, 0.75, 1.0), t_end=0.04, save_every=0.02)
    out = tmp_path / "out3d.h5"
    code = cli.main(["run", str(config), "-o", str(out), "--set", 'run.compilation_cache="off"'])
    assert code == 0
    with h5py.File(out, "r") as h5:
        assert h5["u"].shape == (3, 4, 6, 8) and [d[0].name for d in h5["u"].dims] == ["/t", "/z", "/y", "/x"]
        assert np.all(np.isfinite(h5["u"][:]))
    _check_xdmf(out.with_suffix(".xdmf"), out)
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["c"].dims == ("t", "z", "y", "x")


def _wait(predicate, proc, timeout=120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError


def _n_committed(path: Path) -> int:
    try:
        with h5py.File(path, "r", locking=False) as h5:
            return int(h5.attrs["n_committed"])
    except (OSError, KeyError):
        return -1


def test_kill_9_at_random_moments_leaves_valid_committed_frames(tmp_path, cache):
    config = write_config(tmp_path, t_end=5.0, save_every=0.01, chunk=1)
    reference = tmp_path / "reference.h5"
    run_cli("run", config, "-o", reference, cache=cache)
    expected = committed(reference)

    out = tmp_path / "out.h5"
    rng = random.Random(20151)
    kills, seen = 0, []
    while kills < 10:
        before = _n_committed(out) if out.exists() else 0
        proc = popen("resume", out, cache=cache) if out.exists() else popen("run", config, "-o", out, cache=cache)
        # kill at a random moment once the process streams frames (the compile is not what we test)
        if not _wait(lambda b=before: out.exists() and _n_committed(out) > b, proc):
            break  # finished before we could kill it
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            break
        kills += 1
        data = committed(out)  # the file opens after every kill
        n = len(data["t"])
        seen.append(n)
        assert n >= before
        for key, value in data.items():  # and what it calls committed is exactly right
            np.testing.assert_array_equal(value, expected[key][: len(value)], err_msg=f"{key} after kill {kills}")
        assert len(data["scalars/t"]) == (n - 1) * 1 + 1
    assert kills >= 10, f"only {kills} kills landed (frames seen: {seen})"
    result = run_cli("resume", out, cache=cache)
    assert "done" in result.stderr
    final = committed(out)
    for key in expected:
        np.testing.assert_array_equal(final[key], expected[key], err_msg=key)
