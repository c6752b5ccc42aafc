"""The fit as an object: ``Fit.load("FIT.toml").run()`` → :class:`FitResult` (``tumorfield fit`` is a thin layer).

``Fit`` checks everything before any compute (the fit file, every arm's run config, the data
against the arms' observables and step grids, the parameters against the model's ranges), then
builds the arm groups (:mod:`._problem`). ``run`` minimises ``L(z) = ½ Σ r_i²(θ(z))`` with L-BFGS
(:mod:`._optimise`) and evaluates the Gauss–Newton uncertainty at the optimum
(:mod:`._uncertainty`) from the forward-mode Jacobian of the residuals.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compile_log
from .._schema import ConfigError, section_keys, suggest
from ..io._writer import cf_units
from ..run._job import _setup_jax
from ._data import ArmGrid, Observations, Scale, read_observations
from ._export import CachedStep
from ._optimise import Minimum, make_step, minimise
from ._output import reserved, summary, write_fit
from ._problem import INITIAL, evaluate, interpolated, make_groups, order, with_values_observed
from ._profile import Profile, profile, profile_warnings
from ._spec import FitSpec, load_spec
from ._transform import Bounds, bounds, check_leaf, natural
from ._uncertainty import Uncertainty, fit_warnings, gauss_newton, low_chi2_warnings, warnings


def _observables(config) -> tuple[str, ...]:
    """The ``/scalars`` names of an arm's run (the keys ``observe`` returns), found without compute."""
    model, grid, system = config.model, config.grid, config.model.system
    initial = model.initial_state(grid)
    state = {n: initial.get(n, np.zeros(() if n in system.scalars else grid.shape)) for n in system.fields}
    shapes = jax.eval_shape(lambda s, p: model.observe(s, p, jnp.zeros(()), grid), state, model.params(grid))
    return tuple(shapes)


def arm_grid(config) -> ArmGrid:
    """What the scalar data of an arm are checked against (its observables and their units on its grid, dt,
    t_end)."""
    from ._units import model_units

    names, declared, ndim = _observables(config), config.model.observables, config.grid.ndim
    units = {name: model_units(declared[name].units, ndim) for name in names if name in declared}
    return ArmGrid(names, config.time.dt, config.time.t_end, units, ndim)


def observations(spec: FitSpec) -> Observations:
    """The data of ``[fit] data`` checked against the arms (times between steps interpolated, units and
    ``[fit.observables]`` scales applied): what a scalar fit and a calibration's scalar data read."""
    grids = {arm: arm_grid(config) for arm, config in spec.arms.items()}
    return read_observations(spec.data_path, grids, spec.fit.likelihood, interpolate=True,
                             scales=scales(spec, grids))  # fmt: skip


def scales(spec: FitSpec, grids: dict[str, ArmGrid]) -> dict[str, Scale]:
    """``[fit.observables]`` as :class:`Scale` s, each name an observable of some arm and its units read by pint."""
    from ._units import check_scale_units

    known = sorted({name for grid in grids.values() for name in grid.observables})
    out = {}
    for name, entry in spec.observables.items():
        if name not in known:
            error = ConfigError(f"fit.observables.{name}", name, suggest(name, known, "observable of the arms"))
            raise error.in_file(spec.source)
        try:
            check_scale_units(name, entry.units)
        except ConfigError as error:
            raise error.in_file(spec.source) from None
        out[name] = Scale(entry.scale, entry.units)
    return out


@dataclass
class FitResult:
    """What a fit found: estimates and Gauss–Newton standard errors (natural units), correlations,
    the history per iteration, the predictions at the estimate, and how the optimiser ended."""

    spec: FitSpec
    names: tuple[str, ...]
    estimate: np.ndarray
    std_error: np.ndarray
    correlation: np.ndarray
    hessian: np.ndarray
    initial: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    minimum: Minimum
    reduced_chi2: float
    history: dict[str, np.ndarray]
    predictions: dict[str, dict[str, np.ndarray]]
    data: Observations
    data_prediction: np.ndarray
    residuals: np.ndarray
    units: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    at_bound: list[str] = field(default_factory=list)
    """Parameters that ended at a bound of their transform (within 1e-3 of its log-width)."""
    chi2_warning: bool = False
    """Whether the reduced χ² exceeds its limit (:func:`._uncertainty.chi2_limit`): the model or the sigmas do
    not describe the data."""

    status = property(lambda self: self.minimum.status)
    converged = property(lambda self: self.minimum.converged)
    message = property(lambda self: self.minimum.message)
    loss = property(lambda self: self.minimum.loss)
    n_iterations = property(lambda self: self.minimum.n_iterations)

    def summary(self) -> str:
        """The table the CLI prints: estimates, standard errors, strongest correlations, warnings."""
        return summary(self)

    def write(self, path, argv: Sequence[str] = ("python",), *, overwrite: bool = False) -> str:
        """Write ``FIT.h5`` (see :mod:`tumorfield.fit._output` for the layout); returns its path."""
        with reserved(path, overwrite=overwrite) as target:
            return write_fit(target, self, list(argv))


class Fit:
    """A checked fit problem: arms (run configs) sharing the fitted parameters, data, likelihood, bounds.

    ``Fit.load(path, overrides)`` reads ``FIT.toml`` (``overrides``: ``--set`` items; ``fit.*``
    ones apply to the fit file, the others to every arm). :meth:`loss` evaluates the loss at
    natural parameter values; :meth:`run` fits. The compiled programs (one L-BFGS iteration;
    the Jacobian) belong to the object: :meth:`run` with other ``values`` (noise draws,
    bootstrap samples) reuses them.
    """

    def __init__(self, spec: FitSpec):
        self.spec = spec
        self.bounds = checked_bounds(spec, initial=True)
        self.data = observations(spec)
        self.lognormal = spec.fit.likelihood == "lognormal"
        self.groups, groups = make_groups(spec.arms, self.data, spec.names, self.bounds.init)
        n = len(spec.names)  # "held"/"held_z": parameters a profile holds fixed (none in a fit): one program for both
        self.arrays = {"bounds": self.bounds.log, "groups": groups, "held": jnp.zeros(n, bool), "held_z": jnp.zeros(n)}
        self._order = order(self.groups)
        self._optimiser, step = make_step(self._loss, spec.fit.max_linesearch_steps)
        self._step = CachedStep(step, self._static())
        self._forward_groups = [g.forward_mode() for g in self.groups]  # the same values, a jvp-able sub-step loop
        self._jacobian = jax.jit(
            lambda theta, arrays: jax.jacfwd(lambda t, a: self._residuals(t, a, self._forward_groups), has_aux=True)(
                theta, arrays
            )
        )
        self._loss_jit = jax.jit(self._loss)

    def _static(self) -> dict:
        """What the iteration program depends on besides the code and its traced arguments (the
        key of its export, :mod:`._export`): options, each group's static parts, the arms' configs."""
        groups = [
            {
                "arms": list(g.arms),
                "dt": g.dt,
                "dtype": g.dtype,
                "frames": g.frames,
                "steps_per_frame": g.steps_per_frame,
                "observables": list(g.observables),
                "rows": [np.asarray(r).tolist() for r in g.rows],
                "configs": [self.spec.arms[a].text for a in g.arms],
            }
            for g in self.groups
        ]
        fit = self.spec.fit
        options = {"likelihood": fit.likelihood, "max_linesearch_steps": fit.max_linesearch_steps}
        return {"names": list(self.names), **options, "groups": groups}

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> Fit:
        """The fit of ``FIT.toml`` at ``path``; raises :class:`ConfigError` on any bad input."""
        return cls(load_spec(path, overrides))

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    def _residuals(self, theta, arrays, groups=None):
        groups = self.groups if groups is None else groups
        r, good, series = evaluate(groups, arrays["groups"], self.names, theta, self.lognormal)
        return r, (r, good, series)

    def _loss(self, z, arrays):
        """``L(z) = ½ Σ r²`` at ``θ(z)``; ``∞`` where a run failed or a residual is not finite. The
        components ``arrays["held"]`` of ``z`` are replaced by ``arrays["held_z"]`` (a profile holds
        them fixed: their gradient is then exactly zero, so L-BFGS never moves them)."""
        z = jnp.where(arrays["held"], arrays["held_z"], z)
        r, (_, good, _) = self._residuals(natural(z, *arrays["bounds"]), arrays)
        total = 0.5 * jnp.sum(jnp.square(r))
        return jnp.where(jnp.all(good) & jnp.isfinite(total), total, jnp.inf)

    def loss(self, theta, values=None) -> float:
        """The loss (negative log-likelihood up to a constant) at natural parameter values ``theta``
        (strictly inside the bounds), for the observed values (or ``values``, one per row)."""
        theta = np.asarray(theta, np.float64)
        if theta.shape != self.bounds.init.shape or not np.all(
            (self.bounds.lower < theta) & (theta < self.bounds.upper)
        ):
            raise ValueError(f"theta must hold {len(self.names)} values strictly inside their bounds ({self.names})")
        z = jnp.asarray(self.bounds.to_unconstrained(theta), jnp.result_type(float))
        return float(self._loss_jit(z, self._arrays(values)))

    def _arrays(self, values):
        if values is None:
            return self.arrays
        values = np.asarray(values, np.float64)
        if values.shape != self.data.value.shape or not np.all(np.isfinite(values)):
            raise ValueError(f"values must be {len(self.data)} finite numbers, one per observation row")
        if self.lognormal and np.any(values <= 0):
            raise ValueError('values must be > 0 with likelihood = "lognormal"')
        return {**self.arrays, "groups": with_values_observed(self.groups, self.arrays["groups"], values)}

    def run(self, log: Callable[[str], None] = lambda _: None, values=None) -> FitResult:
        """Fit: L-BFGS from the ``init`` values, then the Gauss–Newton uncertainty at the optimum.

        ``values`` (one per observation row, in the model's units: ``self.data.value`` after any conversion)
        replaces the observed values, same rows and sigmas.
        """
        _setup_jax(next(iter(self.spec.arms.values())))
        arrays, fit, clock = self._arrays(values), self.spec.fit, _Clock()
        z0 = self.bounds.to_unconstrained(self.bounds.init)
        minimum = minimise(self._optimiser, self._step, z0, arrays, max_iterations=fit.max_iterations,
                           tolerance=fit.tolerance, log=log)  # fmt: skip
        timings = clock.lap("optimise")
        estimate = self.bounds.to_natural(minimum.z)
        jacobian, (r, good, series) = jax.block_until_ready(self._jacobian(jnp.asarray(estimate), arrays))
        r, good, jacobian = np.asarray(r), np.asarray(good), np.asarray(jacobian)
        timings |= clock.lap("uncertainty")
        log(f"compilation {_compile_log.seconds():.2f} s in all; persistent cache: {_compile_log.cache_hits()} "
            f"hits, {_compile_log.cache_misses()} misses; iteration program: {self._step.source}")  # fmt: skip
        problem = self._why_not_finite(r, good)
        if problem is not None:
            where = "there" if minimum.status == "failed" else "at the estimate"
            minimum = dataclasses.replace(minimum, message=f"{minimum.message}; {where}, {problem}")
        finite = problem is None and np.all(np.isfinite(jacobian))
        uncertainty = gauss_newton(jacobian, r) if finite else _undetermined(len(estimate))
        data = self.data if values is None else dataclasses.replace(self.data, value=np.asarray(values, np.float64))
        result = self._result(minimum, estimate, uncertainty, r, series, timings, data)
        for warning in result.warnings:
            log(f"warning: {warning}")
        return result

    def profile(self, result: FitResult, name: str, *, points: int = 9, span: float = 3.0,
                log: Callable[[str], None] = lambda _: None) -> Profile:  # fmt: skip
        """The profile likelihood of ``name`` around ``result`` (see :mod:`._profile`): ``points``
        values over ``θ̂ · exp(±span · SE/θ̂)``; adds it to ``result.profiles`` and its warnings to
        ``result.warnings``, and returns it."""
        if name not in self.names:
            raise ConfigError("--profile", name, f"must be one of the fitted parameters {list(self.names)}")
        found = profile(self, result, name, points=points, span=span, log=log)
        result.profiles[name] = found
        result.warnings.extend(profile_warnings(found, result))
        return found

    def _why_not_finite(self, r: np.ndarray, good: np.ndarray) -> str | None:
        """Which runs failed, or which observations have a non-finite residual; None if none."""
        arms = [arm for group in self.groups for arm in group.arms]
        failed = [arm for arm, ok in zip(arms, good, strict=True) if not ok]
        if failed:
            return f"the runs of {', '.join(failed)} failed (positivity limit or a non-finite state)"
        rows = self._order[~np.isfinite(r)]
        if not len(rows):
            return None
        where = ", ".join(
            f"{self.data.observable[i]} of {self.data.arm[i]} at t = {self.data.t[i]:g}" for i in rows[:3]
        )
        more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
        rule = " (the lognormal likelihood needs predictions > 0)" if self.lognormal else ""
        return f"the residuals of {where}{more} are not finite{rule}"

    def _predictions(self, series) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
        """Per arm: ``t`` (day, every step from 0) and each observed series at the estimate; and the
        prediction of every observation row."""
        predictions, at_rows = {}, np.empty(len(self.data))
        for group, values in zip(self.groups, series, strict=True):
            t = np.arange(group.n_steps + 1) * group.dt
            for a, arm in enumerate(group.arms):
                predictions[arm] = {"t": t, **{k: np.asarray(values[a, i]) for i, k in enumerate(group.observables)}}
                rows = group.rows[a]
                index = np.searchsorted(group.observables, self.data.observable[rows])
                d = self.data
                at_rows[rows] = interpolated(np.asarray(values), a, index, d.step[rows], d.weight[rows])
        return predictions, at_rows

    def _result(self, minimum, estimate, uncertainty: Uncertainty, r, series, timings, data) -> FitResult:
        residuals = np.empty(len(self.data))
        residuals[self._order] = r
        predictions, at_rows = self._predictions(series)
        chi2 = fit_warnings(uncertainty.reduced_chi2, len(self.data), len(self.names))
        at_bound = self.bounds.at_bound(estimate)
        low = low_chi2_warnings(uncertainty.reduced_chi2, len(self.data), len(self.names))
        found = chi2 + low + warnings(self.names, estimate, uncertainty)
        found += [
            f"{n} ended at a bound of its transform ({self._side(n, estimate)}): widen [lower, upper] if the model "
            "allows, else the data ask for more than it does; its SE means little there"
            for n in at_bound
        ]
        h = minimum.history
        path = self.bounds.to_natural(np.stack(h.z))
        history = {"loss": np.asarray(h.loss), "gradient": np.asarray(h.gradient), "trials": np.asarray(h.trials)}
        history |= {name: path[:, i] for i, name in enumerate(self.names)}
        first = next(iter(self.spec.arms.values()))
        units = {name: cf_units(q.units, first.grid.ndim)[0] for name, q in first.model.observables.items()}
        return FitResult(
            self.spec,
            self.names,
            estimate,
            uncertainty.std_error,
            uncertainty.correlation,
            uncertainty.hessian,
            self.bounds.init,
            self.bounds.lower,
            self.bounds.upper,
            minimum,
            uncertainty.reduced_chi2,
            history,
            predictions,
            data,
            at_rows,
            residuals,
            units,
            found,
            timings,
            at_bound=at_bound,
            chi2_warning=bool(chi2),
        )

    def _side(self, name: str, estimate) -> str:
        i = self.names.index(name)
        lower = abs(np.log(estimate[i] / self.bounds.lower[i])) < abs(np.log(estimate[i] / self.bounds.upper[i]))
        return f"lower = {self.bounds.lower[i]:g}" if lower else f"upper = {self.bounds.upper[i]:g}"


def checked_bounds(spec: FitSpec, also: Sequence[str] = (), *, initial: bool = False) -> Bounds:
    """The fitted parameters' bounds, after checking that every arm runs one model that has them (and
    ``also``, e.g. the parameters of maps) as leaves; with ``initial`` (a scalar fit), names ``"initial.KEY"``
    are ``[initial]`` keys of the model (:mod:`._initial`)."""
    from ._initial import initial_entry

    first = next(iter(spec.arms.values()))
    model = first.model
    seeds = [n for n in spec.names if n.startswith(INITIAL)]
    own = {n: e for n, e in spec.parameters.items() if n not in seeds}
    try:
        for arm, config in spec.arms.items():
            if type(config.model) is not type(model):
                raise ConfigError(f"fit.arms.{arm}", config.source, f"runs model {config.model.name!r}; the arms "
                                  f"share the fitted parameters, so all must run {model.name!r}")  # fmt: skip
        if seeds and not initial:
            raise ConfigError(f"fit.parameters.{seeds[0]}", seeds[0], "an [initial] key is fitted by a scalar fit; a "
                              "calibration fits the initial tumour with [fit.origin]")  # fmt: skip
        if (own or also) and "parameters" not in model.section_types:
            raise ConfigError("fit.parameters", list(own), f"model {model.name!r} has no [parameters]")
        keys = section_keys(model.section_types["parameters"]) if "parameters" in model.section_types else {}
        for config in spec.arms.values():
            for name in dict.fromkeys((*own, *also)):
                check_leaf(config.model.params(config.grid), name, model.name, keys)
        found = bounds(own, model.params(first.grid), model.name, keys)
        entries = {n: (found.init[i], found.lower[i], found.upper[i]) for i, n in enumerate(found.names)}
        entries |= {n: initial_entry(spec, n, spec.parameters[n]) for n in seeds}
    except ConfigError as error:
        raise error.in_file(spec.source) from None
    columns = np.asarray([entries[n] for n in spec.names], np.float64).reshape(len(spec.names), 3).T
    return Bounds(spec.names, *(np.array(c) for c in columns))


class _Clock:
    """Wall and compile seconds (compile: XLA, or loading from the persistent cache) per phase."""

    def __init__(self):
        self.wall, self.compile = time.perf_counter(), _compile_log.seconds()

    def lap(self, phase: str) -> dict[str, float]:
        wall, compile_s = time.perf_counter(), _compile_log.seconds()
        out = {f"{phase}_s": wall - self.wall, f"{phase}_compile_s": compile_s - self.compile}
        self.wall, self.compile = wall, compile_s
        return out


def _undetermined(n: int) -> Uncertainty:
    """No uncertainty where the model failed at the estimate (NaN everywhere)."""
    nan = np.full(n, np.nan)
    return Uncertainty(nan, np.full((n, n), np.nan), np.full((n, n), np.nan), float("nan"))


def fit(path: str | Path, overrides: Sequence[str] = (), *, log: Callable[[str], None] = print) -> FitResult:
    """Fit the problem of ``FIT.toml`` at ``path``: ``Fit.load(path, overrides).run(log)``."""
    return Fit.load(path, overrides).run(log)


def run_fit(
    config, output, overrides: Sequence[str], *, overwrite: bool, argv, log: Callable[[str], None],
    profiles: Sequence[str] = (), profile_points: int = 9,
) -> FitResult:  # fmt: skip
    """``tumorfield fit``: check everything (inputs, the ``profiles`` names and the output path)
    before compute, fit, profile, write ``output``, print the summary table to stdout; progress
    goes to ``log``."""
    spec = load_spec(config, overrides)
    split = sorted(arm for arm, arm_config in spec.arms.items() if arm_config.run.devices != 1)
    if split:
        log(f"note: [run] devices of arm(s) {', '.join(split)} is not used: a fit runs each arm on one device")
    if spec.from_images:
        return _run_calibration(spec, output, overwrite=overwrite, argv=argv, log=log, profiles=profiles)
    problem = Fit(spec)
    for name in profiles:
        if name not in problem.names:
            raise ConfigError("--profile", name, f"must be one of the fitted parameters {list(problem.names)}")
    if profile_points < 3:
        raise ConfigError("--profile-points", profile_points, "must be an integer ≥ 3")
    with reserved(output, overwrite=overwrite) as target:
        log(
            f"fitting {', '.join(problem.names)} to {len(problem.data)} observations of "
            f"{len(problem.spec.arms)} arm(s) in {len(problem.groups)} compiled group(s)"
        )
        result = problem.run(log)
        if result.status != "failed":
            for name in profiles:
                problem.profile(result, name, points=profile_points, log=log)
        path = write_fit(target, result, list(argv))
    print(result.summary(), flush=True)
    log(f"done: {path}")
    return result


def _run_calibration(spec, output, *, overwrite: bool, argv, log: Callable[[str], None], profiles: Sequence[str]):
    """``tumorfield fit`` of a calibration from scans (:mod:`._calibrate`): checked, then fitted and written."""
    from ._calibrate import calibrate
    from ._calibration import Calibration
    from ._output import calibration_summary, write_calibration

    if profiles:
        raise ConfigError("--profile", list(profiles), "profiles are for scalar fits; a calibration reports its "
                          "posterior ([fit.uncertainty])")  # fmt: skip
    try:
        calibration = Calibration(spec)
    except ConfigError as error:
        raise error.in_file(spec.source) from None
    with reserved(output, overwrite=overwrite) as target:
        log(f"calibrating {', '.join(calibration.names + tuple(f'map {m}' for m in spec.maps))} to "
            f"{len(calibration.scans)} scan(s) of {len(spec.arms)} arm(s)")  # fmt: skip
        result = calibrate(calibration, log)
        path = write_calibration(target, result, list(argv))
    print(calibration_summary(result), flush=True)
    log(f"done: {path}")
    return result
