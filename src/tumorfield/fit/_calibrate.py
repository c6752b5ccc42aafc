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
from ._calibration import Calibration
from ._lowrank import LowRankPosterior, randomized_eigh
from ._metrics import concordance_correlation, dice_at_thresholds, volume_error
from ._nuts import run_nuts
from ._optimise import make_step, minimise
from ._problem import residual
from ._uncertainty import from_hessian, warnings


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
    stages: list[dict] = field(default_factory=list)
    data_prediction: np.ndarray | None = None
    data_residuals: np.ndarray | None = None

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


def _scalar_uncertainty(calibration: Calibration, theta, z_maps, maps: _MapPosterior | None = None):
    """Gauss–Newton at the estimate for the scalars and the origin: the maps held at theirs, or
    marginalised where ``maps`` (their low-rank posterior) is given — the Schur complement
    ``H_θθ − H_θz (I + H̃)⁻¹ H_zθ`` with ``H_zθ = J_zᵀ J_θ`` (one vector–Jacobian product per scalar)."""
    forward = forward_mode(calibration)

    def residuals(t):
        return forward.residuals(t, z_maps, calibration.arrays)[0]

    r = residuals(theta)
    jacobian = np.asarray(jax.jit(jax.jacfwd(residuals))(theta), np.float64)
    hessian = jacobian.T @ jacobian
    if maps is not None:
        cross = np.asarray(jax.jit(jax.vmap(maps.pullback, in_axes=1, out_axes=1))(jnp.asarray(jacobian)))
        hessian = hessian - cross.T @ maps.solve(cross)
    return from_hessian(0.5 * (hessian + hessian.T), np.asarray(r))


@dataclass(frozen=True)
class _MapPosterior:
    """The maps' low-rank Laplace posterior in the whitened unknowns: ``(I + H̃)⁻¹ ≈ I − V D Vᵀ``, and the
    pullback ``c ↦ J_zᵀ c`` of the residuals at the estimate."""

    values: jax.Array
    vectors: jax.Array
    pullback: Callable

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``(I + H̃)⁻¹ b`` (columns of ``b``)."""
        values, vectors = np.asarray(self.values), np.asarray(self.vectors)
        damping = np.maximum(values, 0.0) / (1.0 + np.maximum(values, 0.0))
        return b - vectors @ (damping[:, None] * (vectors.T @ b))


def _map_posterior(calibration: Calibration, theta, z_maps, key) -> tuple[dict, _MapPosterior | None]:
    """Per map: the estimate (``θ·exp(m̂)``; an initial map's ``σ(μ + m̂)``), ``m̂`` and the pointwise
    posterior sd of ``m`` (at the scalars' estimate) from the low-rank Laplace posterior of the whitened
    unknowns (prior-preconditioned Gauss–Newton Hessian ``H̃ = J_zᵀ J_z``, its top eigenpairs by a
    randomised eigensolver; Bui-Thanh et al. 2013); and that posterior (for the scalars' marginal)."""
    if not z_maps:
        return {}, None
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
        m_hat = prior(z_maps[name].reshape(prior.shape))
        sd = np.sqrt(np.maximum(np.asarray(variance), 0.0))
        out[name] = {"estimate": np.asarray(calibration.map_value(name, theta, m_hat)),
                     "log_perturbation": np.asarray(m_hat), "sd": sd, "eigenvalues": np.asarray(values)}  # fmt: skip
        start += size
    return out, _MapPosterior(values, vectors, lambda c: pullback(c)[0])


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


def continuation(calibration: Calibration, log) -> tuple[np.ndarray, list[dict]]:
    """The start of the fit on the arms' grids: each coarse stage of ``[fit] continuation`` minimised
    from the previous one's estimate (the first from the fit file's start), its estimate carried onto the
    next grid (:meth:`Calibration.transfer`). A stage that fails leaves the start as it was. Returns the
    start and, per stage, its factor, grid shape, iterations, loss and status."""
    spec = calibration.spec
    previous, z, summary = None, None, []
    for factor, stage in zip(spec.fit.continuation, calibration.stages, strict=True):
        shape = next(iter(stage.problems.values())).grid.shape
        log(f"continuation: grid × 1/{factor:g} {shape}")
        start = stage.z0() if previous is None else stage.transfer(previous, z)
        optimiser, step = make_step(stage.loss, spec.fit.max_linesearch_steps)
        minimum = minimise(optimiser, step, start, stage.arrays, max_iterations=spec.fit.max_iterations,
                           tolerance=spec.fit.tolerance, log=log)  # fmt: skip
        summary.append({"factor": float(factor), "shape": list(shape), "iterations": minimum.n_iterations,
                        "loss": float(minimum.loss), "status": minimum.status})  # fmt: skip
        if minimum.status != "failed":
            previous, z = stage, np.asarray(minimum.z)
    return (calibration.z0() if previous is None else calibration.transfer(previous, z)), summary


def calibrate(
    calibration: Calibration, log: Callable[[str], None] = lambda _: None, seed: int = 0
) -> CalibrationResult:
    """Minimise, then the posterior (Laplace or NUTS), the scans' predictions and metrics, the forecasts."""
    spec = calibration.spec
    _setup_jax(next(iter(spec.arms.values())))
    start, stages = continuation(calibration, log)
    optimiser, step = make_step(calibration.loss, spec.fit.max_linesearch_steps)
    minimum = minimise(optimiser, step, start, calibration.arrays, max_iterations=spec.fit.max_iterations,
                       tolerance=spec.fit.tolerance, log=log)  # fmt: skip
    z_hat = jnp.asarray(minimum.z)
    theta, z_maps = calibration.split(z_hat)
    key = jax.random.PRNGKey(seed)
    n = calibration.n_scalars
    result = CalibrationResult(calibration, calibration.names, np.asarray(theta), np.full(n, np.nan),
                               np.full((n, n), np.nan), np.full((n, n), np.nan), minimum)  # fmt: skip
    result.stages = stages
    if minimum.status != "failed" and spec.uncertainty.method != "none":
        _describe_posterior(calibration, result, z_hat, key, log)
    fields, observed, _ = calibration.solve(theta, z_maps)
    if calibration.data is not None:
        result.data_prediction = np.asarray(calibration.data_prediction(observed))
        data = calibration.data
        result.data_residuals = np.asarray(residual(result.data_prediction, data.value, data.sigma,
                                                    spec.fit.likelihood == "lognormal"))  # fmt: skip
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
    log(f"Laplace posterior: Gauss–Newton for {calibration.n_scalars} scalars"
        + (f", rank-{calibration.spec.uncertainty.rank} posterior of the maps" if z_maps else ""))  # fmt: skip
    result.maps, maps = _map_posterior(calibration, theta, z_maps, key)
    if calibration.n_scalars:
        uncertainty = _scalar_uncertainty(calibration, theta, z_maps, maps)
        result.std_error, result.correlation, result.hessian = (
            uncertainty.std_error, uncertainty.correlation, uncertainty.hessian
        )  # fmt: skip
        result.warnings += warnings(calibration.names, np.asarray(theta), uncertainty)
