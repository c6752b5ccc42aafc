"""``tumorfield fit`` of a calibration from scans: optimise, describe the posterior, forecast, write ``FIT.h5``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import NoSubcycling

from .. import _compile_log
from ..run._job import _setup_jax
from ._calibration import Calibration, leaf
from ._lowrank import LowRankPosterior, randomized_eigh
from ._metrics import concordance_correlation, dice_at_thresholds, volume_error
from ._nuts import run_nuts
from ._optimise import make_step, minimise
from ._uncertainty import gauss_newton, warnings


@dataclass
class CalibrationResult:
    """What a calibration found: scalar and origin estimates with their uncertainty, maps with their
    pointwise posterior sd, the predicted fields and metrics at every scan, samples, forecasts."""

    calibration: Calibration
    names: tuple[str, ...]
    estimate: np.ndarray
    std_error: np.ndarray
    correlation: np.ndarray
    hessian: np.ndarray
    minimum: object
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    predictions: dict[int, np.ndarray] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    samples: np.ndarray | None = None
    sampler: dict[str, np.ndarray] = field(default_factory=dict)
    forecast: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.minimum.status

    @property
    def converged(self) -> bool:
        return self.minimum.converged


def _with_numerics(calibration: Calibration, change: Callable) -> Calibration:
    """A copy whose arms run with ``change(numerics)``."""
    copy = object.__new__(Calibration)
    copy.__dict__.update(calibration.__dict__)
    copy.problems = {
        arm: eqx.tree_at(lambda p: p.numerics, problem, change(problem.numerics))
        for arm, problem in calibration.problems.items()
    }
    return copy


def forward_mode(calibration: Calibration) -> Calibration:
    """A copy whose runs are forward-mode differentiable (the sub-step loop a ``lax.while_loop``)."""
    return _with_numerics(calibration, lambda numerics: numerics.forward_mode())


def _scalar_uncertainty(calibration: Calibration, theta, z_maps):
    """Gauss–Newton at the estimate for the scalars and the origin (maps held at theirs)."""
    forward = forward_mode(calibration)

    def residuals(t):
        return forward.residuals(t, z_maps, calibration.arrays)[0]

    r = residuals(theta)
    jacobian = jax.jit(jax.jacfwd(residuals))(theta)
    return gauss_newton(np.asarray(jacobian), np.asarray(r))


def _map_posterior(calibration: Calibration, theta, z_maps, key) -> dict[str, dict[str, np.ndarray]]:
    """Per map: the estimate ``θ·exp(m̂)``, ``m̂`` and the pointwise posterior sd of ``m`` from the low-rank
    Laplace posterior of the whitened unknowns (prior-preconditioned Gauss–Newton Hessian
    ``H̃ = J_zᵀ J_z``, its top eigenpairs by a randomised eigensolver; Bui-Thanh et al. 2013)."""
    if not z_maps:
        return {}
    forward = forward_mode(calibration)
    names, sizes = tuple(z_maps), [z.shape[0] for z in z_maps.values()]
    flat = jnp.concatenate([z_maps[n] for n in names])

    def unflatten(v):
        return dict(zip(names, jnp.split(v, np.cumsum(sizes)[:-1]), strict=True))

    def r_forward(v):
        return forward.residuals(theta, unflatten(v), calibration.arrays)[0]

    def r_reverse(v):
        return calibration.residuals(theta, unflatten(v), calibration.arrays)[0]

    _, pullback = jax.vjp(r_reverse, flat)

    @jax.jit
    def matvec(v):
        return pullback(jax.jvp(r_forward, (flat,), (v,))[1])[0]

    rank = calibration.spec.uncertainty.rank
    values, vectors = randomized_eigh(matvec, flat.shape[0], rank, key=key)
    out, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        prior = calibration.priors[name]
        block = LowRankPosterior(values, vectors[start : start + size])  # this map's rows of the eigenvectors
        variance = block.covariance_diag_of(lambda v, p=prior: p(v.reshape(p.shape)), prior.pointwise_variance())
        m_hat = np.asarray(prior(z_maps[name].reshape(prior.shape)))
        base = _scalar_leaf(calibration, name, theta)
        sd = np.sqrt(np.maximum(np.asarray(variance), 0.0))
        out[name] = {"estimate": base * np.exp(m_hat), "log_perturbation": m_hat, "sd": sd,
                     "eigenvalues": np.asarray(values)}  # fmt: skip
        start += size
    return out


def _scalar_leaf(calibration: Calibration, name: str, theta) -> float:
    """The scalar a map multiplies: its estimate where fitted, else the arm's value."""
    names = tuple(calibration.spec.parameters)
    if name in names:
        return float(theta[names.index(name)])
    return float(leaf(next(iter(calibration.problems.values())).params, name))


def _nuts(calibration: Calibration, z_hat, key, log) -> tuple[np.ndarray, dict]:
    """NUTS over the scalars and the origin (unconstrained; the density of θ flat within its bounds).

    The chains are vmapped, and the gradient of a step that may sub-cycle cannot be (the checkpointed
    sub-step loop under a batched branch), so the chains run without sub-cycling: a trial whose step
    would need it is rejected (zero density; counted as a divergence) — sub-cycling is never needed
    where no field has an explicit step limit (e.g. implicit cell diffusion, no taxis or decay)."""
    u = calibration.spec.uncertainty
    arrays = calibration.arrays
    calibration = _with_numerics(calibration, lambda n: eqx.tree_at(lambda m: m.substeps, n, NoSubcycling()))

    def logdensity(z):
        return -calibration.loss(z, arrays) + calibration.unknowns.log_jacobian(z)

    jitter = 0.01 * jax.random.normal(key, (u.chains, z_hat.shape[0]))
    log(f"NUTS: {u.chains} chains × ({u.warmup} warm-up + {u.samples}) steps, vmapped")
    found = run_nuts(logdensity, jnp.asarray(z_hat)[None] + jitter, num_warmup=u.warmup, num_samples=u.samples,
                     key=jax.random.fold_in(key, 1))  # fmt: skip
    natural = np.asarray(jax.vmap(jax.vmap(calibration.unknowns.natural))(found.samples))
    diagnostics = {name: np.asarray(getattr(found, name)) for name in ("rhat", "ess", "divergences", "acceptance")}
    return natural, diagnostics


def scan_metrics(calibration: Calibration, predictions: dict[int, np.ndarray]) -> dict[int, dict[str, float]]:
    """Per scan: Dice and relative volume error at each threshold (segmentations), or the concordance
    correlation coefficient (densities), inside the domain."""
    from ._scans import domain_of

    out = {}
    for scan in calibration.scans:
        u, problem = predictions[scan.index], calibration.problems[scan.arm]
        domain = domain_of(problem) > 0
        if scan.kind == "density":
            out[scan.index] = {"ccc": float(concordance_correlation(u, scan.target, domain))}
            continue
        dice = dice_at_thresholds(u, scan.labels, scan.label_thresholds, domain)
        volume = volume_error(u, scan.labels, scan.label_thresholds, problem.grid.cell_volume, domain)
        out[scan.index] = {**{f"dice@{k:g}": float(v) for k, v in dice.items()},
                           **{f"volume_error@{k:g}": float(v) for k, v in volume.items()}}  # fmt: skip
    return out


def _posterior_draws(calibration, result: CalibrationResult, theta_hat, n: int, key) -> list:
    """``n`` posterior draws of the scalar unknowns θ: NUTS samples where sampled, else the Laplace
    approximation (θ Gaussian with the Gauss–Newton covariance, clipped to the bounds). The maps stay at
    their estimate."""
    u = calibration.unknowns
    if result.samples is not None:
        flat = result.samples.reshape(-1, result.samples.shape[-1])
        picks = np.asarray(jax.random.choice(key, flat.shape[0], (n,), replace=flat.shape[0] < n))
        return [jnp.asarray(flat[i]) for i in picks]
    sd = np.where(np.isfinite(result.std_error), result.std_error, 0.0)
    covariance = result.correlation * np.outer(sd, sd)
    covariance = np.where(np.isfinite(covariance), covariance, 0.0)
    draws = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1))).multivariate_normal(
        np.asarray(theta_hat), covariance, size=n, method="eigh"
    )
    margin = 1e-9 * (u.upper - u.lower)  # strictly inside, whatever the sign of the bounds
    return [jnp.asarray(d) for d in np.clip(draws, u.lower + margin, u.upper - margin)]


def forecast(calibration, result: CalibrationResult, z_hat, days: Sequence[float], key, log) -> dict:
    """At each of ``days``: the field at the estimate, and the probability of presence per voxel (the
    posterior share of draws with the field ≥ the lowest threshold of the scans, 0.16 without one)."""
    if not days:
        return {}
    theta_hat, z_maps = calibration.split(jnp.asarray(z_hat))
    field_name = calibration.scans[0].field
    level = min((t for s in calibration.scans for t in s.thresholds), default=0.16)
    predict = jax.jit(lambda t: calibration.predict(t, z_maps, days))  # one program: the estimate and every draw
    at_estimate, _ = predict(theta_hat)
    draws = _posterior_draws(calibration, result, theta_hat, calibration.spec.uncertainty.samples, key)
    log(f"forecast: {len(draws)} posterior draws to day {max(days):g}")
    counts: dict = {}
    for theta in draws:
        fields, ok = predict(theta)
        if bool(ok):
            for (arm, step), values in fields.items():
                counts[arm, step] = counts.get((arm, step), 0) + (np.asarray(values[field_name]) >= level)
    out = {}
    for (arm, step), values in at_estimate.items():
        dt = calibration.problems[arm].dt
        presence = counts.get((arm, step), 0) / max(1, len(draws))
        out[arm, step * dt] = {"estimate": np.asarray(values[field_name]), "probability": np.asarray(presence)}
    return out


def calibrate(
    calibration: Calibration, log: Callable[[str], None] = lambda _: None, seed: int = 0
) -> CalibrationResult:
    """Minimise, then the posterior (Laplace or NUTS), the scans' predictions and metrics, the forecasts."""
    spec = calibration.spec
    _setup_jax(next(iter(spec.arms.values())))
    optimiser, step = make_step(calibration.loss, spec.fit.max_linesearch_steps)
    minimum = minimise(optimiser, step, calibration.z0(), calibration.arrays, max_iterations=spec.fit.max_iterations,
                       tolerance=spec.fit.tolerance, log=log)  # fmt: skip
    z_hat = jnp.asarray(minimum.z)
    theta, z_maps = calibration.split(z_hat)
    key = jax.random.PRNGKey(seed)
    n = calibration.n_scalars
    result = CalibrationResult(calibration, calibration.names, np.asarray(theta), np.full(n, np.nan),
                               np.full((n, n), np.nan), np.full((n, n), np.nan), minimum)  # fmt: skip
    if minimum.status != "failed" and spec.uncertainty.method != "none":
        _describe_posterior(calibration, result, z_hat, key, log)
    fields, _ = calibration.predict(theta, z_maps)
    result.predictions = {s.index: np.asarray(fields[s.arm, s.step][s.field]) for s in calibration.scans}
    result.metrics = scan_metrics(calibration, result.predictions)
    if spec.fit.forecast and minimum.status != "failed":
        result.forecast = forecast(calibration, result, z_hat, spec.fit.forecast, jax.random.fold_in(key, 7), log)
    result.warnings += [f"{name} ended at a bound of its transform" for name in calibration.unknowns.at_bound(theta)]
    log(f"compilation {_compile_log.seconds():.2f} s in all")
    return result


def _describe_posterior(calibration, result: CalibrationResult, z_hat, key, log) -> None:
    theta, z_maps = calibration.split(z_hat)
    if calibration.spec.uncertainty.method == "nuts":
        natural, result.sampler = _nuts(calibration, z_hat[: calibration.n_scalars], key, log)
        result.samples = natural
        flat = natural.reshape(-1, natural.shape[-1])
        result.std_error = flat.std(axis=0, ddof=1)
        result.correlation = np.corrcoef(flat, rowvar=False) if flat.shape[1] > 1 else np.ones((1, 1))
        return
    if calibration.n_scalars:
        uncertainty = _scalar_uncertainty(calibration, theta, z_maps)
        result.std_error, result.correlation, result.hessian = (
            uncertainty.std_error, uncertainty.correlation, uncertainty.hessian
        )  # fmt: skip
        result.warnings += warnings(calibration.names, np.asarray(theta), uncertainty)
    log(f"Laplace posterior: Gauss–Newton for {calibration.n_scalars} scalars"
        + (f", rank-{calibration.spec.uncertainty.rank} posterior of the maps" if z_maps else ""))  # fmt: skip
    result.maps = _map_posterior(calibration, theta, z_maps, key)
