"""Calibration from images, the spatial unknowns: a ρ(x) map's credible band against its truth, the initial
tumour as a whole map (``[fit.origin] kind = "map"``), a coarse-to-fine grid continuation, and scalar
data together with scans. Every truth is made on a grid twice as fine as the fit's, with a smaller step
and noise (no inverse crime): a 2D 32 mm box of uniform white matter, truth 32², fit 16²."""

from __future__ import annotations

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tumorfield as tf
from tumorfield import cli
from tumorfield import config as cfg
from tumorfield._schema import ConfigError
from tumorfield.fit._calibrate import _scalar_uncertainty, calibrate
from tumorfield.fit._calibration import Calibration, interpolate
from tumorfield.fit._prior import MapPrior
from tumorfield.fit._spec import load_spec
from tumorfield.fit._transform import with_values
from tumorfield.io import write_nifti
from tumorfield.problem import Problem

pytestmark = pytest.mark.slow

NOISE = 0.05
BOX = """[model]
name = "glioma"
[grid]
shape = [{n}, {n}]
length = [32.0, 32.0]
[time]
t_end = 40.0
dt = {dt}
save_every = 20.0
[parameters]
D_w = 0.3
rho = {rho}
[initial]
tumor = {{ centre = [{centre}], radius = {radius}, amplitude = {amplitude} }}
[numerics]
cell_diffusion = "implicit"
[output]
precision = "float64"
"""
TRUTH = {"rho": 0.05, "centre": "13.0, 18.0", "radius": 3.0, "amplitude": 0.5}
GUESS = {"rho": 0.05, "centre": "16.0, 16.0", "radius": 3.0, "amplitude": 0.5}


def _scans(directory, problem: Problem, params, seed: int, days=(20, 40), name="density") -> None:
    """Noisy density scans of ``problem`` run with ``params`` (the truth) at ``days``."""
    traj = tf.simulate(problem.system, problem.grid, problem.y0, t_end=max(days), dt=problem.dt, params=params,
                       numerics=problem.numerics, saveat=tf.SaveAt(every=float(np.gcd.reduce(days))))  # fmt: skip
    noise = np.random.default_rng(seed)
    every = int(np.gcd.reduce(days))
    for day in days:
        u = np.asarray(traj["tumor"][day // every]) + NOISE * noise.standard_normal(problem.grid.shape)
        write_nifti(directory / f"{name}_{day}.nii.gz", u, problem.grid)


def _fit_file(directory, body: str, days=(20, 40), name="density") -> str:
    scans = "".join(
        f'[[fit.images]]\narm = "box"\nt = {day:.1f}\nfield = "tumor"\nfile = "{name}_{day}.nii.gz"\n'
        f'kind = "density"\nsigma = {NOISE}\n'
        for day in days
    )
    path = directory / f"fit_{abs(hash(body)) % 10**8}.toml"
    path.write_text('[fit]\narms = { box = "box.toml" }\n' + body.replace("{scans}", scans))
    return str(path)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """Truth at 32² (dt 0.5) from a seed at (13, 18) mm; density scans at days 20, 40; the fit's arm at 16²
    (dt 1) starting from a seed at the centre."""
    directory = tmp_path_factory.mktemp("box")
    truth = Problem.from_config(cfg.loads(BOX.format(n=32, dt=0.5, **TRUTH)))
    _scans(directory, truth, truth.params, seed=4)
    (directory / "box.toml").write_text(BOX.format(n=16, dt=1.0, **GUESS))
    return directory, truth


def test_initial_map_recovers_where_and_how_much_tumour_there_was(box, tmp_path):
    """``kind = "map"``: the whole initial field with a log-odds Gaussian prior around the arm's own (wrong)
    seed. Its centre of mass lands within one voxel (2 mm) of the truth's, its mass within 10 %, and
    ``tumorfield fit`` writes the recovered initial tumour with its posterior sd."""
    directory, truth = box
    path = _fit_file(directory, """max_iterations = 60
{scans}
[fit.parameters]
rho = { init = 0.03, lower = 0.005, upper = 0.2 }
[fit.origin]
field = "tumor"
kind = "map"
prior_sd = 2.0
correlation_length = 3.0
[fit.uncertainty]
method = "laplace"
rank = 8
""")  # fmt: skip
    out = tmp_path / "FIT.h5"
    assert cli.main(["fit", path, "-o", str(out)]) == cli.EXIT_OK
    with h5py.File(out) as h5:
        u0, sd = h5["fit/maps/origin/estimate"][...], h5["fit/maps/origin/sd"][...]
        assert np.array_equal(h5["fit/origin/initial"][...], u0)
        rho = h5["fit/estimate"][0]
    grid = Problem.from_config(cfg.load(directory / "box.toml")).grid
    world, true_u0 = grid.world_coordinates(), np.asarray(truth.y0["tumor"])
    centre = (world * u0).reshape(2, -1).sum(axis=1) / u0.sum()
    true_centre = (truth.grid.world_coordinates() * true_u0).reshape(2, -1).sum(axis=1) / true_u0.sum()
    assert np.linalg.norm(centre - true_centre) < grid.spacing[0], (centre, true_centre)
    mass, true_mass = u0.sum() * grid.cell_volume, true_u0.sum() * truth.grid.cell_volume
    assert abs(mass / true_mass - 1) < 0.1, (mass, true_mass)
    assert abs(rho / TRUTH["rho"] - 1) < 0.1, rho
    assert sd.shape == grid.shape and np.all(np.isfinite(sd)) and sd.min() < 0.5 * sd.max()


def test_grid_continuation_fits_coarse_first_then_on_the_arms_grid(box):
    """``continuation = [2]``: the fit on the 8² grid starts the 16² one (origin and ρ carried over in
    world units), which converges to the truth's origin within a voxel and ρ within 10 %."""
    directory, _ = box
    spec = load_spec(_fit_file(directory, """max_iterations = 40
continuation = [2]
{scans}
[fit.parameters]
rho = { init = 0.03, lower = 0.005, upper = 0.2 }
[fit.origin]
field = "tumor"
centre = { init = [16.0, 16.0] }
radius = { init = 4.0, lower = 1.0, upper = 10.0 }
[fit.uncertainty]
method = "none"
"""))  # fmt: skip
    calibration = Calibration(spec)
    (stage,) = calibration.stages
    assert next(iter(stage.problems.values())).grid.shape == (8, 8)
    result = calibrate(calibration)
    assert [s["shape"] for s in result.stages] == [[8, 8]] and result.stages[0]["status"] == "converged"
    estimate = dict(zip(result.names, result.estimate, strict=True))
    assert np.hypot(estimate["origin.centre.0"] - 13.0, estimate["origin.centre.1"] - 18.0) < 2.0, estimate
    assert abs(estimate["rho"] / TRUTH["rho"] - 1) < 0.1, estimate
    # the coarse estimate carried onto the fine grid: the same natural values
    z_coarse = stage.z0() + 0.3
    theta_coarse, _ = stage.split(jnp.asarray(z_coarse))
    theta_fine, _ = calibration.split(jnp.asarray(calibration.transfer(stage, z_coarse)))
    np.testing.assert_allclose(theta_fine, theta_coarse, rtol=1e-9)


def test_maps_move_between_grids_by_world_coordinates():
    """``interpolate`` reproduces a linear field of world coordinates inside the box, and a map's whitened
    unknowns round-trip through its prior (``whiten``)."""
    coarse, fine = tf.Grid((8, 8), (32.0, 32.0)), tf.Grid((16, 16), (32.0, 32.0))
    linear = lambda g: 0.5 * g.world_coordinates()[0] - 0.25 * g.world_coordinates()[1]  # noqa: E731
    inside = (slice(2, -2), slice(2, -2))  # the outer ring samples beyond the coarse cell centres
    np.testing.assert_allclose(interpolate(linear(coarse), coarse, fine)[inside], linear(fine)[inside], atol=1e-12)
    prior = MapPrior.build(fine.shape, fine.spacing, 0.7, 4.0)
    z = jax.random.normal(jax.random.PRNGKey(0), fine.shape)
    np.testing.assert_allclose(prior.whiten(prior(z)), z, atol=1e-10)


@pytest.fixture(scope="module")
def rho_map(tmp_path_factory):
    """A truth whose ρ(x) = ρ̄ · exp(m(x)), m a draw of the prior (σ 0.5, ℓ 6 mm) on the 32² grid."""
    directory = tmp_path_factory.mktemp("rho_map")
    values = {"rho": 0.06, "centre": "16.0, 16.0", "radius": 5.0, "amplitude": 0.3}
    truth = Problem.from_config(cfg.loads(BOX.format(n=32, dt=0.5, **values)))
    prior = MapPrior.build(truth.grid.shape, truth.grid.spacing, 0.5, 6.0)
    m = np.asarray(prior.sample(jax.random.PRNGKey(2), 1)[0])
    _scans(directory, truth, with_values(truth.params, ("rho",), (0.06 * jnp.exp(m),)), seed=2)
    (directory / "box.toml").write_text(BOX.format(n=16, dt=1.0, **values))
    return directory, m


def test_rho_map_credible_band_covers_the_truth(rho_map):
    """The 90 % band ``m̂ ± 1.645 sd`` of the low-rank Laplace posterior of log ρ(x) covers ≥ 85 % of the
    cells of the truth (block-averaged onto the fit's grid), and is informative: where the tumour is, the
    posterior sd is under half the prior's."""
    directory, m_true = rho_map
    calibration = Calibration(load_spec(_fit_file(directory, """max_iterations = 100
{scans}
[fit.maps]
rho = { prior_sd = 0.5, correlation_length = 6.0 }
[fit.uncertainty]
method = "laplace"
rank = 40
""")))  # fmt: skip
    result = calibrate(calibration)
    assert result.status == "converged", result.minimum.message
    found = result.maps["rho"]
    m_hat, sd = found["log_perturbation"], found["sd"]
    truth = m_true.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    coverage = np.mean(np.abs(m_hat - truth) <= 1.645 * sd)
    assert 0.85 <= coverage <= 0.995, coverage
    tumour = result.predictions[1] >= 0.16
    prior_sd = np.asarray(calibration.priors["rho"].pointwise_sd())
    assert tumour.sum() > 20 and np.all(sd[tumour] < 0.5 * prior_sd[tumour]), (sd[tumour] / prior_sd[tumour]).max()


def test_scalar_data_join_the_scans(box):
    """``[fit] data`` with ``[[fit.images]]``: the residuals are the scans' then the data's; the data's
    prediction is the observable of an independent run (between steps: interpolated linearly in time, as
    in a scalar fit); and the data narrow ρ's Gauss–Newton error."""
    directory, truth = box
    rows = [f"box,{t},tumor_mass,{m},{0.02 * m}" for t, m in _masses(truth, (10.0, 30.0))]
    rows.append(f"box,25.5,tumor_mass,{_masses(truth, (25.5,))[0][1]},1.0")
    (directory / "mass.csv").write_text("arm,t,observable,value,sigma\n" + "\n".join(rows) + "\n")
    body = """{data}
{scans}
[fit.parameters]
rho = { init = 0.05, lower = 0.005, upper = 0.2 }
[fit.uncertainty]
method = "laplace"
"""
    only_scan = Calibration(load_spec(_fit_file(directory, body.replace("{data}", ""), days=(20,))))
    both = Calibration(load_spec(_fit_file(directory, body.replace("{data}", 'data = "mass.csv"'), days=(20,))))
    theta = jnp.asarray([TRUTH["rho"]])
    r, ok, _ = both.residuals(theta, {}, both.arrays)
    assert bool(ok) and r.shape == (16 * 16 + 3,)
    _, observed, _ = both.solve(theta, {})
    coarse = eqx.tree_at(lambda p: p.params, both.problems["box"], with_values(both.problems["box"].params,
                         ("rho",), theta))  # fmt: skip
    (m10, m30, m25, m26) = [m for _, m in _masses(coarse, (10.0, 30.0, 25.0, 26.0))]
    expected = [m10, m30, 0.5 * (m25 + m26)]
    np.testing.assert_allclose(both.data_prediction(observed), expected, rtol=1e-10)
    se_scan = _scalar_uncertainty(only_scan, theta, {}).std_error[0]
    se_both = _scalar_uncertainty(both, theta, {}).std_error[0]
    assert se_both < 0.9 * se_scan, (se_scan, se_both)


def _masses(problem: Problem, days) -> list[tuple[float, float]]:
    """``(t, ∫u dV)`` of a plain run of ``problem`` at ``days`` (multiples of a half day)."""
    traj = tf.simulate(problem.system, problem.grid, problem.y0, t_end=float(max(days)), dt=problem.dt,
                       params=problem.params, numerics=problem.numerics,
                       saveat=tf.SaveAt(every=problem.dt))  # fmt: skip
    return [(d, float(np.sum(traj["tumor"][round(d / problem.dt)]) * problem.grid.cell_volume)) for d in days]


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ('[fit.origin]\nfield = "tumor"\nkind = "map"\ncentre = { init = [1.0, 1.0] }\n', "fit.origin.centre",
         "is not a key of kind = 'map'"),
        ('[fit.origin]\nfield = "tumor"\nprior_sd = 1.0\ncentre = { init = [16.0, 16.0] }\n', "fit.origin.prior_sd",
         "is not a key of kind = 'gaussian'"),
        ('[fit.origin]\nfield = "tumor"\n', "fit.origin.centre", "is required"),
        ('[fit.origin]\nfield = "tumor"\nkind = "map"\nfloor = 0.7\n', "fit.origin.floor", "(0, 0.5)"),
        ('continuation = [2, 4]\n[fit.parameters]\nrho = { init = 0.05 }\n', "fit.continuation", "decreasing"),
        ('continuation = [1]\n[fit.parameters]\nrho = { init = 0.05 }\n', "fit.continuation", "> 1"),
        ('[fit.origin]\nfield = "tumor"\nkind = "map"\n[fit.uncertainty]\nmethod = "nuts"\n',
         "fit.uncertainty.method", "NUTS"),
    ],
)  # fmt: skip
def test_bad_origin_map_and_continuation_are_refused_before_compute(box, body, key, message):
    directory, _ = box
    head, _, tail = body.partition("[fit.")
    text = head + "{scans}\n" + ("[fit." + tail if tail else "")
    with pytest.raises(ConfigError) as error:
        Calibration(load_spec(_fit_file(directory, text)))
    assert key in str(error.value) and message in str(error.value), str(error.value)


def test_a_scan_time_beyond_the_arm_is_refused_in_one_line(box):
    """``t = 1e308`` (``t/dt`` overflows a float) and a time after the arm's ``time.t_end``: the key, the value
    and the rule, before any compute."""
    directory, _ = box
    for t in ("1e308", "41.0"):
        text = _fit_file(directory, "{scans}\n[fit.parameters]\nrho = { init = 0.05, lower = 0.005, upper = 0.2 }\n")
        path = directory / "late.toml"
        path.write_text(open(text).read().replace("t = 40.0", f"t = {t}"))
        with pytest.raises(ConfigError, match=r"fit.images\[1\].t = .*must lie in \(0, 40.0\] day"):
            Calibration(load_spec(path))
