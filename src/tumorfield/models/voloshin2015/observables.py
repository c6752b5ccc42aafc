"""Scalar diagnostics of the Voloshin 2015 model (``observe``), recorded every step under ``/scalars/``.

Integrals are sums times the cell volume ``ΔV`` (mm² in 2D, mm³ in 3D). Regional
diagnostics are weighted by the tumour density ``n`` rather than cut at a threshold, so that
they do not collapse when a tumour thins out: ``⟨x⟩_n = ∫ n x / ∫ n`` (IL1β, VEGF, drugs, M2
fraction), ``∫ n M`` (macrophages among tumour cells) and ``∫ v n ℓ / ∫ v n`` (leakiness where
tumour cells meet vessels). Two thresholds remain: ``tumor_region_volume`` (``n ≥``
:data:`TUMOR_THRESHOLD`) and the invasion front (``n ≥`` :data:`FRONT_THRESHOLD`, smoothed);
``tests/test_voloshin_targets.py`` shows that moving the front threshold over 0.02–0.2 does not
flip target 7. Each function declares the keys it computes, with units, in :data:`OBSERVABLES`.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from tumorfield_kernels import Grid

from .._quantities import Observable, Observables
from .kinetics import (
    cell_paclitaxel,
    drug_effects,
    il1_responses,
    intravasation_rate,
    macrophage_il1b_production,
    plasma,
)
from .parameters import Parameters
from .vessels import box_centre, radial_distance

TUMOR_THRESHOLD = 0.1
"""Tumour density (of carrying capacity) that delimits 'the tumour' for regional diagnostics."""
FRONT_THRESHOLD = 0.05
"""Tumour density that marks the invasion front."""

OBSERVABLES = Observables()
"""Every key of :func:`observe`: units and long name, declared on the function that computes it."""


def _weighted_mean(x, weight):
    """``Σ x w / Σ w``: defined for any positive total weight however small (a thinning tumour);
    NaN, not 0, where the weight vanishes exactly, so an empty region reads as undefined."""
    return jnp.sum(x * weight) / jnp.sum(weight)


@OBSERVABLES.declare(
    tumor_volume=Observable("mm^d", "tumour volume ∫ n (density × volume)"),
    front_radius=Observable("mm", "equivalent radius of the region with tumour ≥ 0.05"),
    invasion_distance=Observable("mm", "invasion distance: front radius − initial tumour radius"),
    invasive_fraction=Observable("1", "share of tumour mass beyond the initial radius"),
)
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


@OBSERVABLES.declare(
    metastatic_burden=Observable("cells", "metastatic burden"),
    circulating_cells=Observable("cells", "circulating tumour cells"),
    seeded_cells=Observable("cells", "cumulative seeded cells"),
    shed_rate=Observable("cells/day", "shedding rate into the circulation"),
)
def _metastasis(state, p: Parameters, n, q_iv, dv: float) -> dict[str, Any]:
    """The scalar ODE variables and the shedding rate ``N_cell ∫ q_iv n`` (cells/day)."""
    dtype = state["burden"].dtype
    return {
        "metastatic_burden": state["burden"],
        "circulating_cells": state["circulating"],
        "seeded_cells": state["seeded"],
        "shed_rate": jnp.sum((q_iv * n).astype(dtype)) * dv * p.n_cell.astype(dtype),
    }


@OBSERVABLES.declare(
    m1_total=Observable("mm^d", "M1 macrophages in the box (density × volume)"),
    m2_total=Observable("mm^d", "M2 macrophages in the box (density × volume)"),
    m1_tumor=Observable("mm^d", "M1 macrophages among tumour cells, ∫ n M1 (density × volume)"),
    m2_tumor=Observable("mm^d", "M2 macrophages among tumour cells, ∫ n M2 (density × volume)"),
    m2_fraction=Observable("1", "tumour-weighted M2 fraction ∫ n M2 / ∫ n (M1 + M2)"),
)
def _macrophages(m1, m2, n, dv: float) -> dict[str, Any]:
    """Macrophage amounts ``∫ M`` in the box and among tumour cells ``∫ n M`` (mm^d), and the
    tumour-weighted M2 fraction ``∫ n M2 / ∫ n (M1 + M2)`` (NaN only where both vanish exactly)."""
    m1_tumor, m2_tumor = jnp.sum(n * m1) * dv, jnp.sum(n * m2) * dv
    return {
        "m1_total": jnp.sum(m1) * dv,
        "m2_total": jnp.sum(m2) * dv,
        "m1_tumor": m1_tumor,
        "m2_tumor": m2_tumor,
        "m2_fraction": m2_tumor / (m1_tumor + m2_tumor),
    }


@OBSERVABLES.declare(
    tumor_region_volume=Observable("mm^d", "volume of the tumour region (n ≥ 0.1)"),
    il1b_mean=Observable("pM", "tumour-weighted mean IL1β ∫ n I / ∫ n"),
    vegf_mean=Observable("pM", "tumour-weighted mean VEGF-A"),
    paclitaxel_mean=Observable("nM", "tumour-weighted mean free paclitaxel"),
    anakinra_mean=Observable("nM", "tumour-weighted mean anakinra"),
)
def _tumor_means(state, n, region, dv: float) -> dict[str, Any]:
    """Tumour-weighted means ``∫ n x / ∫ n`` of the cytokines and drugs, and the volume of the
    thresholded region ``n ≥ TUMOR_THRESHOLD`` (reported, not used by any target)."""
    means = {f"{name}_mean": _weighted_mean(state[name], n) for name in ("il1b", "vegf", "paclitaxel", "anakinra")}
    return {"tumor_region_volume": jnp.sum(region) * dv, **means}


@OBSERVABLES.declare(
    mean_leakiness=Observable("1", "leakiness where tumour cells meet vessels, ∫ v n ℓ / ∫ v n"),
    paclitaxel_cell_mean=Observable("nM", "tumour-weighted mean cell-bound paclitaxel as medium equivalent B/κ"),
    kill_effect=Observable("1", "tumour-weighted mean cytotoxic effect E_P"),
    il1b_production=Observable("pM·mm^d/day", "macrophage IL1β production"),
    plasma_paclitaxel=Observable("nM", "plasma paclitaxel"),
    plasma_anakinra=Observable("nM", "plasma anakinra"),
    phi_tumor=Observable("1", "tumour-weighted mean IL1 response Φ_T"),
    phi_host=Observable("1", "macrophage-weighted mean host IL1 response Φ_H"),
    motility_index=Observable("1", "tumour-weighted mean haptotactic gain 1 + a_χ Φ_T"),
)
def observe(state, p: Parameters, t, grid: Grid, tumor_radius: float) -> dict[str, Any]:
    """Every diagnostic of ``state`` at time ``t`` (day); ``tumor_radius`` (mm) is the initial one."""
    dv = grid.cell_volume
    n = jnp.maximum(state["tumor"], 0.0)
    m1, m2 = jnp.maximum(state["m1"], 0.0), jnp.maximum(state["m2"], 0.0)
    region = (n >= TUMOR_THRESHOLD).astype(n.dtype)
    phi_t, phi_h = il1_responses(state, p)
    e_p, t_p = drug_effects(state, p)
    q_iv = intravasation_rate(state, p, phi_t)
    p_pl, a_pl = plasma(p, t)
    return {
        **_invasion(n, grid, tumor_radius),
        **_metastasis(state, p, n, q_iv, dv),
        **_macrophages(m1, m2, n, dv),
        **_tumor_means(state, n, region, dv),
        # leakiness where tumour cells meet vessels (where they can intravasate): weight v n
        "mean_leakiness": _weighted_mean(state["leakiness"], p.vessels * n),
        "paclitaxel_cell_mean": _weighted_mean(cell_paclitaxel(state["paclitaxel_bound"], p), n),
        "kill_effect": _weighted_mean(e_p, n),
        "il1b_production": jnp.sum(macrophage_il1b_production(m1, m2, p, t_p)) * dv,
        "plasma_paclitaxel": p_pl,
        "plasma_anakinra": a_pl,
        "phi_tumor": _weighted_mean(phi_t, n),
        "phi_host": _weighted_mean(phi_h, m1 + m2),
        "motility_index": _weighted_mean(1.0 + p.a_chi * phi_t, n),
    }
