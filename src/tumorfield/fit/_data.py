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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._schema import ConfigError, suggest

COLUMNS = ("arm", "t", "observable", "value", "sigma")
STEP_TOLERANCE = 1e-9
"""Relative tolerance of ``t = k·dt`` (the rule of ``time.t_end`` and ``time.save_every``)."""


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


def _number(text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"line {line}: {column}", text, "must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"line {line}: {column}", text, "must be a finite number")
    return value


def _step(t: float, grid: ArmGrid, arm: str, line: int) -> int:
    """``k`` with ``t = k·dt``; refuses times off the arm's step grid or outside ``[0, t_end]``."""
    k = round(t / grid.dt)
    if abs(k * grid.dt - t) > STEP_TOLERANCE * max(1.0, abs(t)):
        raise ConfigError(
            f"line {line}: t",
            t,
            f"must be a whole number of time steps of arm {arm!r} "
            f"(dt = {grid.dt} day); the nearest are {k * grid.dt:.6g} and "
            f"{(k + (1 if k * grid.dt < t else -1)) * grid.dt:.6g}",
        )
    if not 0 <= t <= grid.t_end * (1 + STEP_TOLERANCE):
        raise ConfigError(f"line {line}: t", t, f"must lie in [0, {grid.t_end}] day (time.t_end of arm {arm!r})")
    return k


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
    if sigma <= 0:
        raise ConfigError(f"line {line}: sigma", sigma, "must be > 0")
    if lognormal and value <= 0:
        raise ConfigError(f"line {line}: value", value, 'must be > 0 with likelihood = "lognormal"')
    return arm, t, observable, value, sigma, _step(t, grid, arm, line), line


def read_observations(path: str | Path, arms: Mapping[str, ArmGrid], likelihood: str) -> Observations:
    """Read and check the CSV at ``path`` against ``arms`` (name → :class:`ArmGrid`)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ConfigError(
                    "line 1 (header)",
                    ",".join(reader.fieldnames or ()),
                    f"must name the columns {','.join(COLUMNS)} (missing: {', '.join(missing)})",
                )
            rows = [_row(row, reader.line_num, arms, likelihood == "lognormal") for row in reader]
    except OSError as error:
        raise ConfigError("fit.data", str(path), f"cannot be read: {error.strerror}", str(path)) from None
    except ConfigError as error:
        raise error.in_file(str(path)) from None
    if not rows:
        raise ConfigError("fit.data", str(path), "holds no observations (only a header, or nothing)", str(path))
    columns = list(zip(*rows, strict=True))
    kinds = (str, float, str, float, float, np.int64, np.int64)
    return Observations(*(np.asarray(c, dtype=k) for c, k in zip(columns, kinds, strict=True)))
