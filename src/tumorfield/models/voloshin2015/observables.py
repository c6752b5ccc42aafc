"""Scalar diagnostics of the Voloshin 2015 model (``observe``), recorded every step under ``/scalars/``.

Integrals are sums times the cell volume ``ΔV`` (mm² in 2D, mm³ in 3D); "the tumour
region" is where ``n ≥`` :data:`TUMOR_THRESHOLD`, "the front" where ``n ≥``
:data:`FRONT_THRESHOLD`. Units of every key are in ``Voloshin2015.scalar_units``.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from tumorfield_kernels import Grid

from .kinetics import drug_effects, il1_responses, intravasation_rate, macrophage_il1b_production, plasma
from .parameters import Parameters
from .vessels import box_centre, radial_distance

TUMOR_THRESHOLD = 0.1
"""Tumour density (of carrying capacity) that delimits 'the tumour' for regional diagnostics."""
FRONT_THRESHOLD = 0.05
"""Tumour density that marks the invasion front."""


def _weighted_mean(x, weight):
    """``Σ x w / Σ w`` (0 where the weight vanishes everywhere)."""
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1e-30)


def _invasion(n, grid: Grid, tumor_radius: float) -> dict[str, Any]:
    """Tumour volume ``∫ n``, the front's equivalent radius (of ``∫ min(n/n_front, 1)``) and the
    share of tumour mass beyond the initial radius."""
    dv = grid.cell_volume
    r = jnp.asarray(radial_distance(grid.mesh(), box_centre(grid.length)), n.dtype)
    front_volume = jnp.sum(jnp.clip(n / FRONT_THRESHOLD, 0.0, 1.0)) * dv
    if grid.ndim == 2:
        front = jnp.sqrt(front_volume / math.pi)
    elif grid.ndim == 3:
        front = jnp.cbrt(3.0 * front_volume / (4.0 * math.pi))
    else:
        front = front_volume / 2.0
    mass = jnp.sum(n) * dv
    beyond = (r > tumor_radius).astype(n.dtype)
    return {
        "tumor_volume": mass,
        "front_radius": front,
        "invasion_distance": front - tumor_radius,
        "invasive_fraction": jnp.sum(n * beyond) * dv / jnp.maximum(mass, 1e-30),
    }


def _metastasis(state, p: Parameters, n, q_iv, dv: float) -> dict[str, Any]:
    """The scalar ODE variables and the shedding rate ``N_cell ∫ q_iv n`` (cells/day)."""
    dtype = state["burden"].dtype
    return {
        "metastatic_burden": state["burden"],
        "circulating_cells": state["circulating"],
        "seeded_cells": state["seeded"],
        "shed_rate": jnp.sum((q_iv * n).astype(dtype)) * dv * p.n_cell.astype(dtype),
    }


def _macrophages(m1, m2, region, dv: float) -> dict[str, Any]:
    """Macrophage amounts ``∫ M`` in the box and in the tumour region, and the regional M2 fraction."""
    m1_tumor, m2_tumor = jnp.sum(m1 * region) * dv, jnp.sum(m2 * region) * dv
    return {
        "m1_total": jnp.sum(m1) * dv,
        "m2_total": jnp.sum(m2) * dv,
        "m1_tumor": m1_tumor,
        "m2_tumor": m2_tumor,
        "m2_fraction": m2_tumor / jnp.maximum(m1_tumor + m2_tumor, 1e-30),
    }


def _region_means(state, region, dv: float) -> dict[str, Any]:
    """Means of the cytokines and drugs over the tumour region (``∫_region x / |region|``)."""
    region_volume = jnp.sum(region) * dv
    safe_volume = jnp.maximum(region_volume, dv)
    means = {
        f"{name}_mean": jnp.sum(state[name] * region) * dv / safe_volume
        for name in ("il1b", "vegf", "paclitaxel", "anakinra")
    }
    return {"tumor_region_volume": region_volume, **means}


def observe(state, p: Parameters, t, grid: Grid, tumor_radius: float) -> dict[str, Any]:
    """Every diagnostic of ``state`` at time ``t`` (day); ``tumor_radius`` (mm) is the initial one."""
    dv = grid.cell_volume
    n = jnp.maximum(state["tumor"], 0.0)
    m1, m2 = jnp.maximum(state["m1"], 0.0), jnp.maximum(state["m2"], 0.0)
    region = (n >= TUMOR_THRESHOLD).astype(n.dtype)
    phi_t, phi_h = il1_responses(state, p)
    _, t_p = drug_effects(state["paclitaxel"], p)
    q_iv = intravasation_rate(state, p, phi_t)
    # leakiness matters where vessels are: vessel-weighted, over the tumour and its rim
    near = (jnp.maximum(n, 0.0) >= FRONT_THRESHOLD).astype(n.dtype) * p.vessels
    p_pl, a_pl = plasma(p, t)
    return {
        **_invasion(n, grid, tumor_radius),
        **_metastasis(state, p, n, q_iv, dv),
        **_macrophages(m1, m2, region, dv),
        **_region_means(state, region, dv),
        "mean_leakiness": _weighted_mean(state["leakiness"], near),
        "il1b_production": jnp.sum(macrophage_il1b_production(m1, m2, p, t_p)) * dv,
        "plasma_paclitaxel": p_pl,
        "plasma_anakinra": a_pl,
        "phi_tumor": _weighted_mean(phi_t, n),
        "phi_host": _weighted_mean(phi_h, m1 + m2),
        "motility_index": _weighted_mean(1.0 + p.a_chi * phi_t, n),
    }
