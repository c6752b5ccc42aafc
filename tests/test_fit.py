"""``tumorfield fit`` and ``tumorfield.fit.Fit``: recovery, honest standard errors, rejected trials, bad input.

The problem is small enough for CI: Fisher–KPP with chemotaxis (fields u, c) on 16² cells,
100 steps of 0.05 day; fitted: the growth rate ``r`` and the chemoattractant secretion ``s_c``
(truth 1 and 1) from ``tumour_burden`` and ``max_u`` at days 1–5 with 5 % lognormal noise.
The synthetic data come from ``tf.simulate`` of the run config at the truth, not from the fit's
own code path. All programs are compiled once (the persistent cache of the module's temporary
directory serves the later ``Fit`` objects and the CLI run).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tumorfield as tf
from tumorfield import cli
from tumorfield import config as cfg
from tumorfield.fit import ConfigError, Fit
from tumorfield.fit._optimise import make_step, minimise

TRUTH = {"r": 1.0, "s_c": 1.0}
DAYS = (1, 2, 3, 4, 5)
OBSERVABLES = ("tumour_burden", "max_u")
NOISE = 0.05

ARM = """[model]
name = "fisher_kpp"
[grid]
shape = [16, 16]
length = [2.0, 2.0]
[time]
t_end = 5.0
dt = 0.05
save_every = 1.0
[parameters]
D = 2e-3
r = 1.0
chi = 0.05
s_c = 1.0
[initial]
amplitude = 0.5
radius = 0.3
[run]
compilation_cache = "{cache}"
"""

FIT = """[fit]
arms = {{ a = "arm.toml" }}
data = "obs.csv"
likelihood = "lognormal"
max_iterations = 40
tolerance = 1e-4
[fit.parameters]
r = {{ init = 0.6, lower = 0.1, upper = {r_upper} }}
s_c = {{ init = 2.0, lower = 0.1, upper = {s_upper} }}
"""


def _clean_observations(arm_path) -> np.ndarray:
    """``OBSERVABLES`` at ``DAYS`` of the run config at the truth, by ``tf.simulate`` + ``observe``."""
    config = cfg.load(arm_path)
    model, grid = config.model, config.grid
    params = model.params(grid)
    traj = tf.simulate(
        model.system,
        grid,
        model.initial_state(grid),
        t_end=5.0,
        dt=0.05,
        params=params,
        numerics=tf.Numerics(dtype="float32"),
        saveat=tf.SaveAt(every=1.0),
    )
    rows = []
    for day in DAYS:
        observed = model.observe({n: traj[n][day] for n in model.system.fields}, params, traj.t[day], grid)
        rows += [float(observed[name]) for name in OBSERVABLES]
    return np.asarray(rows)


def _write_data(path, values, sigma=NOISE, arm="a", t=None, observable=None) -> None:
    lines = ["arm,t,observable,value,sigma"]
    cells = [(day, name) for day in DAYS for name in OBSERVABLES]
    for (day, name), value in zip(cells, values, strict=True):
        lines.append(f"{arm},{t if t is not None else float(day)},{observable or name},{float(value)!r},{sigma}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """A directory with the arm, the clean observations and 5 %-noise data, and a loaded ``Fit``."""
    directory = tmp_path_factory.mktemp("fit")
    (directory / "arm.toml").write_text(ARM.format(cache=directory / "cache"))
    clean = _clean_observations(directory / "arm.toml")
    noisy = clean * np.exp(NOISE * np.random.default_rng(11).standard_normal(clean.shape))
    _write_data(directory / "obs.csv", noisy)
    (directory / "fit.toml").write_text(FIT.format(r_upper=5.0, s_upper=10.0))
    return directory, clean, Fit.load(directory / "fit.toml")


def test_recovers_two_parameters_within_three_standard_errors(problem):
    directory, clean, fit = problem
    result = fit.run()
    truth = np.array([TRUTH[n] for n in result.names])
    z = (result.estimate - truth) / result.std_error
    print(
        f"\nestimate {result.estimate}, SE {result.std_error}, z {z}, {result.n_iterations} iterations, "
        f"reduced chi2 {result.reduced_chi2:.2f}, corr {result.correlation[0, 1]:+.3f}"
    )
    assert result.converged and result.status == "converged", result.message
    assert np.all(np.abs(z) < 3.0), z
    # the data pin both down: a few per cent, not the > 50 % that would warn
    assert np.all(result.std_error / result.estimate < 0.2) and not result.warnings, result.warnings
    # the prediction at the estimate is the one the history ends on, and fits the data to ~the noise
    np.testing.assert_allclose(result.history["loss"][-1], result.loss)
    assert abs(np.std(result.residuals) - 1.0) < 0.6
    assert result.history["r"][0] == pytest.approx(0.6) and result.history["loss"][0] > 10 * result.loss


def test_standard_errors_match_the_scatter_over_noise_draws(problem):
    """Honest uncertainties: 8 noise draws of the same observations, fitted with the compiled programs
    of the fixture's ``Fit``; the scatter of the estimates matches the Gauss–Newton SE (within the
    factor ~1.6 that 8 draws resolve: the sd of a sample sd of 8 is ~27 %)."""
    _, clean, fit = problem
    rng = np.random.default_rng(5)
    estimates, errors = [], []
    for _ in range(8):
        result = fit.run(values=clean * np.exp(NOISE * rng.standard_normal(clean.shape)))
        # float32 fields: the last iteration may rise at the loss's noise floor (~1e-6 of it): stalled, and the
        # estimate is then the lowest point of the history
        floor = result.status == "stalled" and "the loss rose by" in result.message
        assert result.converged or floor, result.message
        assert result.loss == min(result.history["loss"])
        estimates.append(result.estimate)
        errors.append(result.std_error)
    scatter, se = np.std(estimates, axis=0, ddof=1), np.mean(errors, axis=0)
    print(f"\nscatter of estimates {scatter}, mean Gauss–Newton SE {se}, ratio {scatter / se}")
    assert np.all((scatter / se > 1 / 1.6) & (scatter / se < 1.6)), scatter / se


def test_an_arm_with_implicit_cell_diffusion_is_fitted_with_it(problem, tmp_path):
    """The arm's ``numerics.cell_diffusion`` reaches the fit's rollouts: the loss and its gradient at
    the truth are finite with the implicit (MPRK22, cyclic reduction) diffusion, the loss differs from
    the explicit run's by the schemes' splitting error only, and the gradient matches a central
    difference."""
    directory, _, explicit = problem
    implicit_arm = (directory / "arm.toml").read_text() + '[numerics]\ncell_diffusion = "implicit"\n'
    (tmp_path / "arm.toml").write_text(implicit_arm)
    (tmp_path / "obs.csv").write_text((directory / "obs.csv").read_text())
    (tmp_path / "fit.toml").write_text((directory / "fit.toml").read_text())
    implicit = Fit.load(tmp_path / "fit.toml")
    assert [g.problem.numerics.cell_diffusion for g in implicit.groups] == [tf.ImplicitDiffusion()]
    assert [g.problem.numerics.cell_diffusion for g in explicit.groups] == [tf.ExplicitDiffusion()]
    truth = [TRUTH[name] for name in implicit.names]
    losses = [fit.loss(truth) for fit in (explicit, implicit)]
    assert np.all(np.isfinite(losses)) and losses[0] != losses[1]
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.05)
    z = jnp.asarray(implicit.bounds.to_unconstrained(np.asarray(truth)))
    gradient = np.asarray(jax.grad(implicit._loss)(z, implicit.arrays))
    assert np.all(np.isfinite(gradient))
    # the directional derivative against a central difference of the same (implicit) loss
    direction, h = np.ones_like(gradient) / np.sqrt(gradient.size), 1e-4
    plus, minus = (float(implicit._loss_jit(z + s * h * direction, implicit.arrays)) for s in (1.0, -1.0))
    np.testing.assert_allclose(gradient @ direction, (plus - minus) / (2 * h), rtol=5e-3)  # float32 fields


def test_the_transport_coefficients_are_fitted_like_any_parameter(problem, tmp_path):
    """``D``, ``chi``, ``D_c`` and ``k_c`` of ``fisher_kpp`` come from its parameter pytree (not
    numbers baked into the System): a fit of all four has a finite loss, a gradient with every
    component non-zero, and it matches a central difference of the same loss; a changed ``D``
    changes the loss as a run at that ``D`` does."""
    directory, _, _ = problem
    (tmp_path / "arm.toml").write_text((directory / "arm.toml").read_text())
    (tmp_path / "obs.csv").write_text((directory / "obs.csv").read_text())
    text = FIT.format(r_upper=5.0, s_upper=10.0).split("[fit.parameters]")[0] + (
        "[fit.parameters]\nD = { init = 2e-3, lower = 1e-4, upper = 1e-2 }\n"
        "chi = { init = 0.05, lower = 1e-3, upper = 0.5 }\n"
        "D_c = { init = 0.1, lower = 1e-2, upper = 1.0 }\nk_c = { init = 1.0, lower = 0.1, upper = 10.0 }\n"
    )
    (tmp_path / "fit.toml").write_text(text)
    fit = Fit.load(tmp_path / "fit.toml")
    assert fit.names == ("D", "chi", "D_c", "k_c")
    start = np.array([2e-3, 0.05, 0.1, 1.0])
    z = jnp.asarray(fit.bounds.to_unconstrained(start))
    gradient = np.asarray(jax.grad(fit._loss)(z, fit.arrays))
    assert np.all(np.isfinite(gradient)) and np.all(gradient != 0), gradient
    direction, h = gradient / np.linalg.norm(gradient), 1e-3
    plus, minus = (float(fit._loss_jit(z + s * h * direction, fit.arrays)) for s in (1.0, -1.0))
    np.testing.assert_allclose(np.linalg.norm(gradient), (plus - minus) / (2 * h), rtol=5e-3)  # float32 fields
    # the fit's D is the run's D: its loss at D = 4e-3 is that of the data against a run with D = 4e-3
    (tmp_path / "arm4.toml").write_text((directory / "arm.toml").read_text().replace("D = 2e-3", "D = 4e-3"))
    rows = _clean_observations(tmp_path / "arm4.toml")
    observed = np.loadtxt(tmp_path / "obs.csv", delimiter=",", skiprows=1, usecols=3)
    expected = 0.5 * np.sum(np.square(np.log(rows / observed) / NOISE))
    assert fit.loss([4e-3, 0.05, 0.1, 1.0]) == pytest.approx(expected, rel=1e-3)


def test_a_failed_run_is_an_infinite_loss_not_an_exception(problem):
    directory, _, _ = problem
    # without sub-cycling (numerics.max_substeps = 1) the arm's run fails where taxis outgrows dt
    (directory / "arm_nosub.toml").write_text(ARM.format(cache=directory / "cache") + "[numerics]\nmax_substeps = 1\n")
    wide = FIT.format(r_upper=5.0, s_upper=1000.0).replace('"arm.toml"', '"arm_nosub.toml"')
    (directory / "wide.toml").write_text(wide)
    fit = Fit.load(directory / "wide.toml")
    # s_c = 300: the attractant steepens until taxis passes the positivity limit of dt = 0.05
    assert fit.loss([1.0, 300.0]) == np.inf
    assert np.isfinite(fit.loss([1.0, 1.0]))
    # a fit that starts there ends at once, as a status naming the failed arm (the CLI exits 3)
    (directory / "wide.toml").write_text(wide.replace("init = 2.0", "init = 300.0"))
    result = Fit.load(directory / "wide.toml").run()
    assert result.status == "failed" and not result.converged and result.n_iterations == 0
    assert "the runs of a failed" in result.message and np.all(np.isnan(result.std_error)), result.message


def test_a_fit_honours_the_arms_sub_cycling(problem):
    """With the arm's default sub-cycling the run at s_c = 300 (which fails without it) completes: the
    fit's loss equals ½ Σ r² of an independent ``tf.simulate`` with the arm's own numerics, and the
    gradient (reverse mode through the checkpointed sub-step loop) and the Gauss–Newton Jacobian
    (forward mode through ``Numerics.forward_mode``) are finite."""
    directory, _, _ = problem
    (directory / "sub.toml").write_text(FIT.format(r_upper=5.0, s_upper=1000.0))
    fit = Fit.load(directory / "sub.toml")
    config = cfg.load(directory / "arm.toml", ["parameters.s_c=300.0"])
    model, grid = config.model, config.grid
    params = tf.cast_floats(model.params(grid), "float32")
    traj = tf.simulate(model.system, grid, model.initial_state(grid), t_end=5.0, dt=0.05, params=params,
                       numerics=config.numerics, saveat=tf.SaveAt(every=1.0))  # fmt: skip
    assert int(np.max(np.asarray(traj.stats.substeps))) >= 2  # it did sub-cycle
    data = np.loadtxt(directory / "obs.csv", delimiter=",", skiprows=1, usecols=(1, 3, 4), dtype=object)
    predicted = []
    for day, name in [(day, name) for day in DAYS for name in OBSERVABLES]:
        observed = model.observe({n: traj[n][day] for n in model.system.fields}, params, traj.t[day], grid)
        predicted.append(float(observed[name]))
    values = np.asarray(data[:, 1], float)
    expected = 0.5 * np.sum(((np.log(predicted) - np.log(values)) / NOISE) ** 2)
    assert fit.loss([1.0, 300.0]) == pytest.approx(expected, rel=1e-3)
    result = Fit.load(directory / "sub.toml", ["fit.max_iterations=1"]).run()
    assert np.all(np.isfinite(result.hessian)), result.message


def test_the_line_search_backs_off_from_failed_trials():
    """``L = (z − 0.9)²`` for ``z < 1``, failed (∞, NaN gradient) beyond: the first trial (a unit step
    from z = 0.5) fails; the fit goes on and finds 0.9. Every evaluated value is recorded."""
    seen = []

    def loss(z, arrays):
        jax.debug.callback(lambda v: seen.append(float(v)), z[0])
        inside = (z[0] - 0.9) ** 2 + 0.0 * jnp.sqrt(1.0 - z[0])  # NaN gradient beyond 1
        return jnp.where(z[0] < 1.0, inside, jnp.inf)

    optimiser, step = make_step(loss, 20)
    found = minimise(optimiser, step, np.array([0.5]), None, max_iterations=20, tolerance=1e-10)
    assert found.converged and found.z[0] == pytest.approx(0.9, abs=1e-4), found
    assert any(v >= 1.0 for v in seen), seen  # trials did fail ...
    assert all(np.isfinite(found.history.gradient))  # ... and nothing NaN reached the optimiser's memory
    assert isinstance(optimiser, optax.GradientTransformationExtraArgs)


def test_cli_writes_fit_h5_and_prints_the_table(problem, capsys):
    directory, _, fit = problem
    out = directory / "FIT.h5"
    code = cli.main(["fit", str(directory / "fit.toml"), "-o", str(out), "--set", "fit.max_iterations=40"])
    printed = capsys.readouterr()
    assert code == cli.EXIT_OK, printed.err
    lines = printed.out.strip().splitlines()
    assert lines[0].startswith("fit converged after") and any(line.startswith("r ") for line in lines)
    assert "strongest correlations:" in printed.out and lines[-1].startswith("  r ~ s_c:")
    with h5py.File(out) as h5:
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["fit/parameters"][()]]
        assert names == ["r", "s_c"] and h5.attrs["status"] == "converged" and h5.attrs["converged"]
        assert h5.attrs["schema"] == "tumorfield-fit/1" and "git_commit" in h5.attrs and "jax_version" in h5.attrs
        assert "[fit]" in h5.attrs["config"] and "[model]" in h5["fit/arms/a"].attrs["config"]
        n = int(h5.attrs["n_iterations"])
        assert h5["fit/history/loss"].shape == h5["fit/history/r"].shape == (n + 1,)
        assert h5["fit/correlation"].shape == (2, 2) and np.all(h5["fit/std_error"][()] > 0)
        t = h5["fit/prediction/a/t"][()]
        assert t[0] == 0.0 and t[-1] == pytest.approx(5.0) and h5["fit/prediction/a/max_u"].shape == t.shape
        assert h5["fit/data/value"].shape == (len(DAYS) * len(OBSERVABLES),)
    # the file reads back (tf.open_fit), inspect summarises it, plot draws data against prediction per observable
    stored = tf.open_fit(out)
    assert stored.schema == "tumorfield-fit/1" and stored.names == ("r", "s_c") and stored.status == "converged"
    assert stored.estimates["r"] == pytest.approx(float(h5py.File(out)["fit/estimate"][0]))
    assert stored.data["value"].shape == (10,) and "max_u" in stored.predictions["a"] and "[fit]" in stored.config
    assert cli.main(["inspect", str(out)]) == cli.EXIT_OK
    shown = capsys.readouterr().out
    assert "schema:      tumorfield-fit/1 (scalar fit)" in shown and "tumour_burden" in shown
    assert next(line for line in shown.splitlines() if line.startswith("r ")).split()[1] == f"{stored.estimate[0]:.6g}"
    assert cli.main(["plot", str(out), "-o", str(directory / "figures")]) == cli.EXIT_OK
    drawn = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in drawn) == ["fit_a_max_u.png", "fit_a_tumour_burden.png", "fit_loss.png"]
    assert all(Path(p).stat().st_size > 1000 for p in drawn)
    assert cli.main(["compare", str(out), "-o", str(directory / "c")]) == cli.EXIT_INPUT
    assert "is a fit file (tumorfield-fit/1)" in capsys.readouterr().err
    assert cli.main(["fit", str(directory / "fit.toml"), "-o", str(out)]) == cli.EXIT_INPUT  # exists
    assert "exists" in capsys.readouterr().err
    other = directory / "other.h5"
    for bad, why in ((["--profile", "D"], "--profile = 'D'"), (["--profile", "r", "--profile-points", "2"], "≥ 3")):
        assert cli.main(["fit", str(directory / "fit.toml"), "-o", str(other), *bad]) == cli.EXIT_INPUT
        assert why in capsys.readouterr().err and not other.exists()  # refused before any compute


def test_profile_likelihood_agrees_with_gauss_newton_on_a_nearly_linear_problem(problem, tmp_path):
    """The profile of ``r``: minimal at the estimate, rising on both sides past the 95 % threshold,
    ``r`` held at each scanned value while ``s_c`` is re-optimised, and (two well-determined
    parameters, 5 % noise) an interval within 25 % of the Gauss–Newton ``±1.96 SE`` in width."""
    _, _, fit = problem
    result = fit.run()
    found = fit.profile(result, "r", points=7)
    j = result.names.index("r")
    print(f"\nprofile of r: {found.values} → {found.loss - result.loss}; interval [{found.lower}, {found.upper}]")
    assert found.bounded and found.lower < result.estimate[j] < found.upper
    assert np.all(found.loss >= result.loss - 1e-6 * result.loss) and found.minimum_loss == pytest.approx(result.loss)
    np.testing.assert_allclose(found.points[:, j], found.values, rtol=1e-9)  # the mask held r fixed ...
    assert np.ptp(found.points[:, 1 - j]) > 0.1 * result.std_error[1 - j]  # ... and s_c moved
    width, gauss_newton = found.upper - found.lower, 2 * 1.96 * result.std_error[j]
    assert 0.75 < width / gauss_newton < 1.25, (width, gauss_newton)
    assert "95 % intervals" in result.summary() and not any("profile" in w for w in result.warnings)
    path = result.write(tmp_path / "FIT.h5")
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(h5["fit/profile/r/value"][()], found.values)
        assert h5["fit/profile/r/points"].shape == (len(found.values), 2)
        assert h5["fit/profile/r"].attrs["lower"] == pytest.approx(found.lower)
    with pytest.raises(ConfigError, match="--profile"):
        fit.profile(result, "D")


# --- bad input: exit 2 with one line naming the file, the key and the rule, before any compute --------


def _bad(directory, data=None, fit=None, arm=None):
    """Write a fit file (``fit``: replacements in the default one), data (``data``: CSV text) and,
    with ``arm`` (replacements in the arm's run config), an arm of its own."""
    text = FIT.format(r_upper=5.0, s_upper=10.0)
    for old, new in (fit or {}).items():
        assert old in text
        text = text.replace(old, new)
    if arm:
        arm_text = (directory / "arm.toml").read_text()
        for old, new in arm.items():
            assert old in arm_text
            arm_text = arm_text.replace(old, new)
        (directory / "bad_arm.toml").write_text(arm_text)
        text = text.replace('"arm.toml"', '"bad_arm.toml"')
    (directory / "bad.toml").write_text(text.replace('"obs.csv"', '"bad.csv"'))
    good = (directory / "obs.csv").read_text()
    (directory / "bad.csv").write_text(good if data is None else data(good))
    return directory / "bad.toml"


def _replace_first_row(good: str, **columns) -> str:
    header, first, *rest = good.splitlines()
    cells = dict(zip(header.split(","), first.split(","), strict=True)) | columns
    return "\n".join([header, ",".join(str(cells[c]) for c in header.split(",")), *rest]) + "\n"


BAD = {
    "unknown arm": ({"data": lambda g: _replace_first_row(g, arm="b")}, "line 2: arm = 'b'"),
    "unknown observable": ({"data": lambda g: _replace_first_row(g, observable="volume")}, "observable = 'volume'"),
    "t beyond t_end": ({"data": lambda g: _replace_first_row(g, t="6.0")}, "must lie in [0, 5.0]"),
    "sigma not positive": ({"data": lambda g: _replace_first_row(g, sigma="0")}, "sigma = 0.0: must be > 0"),
    "lognormal value not positive": ({"data": lambda g: _replace_first_row(g, value="-1")}, "must be > 0 with"),
    "empty data": ({"data": lambda g: g.splitlines()[0] + "\n"}, "holds no observations"),
    "missing column": ({"data": lambda g: g.replace("sigma", "sd")}, "must name the columns"),
    "parameter not in the model": ({"fit": {"s_c =": "k_x ="}}, "fit.parameters.k_x"),
    "parameter not a leaf": ({"arm": {"chi = 0.05": "chi = 0.0"}, "fit": {"s_c =": "k_c ="}}, "not a floating leaf"),
    "init outside the range": ({"fit": {"init = 0.6, lower = 0.1": "init = -0.5, lower = 0.1"}}, "must be ≥ 0"),
    "init outside the bounds": ({"fit": {"init = 0.6": "init = 7.0"}}, "strictly inside (0.1, 5.0)"),
    "lower at 0": ({"fit": {"init = 0.6, lower = 0.1": "init = 0.6, lower = 0.0"}}, "needs 0 < lower < upper"),
    "unknown [fit] key": ({"fit": {"max_iterations": "max_iteration"}}, "did you mean 'max_iterations'"),
    "bad likelihood": ({"fit": {'"lognormal"': '"poisson"'}}, "allowed values are 'normal', 'lognormal'"),
}


def _with_units(good: str, units: str) -> str:
    """The CSV with a ``units`` column, ``units`` on every row."""
    header, *rows = good.splitlines()
    return "\n".join([header + ",units", *(row + f",{units}" for row in rows)]) + "\n"


BAD |= {
    "a volume of another dimension": ({"data": lambda g: _with_units(g, "mm^3")}, "2D run's volume is an area"),
    "units pint does not know": ({"data": lambda g: _with_units(g, "bogons")}, "pint does not know"),
    "scale of an unknown observable": (
        {"fit": {"[fit.parameters]": "[fit.observables]\nvolume = { scale = 2.0 }\n[fit.parameters]"}},
        "fit.observables.volume = 'volume'",
    ),
    "initial key not differentiable": (
        {"fit": {"s_c = { init": '"initial.centre" = { init'}},
        "fit.parameters.initial.centre = 'initial.centre': is not an [initial] key",
    ),
    "initial key without bounds": (
        {"fit": {"s_c = { init = 2.0, lower = 0.1, upper = 10.0 }": '"initial.radius" = { init = 0.3 }'}},
        "fit.parameters.initial.radius.lower = None: is required for an [initial] key",
    ),
    "initial key outside its rule": (
        {
            "fit": {
                "s_c = { init = 2.0, lower = 0.1,": '"initial.amplitude" = { init = 0.5, lower = 0.1,',
                "upper = 10": "upper = 2",
            }
        },
        "fit.parameters.initial.amplitude.upper = 2.0: arm 'a': initial.amplitude = 2.0: must lie in [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_naming_the_key(problem, case, capsys):
    directory, _, _ = problem
    kwargs, expected = BAD[case]
    path = _bad(directory, **kwargs)
    code = cli.main(["fit", str(path), "-o", str(directory / "never.h5")])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_INPUT and len(err.splitlines()) == 1, err
    assert expected in err and ("bad.csv" in err or "bad.toml" in err), err
    assert not (directory / "never.h5").exists()


def test_bounds_default_to_the_documented_range_and_refuse_what_it_excludes(tmp_path):
    """voloshin2015: ``ec50_p`` has the range (0, ∞): ``lower`` defaults to nothing (0 is not > 0) and
    must be given; ``theta50`` has (0, 1]: its ``upper`` defaults to 1, and ``upper = 2`` is refused."""
    arm = tmp_path / "arm.toml"
    arm.write_text(
        '[model]\nname = "voloshin2015"\n[grid]\nshape = [8, 8]\nlength = [4.0, 4.0]\n'
        "[time]\nt_end = 1.0\ndt = 0.05\nsave_every = 1.0\n[initial]\ntumor_radius = 0.8\n"
    )
    (tmp_path / "obs.csv").write_text("arm,t,observable,value,sigma\na,1.0,tumor_volume,2.0,0.1\n")
    fit = '[fit]\narms = { a = "arm.toml" }\ndata = "obs.csv"\n[fit.parameters]\n'
    (tmp_path / "f.toml").write_text(fit + "theta50 = { init = 0.02, lower = 0.01 }\n")
    assert Fit.load(tmp_path / "f.toml").bounds.upper.tolist() == [1.0]
    (tmp_path / "f.toml").write_text(fit + "theta50 = { init = 0.02, lower = 0.01, upper = 2.0 }\n")
    with pytest.raises(ConfigError, match=r"fit.parameters.theta50.upper = 2.0: parameters.theta50 must be"):
        Fit.load(tmp_path / "f.toml")
    (tmp_path / "f.toml").write_text(fit + "ec50_p = { init = 50.0 }\n")
    with pytest.raises(ConfigError, match=r"fit.parameters.ec50_p.lower = None: is required"):
        Fit.load(tmp_path / "f.toml")
    (tmp_path / "f.toml").write_text(fit + "host_il1b = { init = 0.5, lower = 0.1, upper = 1.0 }\n")
    with pytest.raises(ConfigError, match="unknown parameter of model 'voloshin2015'"):
        Fit.load(tmp_path / "f.toml")


# --- reverse-mode memory of the fit's loss does not grow with the number of steps ----------------


def _fit_gradient_temp_bytes(directory, steps: int) -> int:
    """XLA temp memory of ``jit(grad(L))`` for data at two times, the last after ``steps`` steps."""
    t_end = steps * 0.001
    arm = ARM.replace("dt = 0.05", "dt = 0.001").replace("t_end = 5.0", f"t_end = {t_end}")
    arm = arm.replace("chi = 0.05", "chi = 0.0")  # one field: the smallest program that shows it
    (directory / f"arm{steps}.toml").write_text(arm.replace("save_every = 1.0", f"save_every = {t_end}"))
    (directory / f"obs{steps}.csv").write_text(
        "arm,t,observable,value,sigma\n"
        + "".join(f"a,{t!r},{name},0.5,0.1\n" for t in (steps // 2 * 0.001, t_end) for name in OBSERVABLES)
    )
    (directory / f"fit{steps}.toml").write_text(
        FIT.format(r_upper=5.0, s_upper=10.0)
        .replace("arm.toml", f"arm{steps}.toml")
        .replace("obs.csv", f"obs{steps}.csv")
        .replace("s_c = { init = 2.0, lower = 0.1, upper = 10.0 }", "D = { init = 2e-3, lower = 1e-4, upper = 1e-2 }")
    )
    fit = Fit.load(directory / f"fit{steps}.toml")
    z = jnp.asarray(fit.bounds.to_unconstrained(fit.bounds.init))
    compiled = jax.jit(jax.grad(fit._loss)).lower(z, fit.arrays).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_reverse_mode_memory_of_the_loss_is_sublinear_in_steps(tmp_path):
    """8× the steps (200 → 1600, observations at two times): the two-level checkpointed rollout
    stores ~√8 ≈ 2.8× the states; a tape of every step would be 8×."""
    short, long = _fit_gradient_temp_bytes(tmp_path, 200), _fit_gradient_temp_bytes(tmp_path, 1600)
    tape = 1600 * 16 * 16 * 4  # u, float32, every step
    print(f"\nfit loss gradient temp bytes: 200 steps {short}, 1600 steps {long} ({long / short:.2f}×); tape ≥ {tape}")
    assert long < 4.0 * short and long < 0.2 * tape


# --- Gauss–Newton uncertainty and identifiability warnings (no simulation) ------------------------


def test_gauss_newton_is_the_exact_covariance_of_linear_least_squares_and_warns():
    """For ``r = (Aθ − y)/σ`` the Laplace covariance ``(JᵀJ)⁻¹`` is exact: compare with the scatter of
    least-squares estimates over 4000 noise draws; then a near-collinear and a null column warn."""
    from tumorfield.fit._uncertainty import gauss_newton, warnings

    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 1.0, 12)
    a = np.stack([np.ones_like(t), t], axis=1)
    sigma, theta = 0.1, np.array([1.0, 2.0])
    draws = np.stack([np.linalg.lstsq(a, a @ theta + sigma * rng.standard_normal(t.shape), rcond=None)[0]
                      for _ in range(4000)])  # fmt: skip
    found = gauss_newton(a / sigma, rng.standard_normal(t.shape))
    np.testing.assert_allclose(found.std_error, draws.std(axis=0), rtol=0.05)
    np.testing.assert_allclose(found.correlation[0, 1], np.corrcoef(draws.T)[0, 1], atol=0.03)
    assert warnings(("a", "b"), theta, found) == []
    collinear = np.stack([t, t + 1e-3 * t**2], axis=1) / sigma
    said = warnings(("a", "b"), theta, gauss_newton(collinear, np.zeros_like(t)))
    assert any("a and b are correlated" in w for w in said) and any(
        w.startswith("a: relative standard error") for w in said
    )
    null = gauss_newton(np.stack([t, 0 * t], axis=1) / sigma, np.zeros_like(t))
    assert np.isfinite(null.std_error[0]) and null.std_error[1] == np.inf
    assert warnings(("a", "b"), theta, null) == [
        "b is not identifiable from these data (the Gauss–Newton Hessian is singular along it)"
    ]


# --- the compiled iteration: one copy of the gradient, kept across processes by jax.export --------


def test_the_hoisted_line_search_is_optaxs_own():
    """``_linesearch.scale_by_zoom_linesearch`` (one evaluation of ``L, ∇L`` in the program) takes
    exactly optax's steps: the same iterates, values and trial counts as ``optax.lbfgs`` with
    ``optax.scale_by_zoom_linesearch``, on a Rosenbrock valley with an infinite wall (failed trials)."""
    from tumorfield.fit._linesearch import scale_by_zoom_linesearch

    def f(z):
        valley = jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)
        return jnp.where(z[0] > 1.3, jnp.inf, valley)

    def iterates(linesearch):
        optimiser = optax.lbfgs(linesearch=linesearch)

        @jax.jit
        def step(z, state):
            value, grad = optax.value_and_grad_from_state(f)(z, state=state)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and int64 indices
                updates, state = optimiser.update(grad, state, z, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(z, updates), state

        z = jnp.array([-1.2, 1.0, 0.5, -0.3], jnp.result_type(float))
        state, out = optimiser.init(z), []
        for _ in range(30):
            z, state = step(z, state)
            out.append((np.asarray(z), int(optax.tree.get(state, "num_linesearch_steps"))))
        return out

    ours = iterates(scale_by_zoom_linesearch(20, initial_guess_strategy="one"))
    theirs = iterates(optax.scale_by_zoom_linesearch(20, initial_guess_strategy="one"))
    assert sum(trials for _, trials in theirs) > len(theirs)  # the zoom phase ran
    for (z_ours, n_ours), (z_theirs, n_theirs) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(z_ours, z_theirs)
        assert n_ours == n_theirs


def _copy_problem(problem, directory, cache):
    """The fixture's arm, data and fit file in ``directory``, with the persistent cache ``cache``."""
    source, _, _ = problem
    (directory / "arm.toml").write_text(ARM.format(cache=cache))
    (directory / "obs.csv").write_text((source / "obs.csv").read_text())
    (directory / "fit.toml").write_text(FIT.format(r_upper=5.0, s_upper=10.0))
    return directory / "fit.toml"


def test_the_iteration_is_exported_reused_and_never_stale(problem, tmp_path):
    """A fit writes its iteration as a jax.export file in the persistent cache; a new ``Fit`` of the
    same problem loads it instead of tracing and iterates identically; a file whose header names
    another key (stale: other code, options or shapes) is not used but traced anew and replaced."""
    path = _copy_problem(problem, tmp_path, tmp_path / "cache")
    overrides = ["fit.max_iterations=3"]
    first = Fit.load(path, overrides)
    a = first.run()
    assert first._step.source == "traced, exported"
    files = list((tmp_path / "cache" / "tumorfield-fit").glob("*.jaxexport"))
    assert [f.stem for f in files] == [first._step.key]
    second = Fit.load(path, overrides)
    b = second.run()
    assert second._step.source == "export loaded" and second._step.key == first._step.key
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    np.testing.assert_array_equal(a.estimate, b.estimate)
    # stale: the same file name, written for another key
    data = files[0].read_bytes().split(b"\n", 2)
    files[0].write_bytes(b"\n".join([data[0], b"0" * 64, data[2]]))
    third = Fit.load(path, overrides)
    np.testing.assert_array_equal(third.run().history["loss"], a.history["loss"])
    assert third._step.source == "traced, exported" and files[0].read_bytes().split(b"\n", 2)[1] != b"0" * 64
    # damaged: not used either
    files[0].write_bytes(files[0].read_bytes()[:200])
    fourth = Fit.load(path, overrides)
    fourth.run()
    assert fourth._step.source == "traced, exported"


def test_the_export_key_changes_with_everything_that_changes_the_program(problem, tmp_path, monkeypatch):
    """Static options, the arms' configs, argument shapes and dtypes, and the code version each
    give another key (computed without tracing)."""
    from tumorfield.fit import _export

    path = _copy_problem(problem, tmp_path, tmp_path / "cache")
    fit = Fit.load(path)
    z = jnp.zeros(2, jnp.result_type(float))
    args = (z, fit._optimiser.init(z), jnp.asarray(jnp.inf, z.dtype), jnp.zeros_like(z), fit.arrays)
    key = _export.export_key(fit._static(), args)
    assert key == _export.export_key(Fit.load(path)._static(), args)  # deterministic
    others = [
        Fit.load(path, ["fit.max_linesearch_steps=10"]),
        Fit.load(path, ['fit.likelihood="normal"']),
        Fit.load(path, ["time.dt=0.025"]),
        Fit.load(path, ["parameters.D=3e-3"]),
        Fit.load(path, ["grid.shape=[8,8]"]),
    ]
    keys = {_export.export_key(other._static(), args) for other in others}
    assert key not in keys and len(keys) == len(others)
    assert _export.export_key(fit._static(), (*args[:4], {**fit.arrays, "held": jnp.zeros(3, bool)})) != key
    assert _export.export_key(fit._static(), (z.astype(jnp.float32), *args[1:])) != key
    monkeypatch.setattr(_export, "code_version", lambda: "an edited source file")
    assert _export.export_key(fit._static(), args) != key


# --- fits on real measurements (issue 26): units, times between steps, initial keys, honest status -------


def test_a_units_column_is_converted_and_another_dimension_refused(tmp_path):
    """Rows with units are converted to the model's units of the observable on the arm's grid (sigma too,
    under the normal likelihood; the sd of log y is unchanged); a mm³ volume against a 2D model (mm²) is
    refused unless ``[fit.observables]`` states the conversion; rows without units are as given."""
    from tumorfield.fit._data import ArmGrid, Scale, read_observations

    arms = {"a": ArmGrid(("tumour_burden", "max_u"), 0.05, 5.0, {"tumour_burden": "mm**2", "max_u": "1"}, 2)}
    path = tmp_path / "obs.csv"
    path.write_text("arm,t,observable,value,sigma,units\na,1.0,tumour_burden,0.02,0.001,cm^2\n"
                    "a,1.0,max_u,40,5,%\na,2.0,tumour_burden,3.0,0.1,\n")  # fmt: skip
    normal = read_observations(path, arms, "normal")
    np.testing.assert_allclose(normal.value, [2.0, 0.4, 3.0])
    np.testing.assert_allclose(normal.sigma, [0.1, 0.05, 0.1])
    np.testing.assert_allclose(normal.factor, [100.0, 0.01, 1.0])
    assert normal.given_units.tolist() == ["cm^2", "%", ""] and normal.given_value.tolist() == [0.02, 40, 3.0]
    np.testing.assert_allclose(read_observations(path, arms, "lognormal").sigma, [0.001, 5, 0.1])
    path.write_text("arm,t,observable,value,sigma,units\na,1.0,tumour_burden,60.0,6.0,mm^3\n")
    with pytest.raises(ConfigError) as refused:
        read_observations(path, arms, "normal")
    message = str(refused.value)
    print(f"\n{message}")
    assert message.startswith(f"{path}: line 2: units = 'mm^3': tumour_burden of arm 'a' is in mm²")
    assert "a 2D run's volume is an area in mm², or a volume per mm of slab thickness" in message
    assert "[fit.observables] tumour_burden = { scale" in message
    # stated: the data are 2 mm × the model's area (a slab), so 60 mm³ is 30 mm² of the model's
    scaled = read_observations(path, arms, "normal", scales={"tumour_burden": Scale(2.0, "mm")})
    assert scaled.value.tolist() == [30.0] and scaled.sigma.tolist() == [3.0]


def test_a_time_between_steps_is_interpolated_in_a_fit_and_refused_elsewhere(tmp_path):
    """``t = (k + w)·dt``: accepted with ``interpolate`` (a scalar fit) as step ``k`` and weight ``w``, refused
    without (a calibration's data); on the step grid ``w = 0``. The prediction there is linear in time
    between the two steps and exactly the step's value on the grid."""
    from tumorfield.fit._data import ArmGrid, read_observations
    from tumorfield.fit._problem import interpolated

    arms = {"a": ArmGrid(("tumour_burden",), 0.1, 2.0)}
    path = tmp_path / "obs.csv"
    path.write_text("arm,t,observable,value,sigma\na,1.033,tumour_burden,1,0.1\na,0.3,tumour_burden,1,0.1\n")
    with pytest.raises(ConfigError, match="whole number of time steps"):
        read_observations(path, arms, "normal")
    found = read_observations(path, arms, "normal", interpolate=True)
    assert found.step.tolist() == [10, 3] and found.weight[1] == 0.0 and found.last_step.tolist() == [11, 3]
    np.testing.assert_allclose(found.weight[0], 0.33, rtol=1e-9)
    series = np.stack([np.exp(0.1 * np.arange(21.0))])[None]  # (arms, obs, steps)
    at = interpolated(series, 0, np.zeros(2, int), found.step, found.weight)
    np.testing.assert_allclose(at[0], 0.67 * np.exp(1.0) + 0.33 * np.exp(1.1), rtol=1e-12)
    assert at[1] == series[0, 0, 3]


def test_data_between_steps_fit_like_data_on_them(problem):
    """The fixture's data moved 0.02 day before each step (0.98, 1.98, …: between steps 19 and 20, …), the same
    noise on the truth's series there: every row's prediction is the linear interpolation of the predicted
    series, and the estimates agree with the on-grid fit's to a small fraction of a standard error. (The
    same program as the fixture's: the iteration's export is reused.)"""
    directory, clean, fit = problem
    on_grid = fit.run()
    truth = jnp.asarray([TRUTH[n] for n in fit.names])
    _, (_, _, series) = fit._jacobian(truth, fit.arrays)
    series, group = np.asarray(series[0][0]), fit.groups[0]
    t = np.arange(series.shape[1]) * group.dt
    noisy = np.loadtxt(directory / "obs.csv", delimiter=",", skiprows=1, usecols=3)
    lines = ["arm,t,observable,value,sigma"]
    for (day, name), ratio in zip([(d, n) for d in DAYS for n in OBSERVABLES], noisy / clean, strict=True):
        off = day - 0.02
        value = np.interp(off, t, series[group.observables.index(name)]) * ratio
        lines.append(f"a,{off!r},{name},{float(value)!r},{NOISE}")
    (directory / "obs_between.csv").write_text("\n".join(lines) + "\n")
    (directory / "between.toml").write_text(FIT.format(r_upper=5.0, s_upper=10.0).replace("obs.csv", "obs_between.csv"))
    between = Fit.load(directory / "between.toml")
    assert np.all(between.data.weight > 0.5) and np.all(between.data.weight < 0.7)
    result = between.run()
    assert result.converged, result.message
    for i in range(len(result.data)):
        arm, name = result.data.arm[i], result.data.observable[i]
        expected = np.interp(result.data.t[i], result.predictions[arm]["t"], result.predictions[arm][name])
        assert result.data_prediction[i] == pytest.approx(expected, rel=1e-12)
    shift = (result.estimate - on_grid.estimate) / on_grid.std_error
    print(f"\non grid {on_grid.estimate}, between steps {result.estimate}: {shift} SE")
    assert np.all(np.abs(shift) < 0.1), shift


SMALL_ARM = """[model]
name = "fisher_kpp"
[grid]
shape = [8, 8]
length = [2.0, 2.0]
[time]
t_end = 1.0
dt = 0.1
save_every = 1.0
[parameters]
D = 2e-3
r = 1.0
chi = 0.0
[initial]
amplitude = 0.5
radius = {radius}
"""


def test_an_initial_key_is_fitted_through_the_traced_seed(tmp_path):
    """``"initial.radius"``: the fit's loss at radius ρ (the seed rebuilt in the traced program) is that of the
    arm configured with radius ρ; the traced seed's derivative in the radius is the closed form's,
    ``∂/∂ρ a·e^{−r²/ρ²} = a·e^{−r²/ρ²}·2r²/ρ³``."""
    from tumorfield.models.fisher_kpp import FisherKPP

    for name, radius in (("arm.toml", 0.3), ("arm45.toml", 0.45)):
        (tmp_path / name).write_text(SMALL_ARM.format(radius=radius))
    (tmp_path / "obs.csv").write_text(
        "arm,t,observable,value,sigma\n" + "".join(f"a,{t},tumour_burden,{0.3 * (1 + t)},0.05\n" for t in (0.5, 1.0))
    )
    base = '[fit]\narms = { a = "ARM" }\ndata = "obs.csv"\nlikelihood = "lognormal"\n[fit.parameters]\n'
    base += "r = { init = 1.0, lower = 0.1, upper = 5.0 }\n"
    seed = '"initial.radius" = { init = 0.3, lower = 0.1, upper = 1.0 }\n'
    (tmp_path / "seed.toml").write_text(base.replace("ARM", "arm.toml") + seed)
    (tmp_path / "plain.toml").write_text(base.replace("ARM", "arm45.toml"))
    seeded, plain = Fit.load(tmp_path / "seed.toml"), Fit.load(tmp_path / "plain.toml")
    assert seeded.names == ("r", "initial.radius") and seeded.groups[0].initial_at is FisherKPP.initial_state_at
    assert plain.groups[0].initial_at is None
    assert seeded.loss([1.2, 0.45]) == pytest.approx(plain.loss([1.2]), rel=1e-6)
    grid, values = seeded.groups[0].problem.grid, {k: v[0] for k, v in seeded.arrays["groups"][0]["seed"].items()}

    def mass(radius):
        return jnp.sum(FisherKPP.initial_state_at({**values, "radius": radius}, {"D": 0.0, "r": 1.0}, grid)[0]["u"])

    r2 = sum((m - c) ** 2 for m, c in zip(grid.mesh(), values["centre"], strict=True))
    expected = np.sum(0.5 * np.exp(-r2 / 0.45**2) * 2 * r2 / 0.45**3)
    assert float(jax.grad(mass)(jnp.asarray(0.45))) == pytest.approx(expected, rel=1e-10)


def test_initial_state_at_is_each_models_initial_state():
    """The JAX closed form of every model's initial state equals its NumPy ``initial_state`` (fisher_kpp with and
    without chemotaxis, voloshin2015 with its invasion origin, a glioma seed); an image is refused, named."""
    from tumorfield.models.fisher_kpp import FisherKPP
    from tumorfield.models.glioma import Glioma
    from tumorfield.models.voloshin2015 import Voloshin2015

    grid = tf.Grid((8, 8), (4.0, 4.0))
    models = [
        FisherKPP.from_sections({"parameters": {"chi": 0.05}, "initial": {"radius": 0.7, "centre": [1.5, 2.0]}}),
        FisherKPP.from_sections({"parameters": {"chi": 0.0}, "initial": {"amplitude": 0.4}}),
        Voloshin2015.from_sections({"initial": {"tumor_radius": 0.9, "m1": 0.03}}),
        Glioma.from_sections({"initial": {"tumor": {"centre": [2.0, 2.5], "radius": 1.5, "amplitude": 0.7}}}),
    ]
    for model in models:
        expected = model.initial_state(grid)
        values = {k: jnp.asarray(v) for k, v in model.initial_values(grid).items()}
        state, params = type(model).initial_state_at(values, model.params(grid), grid)
        assert set(state) == set(expected), model.name
        for name in expected:
            np.testing.assert_allclose(np.asarray(state[name]), expected[name], rtol=1e-12, atol=1e-15, err_msg=name)
        assert set(type(model).initial_keys) <= set(values)
    _, params = Voloshin2015.initial_state_at({**models[2].initial_values(grid), "tumor_radius": jnp.asarray(1.1)},
                                              models[2].params(grid), grid)  # fmt: skip
    assert float(params.initial_radius) == pytest.approx(1.1)
    image = Glioma.from_sections({"initial": {"tumor": {"image": "seg.nii.gz", "labels": {"1": 0.8}}}})
    with pytest.raises(ConfigError, match=r"initial.tumor = .*is an image"):
        image.initial_values(grid)


def test_convergence_is_said_only_when_the_loss_fell():
    """A last iteration whose loss rose is ``stalled`` (the message says it rose, by how much) and the estimate is
    the lowest point; a small fall within the tolerance converges, and says it fell."""
    from tumorfield.fit._optimise import History, _lowest, _stop

    def history(*losses):
        return History(list(losses), [np.array([float(i)]) for i in range(len(losses))], [1e-3] * len(losses),
                       [1] * len(losses))  # fmt: skip

    rose = history(5.0, 2.0, 2.0 + 1.68e-6)
    status, converged, message = _stop(rose, True, 1e-6)
    assert (status, converged) == ("stalled", False) and "the loss rose by 1.68e-06" in message, message
    assert _lowest(rose) == 1
    status, converged, message = _stop(history(5.0, 2.0, 2.0 - 1e-7), True, 1e-6)
    assert (status, converged) == ("converged", True) and message.startswith("the loss fell by 1e-07"), message
    assert _stop(history(5.0, 2.0, np.inf), True, 1e-6)[0] == "stalled"
    assert _lowest(history(5.0, 2.0, 1.0)) == 2


def test_a_misfit_warns_in_the_log_the_table_and_the_file(problem, tmp_path):
    """Data three times the model's (a units mistake): the reduced χ² ≫ 1 is a warning in the log, in the table and
    in FIT.h5 (attributes ``warnings``, ``chi2_warning``, ``at_bound``), read back by ``tf.open_fit``."""
    from tumorfield.fit._uncertainty import fit_warnings

    assert fit_warnings(1.3, 10, 2) == [] and fit_warnings(4.5, 30, 2) and fit_warnings(5.0, 3, 2) == []
    _, clean, fit = problem
    said = []
    result = fit.run(values=3.0 * clean, log=said.append)
    assert result.chi2_warning and result.reduced_chi2 > 4, result.reduced_chi2
    assert any(line.startswith("warning: reduced χ²") and "do not describe these data" in line for line in said)
    table = result.summary()
    assert "see the warnings" in table and "warning: reduced χ²" in table
    path = result.write(tmp_path / "FIT.h5")
    stored = tf.open_fit(path)
    assert stored.warnings == result.warnings and stored.at_bound == result.at_bound
    assert bool(stored.attrs["chi2_warning"]) and stored.status == result.status
    np.testing.assert_array_equal(stored.estimate, result.estimate)


def test_noise_free_data_warn_that_the_sigmas_are_too_large(problem):
    """The other side: the model's own noise-free values as data give a reduced χ² far below 1, which warns
    that the standard errors are too wide (sigmas too large); ``chi2_warning`` stays for the side above."""
    from tumorfield.fit._uncertainty import low_chi2_limit, low_chi2_warnings

    assert low_chi2_limit(20) == pytest.approx(0.296, abs=1e-3) and low_chi2_limit(0) == 0.0
    assert low_chi2_warnings(0.5, 22, 2) == [] and low_chi2_warnings(0.2, 22, 2)
    assert low_chi2_warnings(float("nan"), 22, 2) == [] and low_chi2_warnings(1e-3, 3, 2) == []
    _, clean, fit = problem
    said = []
    result = fit.run(values=clean, log=said.append)
    assert result.reduced_chi2 < low_chi2_limit(len(result.data) - len(result.names)), result.reduced_chi2
    assert not result.chi2_warning
    assert any(line.startswith("warning: reduced χ²") and "sigmas are too large" in line for line in said), said
    assert any("too wide" in w for w in result.warnings)


def test_an_arm_that_splits_its_grid_is_named_in_a_note(problem, tmp_path):
    """``[run] devices`` of an arm is not used by a fit (each arm runs on one device): the log says so,
    before anything is checked further or computed (here a bad ``--profile`` stops it next)."""
    from tumorfield.fit._fit import run_fit

    directory, _, _ = problem
    for name in ("obs.csv", "fit.toml"):
        (tmp_path / name).write_text((directory / name).read_text())
    arm = (directory / "arm.toml").read_text().replace("[run]\n", "[run]\ndevices = 2\n")
    assert "devices = 2" in arm
    (tmp_path / "arm.toml").write_text(arm)
    said: list[str] = []
    with pytest.raises(ConfigError, match="--profile"):
        run_fit(tmp_path / "fit.toml", tmp_path / "FIT.h5", [], overwrite=False, argv=[], log=said.append,
                profiles=["nope"])  # fmt: skip
    assert said == ["note: [run] devices of arm(s) a is not used: a fit runs each arm on one device"], said
    assert not (tmp_path / "FIT.h5").exists()


def test_a_start_that_meets_the_rule_is_not_stepped_from():
    """At a start whose gradient is within the tolerance (a fit started at its optimum), ``minimise`` stops at
    iteration 0: no line search along a zero direction, the start returned as converged."""
    import jax.numpy as jnp

    from tumorfield.fit._optimise import make_step, minimise

    optimiser, step = make_step(lambda z, a: jnp.sum((z - a["centre"]) ** 2), 20)
    arrays = {"centre": jnp.asarray([1.0, -2.0])}
    found = minimise(optimiser, step, jnp.asarray([1.0, -2.0]), arrays, max_iterations=10, tolerance=1e-6)
    assert found.converged and found.n_iterations == 0 and "at the start" in found.message
    moved = minimise(optimiser, step, jnp.asarray([0.0, 0.0]), arrays, max_iterations=10, tolerance=1e-6)
    assert moved.converged and moved.n_iterations >= 1 and np.allclose(moved.z, [1.0, -2.0], atol=1e-5)
