"""Calibration from images: scalar parameters, the tumour's origin and parameter maps from scans.

The unknowns (docs/calibration.md):

- scalars of ``[fit.parameters]`` (natural units, a bounded log transform as in a scalar fit);
- the origin of ``[fit.origin]``: a Gaussian seed ``a · exp(−|x − c|²/r²)`` (world mm) replacing the
  arm's initial state of one field, its centre in a bounded linear transform (default bounds: the
  domain's box), radius and amplitude in bounded log transforms; listed as ``origin.centre.0``, …,
  ``origin.radius``, ``origin.amplitude``;
- maps of ``[fit.maps]``: ``θ(x) = θ · exp(m(x))``, ``m = prior_sd · S z`` whitened by the bi-Laplacian
  prior (:mod:`._prior`), ``z ~ N(0, I)`` a priori.

The negative log-posterior is ``L = ½ Σ r² + ½ |z|²`` with the scans' residuals (:mod:`._scans`); a run
that fails makes it ``∞`` (a rejected trial, never an exception). It is minimised by the scalar fit's
L-BFGS (:mod:`._optimise`) with the gradient through the whole simulation (checkpointed reverse mode),
then described by a Laplace approximation — Gauss–Newton for the scalars and the origin (a forward-mode
Jacobian), a low-rank posterior for the maps from a randomised eigendecomposition of the
prior-preconditioned Gauss–Newton Hessian (matrix-free: Jacobian-vector products; Bui-Thanh et al. 2013)
— or by NUTS over the scalars and the origin (:mod:`._nuts`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import RESULTS, SaveAt, simulate

from .. import config as cfg
from .._schema import ConfigError
from ..problem import Problem
from ._prior import MapPrior
from ._problem import residual
from ._scans import Scan, domain_of, load_scans
from ._transform import with_values

ORIGIN = "origin"


@dataclass(frozen=True)
class Unknowns:
    """The scalar unknowns (fitted parameters, then the origin's) with their bounds and transforms:
    ``θ = exp(log lo + (log hi − log lo) σ(z))`` where ``log`` else ``θ = lo + (hi − lo) σ(z)``."""

    names: tuple[str, ...]
    init: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    log: np.ndarray

    def _log_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(log lo, log hi − log lo)`` of the log entries, 0 and 1 elsewhere: NaN-free constants, so that
        no unselected branch of a ``where`` puts NaN into a gradient."""
        lo = np.where(self.log, self.lower, 1.0)
        return np.where(self.log, np.log(lo), 0.0), np.where(
            self.log, np.log(np.where(self.log, self.upper, 1.0) / lo), 1.0
        )

    def natural(self, z):
        s = jax.nn.sigmoid(z)
        log_lo, log_span = self._log_bounds()
        return jnp.where(self.log, jnp.exp(log_lo + log_span * s), self.lower + (self.upper - self.lower) * s)

    def log_jacobian(self, z):
        """``Σ log |dθ/dz|``: the density of θ flat in its bounds, in z."""
        s = jax.nn.sigmoid(z)
        _, log_span = self._log_bounds()
        span = jnp.where(self.log, log_span * self.natural(z), self.upper - self.lower)
        return jnp.sum(jnp.log(span * s * (1 - s)))

    def unconstrained(self, theta) -> np.ndarray:
        theta = np.asarray(theta, np.float64)
        lo, hi = self.lower, self.upper
        s = (theta - lo) / (hi - lo)
        s[self.log] = np.log(theta[self.log] / lo[self.log]) / np.log(hi[self.log] / lo[self.log])
        s = np.clip(s, 1e-12, 1 - 1e-12)
        return np.log(s) - np.log1p(-s)

    def at_bound(self, theta, rtol: float = 1e-3) -> list[str]:
        s = np.asarray(jax.nn.sigmoid(jnp.asarray(self.unconstrained(theta))))
        return [n for n, v in zip(self.names, s, strict=True) if v < rtol or v > 1 - rtol]


def _entry(where: str, table: dict, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(init, lower, upper)`` of an origin entry ``{ init, lower, upper }`` (vectors of ``size``)."""
    if not isinstance(table, dict) or "init" not in table:
        raise ConfigError(where, table, "must be a table { init = …, lower = …, upper = … }")
    values = [np.atleast_1d(np.asarray(table.get(k, np.nan), np.float64)) for k in ("init", "lower", "upper")]
    if size is not None and any(v.shape != (size,) for v in values):
        raise ConfigError(where, table, f"init, lower and upper need {size} world coordinates (mm) each")
    init, lower, upper = values
    if not np.all((lower < init) & (init < upper)):
        raise ConfigError(where, table, "needs lower < init < upper")
    return init, lower, upper


class Origin(eqx.Module):
    """The seed of ``[fit.origin]`` on one arm's grid: ``a · exp(−|x − c|²/r²) · domain``."""

    field: str = eqx.field(static=True)
    world: np.ndarray
    domain: np.ndarray

    def seed(self, centre, radius, amplitude):
        shape = (-1,) + (1,) * (self.world.ndim - 1)
        r2 = jnp.sum((jnp.asarray(self.world) - centre.reshape(shape)) ** 2, axis=0)
        return amplitude * jnp.exp(-r2 / radius**2) * jnp.asarray(self.domain)


class OriginMap(eqx.Module):
    """The initial field of ``[fit.origin] kind = "map"``: ``u₀ = σ(μ + m) · domain`` with ``σ`` the
    logistic function, ``μ`` the prior mean's log-odds and ``m`` the map's perturbation (prior: :mod:`._prior`)."""

    field: str = eqx.field(static=True)
    mean: np.ndarray
    domain: np.ndarray

    def seed(self, m):
        return jax.nn.sigmoid(jnp.asarray(self.mean, m.dtype) + m) * jnp.asarray(self.domain, m.dtype)


def _origin_map(found, problems) -> OriginMap:
    """The map origin: the prior mean from the arms' own initial field (one for all arms: refused where
    they differ), floored at ``floor`` and capped at ``1 − floor``."""
    shapes = {p.grid.shape for p in problems.values()}
    if len(shapes) > 1:
        why = f"an initial map needs the arms on one grid; they have {sorted(shapes)}"
        raise ConfigError("fit.origin.kind", "map", why)
    starts = [np.asarray(p.y0.get(found.field, 0.0), np.float64) for p in problems.values()]
    if any(not np.array_equal(np.broadcast_to(s, starts[0].shape), starts[0]) for s in starts):
        raise ConfigError("fit.origin.field", found.field, "the arms start from different initial fields: an "
                          "initial map is one field for all arms")  # fmt: skip
    problem = next(iter(problems.values()))
    u = np.clip(np.broadcast_to(starts[0], problem.grid.shape), found.floor, 1 - found.floor)
    return OriginMap(found.field, np.log(u) - np.log1p(-u), domain_of(problem))


def _origin(spec, problems) -> tuple[Origin | OriginMap | None, tuple]:
    """The origin and its scalar unknowns ``(names, init, lower, upper, log)`` (none for a map); refuses a
    field the arms lack and a start or bounds outside the domain."""
    found = spec.origin
    if found is None:
        return None, ((), [], [], [], [])
    problem = next(iter(problems.values()))
    if found.field not in problem.system.fields or found.field in problem.system.scalars:
        raise ConfigError("fit.origin.field", found.field, "must be a grid field of the arms' model")
    if found.kind == "map":
        return _origin_map(found, problems), ((), [], [], [], [])
    grid, domain = problem.grid, domain_of(problem)
    world = grid.world_coordinates()
    inside = world.reshape(grid.ndim, -1)[:, domain.ravel() > 0]
    box = {"lower": inside.min(axis=1).tolist(), "upper": inside.max(axis=1).tolist()}
    start = np.asarray(found.centre.get("init", []), np.float64).ravel()
    if start.shape == (grid.ndim,):
        distance = np.sqrt(np.min(np.sum((inside - start[:, None]) ** 2, axis=0)))
        if distance > 0.5 * float(np.linalg.norm(grid.spacing)) * (1 + 1e-9):  # half a cell diagonal
            why = f"init lies outside the domain ({distance:.3g} mm from the nearest cell inside); world mm"
            raise ConfigError("fit.origin.centre", found.centre, why)
    init, lower, upper = _entry("fit.origin.centre", {**box, **found.centre}, grid.ndim)
    radius, amplitude = (_entry(f"fit.origin.{k}", getattr(found, k)) for k in ("radius", "amplitude"))
    if radius[1][0] <= 0 or amplitude[1][0] <= 0:
        raise ConfigError("fit.origin", found.radius, "radius and amplitude need lower > 0 (log transforms)")
    names = tuple(f"{ORIGIN}.centre.{i}" for i in range(grid.ndim)) + (f"{ORIGIN}.radius", f"{ORIGIN}.amplitude")
    stacked = [np.concatenate([c, r, a]) for c, r, a in zip((init, lower, upper), radius, amplitude, strict=True)]
    log = [False] * grid.ndim + [True, True]
    return Origin(found.field, world, domain), (names, *stacked, log)


def _unknowns(spec, origin_entries) -> Unknowns:
    from ._fit import checked_bounds  # the scalar fit's check: every arm runs one model with these leaves

    scalars = checked_bounds(spec, tuple(spec.maps))
    n = len(spec.parameters)
    names, init, lower, upper, log = origin_entries
    return Unknowns(
        scalars.names[:n] + names,
        np.concatenate([scalars.init[:n], init]),
        np.concatenate([scalars.lower[:n], lower]),
        np.concatenate([scalars.upper[:n], upper]),
        np.concatenate([np.ones(n, bool), np.asarray(log, bool)]),
    )


def _priors(spec, problems) -> dict[str, MapPrior]:
    """The maps' priors: ``[fit.maps]`` in order, then the origin's where it is a map (named ``origin``)."""
    shapes = {p.grid.shape for p in problems.values()}
    if spec.maps and len(shapes) > 1:
        raise ConfigError("fit.maps", list(spec.maps), f"maps need the arms on one grid; they have {sorted(shapes)}")
    grid = next(iter(problems.values())).grid
    entries = dict(spec.maps)
    if spec.origin is not None and spec.origin.kind == "map":
        entries[ORIGIN] = spec.origin
    return {
        name: MapPrior.build(grid.shape, grid.spacing, entry.prior_sd, entry.correlation_length)
        for name, entry in entries.items()
    }


class Calibration:
    """A calibration from scans (and scalar data, optionally), checked and built before any compute:
    :meth:`loss` at unconstrained ``z`` (the scalar unknowns, then each map's whitened ``z``),
    :meth:`predict` the fields at the scans."""

    def __init__(self, spec):
        self.spec = spec
        self.data = _observations(spec)
        self.problems = {
            arm: Problem.from_config(config, observables=self._observed(arm) or None)
            for arm, config in spec.arms.items()
        }  # fmt: skip
        self.scans: tuple[Scan, ...] = load_scans(spec, self.problems)
        self.origin, entries = _origin(spec, self.problems)
        self.unknowns = _unknowns(spec, entries)
        self.priors = _priors(spec, self.problems)
        self.map_size = {name: prior.size for name, prior in self.priors.items()}
        n_maps = sum(self.map_size.values())
        if spec.uncertainty.method == "laplace" and self.priors and spec.uncertainty.rank > n_maps:
            raise ConfigError("fit.uncertainty.rank", spec.uncertainty.rank, f"must be ≤ the {n_maps} map unknowns")
        if spec.uncertainty.method == "nuts" and self.priors:
            raise ConfigError("fit.uncertainty.method", "nuts", "NUTS samples the scalars and a Gaussian origin; with "
                              'maps (or an initial map) use method = "laplace"')  # fmt: skip
        self.arrays = {"targets": tuple(jnp.asarray(s.target) for s in self.scans)}
        if self.data is not None:
            self.arrays["data"] = jnp.asarray(self.data.value)
        self.stages = tuple(self.coarsened(factor) for factor in spec.fit.continuation)
        """The coarse calibrations of a grid continuation (``[fit] continuation``), coarsest first."""

    def _observed(self, arm: str) -> tuple[str, ...]:
        """The observables of ``arm`` in the scalar data (sorted; none without data)."""
        if self.data is None:
            return ()
        return tuple(sorted({str(n) for n in self.data.observable[self.data.rows(arm)]}))

    @property
    def names(self) -> tuple[str, ...]:
        return self.unknowns.names

    @property
    def n_scalars(self) -> int:
        return len(self.unknowns.names)

    def split(self, z):
        """``(θ natural, {map: z_map})`` from the full unconstrained vector."""
        k, out, start = self.n_scalars, {}, self.n_scalars
        for name, size in self.map_size.items():
            out[name] = z[start : start + size]
            start += size
        return self.unknowns.natural(z[:k]), out

    def map_value(self, name: str, theta, m):
        """The field a map sets from its perturbation ``m`` (grid shape): ``θ · exp(m)`` for a parameter
        map (``θ`` its scalar: fitted, or the arm's), the initial field for the origin's map."""
        if name == ORIGIN:
            return self.origin.seed(m)
        names = tuple(self.spec.parameters)
        base = theta[names.index(name)] if name in names else leaf(next(iter(self.problems.values())).params, name)
        return base * jnp.exp(m)

    def _problem_at(self, arm: str, theta, z_maps) -> tuple[Problem, dict]:
        """The arm's problem with the unknowns set: parameters, maps and the initial state."""
        problem = self.problems[arm]
        n_params = len(self.spec.parameters)
        params = with_values(problem.params, tuple(self.spec.parameters), theta[:n_params])
        y0 = dict(problem.y0)
        for name, z in z_maps.items():
            value = self.map_value(name, theta, self.priors[name](z.reshape(self.priors[name].shape)))
            if name == ORIGIN:
                y0[self.origin.field] = value
            else:
                params = with_values(params, (name,), (value.astype(leaf(params, name).dtype),))
        if isinstance(self.origin, Origin):
            y0[self.origin.field] = self.seed_at(theta)
        return eqx.tree_at(lambda p: p.params, problem, params), y0

    def seed_at(self, theta):
        """The Gaussian origin's initial field at the unknowns ``θ`` (natural units)."""
        n, ndim = len(self.spec.parameters), self.origin.world.shape[0]
        return self.origin.seed(theta[n : n + ndim], theta[-2], theta[-1])

    def initial_at(self, theta, z_maps):
        """The origin's initial field (either kind) at the unknowns."""
        if isinstance(self.origin, Origin):
            return self.seed_at(theta)
        prior = self.priors[ORIGIN]
        return self.origin.seed(prior(z_maps[ORIGIN].reshape(prior.shape)))

    def _steps(self, arm: str, days) -> list[int]:
        """The positive steps ``arm`` is saved at: its scans' and data's, or ``days``."""
        dt = self.problems[arm].dt
        if days is not None:
            return sorted({round(d / dt) for d in days})
        steps = {s.step for s in self.scans if s.arm == arm}
        if self.data is not None and len(self.data.rows(arm)):
            steps.add(max(1, int(self.data.last_step[self.data.rows(arm)].max())))  # the run reaches the last datum
        return sorted(steps)

    def solve(self, theta, z_maps, days=None) -> tuple[dict, dict, jax.Array]:
        """``(fields, observed, ok)``: ``{(arm, step): {field: u}}`` at every scan (or at ``days``), ``{arm:
        {observable: its value after every step 0, 1, …}}`` of the arms with scalar data, and whether all
        runs succeeded. One rollout per arm, to its last scan or datum, fields saved every gcd of those steps."""
        fields, observed, ok = {}, {}, jnp.asarray(True)
        for arm in self.problems:
            steps = self._steps(arm, days)
            if not steps:
                continue
            every = math.gcd(*steps)
            solved, y0 = self._problem_at(arm, theta, z_maps)
            observe = solved.observe if days is None and self._observed(arm) else None
            traj = simulate(solved.system, solved.grid, y0, t_end=max(steps) * solved.dt, dt=solved.dt,
                            params=solved.params, numerics=solved.numerics,
                            saveat=SaveAt(every=every * solved.dt, observe=observe), throw=False)  # fmt: skip
            ok = ok & (traj.result == RESULTS.successful)
            for step in steps:
                fields[arm, step] = {name: traj.fields[name][step // every] for name in solved.system.fields}
            if observe is not None:
                first = observe({k: v[0] for k, v in traj.fields.items()}, solved.params, traj.t[0])
                observed[arm] = {k: jnp.concatenate([jnp.asarray(first[k])[None], traj.observed[k]]) for k in first}
        return fields, observed, ok

    def predict(self, theta, z_maps, days=None) -> tuple[dict, jax.Array]:
        """``{(arm, step): {field: u}}`` at every scan (or at ``days`` of every arm) and whether all runs succeeded."""
        fields, _, ok = self.solve(theta, z_maps, days)
        return fields, ok

    def data_prediction(self, observed):
        """The model's value at every row of the scalar data (in the rows' order)."""
        out = jnp.zeros(len(self.data), jnp.result_type(float))
        for arm, series in observed.items():
            rows = self.data.rows(arm)
            names = self._observed(arm)
            stacked = jnp.stack([series[n].astype(out.dtype) for n in names])
            which, step = np.searchsorted(names, self.data.observable[rows]), self.data.step[rows]
            w = jnp.asarray(self.data.weight[rows], out.dtype)  # between steps: linear in time
            after = stacked[which, np.minimum(step + 1, stacked.shape[1] - 1)]
            out = out.at[rows].set((1 - w) * stacked[which, step] + w * after)
        return out

    def residuals(self, theta, z_maps, arrays):
        """The residuals (the scans', then the scalar data's: one vector), whether every run succeeded, and
        the predicted fields."""
        fields, observed, ok = self.solve(theta, z_maps)
        parts = []
        for scan, target in zip(self.scans, arrays["targets"], strict=True):
            u = fields[scan.arm, scan.step][scan.field].astype(jnp.result_type(float))
            parts.append(_with_target(scan, target).residuals(u, domain_of(self.problems[scan.arm])))
        if self.data is not None:
            lognormal = self.spec.fit.likelihood == "lognormal"
            parts.append(residual(self.data_prediction(observed), arrays["data"], self.data.sigma, lognormal))
        return jnp.concatenate(parts), ok, fields

    def loss(self, z, arrays):
        """``½ Σ r² + ½ |z_maps|²``; ``∞`` where a run failed or a residual is not finite."""
        theta, z_maps = self.split(z)
        r, ok, _ = self.residuals(theta, z_maps, arrays)
        prior = sum(0.5 * jnp.sum(jnp.square(v)) for v in z_maps.values())
        total = 0.5 * jnp.sum(jnp.square(r)) + prior
        return jnp.where(ok & jnp.isfinite(total), total, jnp.inf)

    def z0(self) -> np.ndarray:
        maps = [np.zeros(size) for size in self.map_size.values()]
        return np.concatenate([self.unknowns.unconstrained(self.unknowns.init), *maps])

    def coarsened(self, factor: float) -> Calibration:
        """The same calibration on every arm's grid coarsened by ``factor`` (a stage of a continuation):
        ``grid.resample`` × factor for an image grid, else ``shape / factor`` cells over the same box;
        the scans are read onto the coarse grids."""
        overrides = {}
        for arm, config in self.spec.arms.items():
            grid = config.sections["grid"]
            if grid.get("image"):
                item = f"grid.resample={float(grid.get('resample', 1.0)) * factor}"
            else:
                shape = [max(2, round(n / factor)) for n in config.grid.shape]
                item = f"grid.shape={shape}"
                overrides[arm] = [item, f"grid.length={[float(v) for v in config.grid.length]}"]
                continue
            overrides[arm] = [item]
        arms = {arm: cfg.loads(c.text, c.source, [*self.spec.arm_overrides, *overrides[arm]])
                for arm, c in self.spec.arms.items()}  # fmt: skip
        fit = dataclasses.replace(self.spec.fit, continuation=[])
        return Calibration(dataclasses.replace(self.spec, arms=arms, fit=fit))

    def transfer(self, coarse: Calibration, z_coarse) -> np.ndarray:
        """The unknowns of a ``coarse`` stage's estimate on this calibration's grids: scalars and origin
        in natural units (kept inside these bounds), maps interpolated (trilinear, in world space) and
        whitened by this grid's prior; an initial map carries its log-odds ``μ + m``."""
        theta, maps = coarse.split(jnp.asarray(z_coarse))
        out = [self.unknowns.unconstrained(np.asarray(theta))]
        fine, rough = next(iter(self.problems.values())).grid, next(iter(coarse.problems.values())).grid
        for name, prior in self.priors.items():
            m = np.asarray(coarse.priors[name](maps[name].reshape(coarse.priors[name].shape)))
            if name == ORIGIN:
                m = np.asarray(coarse.origin.mean) + m
            m = interpolate(m, rough, fine)
            if name == ORIGIN:
                m = m - np.asarray(self.origin.mean)
            out.append(np.asarray(prior.whiten(jnp.asarray(m))).ravel())
        return np.concatenate(out)


def interpolate(values: np.ndarray, source, target) -> np.ndarray:
    """``values`` on grid ``source`` at the cell centres of grid ``target`` (linear, in world space;
    the nearest edge value outside)."""
    from scipy.ndimage import map_coordinates

    index = np.linalg.solve(source.world_affine(), target.world_affine())  # target index → source index
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in target.shape], indexing="ij"))
    homogeneous = np.concatenate([grid.reshape(target.ndim, -1), np.zeros((3 - target.ndim, grid[0].size)),
                                  np.ones((1, grid[0].size))])  # fmt: skip
    coordinates = (index @ homogeneous)[: source.ndim]
    return map_coordinates(values, coordinates, order=1, mode="nearest").reshape(target.shape)


def _observations(spec):
    """The scalar data of ``[fit] data`` checked against the arms (None without)."""
    if spec.data_path is None:
        return None
    from ._fit import observations

    return observations(spec)


def _with_target(scan: Scan, target) -> Scan:
    """The scan with its target as a traced array (the data stay arguments of the compiled loss)."""
    return Scan(scan.index, scan.arm, scan.t, scan.step, scan.field, scan.kind, scan.file, target, scan.thresholds,
                scan.label_thresholds, None, scan.sigma, scan.width)  # fmt: skip


def leaf(params, name: str):
    """A parameter leaf of a dict or a module (``Parameters``)."""
    return params[name] if isinstance(params, dict) else getattr(params, name)
