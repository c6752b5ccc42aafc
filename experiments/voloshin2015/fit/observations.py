"""Synthetic observations of the six arms at the configs' parameters, from ``tumorfield run`` files.

Each arm is run with ``tumorfield run`` (``reproduce.run_arm``) and its per-step ``/scalars``
are read back with :func:`tumorfield.io.open_trajectory`; nothing here uses the fit's code. At
each measurement day the value is multiplied by ``exp(σ ε)``, ``ε ~ N(0, 1)`` (lognormal noise,
``σ`` per observable below), and written as ``arm,t,observable,value,sigma``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tumorfield.io import open_trajectory

SCHEDULE = {
    "tumor_volume": ((3.0, 7.0, 10.0, 14.0, 17.0, 21.0), 0.05),  # calipers, twice a week
    "metastatic_burden": ((14.0, 21.0), 0.20),  # lung metastases, two sacrifice days
    "m2_fraction": ((21.0,), 0.10),  # flow cytometry of the tumour at the endpoint
}
"""Observable → (days, σ of log value)."""


def sample(paths: dict[str, Path], out: Path, seed: int = 0) -> Path:
    """Write ``out`` (CSV) from the trajectory files ``paths`` (arm → file); returns ``out``."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm, path in paths.items():
        with open_trajectory(path) as run:
            t = np.asarray(run.scalars_t)
            for name, (days, sigma) in SCHEDULE.items():
                series = np.asarray(run.scalars[name])
                for day in days:
                    clean = float(series[int(np.argmin(np.abs(t - day)))])
                    rows.append((arm, day, name, clean * float(np.exp(sigma * rng.standard_normal())), sigma))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("arm", "t", "observable", "value", "sigma"))
        writer.writerows((arm, f"{t:g}", name, f"{value:.9g}", sigma) for arm, t, name, value, sigma in rows)
    return out
