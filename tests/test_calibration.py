"""Calibration from images (``tumorfield fit`` with ``[[fit.images]]``): recovery on a 2D slice of the MNI152
atlas from segmentations made on a finer grid than the fit's (no inverse crime), the posterior, a forecast
of a held-back scan, and every refusal before compute.

Truth: the glioma model on the 1 mm slice with dt = 0.5 day; the fit runs on a 2 mm slice (every 2nd voxel)
of the same anatomy with dt = 2 day. Scans at days 40 and 80 (labels 1: u ≥ 0.8,
2: u ≥ 0.16); day 120 is held back and forecast.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

import tumorfield as tf
from tumorfield import config as cfg
from tumorfield.fit._calibrate import _scalar_uncertainty, calibrate
from tumorfield.fit._calibration import Calibration
from tumorfield.fit._metrics import dice_at_thresholds
from tumorfield.fit._spec import load_spec
from tumorfield.io import read_image, write_nifti
from tumorfield.problem import Problem

pytestmark = pytest.mark.slow

TRUTH = {"D_w": 0.5, "rho": 0.05, "centre": (26.0, 18.0)}
SCANS = (40.0, 80.0)
HELD_BACK = 120.0
THRESHOLDS = {1: 0.8, 2: 0.16}


def _atlas_slices(directory) -> dict[str, str]:
    """2D axial slices (z = 8 mm) of the nilearn MNI152 grey/white maps, every voxel (1 mm) and every 2nd (2 mm)."""
    data = os.path.join(os.path.dirname(__import__("nilearn").__file__), "datasets", "data")
    out = {}
    for tissue, name in (("white", "wm"), ("grey", "gm")):
        image = nib.load(os.path.join(data, f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"))
        for step in (1, 2):
            path = directory / f"{tissue}_{step}mm.nii.gz"
            nib.save(image.slicer[::step, ::step, 80:81], path)
            out[f"{tissue}_{step}"] = str(path)
    return out


def _arm(maps: dict[str, str], step: int, dt: float, t_end: float) -> str:
    return f"""[model]
name = "glioma"
[grid]
image = "{maps[f"white_{step}"]}"
[tissue]
white = "{maps[f"white_{step}"]}"
grey = "{maps[f"grey_{step}"]}"
scale = {1 / 255}
[time]
t_end = {t_end}
dt = {dt}
save_every = {t_end}
[parameters]
D_w = {TRUTH["D_w"]}
D_g = {TRUTH["D_w"] / 10}
rho = {TRUTH["rho"]}
[initial]
tumor = {{ centre = [{TRUTH["centre"][0]}, {TRUTH["centre"][1]}], radius = 4.0, amplitude = 0.5 }}
[numerics]
cell_diffusion = "implicit"
[output]
precision = "float64"
"""


FIT = """[fit]
arms = {{ patient = "arm.toml" }}
max_iterations = 60
forecast = [{held_back}]
{scans}
[fit.parameters]
D_w = {{ init = 0.25, lower = 0.02, upper = 5.0 }}
rho = {{ init = 0.03, lower = 0.002, upper = 0.2 }}
[fit.origin]
field = "tumor"
centre = {{ init = [20.0, 24.0] }}
radius = {{ init = 4.0, lower = 1.0, upper = 12.0 }}
amplitude = {{ init = 0.5, lower = 0.05, upper = 1.0 }}
[fit.uncertainty]
method = "laplace"
samples = 24
"""

SCAN = """[[fit.images]]
arm = "patient"
t = {t}
field = "tumor"
file = "seg_{t:g}.nii.gz"
kind = "segmentation"
thresholds = {{ 1 = 0.8, 2 = 0.16 }}
"""


def _labels(u) -> np.ndarray:
    return np.where(u >= 0.8, 1, np.where(u >= 0.16, 2, 0)).astype(np.int32)


def write_scans(directory, times) -> dict[str, str]:
    """The atlas slices in ``directory`` and the truth's segmentations ``seg_T.nii.gz`` at ``times`` (every 40
    days), simulated on the 1 mm slice with dt = 0.5 day; returns the slices' paths."""
    maps = _atlas_slices(directory)
    truth = Problem.from_config(cfg.loads(_arm(maps, 1, 0.5, max(times)), str(directory / "truth.toml")))
    traj = tf.simulate(truth.system, truth.grid, truth.y0, t_end=max(times), dt=0.5, params=truth.params,
                       numerics=truth.numerics, saveat=tf.SaveAt(every=40.0))  # fmt: skip
    for k, t in enumerate(times, start=1):
        assert float(traj.t[k]) == t
        write_nifti(directory / f"seg_{t:g}.nii.gz", _labels(np.asarray(traj["tumor"][k])), truth.grid)
    return maps


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The truth on the 2 mm slice, the scans, and the calibration on the 4 mm slice (fitted once)."""
    directory = tmp_path_factory.mktemp("calibration")
    maps = write_scans(directory, (*SCANS, HELD_BACK))
    (directory / "arm.toml").write_text(_arm(maps, 2, 2.0, HELD_BACK))
    scans = "\n".join(SCAN.format(t=t) for t in SCANS)
    (directory / "fit.toml").write_text(FIT.format(held_back=HELD_BACK, scans=scans))
    calibration = Calibration(load_spec(directory / "fit.toml"))
    return directory, calibration, calibrate(calibration)


def test_origin_and_parameters_are_recovered_from_two_segmentations(calibrated):
    _, calibration, result = calibrated
    estimate = dict(zip(result.names, result.estimate, strict=True))
    voxel = max(calibration.problems["patient"].grid.spacing)
    error = np.hypot(estimate["origin.centre.0"] - TRUTH["centre"][0], estimate["origin.centre.1"] - TRUTH["centre"][1])
    assert error <= 2 * voxel, (error, estimate)
    for name in ("D_w", "rho"):
        assert abs(estimate[name] / TRUTH[name] - 1) <= 0.10, (name, estimate[name])
    assert np.all(np.isfinite(result.std_error)) and np.all(result.std_error > 0)
    assert result.converged, result.minimum.message
    assert all(m["dice@0.16"] > 0.9 for m in result.metrics.values()), result.metrics


def test_forecast_of_the_held_back_scan(calibrated):
    """The calibrated model forecasts day 120 (never seen): Dice ≥ 0.9 at the FLAIR threshold, and the
    posterior probability of presence is high where the held-back scan shows tumour."""
    directory, calibration, result = calibrated
    grid = calibration.problems["patient"].grid
    held = read_image(directory / f"seg_{HELD_BACK:g}.nii.gz", grid, kind="labels")
    found = result.forecast["patient", HELD_BACK]
    dice = dice_at_thresholds(found["estimate"], held, THRESHOLDS)
    assert dice[0.16] >= 0.9, dice
    assert float(np.mean(found["probability"][held > 0])) > 0.8


def test_fit_h5_and_the_summary_table(calibrated, tmp_path):
    """FIT.h5 (tumorfield-fit/2) holds the scans' predictions and metrics and the recovered origin; the table
    names the origin in mm with its uncertainty and the per-scan metrics. (The CLI path, ``tumorfield fit``
    then ``tumorfield export``, runs in ``tests/test_export_fit.py``.)"""
    import h5py

    from tumorfield.fit._output import calibration_summary, write_calibration
    from tumorfield.run import OutputTarget

    _, _, result = calibrated
    path = write_calibration(OutputTarget.new(tmp_path / "FIT.h5", overwrite=False), result, ["tumorfield", "fit"])
    with h5py.File(path) as h5:
        assert h5.attrs["schema"] == "tumorfield-fit/2" and h5.attrs["method"] == "laplace"
        assert h5["fit/scans/0/prediction"].shape == h5["fit/origin/initial"].shape == (99, 117)
        assert h5["fit/scans/1"].attrs["dice@0.16"] == result.metrics[1]["dice@0.16"]
        assert list(h5["fit/parameters"].asstr()) == list(result.names)
        assert h5["fit/forecast/patient/120/probability"].shape == (99, 117)
    table = calibration_summary(result)
    assert "origin.centre.0" in table and "mm" in table and "dice@0.16" in table and "forecast patient day 120" in table


BAD = [
    ('{ arm = "nobody", t = 40.0, field = "tumor", file = "seg_40.nii.gz", kind = "segmentation", '
     "thresholds = { 1 = 0.8, 2 = 0.16 } }", r"fit.images\[0\].arm = 'nobody': must be one of the arms"),
    ('{ arm = "patient", t = 41.0, field = "tumor", file = "seg_40.nii.gz", kind = "segmentation", '
     "thresholds = { 1 = 0.8, 2 = 0.16 } }", r"fit.images\[0\].t = 41.0: must be a positive whole number"),
    ('{ arm = "patient", t = 40.0, field = "tumor", file = "seg_40.nii.gz", kind = "segmentation", '
     "thresholds = { 1 = 0.8 } }", r"has labels \[2\] that are not in thresholds \[1\]"),
    ('{ arm = "patient", t = 40.0, field = "tumor", file = "seg_40.nii.gz", kind = "segmentation", '
     "thresholds = { 1 = 0.8, 2 = 0.8 } }", r"thresholds must differ"),
    ('{ arm = "patient", t = 40.0, field = "tumor", file = "empty.nii.gz", kind = "segmentation", '
     "thresholds = { 1 = 0.8, 2 = 0.16 } }", r"is an empty segmentation"),
    ('{ arm = "patient", t = 40.0, field = "tumor", file = "missing.nii.gz", kind = "density" }',
     r"fit.images\[0\].file = '.*missing.nii.gz'"),
    ('{ arm = "patient", t = 40.0, field = "nothing", file = "seg_40.nii.gz", kind = "density" }',
     r"fit.images\[0\].field = 'nothing': must be a grid field"),
]  # fmt: skip


@pytest.mark.parametrize(("image", "message"), BAD)
def test_bad_scans_are_refused_before_compute(calibrated, image, message):
    directory = calibrated[0]
    grid = calibrated[1].problems["patient"].grid
    write_nifti(directory / "empty.nii.gz", np.zeros(grid.shape, np.int32), grid)
    text = FIT.format(held_back=HELD_BACK, scans="").replace(
        "[fit.parameters]", f"images = [{image}]\n[fit.parameters]"
    )
    (directory / "bad.toml").write_text(text)
    with pytest.raises(tf.config.ConfigError, match=message):
        Calibration(load_spec(directory / "bad.toml"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("centre = { init = [20.0, 24.0] }", "centre = { init = [-90.0, 24.0] }"), r"init lies outside the domain"),
        (("[fit.uncertainty]", "[fit.maps]\nrho = { prior_sd = -1.0, correlation_length = 5.0 }\n[fit.uncertainty]"),
         r"fit.maps.rho.prior_sd = -1.0"),
        (("[fit.uncertainty]", "[fit.maps]\nrho = { prior_sd = 0.5, correlation_length = 5.0 }\n[fit.uncertainty]"
          '\nrank = 999999'), r"fit.uncertainty.rank = 999999: must be ≤ the 11583 map unknowns"),
        (('method = "laplace"\nsamples = 24', 'method = "nuts"\n[fit.maps]\nrho = { prior_sd = 0.5, '
          'correlation_length = 5.0 }'),
         r"NUTS samples the scalars and a Gaussian origin"),
    ],
)  # fmt: skip
def test_bad_origin_maps_and_uncertainty_are_refused(calibrated, change, message):
    directory = calibrated[0]
    scans = "\n".join(SCAN.format(t=t) for t in SCANS)
    text = FIT.format(held_back=HELD_BACK, scans=scans).replace(*change)
    (directory / "bad.toml").write_text(text)
    with pytest.raises(tf.config.ConfigError, match=message):
        Calibration(load_spec(directory / "bad.toml"))


BOX = """[model]
name = "glioma"
[grid]
shape = [{n}, {n}]
length = [24.0, 24.0]
[time]
t_end = 40.0
dt = {dt}
save_every = 20.0
[parameters]
D_w = 0.3
rho = 0.05
[initial]
tumor = {{ centre = [12.0, 12.0], radius = 3.0, amplitude = 0.5 }}
[numerics]
cell_diffusion = "implicit"
[output]
precision = "float64"
"""

BOX_FIT = """[fit]
arms = {{ box = "box.toml" }}
max_iterations = 40
[[fit.images]]
arm = "box"
t = 20.0
field = "tumor"
file = "density_20.nii.gz"
kind = "density"
sigma = 0.05
[[fit.images]]
arm = "box"
t = 40.0
field = "tumor"
file = "density_40.nii.gz"
kind = "density"
sigma = 0.05
[fit.parameters]
rho = {{ init = 0.03, lower = 0.005, upper = 0.2 }}
[fit.origin]
field = "tumor"
centre = {{ init = [11.0, 13.0] }}
radius = {{ init = 3.0, lower = 1.0, upper = 8.0 }}
amplitude = {{ init = 0.5, lower = 0.05, upper = 1.0 }}
[fit.uncertainty]
method = "{method}"
chains = 2
warmup = 100
samples = 100
"""


def test_laplace_and_nuts_agree_on_a_small_problem(tmp_path):
    """Two noisy density scans (σ = 0.05, made at 32² and dt = 0.5) of a uniform-white box fitted at 16² with
    dt = 2: NUTS over ρ and the origin (centre, radius, amplitude) gives posterior sds within a factor 1.5
    of the Laplace (Gauss–Newton) standard errors, and its chains mix (R-hat < 1.1)."""
    truth = Problem.from_config(cfg.loads(BOX.format(n=32, dt=0.5)))
    traj = tf.simulate(truth.system, truth.grid, truth.y0, t_end=40.0, dt=0.5, params=truth.params,
                       numerics=truth.numerics, saveat=tf.SaveAt(every=20.0))  # fmt: skip
    noise = np.random.default_rng(4)
    for k, t in ((1, 20), (2, 40)):
        u = np.asarray(traj["tumor"][k]) + 0.05 * noise.standard_normal(truth.grid.shape)
        write_nifti(tmp_path / f"density_{t}.nii.gz", u, truth.grid)
    (tmp_path / "box.toml").write_text(BOX.format(n=16, dt=2.0))
    (tmp_path / "nuts.toml").write_text(BOX_FIT.format(method="nuts"))
    calibration = Calibration(load_spec(tmp_path / "nuts.toml"))
    nuts = calibrate(calibration)
    assert np.all(nuts.sampler["rhat"] < 1.1), nuts.sampler
    # the Laplace (Gauss–Newton) errors at the same estimate, as method = "laplace" computes them
    laplace = _scalar_uncertainty(calibration, jnp.asarray(nuts.estimate), {}).std_error
    ratio = nuts.std_error / laplace
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), (laplace, nuts.std_error)
    assert nuts.samples.shape == (2, 100, 5) and nuts.names[1:3] == ("origin.centre.0", "origin.centre.1")
    assert abs(nuts.estimate[0] / 0.05 - 1) < 0.1 and np.hypot(*(nuts.estimate[1:3] - 12.0)) < 1.5


def test_the_unknowns_transforms_round_trip_with_finite_gradients():
    """Log-bounded scalars and linearly bounded centre coordinates (negative world mm): θ → z → θ, and the
    gradients of θ(z) and of log |dθ/dz| (NUTS' density) are finite — no NaN from an unselected branch."""
    import jax

    from tumorfield.fit._calibration import Unknowns

    unknowns = Unknowns(("D_w", "origin.centre.0"), np.array([0.1, -5.0]), np.array([0.01, -50.0]),
                        np.array([1.0, 20.0]), np.array([True, False]))  # fmt: skip
    z = jnp.asarray(unknowns.unconstrained(unknowns.init))
    np.testing.assert_allclose(np.asarray(unknowns.natural(z)), unknowns.init, rtol=1e-12)
    for gradient in (jax.grad(unknowns.log_jacobian)(z), jax.grad(lambda v: unknowns.natural(v).sum())(z)):
        assert np.all(np.isfinite(np.asarray(gradient)))
