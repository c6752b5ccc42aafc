"""Local kinetics of the Voloshin 2015 model: IL1 signalling, drug effects, plasma levels and
the reaction rates of every field (units of the field per day); see ``docs/model.md``."""

from __future__ import annotations

import jax.numpy as jnp
from tumorfield_kernels import Grid

from .parameters import PAPER_MOLAR_MASS, Parameters
from .pk import plasma_concentration


def receptor_occupancy(il1b, anakinra, p: Parameters):
    """``θ = (I/K_I) / (1 + I/K_I + A/K_A)``: IL1R bound by agonist (competitive antagonism)."""
    x = jnp.maximum(il1b, 0.0) / p.K_i
    y = jnp.maximum(anakinra, 0.0) / p.K_a
    return x / (1.0 + x + y)


def il1_responses(state, p: Parameters):
    """``(Φ_T, Φ_H)``: tumour ``θ/(θ+θ50)`` and host ``g_H θ/(θ+θ50_H)`` responses.

    Separate half-saturation occupancies let tumour and host cells differ in receptor
    reserve (equal by default, as in the brief).
    """
    theta = receptor_occupancy(state["il1b"], state["anakinra"], p)
    return theta / (theta + p.theta50), p.host_il1r * theta / (theta + p.theta50_h)


def drug_effects(paclitaxel, p: Parameters):
    """``(E_P, T_P)``: cytotoxic effect ``P^h/(P^h + EC50^h)`` and TLR4 activation ``P/(P + K_TLR)``."""
    P = jnp.maximum(paclitaxel, 0.0)
    ph = P**p.hill_p
    return ph / (ph + p.ec50_p**p.hill_p), P / (P + p.k_tlr)


def intravasation_rate(state, p: Parameters, phi_t):
    """``q_iv = γ_iv v ℓ (1 + b_TM M2/(K_2 + M2)) (1 + a_iv Φ_T)`` (1/day), ``v`` the vessel map."""
    m2 = jnp.maximum(state["m2"], 0.0)
    return (
        p.gamma_iv
        * p.vessels
        * jnp.clip(state["leakiness"], 0.0, 1.0)
        * (1.0 + p.b_tm * m2 / (p.k_2 + m2))
        * (1.0 + p.a_iv * phi_t)
    )


def plasma(p: Parameters, t):
    """Plasma concentrations ``(P_pl, A_pl)`` (nM) at time ``t`` (day)."""
    ptx = plasma_concentration(
        p.paclitaxel_doses,
        t,
        PAPER_MOLAR_MASS["paclitaxel"],
        iv=(p.ptx_iv_ke, p.ptx_iv_v),
        absorbed=(p.ptx_ip_ka, p.ptx_ip_ke, p.ptx_ip_v),
    )
    ana = plasma_concentration(
        p.anakinra_doses,
        t,
        PAPER_MOLAR_MASS["anakinra"],
        iv=(p.ana_ke, p.ana_v),
        absorbed=(p.ana_ka, p.ana_ke, p.ana_v),
    )
    return ptx, ana


def polarisation_rates(state, p: Parameters, phi_h, t_p):
    """``(k21, k12)``: M2→M1 ``k21⁰ + k_P T_P + k_I Φ_H``; M1→M2 ``k12⁰ + k_n n/(K_n + n)`` (1/day)."""
    n = jnp.maximum(state["tumor"], 0.0)
    return p.k21_0 + p.k_p * t_p + p.k_i * phi_h, p.k12_0 + p.k_n * n / (p.K_n + n)


def macrophage_il1b_production(m1, m2, p: Parameters, t_p):
    """``g_β (ρ1 M1 + ρ2 M2)(1 + β_P T_P)`` (pM/day): IL1β made by macrophages, raised by paclitaxel/TLR4."""
    return p.host_il1b * (p.rho_1 * m1 + p.rho_2 * m2) * (1.0 + p.beta_p * t_p)


def shed_cells(q_iv, n, p: Parameters, grid: Grid, dtype):
    """``Φ_iv = N_cell ∫ q_iv n dx`` (cells/day): tumour cells shed into the blood, summed in ``dtype``."""
    return jnp.sum((q_iv * n * grid.cell_volume).astype(dtype)) * p.n_cell.astype(dtype)


def reaction(state, p: Parameters, t, grid: Grid):
    """Reaction rates of every field (units of the field per day); see ``docs/model.md``.

    Linear losses (decay, clearance, CTC clearance ``k_C C``) are in ``System.decay``.
    """
    n, m1, m2 = state["tumor"], state["m1"], state["m2"]
    v, leak = p.vessels, state["leakiness"]
    phi_t, phi_h = il1_responses(state, p)
    e_p, t_p = drug_effects(state["paclitaxel"], p)
    p_pl, a_pl = plasma(p, t)
    # tumour: IL1-raised logistic growth, paclitaxel kill, loss by intravasation
    kill = p.delta_p * e_p * n
    q_iv = intravasation_rate(state, p, phi_t)
    d_tumor = p.r_n * (1.0 + p.a_r * phi_t) * n * (1.0 - n - p.eps_mac * (m1 + m2)) - kill - q_iv * n
    # macrophages: recruitment from vessels into free space, polarisation switching
    free = jnp.maximum(1.0 - n - m1 - m2, 0.0)
    c = jnp.maximum(state["chemo"], 0.0)
    recruit = p.R_0 * v * (1.0 + c / (p.k_c + c)) * free
    k21, k12 = polarisation_rates(state, p, phi_h, t_p)
    pi1 = k21 / (k21 + k12)
    switch = k21 * m2 - k12 * m1
    # vascular exchange of drugs; leaks raise permeability
    exchange = v * (1.0 + p.b_l * leak)
    # metastasis: cells shed into the circulation, seeding from the cleared ones
    circulating = state["circulating"]
    seeding = p.f_s.astype(circulating.dtype) * p.k_circ.astype(circulating.dtype) * circulating
    return {
        "tumor": d_tumor,
        "ecm": -p.eta * jnp.maximum(state["mde"], 0.0) * state["ecm"],
        "mde": p.alpha_e * (1.0 + p.a_e * phi_t) * n + p.alpha_e2 * m2,
        "chemo": p.s_c * n + p.s_d * kill + p.s_h * phi_h * (m1 + m2),
        "m1": pi1 * recruit + switch,
        "m2": (1.0 - pi1) * recruit - switch,
        "il1b": macrophage_il1b_production(m1, m2, p, t_p) + p.rho_n * n,
        "vegf": p.rho_g * m2 + p.rho_gn * n,
        "leakiness": p.k_l * state["vegf"] / (p.K_g + jnp.maximum(state["vegf"], 0.0)) * (1.0 - leak),
        "paclitaxel": p.p_p * exchange * (p_pl - state["paclitaxel"]),
        "anakinra": p.p_a * exchange * (a_pl - state["anakinra"]),
        "circulating": shed_cells(q_iv, n, p, grid, circulating.dtype),
        "burden": p.r_met.astype(circulating.dtype) * state["burden"] + seeding,
        "seeded": seeding,
    }


def tumor_chi(state, p: Parameters):
    """Haptotactic sensitivity ``χ_n (1 + a_χ Φ_T)`` (mm²/day per unit matrix)."""
    phi_t, _ = il1_responses(state, p)
    return p.chi_n * (1.0 + p.a_chi * phi_t)


def tumor_motility(state, p: Parameters):
    """Random motility ``D_n (1 + a_D Φ_T)`` (mm²/day), raised by tumour-cell IL1 signalling."""
    phi_t, _ = il1_responses(state, p)
    return p.D_n * (1.0 + p.a_D * phi_t)


def macrophage_chi(state, p: Parameters):
    """Macrophage chemotactic sensitivity ``χ_M`` (mm²/day per unit chemoattractant)."""
    return p.chi_m
