"""``FIT.h5`` (the fit's result file) and the summary table the CLI prints.

Layout (every array float64 unless said; names are UTF-8 strings)::

    /                      attrs: status, converged, n_iterations, loss, message, likelihood,
                           n_observations, reduced_chi2, and the provenance of a run file
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
    /fit/arms/<arm>        attrs: config (the arm's resolved run config), path
    /fit/profile/<name>/{value, loss, converged} (k,); /points (k, n) natural units, every parameter
                           attrs: lower, upper (95 % profile interval, NaN: not reached), minimum_loss
"""

from __future__ import annotations

import contextlib

import h5py
import numpy as np

from ..run._job import _metadata
from ..run._output import OutputTarget
from ._uncertainty import strongest_pairs

FORMAT = "tumorfield-fit/1"
_PER_ARM = ("dt", "steps_per_save")
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
    data = fit.create_group("data")
    _strings(data, "arm", result.data.arm)
    _strings(data, "observable", result.data.observable)
    for name in ("t", "value", "sigma"):
        data.create_dataset(name, data=getattr(result.data, name))
    data.create_dataset("prediction", data=result.data_prediction)
    data.create_dataset("residual", data=result.residuals)
    for name, found in result.profiles.items():
        group = fit.create_group(f"profile/{name}")
        for key in ("value", "loss", "points", "converged"):
            group.create_dataset(key, data=np.asarray(getattr(found, "values" if key == "value" else key)))
        group.attrs.update(lower=found.lower, upper=found.upper, minimum_loss=found.minimum_loss, level=0.95)


@contextlib.contextmanager
def reserved(path, *, overwrite: bool):
    """The output target of ``FIT.h5``, checked and locked before any compute (an
    :class:`~tumorfield.run.OutputError` if it cannot be used); a file left unfinished is removed."""
    target = OutputTarget.new(path, overwrite=overwrite)
    try:
        yield target
    except BaseException:
        target.discard()
        raise
    finally:
        target.release()


def write_fit(target: OutputTarget, result, argv) -> str:
    """Write ``result`` at ``target.current`` (``.NAME.PID.partial``), then move it onto its name."""
    first = next(iter(result.spec.arms.values()))
    with h5py.File(target.current, "w") as h5:
        provenance = {k: v for k, v in _metadata(first, argv, target).items() if k not in _PER_ARM}
        h5.attrs.update({**provenance, "schema": FORMAT, "config": result.spec.text})
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
        _write_result(h5, result)
        for arm, config in result.spec.arms.items():
            group = h5.create_group(f"fit/arms/{arm}")
            group.attrs.update(config=config.text, path=config.source, dt=config.time.dt)
    return str(target.finish("complete"))


def summary(result) -> str:
    """The closing table: estimates, standard errors, strongest correlations, then the warnings."""
    lines = [
        f"fit {result.status} after {result.n_iterations} iterations: {result.message}",
        f"loss (½ Σ r²) {result.loss:.6g}, {len(result.data)} observations, reduced χ² {result.reduced_chi2:.3g}",
        "",
        f"{'parameter':<14}{'estimate':>13}{'std. error':>13}{'rel. SE':>9}{'initial':>12}   bounds",
    ]
    for i, name in enumerate(result.names):
        value, se = result.estimate[i], result.std_error[i]
        rel = f"{se / abs(value):.1%}" if np.isfinite(se) and value else "—"
        lines.append(
            f"{name:<14}{value:>13.6g}{se:>13.4g}{rel:>9}{result.initial[i]:>12.6g}   "
            f"[{result.lower[i]:g}, {result.upper[i]:g}]"
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
