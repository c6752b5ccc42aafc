r"""IL1β–paclitaxel–macrophage model of Voloshin et al., Mol Cancer Ther 2015;14:1385.

Tumour cells ``n`` invade the matrix ``m`` (haptotaxis); macrophages ``M1``,
``M2`` are recruited from vessels ``v(x)`` and switch state under tumour cues
(→ M2), paclitaxel/TLR4 and IL1 signalling (→ M1). Macrophages make IL1β
``I`` (more under paclitaxel ``P``); IL1 signalling, antagonised competitively
by anakinra ``A``, raises tumour proliferation and invasiveness (``Φ_T``) and
keeps macrophages M1 (``Φ_H``). M2 make VEGF ``G``, which opens vessel leaks
``ℓ`` through which tumour cells intravasate, most where M2 sit (TMEM
doorways). Shed cells circulate, seed and grow as metastatic burden.

Units: mm, days; cell densities normalised to the carrying capacity; IL1β and
VEGF in pM; drugs in nM; matrix-degrading enzyme and chemoattractant in
normalised units. Every equation and parameter is listed in ``docs/model.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import Grid, StateDependent, System, Taxis

from .._schema import ConfigError, Key, fraction, non_negative, one_of, positive
from . import register
from ._base import Model
from ._voloshin._params import PAPER_MOLAR_MASS, Parameters, parameter_fields
from ._voloshin._pk import DOSE_TOLERANCE, ROUTES, Doses, plasma_concentration
from ._voloshin._vessels import vessel_map

GENOTYPES = {"wild_type": (1.0, 1.0), "il1b_ko": (0.0, 1.0), "il1r_ko": (1.0, 0.0)}
"""Host genotype → (g_β, g_H): IL1β knockout hosts make no IL1β; IL1R knockout hosts do not respond."""

DRUGS = ("paclitaxel", "anakinra")
DOSE_SLOTS = 32
"""Dose arrays are padded to a multiple of this, so every arm shares one compiled rollout."""
TUMOR_THRESHOLD = 0.1
"""Tumour density (of carrying capacity) that delimits 'the tumour' for regional diagnostics."""
FRONT_THRESHOLD = 0.05
"""Tumour density that marks the invasion front."""


# --- signalling -------------------------------------------------------------------------------


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
    """``q_iv = γ_iv v ℓ (1 + b_TM M2/(K_2 + M2)) (1 + a_iv Φ_T)`` (1/day)."""
    m2 = jnp.maximum(state["m2"], 0.0)
    return (
        p.gamma_iv
        * state["vessels"]
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


def reaction(state, p: Parameters, t):
    """Reaction rates of every field (units of the field per day); see ``docs/model.md``."""
    n, m1, m2 = state["tumor"], state["m1"], state["m2"]
    v, leak = state["vessels"], state["leakiness"]
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
    # metastasis: cells shed into the circulation (∫ over the grid via the cell-volume field)
    circulating = state["circulating"]
    shed = jnp.sum((q_iv * n * state["voxel_volume"]).astype(circulating.dtype)) * p.n_cell.astype(circulating.dtype)
    # CTC clearance is written here, not in System.decay: the core's explicit decay multiplies a
    # float64 scalar by a float32 parameter, which strict dtype promotion refuses
    k_circ = p.k_circ.astype(circulating.dtype)
    seeding = p.f_s.astype(circulating.dtype) * k_circ * circulating
    return {
        "tumor": d_tumor,
        "ecm": -p.eta * jnp.maximum(state["mde"], 0.0) * state["ecm"],
        "mde": p.alpha_e * (1.0 + p.a_e * phi_t) * n + p.alpha_e2 * m2,
        "chemo": p.s_c * n + p.s_d * kill + p.s_h * phi_h * (m1 + m2),
        "m1": pi1 * recruit + switch,
        "m2": (1.0 - pi1) * recruit - switch,
        "il1b": p.host_il1b * (p.rho_1 * m1 + p.rho_2 * m2) * (1.0 + p.beta_p * t_p) + p.rho_n * n,
        "vegf": p.rho_g * m2 + p.rho_gn * n,
        "leakiness": p.k_l * state["vegf"] / (p.K_g + jnp.maximum(state["vegf"], 0.0)) * (1.0 - leak),
        "paclitaxel": p.p_p * exchange * (p_pl - state["paclitaxel"]),
        "anakinra": p.p_a * exchange * (a_pl - state["anakinra"]),
        "circulating": shed - k_circ * circulating,
        "burden": p.r_met.astype(circulating.dtype) * state["burden"] + seeding,
        "seeded": seeding,
    }


def _tumor_chi(state, p: Parameters):
    """Haptotactic sensitivity ``χ_n (1 + a_χ Φ_T)`` (mm²/day per unit matrix)."""
    phi_t, _ = il1_responses(state, p)
    return p.chi_n * (1.0 + p.a_chi * phi_t)


def _tumor_motility(state, p: Parameters):
    """Random motility ``D_n (1 + a_D Φ_T)`` (mm²/day), raised by tumour-cell IL1 signalling."""
    phi_t, _ = il1_responses(state, p)
    return p.D_n * (1.0 + p.a_D * phi_t)


def _macrophage_chi(state, p: Parameters):
    return p.chi_m


def _coef(name):
    def get(p):
        return getattr(p, name)

    get.__name__ = f"params.{name}"
    return get


FIELDS = (
    "tumor",
    "ecm",
    "mde",
    "chemo",
    "m1",
    "m2",
    "il1b",
    "vegf",
    "leakiness",
    "paclitaxel",
    "anakinra",
    "vessels",
    "voxel_volume",
    "circulating",
    "burden",
    "seeded",
)
SCALARS = ("circulating", "burden", "seeded")

SYSTEM = System(
    fields=FIELDS,
    diffusion={
        "tumor": StateDependent(_tumor_motility),
        "mde": _coef("D_e"),
        "chemo": _coef("D_c"),
        "m1": _coef("D_m"),
        "m2": _coef("D_m"),
        "il1b": _coef("D_i"),
        "vegf": _coef("D_g"),
        "paclitaxel": _coef("D_p"),
        "anakinra": _coef("D_a"),
    },
    decay={
        "mde": _coef("lambda_e"),
        "chemo": _coef("lambda_c"),
        "vegf": _coef("lambda_g"),
        "il1b": _coef("lambda_i"),
        "leakiness": _coef("r_l"),
        "paclitaxel": _coef("lambda_p"),
        "anakinra": _coef("lambda_a"),
        "m1": _coef("d_m"),
        "m2": _coef("d_m"),
    },
    taxis=(
        Taxis(field="tumor", attractant="ecm", chi=_tumor_chi),
        Taxis(field="m1", attractant="chemo", chi=_macrophage_chi),
        Taxis(field="m2", attractant="chemo", chi=_macrophage_chi),
    ),
    reaction=reaction,
    quasi_steady=("mde", "chemo", "vegf"),
    scalars=SCALARS,
)
"""One System object for every instance, so compiled rollouts are shared between arms."""


# --- configuration schema ---------------------------------------------------------------------


def _check_doses(drug):
    def check(entries):
        for i, entry in enumerate(entries):
            where = f"{drug}[{i}]"
            if not isinstance(entry, Mapping):
                return f"{where} = {entry!r}: each dose is a table {{time, dose_mg_per_kg, route[, every, count]}}"
            unknown = set(entry) - {"time", "dose_mg_per_kg", "route", "every", "count"}
            if unknown:
                return f"{where}: unknown keys {sorted(unknown)}; allowed are time, dose_mg_per_kg, route, every, count"
            for key, rule in (("time", non_negative), ("dose_mg_per_kg", positive)):
                if key not in entry:
                    return f"{where}.{key} is missing"
                value = entry[key]
                if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
                    return f"{where}.{key} = {value!r}: must be a number"
                if rule(value):
                    return f"{where}.{key} = {value!r}: {rule(value)}"
            route = entry.get("route", "ip")
            if route not in ROUTES:
                return f"{where}.route = {route!r}: allowed are {', '.join(map(repr, ROUTES))}"
            count = entry.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                return f"{where}.count = {count!r}: must be a whole number ≥ 1"
            every = entry.get("every", 1.0)
            if not isinstance(every, int | float) or isinstance(every, bool) or not every > 0:
                return f"{where}.every = {every!r}: must be a number of days > 0"
        return None

    return check


def _parameter_check(lo, hi, lo_open):
    def check(value):
        ok = (lo < value if lo_open else lo <= value) and value <= hi and value == value
        return None if ok else f"must be {'>' if lo_open else '≥'} {lo} and ≤ {hi}"

    return check


def _parameter_schema() -> dict[str, Key]:
    keys = {}
    for f in parameter_fields():
        lo, hi, lo_open = f.metadata["range"]
        doc = f"{f.metadata['doc']} [{f.metadata['source']}]"
        keys[f.name] = Key(float, float(f.default), f.metadata["units"], doc, _parameter_check(lo, hi, lo_open))
    # the genotype sets these two; keeping them out of [parameters] avoids two ways to say one thing
    keys.pop("host_il1b")
    keys.pop("host_il1r")
    return keys


def _positive_int(value):
    return (
        None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else "must be a whole number ≥ 0"
    )


SCHEMA: dict[str, dict[str, Key]] = {
    "host": {
        "genotype": Key(
            str,
            "wild_type",
            "",
            "host genotype: wild_type, il1b_ko (no host IL1β, g_β = 0) or il1r_ko (no host IL1R response, g_H = 0)",
            one_of(*GENOTYPES),
        ),
    },
    "parameters": _parameter_schema(),
    "dosing": {
        drug: Key(
            list,
            [],
            "day, mg/kg",
            f"{drug} doses: a list of {{time (day), dose_mg_per_kg, route ('iv', 'ip', 'sc'), "
            "every (day, default 1), count (default 1)}}; every time must be a whole number of steps",
            _check_doses(drug),
        )
        for drug in DRUGS
    },
    "initial": {
        "tumor_radius": Key(float, 0.5, "mm", "radius of the implanted tumour (centred in the box)", positive),
        "tumor_density": Key(float, 0.8, "1", "tumour density inside the initial radius", fraction),
        "interface_width": Key(float, 0.1, "mm", "width of the tanh edge of the initial tumour", positive),
        "m1": Key(float, 0.02, "1", "resident M1 macrophage density", fraction),
        "m2": Key(float, 0.05, "1", "resident M2 macrophage density", fraction),
    },
    "vessels": {
        "host_density": Key(float, 0.1, "1", "vessel density of host tissue", non_negative),
        "rim_density": Key(float, 1.0, "1", "peak vessel density of the peritumoral rim", non_negative),
        "rim_radius": Key(float, 1.5, "mm", "radius of the peritumoral vascular rim", positive),
        "rim_width": Key(float, 0.4, "mm", "width of the rim", positive),
        "intratumoral_count": Key(int, 12, "", "number of sparse intratumoral vessels", _positive_int),
        "intratumoral_density": Key(float, 0.8, "1", "peak density of an intratumoral vessel", non_negative),
        "vessel_radius": Key(float, 0.1, "mm", "radius of an intratumoral vessel", positive),
        "seed": Key(int, 0, "", "random seed of the intratumoral vessel positions", _positive_int),
    },
}


def _section(config, name) -> dict[str, Any]:
    """A config section with defaults filled in (the loader has usually done so already)."""
    given = dict(config.get(name, {}) or {})
    out = {}
    for key, spec in SCHEMA[name].items():
        value = given.pop(key, spec.default)
        if spec.check is not None and value is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{name}.{key}", value, problem)
        out[key] = value
    if given:
        key = sorted(given)[0]
        raise ConfigError(f"{name}.{key}", given[key], f"unknown key; allowed are {', '.join(SCHEMA[name])}")
    return out


def expand_doses(entries) -> list[tuple[float, float, str, str]]:
    """``[(time, dose, route, key_path)]`` for every administration, repeats unrolled, sorted by time."""
    out = []
    for i, entry in enumerate(entries):
        every = float(entry.get("every", 1.0))
        for j in range(int(entry.get("count", 1))):
            out.append((float(entry["time"]) + j * every, float(entry["dose_mg_per_kg"]), entry.get("route", "ip"), i))
    return sorted(out)


@register
class Voloshin2015(Model):
    """Voloshin et al. 2015: IL1β, paclitaxel, anakinra, M1/M2 macrophages, leaky vessels, metastasis.

    Config sections: ``[host]``, ``[parameters]``, ``[dosing]``, ``[initial]``, ``[vessels]``.
    """

    name: ClassVar[str] = "voloshin2015"
    schema: ClassVar[dict[str, dict[str, Key]]] = SCHEMA

    field_units: ClassVar[dict[str, str]] = {
        "tumor": "1 (of carrying capacity)",
        "ecm": "1 (of normal matrix density)",
        "mde": "normalised",
        "chemo": "normalised",
        "m1": "1 (of carrying capacity)",
        "m2": "1 (of carrying capacity)",
        "il1b": "pM",
        "vegf": "pM",
        "leakiness": "1",
        "paclitaxel": "nM",
        "anakinra": "nM",
        "vessels": "1 (relative vessel density)",
        "voxel_volume": "mm^d",
        "circulating": "cells",
        "burden": "cells",
        "seeded": "cells",
    }
    field_long_names: ClassVar[dict[str, str]] = {
        "tumor": "tumour cell density",
        "ecm": "extracellular matrix density",
        "mde": "matrix-degrading enzyme",
        "chemo": "macrophage chemoattractant (CCL2/CSF-1)",
        "m1": "M1 (anti-tumour) macrophage density",
        "m2": "M2 (pro-tumour, pro-angiogenic) macrophage density",
        "il1b": "IL1β concentration",
        "vegf": "VEGF-A concentration",
        "leakiness": "fraction of leaky vessel wall",
        "paclitaxel": "tissue paclitaxel concentration",
        "anakinra": "tissue anakinra concentration",
        "vessels": "prescribed vessel density",
        "voxel_volume": "grid cell area (2D) or volume (3D), a constant that turns sums into integrals",
        "circulating": "circulating tumour cells",
        "burden": "metastatic burden",
        "seeded": "cumulative seeded cells",
    }
    scalar_units: ClassVar[dict[str, str]] = {
        "tumor_volume": "mm^d (mm² in 2D, mm³ in 3D)",
        "tumor_region_volume": "mm^d",
        "metastatic_burden": "cells",
        "circulating_cells": "cells",
        "seeded_cells": "cells",
        "shed_rate": "cells/day",
        "m1_total": "mm^d (density × volume)",
        "m2_total": "mm^d (density × volume)",
        "m1_tumor": "mm^d, inside the tumour region",
        "m2_tumor": "mm^d, inside the tumour region",
        "m2_fraction": "1, M2/(M1+M2) inside the tumour region",
        "mean_leakiness": "1, vessel-weighted mean inside the tumour region and its rim",
        "il1b_mean": "pM, mean over the tumour region",
        "il1b_production": "pM·mm^d/day, macrophage IL1β production",
        "vegf_mean": "pM, mean over the tumour region",
        "paclitaxel_mean": "nM, mean over the tumour region",
        "anakinra_mean": "nM, mean over the tumour region",
        "plasma_paclitaxel": "nM",
        "plasma_anakinra": "nM",
        "phi_tumor": "1, tumour-weighted mean IL1 response Φ_T",
        "phi_host": "1, macrophage-weighted mean host IL1 response Φ_H",
        "front_radius": "mm, equivalent radius of the region with tumour ≥ 0.05",
        "invasion_distance": "mm, front_radius − initial tumour radius",
        "invasive_fraction": "1, share of tumour mass beyond the initial radius",
        "motility_index": "1, tumour-weighted mean haptotactic gain 1 + a_χ Φ_T",
    }

    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None = None):
        config = {} if config is None else config
        super().__init__(config)
        self.host = _section(config, "host")
        self.parameter_values = _section(config, "parameters")
        self.dosing = _section(config, "dosing")
        self.initial = _section(config, "initial")
        self.vessels = _section(config, "vessels")
        self.doses = {drug: expand_doses(self.dosing[drug]) for drug in DRUGS}
        self._params = self._build_params()

    @property
    def system(self) -> System:
        return SYSTEM

    def _build_params(self) -> Parameters:
        g_beta, g_h = GENOTYPES[self.host["genotype"]]
        doses = {
            drug: Doses([d[0] for d in items], [d[1] for d in items], [d[2] for d in items], pad_to=DOSE_SLOTS)
            for drug, items in self.doses.items()
        }
        try:
            return Parameters(
                **self.parameter_values,
                host_il1b=g_beta,
                host_il1r=g_h,
                paclitaxel_doses=doses["paclitaxel"],
                anakinra_doses=doses["anakinra"],
            )
        except ValueError as error:  # cross-parameter invariants (e.g. k_a ≠ k_e)
            raise ConfigError("parameters", self.parameter_values, str(error)) from None

    def params(self) -> Parameters:
        return self._params

    def centre(self, grid: Grid) -> tuple[float, ...]:
        return tuple(side / 2 for side in grid.length)

    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        mesh = grid.mesh()
        centre = self.centre(grid)
        r = np.sqrt(sum((x - c) ** 2 for x, c in zip(mesh, centre, strict=True)))
        ini = self.initial
        tumor = ini["tumor_density"] * 0.5 * (1.0 - np.tanh((r - ini["tumor_radius"]) / ini["interface_width"]))
        vessels = vessel_map(mesh, centre, **self.vessels)
        zeros = np.zeros(grid.shape)
        return {
            "tumor": tumor,
            "ecm": 1.0 - 0.5 * tumor,  # the implanted tumour has already remodelled its matrix
            "m1": np.full(grid.shape, ini["m1"]),
            "m2": np.full(grid.shape, ini["m2"]),
            "il1b": zeros,
            "leakiness": zeros,
            "paclitaxel": zeros,
            "anakinra": zeros,
            "vessels": vessels,
            "voxel_volume": np.full(grid.shape, grid.cell_volume),
            "circulating": np.zeros(()),
            "burden": np.zeros(()),
            "seeded": np.zeros(()),
        }

    def observe(self, state, params: Parameters, t, grid: Grid) -> dict[str, Any]:
        p = params
        dv = grid.cell_volume
        n = jnp.maximum(state["tumor"], 0.0)
        m1, m2 = jnp.maximum(state["m1"], 0.0), jnp.maximum(state["m2"], 0.0)
        region = (n >= TUMOR_THRESHOLD).astype(n.dtype)
        region_volume = jnp.sum(region) * dv
        safe_volume = jnp.maximum(region_volume, dv)

        def region_mean(x):
            return jnp.sum(x * region) * dv / safe_volume

        phi_t, phi_h = il1_responses(state, p)
        _, t_p = drug_effects(state["paclitaxel"], p)
        q_iv = intravasation_rate(state, p, phi_t)
        mesh = grid.mesh()
        centre = self.centre(grid)
        r = jnp.asarray(np.sqrt(sum((x - c) ** 2 for x, c in zip(mesh, centre, strict=True))), n.dtype)
        front_volume = jnp.sum(jnp.clip(n / FRONT_THRESHOLD, 0.0, 1.0)) * dv
        if grid.ndim == 2:
            front = jnp.sqrt(front_volume / math.pi)
        elif grid.ndim == 3:
            front = jnp.cbrt(3.0 * front_volume / (4.0 * math.pi))
        else:
            front = front_volume / 2.0
        mass = jnp.sum(n) * dv
        safe_mass = jnp.maximum(mass, 1e-30)
        beyond = (r > self.initial["tumor_radius"]).astype(n.dtype)
        m1_tumor, m2_tumor = jnp.sum(m1 * region) * dv, jnp.sum(m2 * region) * dv
        # leakiness matters where vessels are: vessel-weighted, over the tumour and its rim
        near = (jnp.maximum(n, 0.0) >= FRONT_THRESHOLD).astype(n.dtype) * state["vessels"]
        p_pl, a_pl = plasma(p, t)
        macs = m1 + m2
        return {
            "tumor_volume": mass,
            "tumor_region_volume": region_volume,
            "metastatic_burden": state["burden"],
            "circulating_cells": state["circulating"],
            "seeded_cells": state["seeded"],
            "shed_rate": jnp.sum((q_iv * n).astype(state["burden"].dtype))
            * dv
            * p.n_cell.astype(state["burden"].dtype),
            "m1_total": jnp.sum(m1) * dv,
            "m2_total": jnp.sum(m2) * dv,
            "m1_tumor": m1_tumor,
            "m2_tumor": m2_tumor,
            "m2_fraction": m2_tumor / jnp.maximum(m1_tumor + m2_tumor, 1e-30),
            "mean_leakiness": jnp.sum(state["leakiness"] * near) / jnp.maximum(jnp.sum(near), 1e-30),
            "il1b_mean": region_mean(state["il1b"]),
            "il1b_production": jnp.sum(p.host_il1b * (p.rho_1 * m1 + p.rho_2 * m2) * (1.0 + p.beta_p * t_p)) * dv,
            "vegf_mean": region_mean(state["vegf"]),
            "paclitaxel_mean": region_mean(state["paclitaxel"]),
            "anakinra_mean": region_mean(state["anakinra"]),
            "plasma_paclitaxel": p_pl,
            "plasma_anakinra": a_pl,
            "phi_tumor": jnp.sum(phi_t * n) / jnp.maximum(jnp.sum(n), 1e-30),
            "phi_host": jnp.sum(phi_h * macs) / jnp.maximum(jnp.sum(macs), 1e-30),
            "front_radius": front,
            "invasion_distance": front - self.initial["tumor_radius"],
            "invasive_fraction": jnp.sum(n * beyond) * dv / safe_mass,
            "motility_index": jnp.sum((1.0 + p.a_chi * phi_t) * n) / jnp.maximum(jnp.sum(n), 1e-30),
        }

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        if dt < 4 * DOSE_TOLERANCE:
            raise ConfigError("time.dt", dt, f"must be ≥ {4 * DOSE_TOLERANCE} day so that dose times resolve")
        for drug in DRUGS:
            for time, _, _, index in self.doses[drug]:
                steps = time / dt
                if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
                    raise ConfigError(
                        f"dosing.{drug}[{index}].time",
                        time,
                        f"doses must land on step boundaries: a whole number of steps of time.dt = {dt} day",
                    )
        p = self.parameter_values
        if dt * p["k_circ"] > 1.0:
            raise ConfigError(
                "parameters.k_circ",
                p["k_circ"],
                f"k_circ × time.dt = {p['k_circ'] * dt:.3g} > 1: circulating cells are advanced explicitly; "
                f"use dt ≤ {1.0 / p['k_circ']:.4g} day",
            )
        radius = self.initial["tumor_radius"]
        if any(radius >= side / 2 for side in grid.length):
            raise ConfigError("initial.tumor_radius", radius, f"must be smaller than half the box side {grid.length}")


def parameter_table() -> list[dict[str, Any]]:
    """Rows ``{name, default, units, doc, source, range}`` for docs and the schema."""
    return [
        {
            "name": f.name,
            "default": float(f.default),
            "units": f.metadata["units"],
            "doc": f.metadata["doc"],
            "source": f.metadata["source"],
            "range": f.metadata["range"],
        }
        for f in parameter_fields()
    ]


__all__ = ["Voloshin2015", "Parameters", "Doses", "SYSTEM", "parameter_table"]
