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

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import RESULTS, SaveAt, simulate

from .._schema import ConfigError
from ..problem import Problem
from ._prior import MapPrior
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


def _origin(spec, problems) -> tuple[Origin | None, tuple]:
    """The origin and its unknowns ``(names, init, lower, upper, log)``; refuses a field the arms lack
    and a start or bounds outside the domain."""
    found = spec.origin
    if found is None:
        return None, ((), [], [], [], [])
    problem = next(iter(problems.values()))
    if found.field not in problem.system.fields or found.field in problem.system.scalars:
        raise ConfigError("fit.origin.field", found.field, "must be a grid field of the arms' model")
    grid, domain = problem.grid, domain_of(problem)
    world = grid.world_coordinates()
    inside = world.reshape(grid.ndim, -1)[:, domain.ravel() > 0]
    box = {"lower": inside.min(axis=1).tolist(), "upper": inside.max(axis=1).tolist()}
    start = np.asarray(found.centre.get("init", []), np.float64).ravel()
    if start.shape == (grid.ndim,):
        distance = np.sqrt(np.min(np.sum((inside - start[:, None]) ** 2, axis=0)))
        if distance > 0.5 * float(np.linalg.norm(grid.spacing)):
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
    shapes = {p.grid.shape for p in problems.values()}
    if spec.maps and len(shapes) > 1:
        raise ConfigError("fit.maps", list(spec.maps), f"maps need the arms on one grid; they have {sorted(shapes)}")
    grid = next(iter(problems.values())).grid
    return {
        name: MapPrior.build(grid.shape, grid.spacing, entry.prior_sd, entry.correlation_length)
        for name, entry in spec.maps.items()
    }


class Calibration:
    """A calibration from scans, checked and built before any compute: :meth:`loss` at unconstrained
    ``z`` (the scalar unknowns, then each map's whitened ``z``), :meth:`predict` the fields at the scans."""

    def __init__(self, spec):
        self.spec = spec
        self.problems = {arm: Problem.from_config(config) for arm, config in spec.arms.items()}
        self.scans: tuple[Scan, ...] = load_scans(spec, self.problems)
        self.origin, entries = _origin(spec, self.problems)
        self.unknowns = _unknowns(spec, entries)
        self.priors = _priors(spec, self.problems)
        self.map_size = {name: math.prod(next(iter(self.problems.values())).grid.shape) for name in self.priors}
        n_maps = sum(self.map_size.values())
        if spec.uncertainty.method == "laplace" and self.priors and spec.uncertainty.rank > n_maps:
            raise ConfigError("fit.uncertainty.rank", spec.uncertainty.rank, f"must be ≤ the {n_maps} map unknowns")
        if spec.uncertainty.method == "nuts" and self.priors:
            raise ConfigError("fit.uncertainty.method", "nuts", "NUTS samples the scalars and the origin; with maps "
                              'use method = "laplace"')  # fmt: skip
        self.arrays = {"targets": tuple(jnp.asarray(s.target) for s in self.scans)}

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

    def _problem_at(self, arm: str, theta, z_maps) -> tuple[Problem, dict]:
        """The arm's problem with the unknowns set: parameters, maps and the initial seed."""
        problem = self.problems[arm]
        n_params = len(self.spec.parameters)
        params = with_values(problem.params, tuple(self.spec.parameters), theta[:n_params])
        for name, z in z_maps.items():
            base = leaf(params, name)
            m = self.priors[name](z.reshape(self.priors[name].shape))
            params = with_values(params, (name,), (base * jnp.exp(m).astype(base.dtype),))
        y0 = dict(problem.y0)
        if self.origin is not None:
            y0[self.origin.field] = self.seed_at(theta)
        return eqx.tree_at(lambda p: p.params, problem, params), y0

    def seed_at(self, theta):
        """The origin's initial field at the unknowns ``θ`` (natural units)."""
        n, ndim = len(self.spec.parameters), self.origin.world.shape[0]
        return self.origin.seed(theta[n : n + ndim], theta[-2], theta[-1])

    def predict(self, theta, z_maps, days=None) -> tuple[dict, jax.Array]:
        """``{(arm, step): {field: u}}`` at every scan (or at ``days`` of every arm) and whether all runs succeeded."""
        out, ok = {}, jnp.asarray(True)
        for arm, problem in self.problems.items():
            steps = [s.step for s in self.scans if s.arm == arm] if days is None else [
                round(d / problem.dt) for d in days]  # fmt: skip
            if not steps:
                continue
            every = math.gcd(*steps)
            solved, y0 = self._problem_at(arm, theta, z_maps)
            traj = simulate(solved.system, solved.grid, y0, t_end=max(steps) * solved.dt, dt=solved.dt,
                            params=solved.params, numerics=solved.numerics,
                            saveat=SaveAt(every=every * solved.dt), throw=False)  # fmt: skip
            ok = ok & (traj.result == RESULTS.successful)
            for step in steps:
                out[arm, step] = {name: traj.fields[name][step // every] for name in solved.system.fields}
        return out, ok

    def residuals(self, theta, z_maps, arrays):
        """The scans' residuals (one vector), whether every run succeeded, and the predicted fields."""
        fields, ok = self.predict(theta, z_maps)
        parts = []
        for scan, target in zip(self.scans, arrays["targets"], strict=True):
            u = fields[scan.arm, scan.step][scan.field].astype(jnp.result_type(float))
            parts.append(_with_target(scan, target).residuals(u, domain_of(self.problems[scan.arm])))
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


def _with_target(scan: Scan, target) -> Scan:
    """The scan with its target as a traced array (the data stay arguments of the compiled loss)."""
    return Scan(scan.index, scan.arm, scan.t, scan.step, scan.field, scan.kind, scan.file, target, scan.thresholds,
                scan.label_thresholds, None, scan.sigma, scan.width)  # fmt: skip


def leaf(params, name: str):
    """A parameter leaf of a dict or a module (``Parameters``)."""
    return params[name] if isinstance(params, dict) else getattr(params, name)
