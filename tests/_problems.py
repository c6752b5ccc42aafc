"""Small problems shared by more than one test module."""

from __future__ import annotations

import numpy as np
import tumorfield_kernels as tk


def steepening_taxis():
    """1D chemotaxis on 24 cells whose attractant grows like ``e^{5t}``: the taxis speed, and with
    it the explicit positivity limit, outgrows a step that is stable at t = 0.

    Returns ``(system, grid, initial, dt)`` with ``dt`` 0.9 × that t = 0 limit.
    """
    grid = tk.Grid((24,), 1.0)
    x = grid.coordinates(0)
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-4},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.5),),
        reaction=lambda s, p, t: {"c": 5.0 * s["c"]},
    )
    initial = {"u": np.ones_like(x), "c": 1.0 + np.cos(np.pi * x)}
    return system, grid, initial, 0.9 * tk.max_stable_dt(system, grid, initial)["u"]
