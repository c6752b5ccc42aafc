"""``tumorfield.export.export_calibration``: the images of a calibration's FIT.h5 (tumorfield-fit/2) as NIfTI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tumorfield import cli
from tumorfield.export import ExportError, export_calibration, export_nifti, is_calibration
from tumorfield.io import write_nifti

nibabel = pytest.importorskip("nibabel")

N = 16
ARM = f"""[model]
name = "glioma"
[grid]
shape = [{N}, {N}]
length = [32.0, 32.0]
[time]
t_end = 20.0
dt = 2.0
save_every = 10.0
[parameters]
D_w = 0.2
rho = 0.08
[initial]
tumor = {{ centre = [15.0, 17.0], radius = 4.0, amplitude = 0.6 }}
[numerics]
cell_diffusion = "explicit"
[output]
precision = "float64"
"""

SCAN = """[[fit.images]]
arm = "patient"
t = {t}
field = "tumor"
file = "seg_{t}.nii.gz"
kind = "segmentation"
thresholds = {{ 1 = 0.5, 2 = 0.16 }}
"""

FIT = """[fit]
arms = { patient = "arm.toml" }
max_iterations = 3
forecast = [30.0]
{scans}
[fit.parameters]
rho = { init = 0.05, lower = 0.01, upper = 0.3 }
[fit.origin]
field = "tumor"
centre = { init = [16.0, 16.0] }
radius = { init = 4.0, lower = 1.0, upper = 10.0 }
[fit.uncertainty]
method = "none"
samples = 2
"""


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    """A tiny calibration (2D glioma box 16², two scans, 3 iterations, a map, a forecast): ``tumorfield fit``."""
    import tumorfield as tf
    from tumorfield.problem import Problem

    directory = tmp_path_factory.mktemp("calibration")
    (directory / "arm.toml").write_text(ARM)
    problem = Problem.from_config(tf.config.loads(ARM))
    run = tf.simulate(problem.system, problem.grid, problem.y0, t_end=20.0, dt=2.0, params=problem.params,
                      numerics=problem.numerics, saveat=tf.SaveAt(every=10.0))  # fmt: skip
    for k, day in ((1, 10), (2, 20)):
        u = np.asarray(run["tumor"][k])
        write_nifti(directory / f"seg_{day}.nii.gz", np.where(u >= 0.5, 1, np.where(u >= 0.16, 2, 0)), problem.grid)
    (directory / "fit.toml").write_text(FIT.replace("{scans}", "".join(SCAN.format(t=day) for day in (10, 20))))
    out = directory / "FIT.h5"
    assert cli.main(["fit", str(directory / "fit.toml"), "-o", str(out)]) == cli.EXIT_OK
    with h5py.File(out, "a") as h5:  # a map's posterior (the layout of write_calibration): Laplace maps take minutes
        for key, values in (("estimate", 0.2 * np.exp(np.linspace(-1, 1, N * N).reshape(N, N))),
                            ("sd", np.linspace(0.1, 0.3, N * N).reshape(N, N))):  # fmt: skip
            h5.create_dataset(f"fit/maps/D_w/{key}", data=values)
    return out


def _expected(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """File name → (dataset, grid affine) read straight from FIT.h5."""
    with h5py.File(path, "r") as h5:
        fit = h5["fit"]
        affine = np.reshape(fit["arms/patient"].attrs["grid_affine"], (4, 4))
        out = {}
        for scan in fit["scans"].values():
            stem = f"patient_tumor_t{scan.attrs['t']:g}"
            assert np.allclose(np.reshape(scan.attrs["grid_affine"], (4, 4)), affine)
            out[f"{stem}_prediction"] = scan["prediction"][()], affine
            out[f"{stem}_observed"] = scan["observed"][()], affine
        out["initial_tumor"] = fit["origin/initial"][()], affine
        out["map_D_w"] = fit["maps/D_w/estimate"][()], affine
        out["map_D_w_sd"] = fit["maps/D_w/sd"][()], affine
        out["forecast_patient_t30"] = fit["forecast/patient/30/estimate"][()], affine
        out["forecast_patient_t30_probability"] = fit["forecast/patient/30/probability"][()], affine
    return out


def test_every_image_of_a_calibration_is_written_with_its_arms_affine(fit_file, tmp_path):
    assert is_calibration(fit_file)
    written = export_calibration(fit_file, tmp_path / "nifti")
    expected = _expected(fit_file)
    assert sorted(written) == sorted(str(tmp_path / "nifti" / f"{name}.nii.gz") for name in expected)
    for name, (values, affine) in expected.items():
        image = nibabel.load(tmp_path / "nifti" / f"{name}.nii.gz")
        assert values.shape == (N, N)
        assert image.shape == (N, N, 1), name  # a 2D grid as (n0, n1, 1), as export_nifti writes run files
        np.testing.assert_allclose(image.affine, affine, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(image.dataobj)[..., 0], values)
    spacing = 32.0 / N
    np.testing.assert_allclose(np.diag(expected["initial_tumor"][1])[:2], [spacing, spacing])
    observed = np.asarray(nibabel.load(tmp_path / "nifti" / "patient_tumor_t20_observed.nii.gz").dataobj)
    assert set(np.unique(observed)) <= {0, 1, 2} and observed.dtype == np.int32


def test_fields_select_the_scans_and_the_origin(fit_file, tmp_path):
    written = export_calibration(fit_file, tmp_path, fields=["necrotic"])
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == sorted(["map_D_w.nii.gz", "map_D_w_sd.nii.gz", "forecast_patient_t30.nii.gz",
                            "forecast_patient_t30_probability.nii.gz"])  # fmt: skip


def test_a_trajectory_is_not_a_calibration(tmp_path):
    from tumorfield.io import open_trajectory

    (tmp_path / "arm.toml").write_text(ARM.replace("t_end = 20.0", "t_end = 10.0"))
    out = tmp_path / "run.h5"
    assert cli.main(["run", str(tmp_path / "arm.toml"), "-o", str(out), "--set", "run.progress=none"]) == cli.EXIT_OK
    assert not is_calibration(out) and not is_calibration(tmp_path / "arm.toml")
    with pytest.raises(ExportError, match="not a calibration"):
        export_calibration(out, tmp_path / "never")
    with open_trajectory(out) as run:  # today's behaviour
        assert [p.rsplit("/", 1)[-1] for p in export_nifti(run, tmp_path / "run", ["tumor"])] == ["tumor_t10.nii.gz"]


def test_the_cli_exports_a_calibration(fit_file, tmp_path, capsys):
    """``tumorfield export FIT.h5 -o DIR`` routes a calibration's file to its images (exit 0, one path a line)."""
    assert cli.main(["export", str(fit_file), "-o", str(tmp_path / "cli")]) == cli.EXIT_OK
    printed = capsys.readouterr().out.split()
    assert printed and all(p.endswith(".nii.gz") and (tmp_path / "cli" / p.split("/")[-1]).exists() for p in printed)
    assert any("initial_tumor" in p for p in printed)


def test_a_calibration_is_read_back_inspected_and_plotted(fit_file, tmp_path, capsys):
    """``tf.open_fit`` reads a calibration (tumorfield-fit/2): parameters with the origin, scans with their metrics
    and images, maps and forecasts; ``inspect`` summarises it and ``plot`` draws each scan's observed and
    predicted field and the loss."""
    import tumorfield as tf

    stored = tf.open_fit(fit_file)
    assert stored.is_calibration and stored.schema == "tumorfield-fit/2" and "rho" in stored.names
    assert [s.t for s in stored.scans] == [10.0, 20.0] and all("dice" in " ".join(s.metrics) for s in stored.scans)
    images = stored.scan_images(stored.scans[0].index)
    assert images["observed"].shape == images["prediction"].shape == (N, N)
    assert set(stored.maps) == {"D_w"} and ("patient", 30.0) in stored.forecast
    assert cli.main(["inspect", str(fit_file)]) == cli.EXIT_OK
    shown = capsys.readouterr().out
    assert "calibration from scans" in shown and "scan " in shown and "map D_w" in shown
    assert cli.main(["plot", str(fit_file), "-o", str(tmp_path)]) == cli.EXIT_OK
    drawn = sorted(p.split("/")[-1] for p in capsys.readouterr().out.split())
    assert drawn == ["fit_loss.png", *sorted(f"scan_{s.index}.png" for s in stored.scans)], drawn
