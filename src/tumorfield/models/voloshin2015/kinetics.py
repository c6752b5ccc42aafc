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


def cell_paclitaxel(bound, p: Parameters):
    """``P_cell = B/κ`` (nM): the medium concentration in equilibrium with the cell-bound drug ``B``.

    In-vitro EC50s are medium concentrations after a day or more of exposure, when cell-bound
    drug has equilibrated with the medium; ``P_cell`` puts the bound pool on that scale, so that
    EC50 keeps its in-vitro meaning while the effect outlasts the free drug (Kuh et al., J
    Pharmacol Exp Ther 1999;290:871: tumour tissue retains paclitaxel for days)."""
    return jnp.maximum(bound, 0.0) / p.ptx_kappa


def drug_effects(state, p: Parameters):
    """``(E_P, T_P)``: cytotoxic effect ``P_cell^h/(P_cell^h + EC50^h)`` of the cell-bound drug and
    TLR4 activation ``P/(P + K_TLR)`` by the free (extracellular) drug (TLR4/MD-2 is a surface receptor)."""
    P = jnp.maximum(state["paclitaxel"], 0.0)
    ph = cell_paclitaxel(state["paclitaxel_bound"], p) ** p.hill_p
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
    e_p, t_p = drug_effects(state, p)
    p_pl, a_pl = plasma(p, t)
    # tumour: IL1-raised logistic growth; paclitaxel kills dividing cells (a fraction δ_P E_P of
    # the divisions, Norton & Simon 1977), so it slows the tumour and cannot dissolve it while δ_P E_P < 1
    logistic = 1.0 - n - p.eps_mac * (m1 + m2)
    growth = p.r_n * (1.0 + p.a_r * phi_t) * n
    kill = p.delta_p * e_p * growth * jnp.maximum(logistic, 0.0)
    q_iv = intravasation_rate(state, p, phi_t)
    d_tumor = growth * logistic - kill - q_iv * n
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
        # free drug: exchange with plasma and release from cells (binding k_on P is in System.decay)
        "paclitaxel": p.p_p * exchange * (p_pl - state["paclitaxel"]) + p.ptx_k_off * state["paclitaxel_bound"],
        "paclitaxel_bound": paclitaxel_binding(state["paclitaxel"], p),
        "anakinra": p.p_a * exchange * (a_pl - state["anakinra"]),
        "circulating": shed_cells(q_iv, n, p, grid, circulating.dtype),
        "burden": p.r_met.astype(circulating.dtype) * state["burden"] + seeding,
        "seeded": seeding,
    }


def paclitaxel_binding(free, p: Parameters):
    """``k_on P`` (nM/day): free paclitaxel taken up and bound by cells, ``k_on = κ k_off``."""
    return p.ptx_kappa * p.ptx_k_off * jnp.maximum(free, 0.0)


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
