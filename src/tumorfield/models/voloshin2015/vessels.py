"""A prescribed vessel-density map: host vasculature, a peritumoral rim, sparse intratumoral vessels."""

from __future__ import annotations

import numpy as np


def box_centre(length: tuple[float, ...]) -> tuple[float, ...]:
    """Centre (mm) of a box with sides ``length``: where the tumour is implanted."""
    return tuple(side / 2 for side in length)


def radial_distance(mesh: tuple[np.ndarray, ...], centre: tuple[float, ...]) -> np.ndarray:
    """``|x − centre|`` (mm) at every cell centre of ``mesh``."""
    return np.sqrt(sum((x - c) ** 2 for x, c in zip(mesh, centre, strict=True)))


def vessel_map(
    mesh: tuple[np.ndarray, ...],
    centre: tuple[float, ...],
    *,
    host_density: float,
    rim_density: float,
    rim_radius: float,
    rim_width: float,
    intratumoral_count: int,
    intratumoral_density: float,
    vessel_radius: float,
    seed: int,
) -> np.ndarray:
    """Relative vessel density ``v(x)`` (dimensionless, 1 ≈ a well-vascularised rim), float64.

    ``v = v_host + v_rim exp(−((r − R_rim)/w)²) + Σ_j v_in exp(−|x − x_j|²/s²)``, with
    the ``x_j`` drawn uniformly (fixed ``seed``) inside the ball ``r < R_rim``. Everything
    is defined in mm, so the map converges under grid refinement.
    """
    ndim = len(mesh)
    r = radial_distance(mesh, centre)
    v = host_density + rim_density * np.exp(-(((r - rim_radius) / rim_width) ** 2))
    rng = np.random.default_rng(seed)
    for _ in range(intratumoral_count):
        direction = rng.normal(size=ndim)
        direction /= np.linalg.norm(direction)
        radius = rim_radius * rng.uniform() ** (1.0 / ndim)  # uniform in the ball
        spot = [c + radius * d for c, d in zip(centre, direction, strict=True)]
        d2 = sum((x - s) ** 2 for x, s in zip(mesh, spot, strict=True))
        v = v + intratumoral_density * np.exp(-d2 / vessel_radius**2)
    return v
