"""Observations: the fit's CSV (``arm,t,observable,value,sigma[,units]``), read and checked before any compute.

One row is one measurement ``y`` of an observable (any ``/scalars`` name of the arm's run) at
time ``t`` (days, ``0 ≤ t ≤ time.t_end``) with standard deviation ``sigma`` (``normal``: of ``y``;
``lognormal``: of ``log y``, so ``y > 0``). A time on the arm's step grid (``t = k·dt``) is compared
with the prediction after step ``k``; a time between steps ``k`` and ``k + 1`` (a scalar fit's
``interpolate``) with the prediction interpolated linearly in time between them
(``(1 − w)·ŷ_k + w·ŷ_{k+1}``, ``w = t/dt − k``; for a smooth series the error is at most
``dt²/8 · max|ÿ|``). Replicates are rows with the same arm, time and observable.

Units: with a ``units`` column, a row's value (and, normal likelihood, its sigma) is converted to the
model's units of its observable on the arm's grid (:mod:`._units`); a ``scale`` of the observable
(``[fit.observables]``) states that the data are ``scale ×`` the model's observable. Every problem
is a :class:`~tumorfield._schema.ConfigError` naming the file, the line, the column and the rule.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._inputs import open_text
from .._schema import LIMITS, ConfigError, suggest

COLUMNS = ("arm", "t", "observable", "value", "sigma")
UNITS = "units"
"""The optional column of each row's units (empty: the model's units of the observable)."""
STEP_TOLERANCE = 1e-9
"""Relative tolerance of ``t = k·dt`` (the rule of ``time.t_end`` and ``time.save_every``)."""
SIGMA_FLOOR = 1e-12
"""Smallest ``sigma`` relative to ``|value|`` (normal) or absolute (lognormal: the sd of ``log y``)."""


@dataclass(frozen=True)
class ArmGrid:
    """What the data of one arm are checked against: its observables and its time steps (day)."""

    observables: tuple[str, ...]
    dt: float
    t_end: float
    units: Mapping[str, str] = field(default_factory=dict)
    """Observable → the model's units on this arm's grid, as pint reads them (:func:`._units.model_units`)."""
    ndim: int = 0
    """The arm's grid dimension (for messages: what ``mm^d`` means there)."""


@dataclass(frozen=True)
class Scale:
    """``[fit.observables] NAME = { scale, units }``: the data of NAME are ``scale ×`` the model's observable,
    in the model's units times ``units`` (e.g. ``units = "mm"``: a 2D area times a slab thickness)."""

    scale: float = 1.0
    units: str = ""


@dataclass(frozen=True)
class Observations:
    """Checked rows: per-row arrays (``value`` and ``sigma`` in the model's units of the observable), the step
    ``k`` at or before ``t`` and the weight ``w = t/dt − k`` of step ``k + 1`` (0 on the step grid), the source
    line numbers, and each row as given (value, sigma, units; ``value = given_value · factor``)."""

    arm: np.ndarray
    t: np.ndarray
    observable: np.ndarray
    value: np.ndarray
    sigma: np.ndarray
    step: np.ndarray
    line: np.ndarray
    weight: np.ndarray | None = None
    given_value: np.ndarray | None = None
    given_sigma: np.ndarray | None = None
    given_units: np.ndarray | None = None
    factor: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.t)
        defaults = {"weight": np.zeros(n), "given_value": self.value, "given_sigma": self.sigma,
                    "given_units": np.full(n, "", dtype=object), "factor": np.ones(n)}  # fmt: skip
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def last_step(self) -> np.ndarray:
        """The last step each row's prediction needs (``k``, or ``k + 1`` between steps)."""
        return self.step + (self.weight > 0)

    def __len__(self) -> int:
        return len(self.t)

    def rows(self, arm: str) -> np.ndarray:
        """Indices of ``arm``'s rows."""
        return np.flatnonzero(self.arm == arm)


def _shown(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a message."""
    return text if len(text) <= limit else text[:limit] + "…"


def _number(text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"line {line}: {column}", _shown(str(text)), "must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"line {line}: {column}", text, "must be a finite number")
    return value


def _step(t: float, grid: ArmGrid, arm: str, line: int, interpolate: bool) -> tuple[int, float]:
    """``(k, w)`` with ``t = (k + w)·dt``, ``0 ≤ w < 1``; refuses times outside ``[0, t_end]`` and, unless
    ``interpolate``, times off the arm's step grid (``w`` is 0 within a relative 1e-9 of a step)."""
    if not 0 <= t <= grid.t_end * (1 + STEP_TOLERANCE):
        raise ConfigError(f"line {line}: t", t, f"must lie in [0, {grid.t_end}] day (time.t_end of arm {arm!r})")
    k = round(t / grid.dt)
    if abs(k * grid.dt - t) <= STEP_TOLERANCE * max(1.0, abs(t)):
        return k, 0.0
    if not interpolate:
        raise ConfigError(
            f"line {line}: t",
            t,
            f"must be a whole number of time steps of arm {arm!r} "
            f"(dt = {grid.dt} day); the nearest are {k * grid.dt:.6g} and "
            f"{(k + (1 if k * grid.dt < t else -1)) * grid.dt:.6g}",
        )
    k = math.floor(t / grid.dt)
    return k, min(max(t / grid.dt - k, 0.0), 1.0)


def _sigma(sigma: float, value: float, line: int, lognormal: bool) -> None:
    """Refuse a ``sigma`` so small that the residual ``(y − prediction)/sigma`` (lognormal: of
    ``log y``) loses all meaning or overflows: below :data:`SIGMA_FLOOR` times the value's scale
    (``|value|``; 1 for ``log y``), or not a normal float."""
    if sigma <= 0:
        raise ConfigError(f"line {line}: sigma", sigma, "must be > 0")
    scale = 1.0 if lognormal else abs(value)
    floor = max(SIGMA_FLOOR * scale, sys.float_info.min)
    if sigma < floor:
        of = "(sigma of log value)" if lognormal else f"× |value| = {floor:.3g}"
        raise ConfigError(f"line {line}: sigma", sigma, f"must be ≥ {SIGMA_FLOOR:g} {of} and a normal float "
                          f"(≥ {sys.float_info.min:.3g}): a smaller sigma makes the residuals overflow")  # fmt: skip


_VOLUME_RULE = {1: "a 1D run's volume is a length in mm, or a volume per mm² of cross-section",
                2: "a 2D run's volume is an area in mm², or a volume per mm of slab thickness",
                3: "a 3D run's volume is in mm³"}  # fmt: skip


def _converted(value, sigma, units, observable, grid, arm, line, scale, lognormal) -> tuple[float, float, float]:
    """``(value, sigma, factor)`` in the model's units of ``observable`` (``scale`` divided out); ``units`` ""
    keeps the numbers as given (today's behaviour, the user's responsibility)."""
    s = scale or Scale()
    f = 1.0
    if units:
        from . import _units

        model = grid.units.get(observable)
        if model is None:
            raise ConfigError(f"line {line}: units", units, f"the model declares no units for {observable!r}")
        f, why = _units.factor(units, _units.target_units(model, s.units))
        if f is None:
            meaning = f" on its {grid.ndim}D grid ({_VOLUME_RULE[grid.ndim]})" if "mm" in model and grid.ndim else ""
            scaled = f" times the scale's {_units.shown(s.units)}" if s.units else ""
            raise ConfigError(
                f"line {line}: units",
                units,
                f"{observable} of arm {arm!r} is in {_units.shown(model)}{scaled}{meaning}; {why}. A conversion "
                f'between them is yours to state: [fit.observables] {observable} = {{ scale = …, units = "…" }} '
                "(data = scale × the model's value; docs/fitting.md, Units)",
            )
    f /= s.scale
    return value * f, sigma if lognormal else sigma * abs(f), f


def _row(row: Mapping[str, str], line: int, arms: Mapping[str, ArmGrid], lognormal: bool, interpolate: bool = False,
         scales: Mapping[str, Scale] | None = None) -> tuple:  # fmt: skip
    arm, observable = (row["arm"] or "").strip(), (row["observable"] or "").strip()
    if arm not in arms:
        raise ConfigError(f"line {line}: arm", arm, suggest(arm, arms, "arm (not in [fit] arms)"))
    grid = arms[arm]
    if observable not in grid.observables:
        raise ConfigError(
            f"line {line}: observable", observable, suggest(observable, grid.observables, f"observable of arm {arm!r}")
        )
    t = _number(row["t"], line, "t")
    given, given_sigma = _number(row["value"], line, "value"), _number(row["sigma"], line, "sigma")
    if lognormal and given <= 0:
        raise ConfigError(f"line {line}: value", given, 'must be > 0 with likelihood = "lognormal"')
    _sigma(given_sigma, given, line, lognormal)
    units = (row.get(UNITS) or "").strip()
    scale = (scales or {}).get(observable)
    value, sigma, f = _converted(given, given_sigma, units, observable, grid, arm, line, scale, lognormal)
    step, weight = _step(t, grid, arm, line, interpolate)
    return arm, t, observable, value, sigma, step, line, weight, given, given_sigma, units, f


def read_observations(path: str | Path, arms: Mapping[str, ArmGrid], likelihood: str, *, interpolate: bool = False,
                      scales: Mapping[str, Scale] | None = None) -> Observations:  # fmt: skip
    """Read and check the CSV at ``path`` against ``arms`` (name → :class:`ArmGrid`); ``interpolate``: accept
    times between steps (a scalar fit interpolates its predictions there); ``scales``: observable → its
    ``[fit.observables]`` :class:`Scale`. The file: a regular file of at most
    :data:`~tumorfield._inputs.CSV_BYTES` of UTF-8 text (:func:`~tumorfield._inputs.open_text`), every column
    named once, at most ``LIMITS["observations"]`` rows."""
    path = Path(path)
    try:
        with open_text(path, key="fit.data") as handle:
            reader = csv.DictReader(handle)
            try:
                header = reader.fieldnames or ()
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise ConfigError(
                        "line 1 (header)",
                        _shown(",".join(header)),
                        f"must name the columns {','.join(COLUMNS)} (missing: {', '.join(missing)})",
                    )
                twice = sorted({c for c in header if header.count(c) > 1})
                if twice:
                    why = f"names {', '.join(twice)} more than once: every column must be named once"
                    raise ConfigError("line 1 (header)", _shown(",".join(header)), why)
                rows = []
                for row in reader:
                    if len(rows) == LIMITS["observations"]:
                        raise ConfigError(f"line {reader.line_num}", None, f"more than {LIMITS['observations']:,} "
                                          f"observations; that is the limit of a fit's data")  # fmt: skip
                    rows.append(_row(row, reader.line_num, arms, likelihood == "lognormal", interpolate, scales))
            except csv.Error as error:
                raise ConfigError(f"line {reader.line_num + 1}", None, f"is not valid CSV ({error})") from None
    except ConfigError as error:
        raise (error if error.file else error.in_file(str(path))) from None
    if not rows:
        raise ConfigError("fit.data", str(path), "holds no observations (only a header, or nothing)", str(path))
    columns = list(zip(*rows, strict=True))
    kinds = (str, float, str, float, float, np.int64, np.int64, float, float, float, object, float)
    return Observations(*(np.asarray(c, dtype=k) for c, k in zip(columns, kinds, strict=True)))
