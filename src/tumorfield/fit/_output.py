"""``FIT.h5`` (the fit's result file) and the summary table the CLI prints.

Layout (every array float64 unless said; names are UTF-8 strings)::

    /                      attrs: status, converged, n_iterations, loss, message, likelihood,
                           n_observations, reduced_chi2, warnings (strings), at_bound (names),
                           chi2_warning (reduced χ² above its limit), and the provenance of a run file
                           (schema = "tumorfield-fit/1", config = the resolved fit file, model,
                           versions, git commit, device, command line, created, ...)
    /fit/parameters        (n,) names, in the order of every per-parameter array
    /fit/estimate          (n,) natural units         /fit/std_error   (n,) Gauss–Newton
    /fit/correlation       (n, n)                     /fit/hessian     (n, n) JᵀJ
    /fit/initial, /fit/lower, /fit/upper              (n,)
    /fit/history/loss      (k + 1,) per iteration (0: the start); /fit/history/<name> (k + 1,)
    /fit/history/gradient  largest |∂L/∂z|;  /fit/history/trials  line-search trials
    /fit/prediction/<arm>/t              (s,) day, every step from 0
    /fit/prediction/<arm>/<observable>   (s,) at the estimate
    /fit/data/{arm, observable}          (m,) strings; {t, value, sigma, prediction, residual} (m,)
                           (value, sigma, prediction in the model's units); given_value, given_sigma,
                           given_units (as in the CSV), factor (value = factor · given_value)
    /fit/arms/<arm>        attrs: config (the arm's resolved run config), path
    /fit/profile/<name>/{value, loss, converged} (k,); /points (k, n) natural units, every parameter
                           attrs: lower, upper (95 % profile interval, NaN: not reached), minimum_loss
"""

from __future__ import annotations

import contextlib
import errno
import os

import h5py
import numpy as np

from ..io._guard import USERBLOCK, GuardedFile, StorageError, free_bytes
from ..run._job import _metadata
from ..run._output import OutputTarget
from ._uncertainty import chi2_limit, strongest_pairs

FORMAT = "tumorfield-fit/1"
_PER_ARM = ("dt", "steps_per_save", "grid_affine", "input_images")  # per arm: in each arm's stored config
"""Run-file attributes that belong to one arm: kept under ``/fit/arms/<arm>``, not at the root."""
_TEXT = h5py.string_dtype()


def _strings(group, name: str, values) -> None:
    group.create_dataset(name, data=np.asarray([str(v) for v in values], dtype=object), dtype=_TEXT)


def _write_result(h5: h5py.File, result) -> None:
    fit = h5.create_group("fit")
    _strings(fit, "parameters", result.names)
    for name in ("estimate", "std_error", "correlation", "hessian", "initial", "lower", "upper"):
        fit.create_dataset(name, data=np.asarray(getattr(result, name), np.float64))
    history = fit.create_group("history")
    history.create_dataset("loss", data=np.asarray(result.history["loss"]))
    for name, values in result.history.items():
        if name != "loss":
            history.create_dataset(name, data=np.asarray(values))
    prediction = fit.create_group("prediction")
    for arm, series in result.predictions.items():
        group = prediction.create_group(arm)
        for name, values in series.items():
            group.create_dataset(name, data=np.asarray(values, np.float64)).attrs["units"] = (
                "day" if name == "t" else result.units.get(name, "1")
            )
    _write_data(fit, result.data, result.data_prediction, result.residuals)
    for name, found in result.profiles.items():
        group = fit.create_group(f"profile/{name}")
        for key in ("value", "loss", "points", "converged"):
            group.create_dataset(key, data=np.asarray(getattr(found, "values" if key == "value" else key)))
        group.attrs.update(lower=found.lower, upper=found.upper, minimum_loss=found.minimum_loss, level=0.95)


def _write_data(fit, observations, prediction, residuals) -> None:
    """``/fit/data``: the scalar observations with the prediction and residual at the estimate; the rows as
    given (value, sigma, units) and the factor to the model's units."""
    data = fit.create_group("data")
    _strings(data, "arm", observations.arm)
    _strings(data, "observable", observations.observable)
    _strings(data, "given_units", observations.given_units)
    for name in ("t", "value", "sigma", "given_value", "given_sigma", "factor"):
        data.create_dataset(name, data=np.asarray(getattr(observations, name), np.float64))
    data.create_dataset("prediction", data=np.asarray(prediction, np.float64))
    data.create_dataset("residual", data=np.asarray(residuals, np.float64))


MIN_FREE = 2**20
"""Bytes the output's file system must have free before a fit starts (a ``FIT.h5`` is a few hundred KiB)."""


@contextlib.contextmanager
def reserved(path, *, overwrite: bool):
    """The output target of ``FIT.h5``, checked and locked before any compute (an
    :class:`~tumorfield.run.OutputError` if it cannot be used, a :class:`StorageError` if its file
    system has less than :data:`MIN_FREE` bytes free); a file left unfinished is removed."""
    target = OutputTarget.new(path, overwrite=overwrite)
    try:
        free = free_bytes(target.final.parent)
        if free is not None and free < MIN_FREE:
            raise StorageError(errno.ENOSPC, f"{target.final}: {free} bytes are free in {target.final.parent}, a "
                               f"fit needs at least {MIN_FREE // 1024} KiB for its output (No space left on device); "
                               f"nothing was computed or written")  # fmt: skip
        yield target
    except BaseException:
        target.discard()
        raise
    finally:
        target.release()


@contextlib.contextmanager
def _guarded(target: OutputTarget):
    """``FIT.h5`` written at ``target.current`` (``.NAME.PID.partial``, created exclusively next to its
    final name) through :class:`~tumorfield.io._guard.GuardedFile`: every HDF5 flush journaled and
    fsynced, and the first failed write (disk full, quota, I/O error) stops all later writes, so HDF5
    never sees a failure (no crash) and the writer raises :class:`StorageError` (exit 74) naming the
    file. The root's ``status`` is ``"writing"`` in a first flush; the caller writes everything and
    the real status, which reach the disk in one journaled flush, so a killed writer leaves a partial
    that says ``"writing"``, never ``"converged"``. Closed in ``finally``; the caller moves the file
    onto its name (an atomic rename) only after that."""
    guard = GuardedFile(target.current, create=True)
    h5 = None
    try:
        h5 = h5py.File(guard, "w", userblock_size=USERBLOCK)
        h5.attrs["status"] = "writing"
        _flush(h5, guard)
        try:
            yield h5
        except Exception:
            guard.check()  # an HDF5 error after a failed write is that failure
            raise
        _flush(h5, guard)
        h5.close()
        guard.check()
    except StorageError:
        why = guard.error.strerror or str(guard.error)
        older = f"; {target.final} is untouched" if target.had_old else ""
        raise StorageError(guard.error.errno or errno.EIO, f"{target.final}: writing the result failed ({why}); "
                           f"nothing was kept{older}: make room and run the fit again") from None  # fmt: skip
    except BaseException:
        guard.error = guard.error or OSError("abandoned")  # HDF5's closing writes are dropped: the partial goes
        raise
    finally:
        try:
            if h5 is not None and h5.id.valid:
                h5.close()
        except Exception:
            pass  # only after a failure (the guard drops every write): that failure is being raised
        guard.close()


def _flush(h5: h5py.File, guard: GuardedFile) -> None:
    """HDF5 flush (journaled, ending in fsync), then :class:`StorageError` if any write failed."""
    try:
        h5.flush()
    except Exception:
        guard.check()
        raise
    guard.check()


def _finish(target: OutputTarget) -> str:
    """Move the written file onto its name (atomic) and make the rename durable."""
    path = target.finish("complete")
    try:
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return str(path)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return str(path)


def write_fit(target: OutputTarget, result, argv) -> str:
    """Write ``result`` at ``target.current`` (``.NAME.PID.partial``, :func:`_guarded`), then move it onto its name."""
    first = next(iter(result.spec.arms.values()))
    with _guarded(target) as h5:
        provenance = {k: v for k, v in _metadata(first, argv, target).items() if k not in _PER_ARM}
        h5.attrs.update({**provenance, "schema": FORMAT, "config": result.spec.text})
        _write_result(h5, result)
        for arm, config in result.spec.arms.items():
            group = h5.create_group(f"fit/arms/{arm}")
            group.attrs.update(config=config.text, path=config.source, dt=config.time.dt)
        h5.attrs.update(
            status=result.status,
            converged=result.converged,
            n_iterations=result.n_iterations,
            loss=result.loss,
            message=result.message,
            likelihood=result.spec.fit.likelihood,
            n_observations=len(result.data),
            reduced_chi2=result.reduced_chi2,
        )
        h5.attrs.create("warnings", np.asarray([str(w) for w in result.warnings], dtype=object), dtype=_TEXT)
        h5.attrs.create("at_bound", np.asarray(result.at_bound, dtype=object), dtype=_TEXT)
        h5.attrs["chi2_warning"] = result.chi2_warning
    return _finish(target)


def summary(result) -> str:
    """The closing table: estimates, standard errors, strongest correlations, then the warnings."""
    at_bound = list(result.at_bound)
    w = max(14, *(len(n) + 2 for n in result.names))
    bounded = f" — at a bound: {', '.join(at_bound)}" if at_bound else ""
    limit = chi2_limit(len(result.data) - len(result.names))
    chi2 = f" (> {limit:.3g}: see the warnings)" if result.chi2_warning else ""
    lines = [
        f"fit {result.status} after {result.n_iterations} iterations{bounded}: {result.message}",
        f"loss (½ Σ r²) {result.loss:.6g}, {len(result.data)} observations, reduced χ² {result.reduced_chi2:.3g}"
        + chi2,
        "",
        f"{'parameter':<{w}}{'estimate':>13}{'std. error':>13}{'rel. SE':>9}{'initial':>12}   bounds",
    ]
    for i, name in enumerate(result.names):
        value, se = result.estimate[i], result.std_error[i]
        rel = f"{se / abs(value):.1%}" if np.isfinite(se) and value else "—"
        lines.append(
            f"{name:<{w}}{value:>13.6g}{se:>13.4g}{rel:>9}{result.initial[i]:>12.6g}   "
            f"[{result.lower[i]:g}, {result.upper[i]:g}]" + ("   AT BOUND" if name in at_bound else "")
        )
    pairs = strongest_pairs(result.correlation, 5)
    if pairs:
        lines += ["", "strongest correlations:"]
        lines += [f"  {result.names[i]} ~ {result.names[j]}: {result.correlation[i, j]:+.3f}" for i, j in pairs]
    if result.profiles:
        lines += ["", "95 % intervals:   profile likelihood        Gauss–Newton (θ̂ ± 1.96 SE)"]
        for name, found in result.profiles.items():
            i = result.names.index(name)
            se = result.std_error[i]
            lines.append(f"  {name:<14}[{found.lower:.6g}, {found.upper:.6g}]   "
                         f"[{result.estimate[i] - 1.96 * se:.6g}, {result.estimate[i] + 1.96 * se:.6g}]")  # fmt: skip
    lines += [""] + [f"warning: {w}" for w in result.warnings] if result.warnings else []
    return "\n".join(lines)


CALIBRATION_FORMAT = "tumorfield-fit/2"
"""``FIT.h5`` of a calibration from scans: the scalar layout plus ``/fit/maps``, ``/fit/scans``,
``/fit/samples``, ``/fit/forecast`` (docs/calibration.md)."""


def _write_scans(fit, result) -> None:
    calibration = result.calibration
    for scan in calibration.scans:
        group = fit.create_group(f"scans/{scan.index}")
        group.attrs.update(arm=scan.arm, t=scan.t, field=scan.field, kind=scan.kind, file=scan.file)
        group.create_dataset("prediction", data=np.asarray(result.predictions[scan.index], np.float64))
        group.create_dataset("observed", data=np.asarray(scan.labels if scan.labels is not None else scan.target))
        group.attrs["grid_affine"] = calibration.problems[scan.arm].grid.world_affine().ravel()
        for name, value in result.metrics[scan.index].items():
            group.attrs[name] = value
    if calibration.origin is not None:
        seed = np.asarray(calibration.initial_at(*calibration.split(np.asarray(result.minimum.z))), np.float64)
        fit.create_dataset("origin/initial", data=seed).attrs["field"] = calibration.origin.field


def _write_posterior(fit, result) -> None:
    for name, found in result.maps.items():
        group = fit.create_group(f"maps/{name}")
        for key, values in found.items():
            group.create_dataset(key, data=np.asarray(values, np.float64))
    if result.samples is not None:
        fit.create_dataset("samples", data=result.samples)
        for key, values in result.sampler.items():
            fit.create_dataset(f"sampler/{key}", data=values)
    for (arm, day), found in result.forecast.items():
        group = fit.create_group(f"forecast/{arm}/{format(day, 'g')}")
        group.attrs["t"] = day
        for key, values in found.items():
            group.create_dataset(key, data=np.asarray(values, np.float64))


def write_calibration(target: OutputTarget, result, argv) -> str:
    """Write a calibration's ``result`` at ``target.current`` (:func:`_guarded`), then move it onto its name."""
    spec = result.calibration.spec
    first = next(iter(spec.arms.values()))
    with _guarded(target) as h5:
        provenance = {k: v for k, v in _metadata(first, argv, target).items() if k not in _PER_ARM}
        h5.attrs.update({**provenance, "schema": CALIBRATION_FORMAT, "config": spec.text})
        minimum = result.minimum
        fit = h5.create_group("fit")
        _strings(fit, "parameters", result.names)
        u = result.calibration.unknowns
        for name, values in (("estimate", result.estimate), ("std_error", result.std_error),
                             ("correlation", result.correlation), ("hessian", result.hessian),
                             ("initial", u.init), ("lower", u.lower), ("upper", u.upper)):  # fmt: skip
            fit.create_dataset(name, data=np.asarray(values, np.float64))
        fit.create_dataset("history/loss", data=np.asarray(minimum.history.loss))
        _write_scans(fit, result)
        _write_posterior(fit, result)
        calibration = result.calibration
        if calibration.data is not None:
            _write_data(fit, calibration.data, result.data_prediction, result.data_residuals)
        for i, stage in enumerate(result.stages):
            fit.create_group(f"continuation/{i}").attrs.update(stage)
        for arm, config in spec.arms.items():
            group = h5.create_group(f"fit/arms/{arm}")
            group.attrs.update(config=config.text, path=config.source, dt=config.time.dt)
            group.attrs["grid_affine"] = config.grid.world_affine().ravel()
        h5.attrs.update(status=minimum.status, converged=minimum.converged, n_iterations=minimum.n_iterations,
                        loss=minimum.loss, message=minimum.message, method=spec.uncertainty.method)  # fmt: skip
    return _finish(target)


def calibration_summary(result) -> str:
    """The closing table of a calibration: unknowns (the origin in mm) with their uncertainty, per-scan metrics."""
    minimum = result.minimum
    lines = [f"calibration {minimum.status} after {minimum.n_iterations} iterations: {minimum.message}",
             f"negative log-posterior {minimum.loss:.6g}", "",
             f"{'unknown':<20}{'estimate':>13}{'std. error':>13}   bounds"]  # fmt: skip
    u = result.calibration.unknowns
    for i, name in enumerate(result.names):
        lines.append(f"{name:<20}{result.estimate[i]:>13.6g}{result.std_error[i]:>13.4g}   "
                     f"[{u.lower[i]:g}, {u.upper[i]:g}]" + ("   mm" if ".centre." in name else ""))  # fmt: skip
    for name, found in result.maps.items():
        sd = found["sd"]
        of = "the log-odds of the initial field" if name == "origin" else f"log {name}"
        lines.append(f"map {name:<16} estimate in [{found['estimate'].min():.4g}, {found['estimate'].max():.4g}], "
                     f"posterior sd of {of}: median {np.median(sd):.3g}")  # fmt: skip
    if result.sampler:
        found = result.sampler
        lines.append(f"NUTS: max R-hat {np.nanmax(found['rhat']):.3f}, min ESS {np.nanmin(found['ess']):.0f}, "
                     f"divergences {int(np.sum(found['divergences']))}")  # fmt: skip
    if result.calibration.data is not None:
        r = np.asarray(result.data_residuals)
        lines.append(f"scalar data: {r.size} observations, Σr² = {float(np.sum(r**2)):.4g} "
                     f"(mean r² {float(np.mean(r**2)):.3g})")  # fmt: skip
    for stage in result.stages:
        lines.append(f"continuation 1/{stage['factor']:g} {tuple(stage['shape'])}: {stage['status']} after "
                     f"{stage['iterations']} iterations, loss {stage['loss']:.6g}")  # fmt: skip
    lines += ["", "scans:"]
    for scan in result.calibration.scans:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics[scan.index].items())
        lines.append(f"  {scan.arm} t = {scan.t:g} day ({scan.kind}): {metrics}")
    for (arm, day), found in result.forecast.items():
        lines.append(f"forecast {arm} day {day:g}: {float(np.sum(found['probability'] >= 0.5)):.0f} cells with "
                     "probability of tumour ≥ 0.5")  # fmt: skip
    lines += [""] + [f"warning: {w}" for w in result.warnings] if result.warnings else []
    return "\n".join(lines)
