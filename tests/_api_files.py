"""Trajectory files made without a solver run, for tests of the readers and figures (issue 26): a
:class:`tumorfield_kernels.Trajectory` built from numpy arrays, written by ``write_trajectory``."""

from __future__ import annotations

import numpy as np
import tumorfield_kernels as tk

from tumorfield.io import write_trajectory


def trajectory(grid, fields, *, t=None, series=None, n_valid=None, failed=False) -> tk.Trajectory:
    """``fields``: name → ``(T, *grid.shape)`` or ``(T,)`` arrays; ``series``: name → ``(S,)`` per-step values
    at ``S`` steps spread over the frame times (the first after ``t[0]``)."""
    n = len(next(iter(fields.values())))
    t = np.linspace(0.0, 1.0, n) if t is None else np.asarray(t, float)
    series = series or {}
    s = len(next(iter(series.values()))) if series else 0
    t_observed = np.linspace(t[0], t[-1], s + 1)[1:] if s else np.zeros(0)
    result = tk.RESULTS.nonfinite_state if failed else tk.RESULTS.successful
    return tk.Trajectory(
        np.asarray(t),
        {name: np.asarray(v) for name, v in fields.items()},
        t_observed,
        {name: np.asarray(v, float) for name, v in series.items()},
        result,
        np.asarray(n if n_valid is None else n_valid),
    )


def write(path, grid, fields, **kw):
    """``write_trajectory`` of :func:`trajectory`; ``kw``: ``trajectory``'s and ``write_trajectory``'s."""
    own = {k: kw.pop(k) for k in ("t", "series", "n_valid", "failed") if k in kw}
    return write_trajectory(path, trajectory(grid, fields, **own), grid, **kw)


def blob(grid, n: int, growth: float = 1.0, dtype=np.float32) -> np.ndarray:
    """``(n, *grid.shape)`` frames of a growing bump at the box centre."""
    mesh = grid.mesh()
    r2 = sum((m - (float(m.max()) + float(m.min())) / 2) ** 2 for m in mesh)
    return np.stack([np.exp(-r2 / (0.05 * (1 + growth * k))) for k in range(n)]).astype(dtype)
