"""Reading ``FIT.h5`` back: ``tf.open_fit(path)`` → :class:`StoredFit`, for both schemas.

``tumorfield-fit/1`` (a scalar fit, :func:`._output.write_fit`) and ``tumorfield-fit/2`` (a calibration
from scans, :func:`._output.write_calibration`) share the root attributes (status, message, loss,
provenance, the resolved fit file), ``/fit/parameters`` with the estimates, standard errors, correlation
and bounds, the loss history and, where there are scalar data, ``/fit/data``. A scalar fit adds the
predicted series at the estimate (``/fit/prediction``) and the per-parameter history; a calibration adds
its scans (observed and predicted fields), maps, posterior samples and forecasts, read on demand.

Everything but a calibration's images is read when the file is opened (the file is closed again).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ._output import CALIBRATION_FORMAT, FORMAT

SCHEMAS = (FORMAT, CALIBRATION_FORMAT)


class NotAFitFile(ValueError):
    """A path that is not a ``FIT.h5`` this version reads (missing, not HDF5, another schema)."""


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _strings(values) -> list[str]:
    return [_text(v) for v in np.atleast_1d(values)] if values is not None else []


def _attr(value):
    """An HDF5 attribute as a plain Python value (strings decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes | np.bytes_ | str):
        return _text(value)
    if isinstance(value, np.ndarray):
        return _strings(value) if value.dtype.kind in "OSU" else value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _group(h5: h5py.Group) -> dict[str, np.ndarray]:
    """The datasets of ``h5`` (one level) as arrays, strings decoded."""
    out = {}
    for name, item in h5.items():
        if isinstance(item, h5py.Dataset):
            values = item[()]
            out[name] = np.asarray(_strings(values)) if item.dtype.kind in "OS" else values
    return out


@dataclass
class Scan:
    """One scan of a calibration: where it is, its metrics; :meth:`StoredFit.scan_images` reads the arrays."""

    index: str
    arm: str
    t: float
    field: str
    kind: str
    file: str
    metrics: dict[str, float]


@dataclass
class StoredFit:
    """A ``FIT.h5`` read back (see the module docstring); per-parameter arrays in the order of ``names``."""

    path: str
    schema: str
    attrs: dict
    names: tuple[str, ...]
    estimate: np.ndarray
    std_error: np.ndarray
    correlation: np.ndarray
    hessian: np.ndarray
    initial: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    history: dict[str, np.ndarray]
    data: dict[str, np.ndarray] | None
    predictions: dict[str, dict[str, np.ndarray]]
    units: dict[str, str]
    arms: dict[str, dict]
    profiles: dict[str, dict] = field(default_factory=dict)
    scans: list[Scan] = field(default_factory=list)
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    forecast: dict[tuple[str, float], dict[str, np.ndarray]] = field(default_factory=dict)

    is_calibration = property(lambda self: self.schema == CALIBRATION_FORMAT)
    status = property(lambda self: self.attrs.get("status"))
    converged = property(lambda self: bool(self.attrs.get("converged")))
    message = property(lambda self: self.attrs.get("message", ""))
    loss = property(lambda self: self.attrs.get("loss"))
    reduced_chi2 = property(lambda self: self.attrs.get("reduced_chi2", float("nan")))
    config = property(lambda self: self.attrs.get("config", ""))
    """The resolved fit file (TOML text)."""
    warnings = property(lambda self: list(self.attrs.get("warnings", [])))
    at_bound = property(lambda self: list(self.attrs.get("at_bound", [])))

    @property
    def estimates(self) -> dict[str, float]:
        """Name → estimate (natural units)."""
        return dict(zip(self.names, self.estimate.tolist(), strict=True))

    @property
    def std_errors(self) -> dict[str, float]:
        """Name → standard error (natural units)."""
        return dict(zip(self.names, self.std_error.tolist(), strict=True))

    def scan_images(self, index: str) -> dict[str, np.ndarray]:
        """``{"observed", "prediction"}`` of a calibration's scan ``index`` (read from the file now)."""
        with h5py.File(self.path, "r") as h5:
            group = h5[f"fit/scans/{index}"]
            return {"observed": group["observed"][()], "prediction": group["prediction"][()]}

    def summary(self) -> str:
        """What ``tumorfield inspect FIT.h5`` prints."""
        return inspect_text(self)


def _schema_of(path: str) -> str:
    if not os.path.exists(path):
        raise NotAFitFile(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            schema = h5.attrs.get("schema")
    except OSError as error:
        raise NotAFitFile(f"{path}: not an HDF5 file ({error})") from None
    if schema is None:
        raise NotAFitFile(f"{path}: not a fit file (no 'schema' attribute)")
    return _text(schema)


def is_fit_file(path) -> bool:
    """Whether ``path`` is an HDF5 file whose root ``schema`` names a fit (``tumorfield-fit/…``)."""
    try:
        return _schema_of(os.fspath(path)).startswith("tumorfield-fit/")
    except NotAFitFile:
        return False


def open_fit(path) -> StoredFit:
    """Read the ``FIT.h5`` at ``path`` (schema ``tumorfield-fit/1`` or ``/2``); :class:`NotAFitFile` otherwise."""
    path = os.fspath(path)
    schema = _schema_of(path)
    if schema not in SCHEMAS:
        name, _, version = schema.rpartition("/")
        if name == "tumorfield-fit" and version.isdigit() and int(version) > 2:
            raise NotAFitFile(f"{path}: written in format {schema!r}, newer than this tumorfield reads; upgrade it")
        raise NotAFitFile(f"{path}: not a fit file (schema {schema!r}, expected one of {list(SCHEMAS)})")
    try:
        with h5py.File(path, "r") as h5:
            return _read(h5, path, schema)
    except KeyError as error:
        raise NotAFitFile(f"{path}: a damaged fit file ({error})") from None


_SCAN_KEYS = ("arm", "t", "field", "kind", "file", "grid_affine")


def _read(h5: h5py.File, path: str, schema: str) -> StoredFit:
    fit = h5["fit"]
    attrs = {k: _attr(v) for k, v in h5.attrs.items()}
    arrays = _group(fit)
    names = tuple(arrays["parameters"].tolist())
    history = _group(fit["history"]) if "history" in fit else {}
    data = _group(fit["data"]) if "data" in fit else None
    predictions, units = {}, {}
    for arm, group in fit["prediction"].items() if "prediction" in fit else ():
        predictions[arm] = {k: v[()] for k, v in group.items()}
        units |= {k: _text(v.attrs.get("units", "1")) for k, v in group.items() if k != "t"}
    arms = {arm: {k: _attr(v) for k, v in group.attrs.items()} for arm, group in fit["arms"].items()}
    profiles = {}
    for name, group in fit["profile"].items() if "profile" in fit else ():
        profiles[name] = {**_group(group), **{k: _attr(v) for k, v in group.attrs.items()}}
    out = StoredFit(
        path, schema, attrs, names, *(np.asarray(arrays[k], np.float64) for k in
                                      ("estimate", "std_error", "correlation", "hessian", "initial", "lower", "upper")),
        history, data, predictions, units, arms, profiles,
    )  # fmt: skip
    if schema == CALIBRATION_FORMAT:
        for index, group in fit["scans"].items() if "scans" in fit else ():
            a = group.attrs
            metrics = {k: float(v) for k, v in a.items() if k not in _SCAN_KEYS}
            out.scans.append(Scan(index, _text(a["arm"]), float(a["t"]), _text(a["field"]), _text(a["kind"]),
                                  _text(a["file"]), metrics))  # fmt: skip
        out.scans.sort(key=lambda s: (s.arm, s.t, s.index))
        out.maps = {name: _group(group) for name, group in fit["maps"].items()} if "maps" in fit else {}
        for arm, days in fit["forecast"].items() if "forecast" in fit else ():
            for group in days.values():
                out.forecast[(arm, float(group.attrs["t"]))] = _group(group)
    return out


def _table(stored: StoredFit) -> list[str]:
    w = max(14, *(len(n) + 2 for n in stored.names)) if stored.names else 14
    lines = [f"{'parameter':<{w}}{'estimate':>13}{'std. error':>13}{'rel. SE':>9}{'initial':>12}   bounds"]
    for i, name in enumerate(stored.names):
        value, se = stored.estimate[i], stored.std_error[i]
        rel = f"{se / abs(value):.1%}" if np.isfinite(se) and value else "—"
        flag = "   AT BOUND" if name in stored.at_bound else ""
        lines.append(f"{name:<{w}}{value:>13.6g}{se:>13.4g}{rel:>9}{stored.initial[i]:>12.6g}   "
                     f"[{stored.lower[i]:g}, {stored.upper[i]:g}]{flag}")  # fmt: skip
    return lines


_PROVENANCE = ("model", "likelihood", "method", "tumorfield_version", "git_commit", "jax_version", "device", "created",
               "command_line")  # fmt: skip


def inspect_text(stored: StoredFit) -> str:
    """A summary of a fit file: status, provenance, the parameters, the data by arm and observable, warnings."""
    kind = "calibration from scans" if stored.is_calibration else "scalar fit"
    iterations = stored.attrs.get("n_iterations")
    lines = [f"file:        {stored.path}", f"schema:      {stored.schema} ({kind})",
             f"status:      {stored.status} after {iterations} iterations: {stored.message}"]  # fmt: skip
    lines += [f"{key + ':':<12} {stored.attrs[key]}" for key in _PROVENANCE if key in stored.attrs]
    chi2 = stored.attrs.get("reduced_chi2")
    lines.append(f"loss:        {stored.loss:.6g}" + (f", reduced χ² {chi2:.3g}" if chi2 is not None else ""))
    arms = ", ".join(f"{arm} ({config.get('path', '')})" for arm, config in stored.arms.items())
    lines.append(f"arms:        {arms}")
    lines += ["", *_table(stored)]
    if stored.data is not None:
        d = stored.data
        lines += ["", f"data: {len(d['t'])} observations (value, prediction in the model's units)"]
        pairs = sorted(set(zip(d["arm"].tolist(), d["observable"].tolist(), strict=True)))
        for arm, observable in pairs:
            rows = (d["arm"] == arm) & (d["observable"] == observable)
            r = d["residual"][rows]
            given = sorted({u for u in d.get("given_units", np.array([""] * len(rows)))[rows].tolist() if u})
            shown = f", given in {', '.join(given)}" if given else ""
            lines.append(f"  {arm:<14}{observable:<20}{int(rows.sum()):>4} rows, t {d['t'][rows].min():g}…"
                         f"{d['t'][rows].max():g} day, Σr² {float(np.sum(r**2)):.4g}{shown}")  # fmt: skip
    if stored.predictions:
        lines.append("predictions: " + ", ".join(f"{arm} ({', '.join(k for k in p if k != 't')})"
                                                 for arm, p in stored.predictions.items()))  # fmt: skip
    for scan in stored.scans:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in scan.metrics.items())
        lines.append(f"scan {scan.index}: {scan.arm} t = {scan.t:g} day, {scan.field} ({scan.kind}): {metrics}")
    for name, found in stored.maps.items():
        lines.append(f"map {name}: " + ", ".join(f"{k} {v.shape}" for k, v in found.items()))
    for (arm, day), found in stored.forecast.items():
        lines.append(f"forecast {arm} day {day:g}: " + ", ".join(found))
    if "loss" in stored.history:
        lines.append(f"history:     {len(stored.history['loss'])} entries (0: the start)")
    if stored.warnings:
        lines += ["", *(f"warning: {w}" for w in stored.warnings)]
    lines += ["", "fit file:", "  " + stored.config.rstrip().replace("\n", "\n  ")]
    return "\n".join(lines)


def plot_fit(stored: StoredFit, directory) -> list[str]:
    """``tumorfield plot FIT.h5 -o DIR``: per arm and observable, the data (± sigma) against the prediction
    with the residuals below (``fit_<arm>_<observable>.png``); the loss history (``fit_loss.png``); for a
    calibration each scan's observed and predicted field side by side (``scan_<index>.png``, the middle
    slice of a 3D grid). Returns the paths written."""
    from ..plot._common import gaps, pyplot

    plt = pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    d = stored.data
    pairs = sorted(set(zip(d["arm"].tolist(), d["observable"].tolist(), strict=True))) if d is not None else []
    for arm, observable in pairs:
        rows = (d["arm"] == arm) & (d["observable"] == observable)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, height_ratios=(2.2, 1))
        fig.subplots_adjust(**{**gaps(fig, left=1.0, right=0.3), "hspace": 0.12})
        lognormal = stored.attrs.get("likelihood") == "lognormal"
        value, sigma = d["value"][rows], d["sigma"][rows]
        err = [value * (1 - np.exp(-sigma)), value * (np.exp(sigma) - 1)] if lognormal else sigma
        top.errorbar(d["t"][rows], value, yerr=err, fmt="o", ms=4, capsize=2, color="k", label="data ± σ")
        series = stored.predictions.get(arm, {})
        if observable in series:
            top.plot(series["t"], series[observable], "-", color="C0", label="prediction at the estimate")
        else:
            top.plot(d["t"][rows], d["prediction"][rows], "s", mfc="none", color="C0", label="prediction")
        units = stored.units.get(observable, "")
        top.set_ylabel(f"{observable} [{units}]" if units else observable)
        top.set_title(f"{arm}: {observable}")
        top.legend(fontsize="small")
        if lognormal:
            top.set_yscale("log")
        bottom.axhline(0.0, color="0.6", lw=0.8)
        bottom.plot(d["t"][rows], d["residual"][rows], "o", ms=4, color="C3")
        bottom.set_ylabel("residual r (σ)")
        bottom.set_xlabel("t [day]")
        out = directory / f"fit_{arm}_{observable}.png"
        fig.savefig(out, dpi=100, metadata={"Description": f"tumorfield fit: {arm} {observable}, data vs prediction"})
        plt.close(fig)
        written.append(str(out))
    if len(stored.history.get("loss", ())):
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        fig.subplots_adjust(**gaps(fig, left=1.0, right=0.3))
        loss = np.asarray(stored.history["loss"], np.float64)
        ax.plot(np.arange(len(loss)), loss, "o-", ms=3)
        if np.all(loss[np.isfinite(loss)] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_title(f"{stored.status}: {len(loss) - 1} iterations")
        out = directory / "fit_loss.png"
        fig.savefig(out, dpi=100, metadata={"Description": "tumorfield fit: loss per iteration"})
        plt.close(fig)
        written.append(str(out))
    for scan in stored.scans:
        images = stored.scan_images(scan.index)
        fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.8))
        fig.subplots_adjust(**gaps(fig, right=0.4))
        for ax, key in zip(axes, ("observed", "prediction"), strict=True):
            image = np.asarray(images[key], np.float64)
            if image.ndim == 3:
                image = image[:, :, image.shape[2] // 2]
            ax.imshow(image.T, origin="lower", cmap="viridis")
            ax.set_title(f"{key} ({scan.kind})" if key == "observed" else f"prediction: {scan.field}")
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(f"{scan.arm}, t = {scan.t:g} day")
        out = directory / f"scan_{scan.index}.png"
        fig.savefig(out, dpi=100, metadata={"Description": f"tumorfield fit: scan {scan.index}, observed vs predicted"})
        plt.close(fig)
        written.append(str(out))
    return written
