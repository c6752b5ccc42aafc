"""Observations: the fit's CSV (``arm,t,observable,value,sigma``), read and checked before any compute.

One row is one measurement ``y`` of an observable (any ``/scalars`` name of the arm's run) at
time ``t`` (days, on the arm's step grid ``t = k·dt``, ``0 ≤ t ≤ time.t_end``) with standard
deviation ``sigma`` (``normal``: of ``y``; ``lognormal``: of ``log y``, so ``y > 0``).
Replicates are rows with the same arm, time and observable. Every problem is a
:class:`~tumorfield._schema.ConfigError` naming the file, the line, the column and the rule.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._inputs import open_text
from .._schema import LIMITS, ConfigError, suggest

COLUMNS = ("arm", "t", "observable", "value", "sigma")
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


@dataclass(frozen=True)
class Observations:
    """Checked rows: per-row arrays, ``step = t/dt`` of the row's arm, and the source line numbers."""

    arm: np.ndarray
    t: np.ndarray
    observable: np.ndarray
    value: np.ndarray
    sigma: np.ndarray
    step: np.ndarray
    line: np.ndarray

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


def _step(t: float, grid: ArmGrid, arm: str, line: int) -> int:
    """``k`` with ``t = k·dt``; refuses times outside ``[0, t_end]`` (first: ``t/dt`` is then finite)
    or off the arm's step grid."""
    if not 0 <= t <= grid.t_end * (1 + STEP_TOLERANCE):
        raise ConfigError(f"line {line}: t", t, f"must lie in [0, {grid.t_end}] day (time.t_end of arm {arm!r})")
    k = round(t / grid.dt)
    if abs(k * grid.dt - t) > STEP_TOLERANCE * max(1.0, abs(t)):
        raise ConfigError(
            f"line {line}: t",
            t,
            f"must be a whole number of time steps of arm {arm!r} "
            f"(dt = {grid.dt} day); the nearest are {k * grid.dt:.6g} and "
            f"{(k + (1 if k * grid.dt < t else -1)) * grid.dt:.6g}",
        )
    return k


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


def _row(row: Mapping[str, str], line: int, arms: Mapping[str, ArmGrid], lognormal: bool) -> tuple:
    arm, observable = (row["arm"] or "").strip(), (row["observable"] or "").strip()
    if arm not in arms:
        raise ConfigError(f"line {line}: arm", arm, suggest(arm, arms, "arm (not in [fit] arms)"))
    grid = arms[arm]
    if observable not in grid.observables:
        raise ConfigError(
            f"line {line}: observable", observable, suggest(observable, grid.observables, f"observable of arm {arm!r}")
        )
    t = _number(row["t"], line, "t")
    value, sigma = _number(row["value"], line, "value"), _number(row["sigma"], line, "sigma")
    if lognormal and value <= 0:
        raise ConfigError(f"line {line}: value", value, 'must be > 0 with likelihood = "lognormal"')
    _sigma(sigma, value, line, lognormal)
    return arm, t, observable, value, sigma, _step(t, grid, arm, line), line


def read_observations(path: str | Path, arms: Mapping[str, ArmGrid], likelihood: str) -> Observations:
    """Read and check the CSV at ``path`` against ``arms`` (name → :class:`ArmGrid`): a regular file of
    at most :data:`~tumorfield._inputs.CSV_BYTES` of UTF-8 text (:func:`~tumorfield._inputs.open_text`),
    every column named once, at most ``LIMITS["observations"]`` rows."""
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
                    rows.append(_row(row, reader.line_num, arms, likelihood == "lognormal"))
            except csv.Error as error:
                raise ConfigError(f"line {reader.line_num + 1}", None, f"is not valid CSV ({error})") from None
    except ConfigError as error:
        raise (error if error.file else error.in_file(str(path))) from None
    if not rows:
        raise ConfigError("fit.data", str(path), "holds no observations (only a header, or nothing)", str(path))
    columns = list(zip(*rows, strict=True))
    kinds = (str, float, str, float, float, np.int64, np.int64)
    return Observations(*(np.asarray(c, dtype=k) for c, k in zip(columns, kinds, strict=True)))
