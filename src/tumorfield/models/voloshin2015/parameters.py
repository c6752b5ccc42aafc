"""Parameters of the Voloshin 2015 model, one ``eqx.Module`` pytree with array leaves.

Every scalar field carries its units, allowed range and source in its metadata; the
``[parameters]`` config section (and so ``docs/config.md``) is generated from the same
table and checked by the same :func:`range_check`, so there is one place where a
default, unit, range and source live. The prescribed vessel map ``vessels`` is a
leaf too: a spatially varying, differentiable parameter.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._schema import Check, in_range
from .pk import Doses


def _as_array(value):
    return value if isinstance(value, jax.Array | np.ndarray) else jnp.asarray(value)


FACTOR_RANGE = 2.0
"""Where no plausible range is given, a parameter is uncertain over ×1/2–×2 of its default."""


def _p(default, units, doc, source, lo=0.0, hi=math.inf, lo_open=False, plausible="factor"):
    """A parameter field: ``(lo, hi, lo_open)`` are the validation limits (what the config check
    accepts); ``plausible`` is the range the uncertainty analysis draws from (log-uniform):
    ``(low, high)`` from the source, ``"factor"`` for ×1/2–×2 of the default (assumed values), or
    ``None`` for a quantity that is not uncertain (a definition, the genotype, an unused route)."""
    if plausible == "factor":
        plausible = (default / FACTOR_RANGE, default * FACTOR_RANGE)
    if plausible is not None and not (lo <= plausible[0] <= default <= plausible[1] <= hi):
        raise ValueError(f"plausible range {plausible} must contain the default {default} within [{lo}, {hi}]")
    return eqx.field(
        default=default,
        converter=_as_array,
        metadata={"units": units, "doc": doc, "source": source, "range": (lo, hi, lo_open), "plausible": plausible},
    )


Scalar = Float[Array, ""]


class Parameters(eqx.Module):
    """Biological and pharmacological parameters (units in each field's metadata).

    Leaves are arrays, so the whole tree can be traced, vmapped and
    differentiated. ``host_il1b`` (g_β) and ``host_il1r`` (g_H) encode the host
    genotype as multipliers: 1 for wild type, 0 for the knockout. ``vessels`` is the
    relative vessel density ``v(x)`` on the grid (``Voloshin2015.params(grid)`` sets it;
    ``None`` leaves a tree for the pharmacokinetics alone).
    """

    # --- tumour cells
    r_n: Scalar = _p(
        0.5,
        "1/day",
        "tumour proliferation rate",
        "LLC1 doubling 23–40 h (Bertram & Janik 1980)",
        0,
        5,
        False,
        (0.4, 0.7),
    )
    a_r: Scalar = _p(0.1, "1", "IL1 gain of proliferation (1 + a_r Φ_T)", "assumed: 'slightly' slower growth", 0, 10)
    D_n: Scalar = _p(8.64e-3, "mm²/day", "tumour random motility", "1e-9 cm²/s, Anderson et al. 2000", 0, 1)
    a_D: Scalar = _p(0.1, "1", "IL1 gain of random motility (1 + a_D Φ_T)", "assumed (claim 2)", 0, 20)
    chi_n: Scalar = _p(
        0.02, "mm²/day", "haptotaxis coefficient (per unit ECM)", "assumed (Anderson–Chaplain form)", 0, 1
    )
    a_chi: Scalar = _p(
        1.0, "1", "IL1 gain of haptotaxis (1 + a_χ Φ_T)", "assumed (claim 2: IL1β raises invasion)", 0, 20
    )
    eps_mac: Scalar = _p(0.5, "1", "space taken by macrophages in the tumour's logistic term", "assumed", 0, 2)
    delta_p: Scalar = _p(
        0.6,
        "1",
        "fraction of divisions that end in mitotic death at full paclitaxel effect (kill ∝ proliferation)",
        "assumed < 1: the study's PTX-treated primaries grow; form Norton & Simon 1977",
        0,
        5,
        False,
        (0.3, 0.9),
    )
    ec50_p: Scalar = _p(16.0, "nM", "cytotoxic EC50 of paclitaxel", "brief range 5–50 nM", 0, math.inf, True, (5, 50))
    hill_p: Scalar = _p(1.0, "1", "Hill exponent of paclitaxel kill", "assumed", 0, 5, True)
    # --- intravasation
    gamma_iv: Scalar = _p(0.01, "1/day", "intravasation rate per unit vessel density × leakiness", "assumed", 0, 1)
    b_tm: Scalar = _p(
        9.0, "1", "M2 (TMEM doorway) gain of intravasation", "assumed; mechanism Harney et al. 2015", 0, 50
    )
    k_2: Scalar = _p(0.3, "1", "M2 density of half-maximal TMEM gain", "assumed", 0, math.inf, True)
    a_iv: Scalar = _p(0.25, "1", "IL1 gain of intravasation (1 + a_iv Φ_T)", "assumed", 0, 10)
    # --- matrix and matrix-degrading enzyme
    eta: Scalar = _p(1.0, "1/day", "ECM degradation per unit MDE", "assumed (Anderson–Chaplain 1998 form)", 0, 100)
    D_e: Scalar = _p(0.1, "mm²/day", "MDE diffusivity", "assumed (Anderson et al. 2000 scale)", 0, 100)
    lambda_e: Scalar = _p(1.0, "1/day", "MDE decay", "assumed", 0, 100, True)
    alpha_e: Scalar = _p(1.0, "1/day", "MDE production by tumour cells", "assumed", 0, 100)
    a_e: Scalar = _p(1.0, "1", "IL1 gain of MDE production (1 + a_e Φ_T)", "assumed (claim 2)", 0, 20)
    alpha_e2: Scalar = _p(0.2, "1/day", "MDE production by M2 macrophages", "assumed", 0, 100)
    # --- macrophage chemoattractant (CCL2/CSF-1), normalised units
    D_c: Scalar = _p(2.0, "mm²/day", "chemoattractant diffusivity (effective, with binding)", "assumed", 0, 100)
    lambda_c: Scalar = _p(2.0, "1/day", "chemoattractant decay", "assumed", 0, 1000, True)
    s_c: Scalar = _p(1.0, "1/day", "chemoattractant secretion by tumour cells", "assumed", 0, 100)
    s_d: Scalar = _p(2.0, "1/day", "chemoattractant release by paclitaxel-damaged cells", "assumed", 0, 100)
    s_h: Scalar = _p(
        0.5, "1/day", "IL1-driven chemoattractant (host response)", "Kaplanov et al. 2019 (form); assumed", 0, 100
    )
    k_c: Scalar = _p(0.5, "1", "chemoattractant level of half-maximal recruitment gain", "assumed", 0, math.inf, True)
    # --- macrophages
    R_0: Scalar = _p(0.3, "1/day", "recruitment rate per unit vessel density", "assumed", 0, 10)
    D_m: Scalar = _p(0.009, "mm²/day", "macrophage random motility", "speed 1–3 µm/min (brief, guess)", 0, 1)
    chi_m: Scalar = _p(0.05, "mm²/day", "macrophage chemotaxis coefficient (per unit c)", "assumed", 0, 10)
    k12_0: Scalar = _p(
        0.22,
        "1/day",
        "basal M1 → M2 rate",
        "brief 0.1–0.5 /day (den Breems & Eftimie 2016 form)",
        0,
        10,
        False,
        (0.1, 0.5),
    )
    k21_0: Scalar = _p(0.22, "1/day", "basal M2 → M1 rate", "brief 0.1–0.5 /day", 0, 10, False, (0.1, 0.5))
    k_n: Scalar = _p(0.8, "1/day", "tumour-driven M1 → M2 rate", "assumed", 0, 10)
    K_n: Scalar = _p(0.3, "1", "tumour density of half-maximal M2 push", "assumed", 0, math.inf, True)
    k_p: Scalar = _p(
        1.0, "1/day", "paclitaxel/TLR4-driven M2 → M1 rate", "brief 0.5–2 /day; Wanderley et al. 2018", 0, 10, False,
        (0.5, 2.0),
    )  # fmt: skip
    k_tlr: Scalar = _p(
        3000.0, "nM", "paclitaxel level of half-maximal TLR4 activation", "1–10 µM (brief)", 0, math.inf, True,
        (1000.0, 10000.0),
    )  # fmt: skip
    k_i: Scalar = _p(1.0, "1/day", "IL1-driven M2 → M1 rate", "brief 0.5–2 /day (guess)", 0, 10, False, (0.5, 2.0))
    d_m: Scalar = _p(0.1, "1/day", "macrophage death/emigration", "brief 0.05–0.2 /day", 0, 10, False, (0.05, 0.2))
    # --- IL1β (pM)
    D_i: Scalar = _p(8.6, "mm²/day", "IL1β diffusivity", "≈1e-6 cm²/s, scaled from albumin (Chary & Jain 1989)", 0, 100)
    lambda_i: Scalar = _p(
        30.0, "1/day", "IL1β tissue clearance", "half-life 20–50 min (Kudo et al. 1990; tissue guess)", 0, 1e4, True,
        (20.0, 50.0),
    )  # fmt: skip
    rho_1: Scalar = _p(20.0, "pM/day", "IL1β production by M1 macrophages (per unit density)", "assumed", 0, 1e6)
    rho_2: Scalar = _p(4.0, "pM/day", "IL1β production by M2 macrophages", "assumed (M2 make less IL1β)", 0, 1e6)
    beta_p: Scalar = _p(50.0, "1", "paclitaxel/TLR4 gain of macrophage IL1β production", "assumed (claim 1)", 0, 1e3)
    rho_n: Scalar = _p(2.0, "pM/day", "IL1β production by tumour cells", "assumed", 0, 1e6)
    K_i: Scalar = _p(
        32.0, "pM", "IL1β–IL1R dissociation constant", "brief 10–100 pM (guess)", 0, math.inf, True, (10.0, 100.0)
    )
    K_a: Scalar = _p(
        0.03, "nM", "anakinra–IL1R dissociation constant (30 pM)", "brief 10–100 pM (guess)", 0, math.inf, True,
        (0.01, 0.1),
    )  # fmt: skip
    theta50: Scalar = _p(
        0.022, "1", "receptor occupancy of half-maximal tumour response Φ_T", "brief 0.01–0.05 (guess)", 0, 1, True,
        (0.01, 0.05),
    )  # fmt: skip
    theta50_h: Scalar = _p(
        0.022, "1", "receptor occupancy of half-maximal host response Φ_H", "brief 0.01–0.05 (guess)", 0, 1, True,
        (0.01, 0.05),
    )  # fmt: skip
    # --- VEGF-A (pM) and leakiness
    D_g: Scalar = _p(6.0, "mm²/day", "VEGF diffusivity", "≈7e-7 cm²/s (brief, scaled like IL1β)", 0, 100)
    lambda_g: Scalar = _p(20.0, "1/day", "VEGF clearance", "brief 10–30 /day (guess)", 0, 1e4, True, (10.0, 30.0))
    rho_g: Scalar = _p(
        200.0, "pM/day", "VEGF production by M2 macrophages", "assumed; TIE2hi macrophages, Harney 2015", 0, 1e6
    )
    rho_gn: Scalar = _p(2.0, "pM/day", "VEGF production by tumour cells", "assumed", 0, 1e6)
    K_g: Scalar = _p(20.0, "pM", "VEGF level of half-maximal leak opening", "assumed", 0, math.inf, True)
    k_l: Scalar = _p(
        1.0, "1/day", "leak opening rate", "brief 0.5–2 /day (Harney 2015 mechanism)", 0, 100, False, (0.5, 2.0)
    )
    r_l: Scalar = _p(1.0, "1/day", "leak closing rate", "brief 0.5–2 /day", 0, 100, True, (0.5, 2.0))
    # --- paclitaxel in tissue (nM): free (interstitial) and cell-bound; plasma PK
    D_p: Scalar = _p(
        2.0, "mm²/day", "effective paclitaxel diffusivity (free drug)", "brief 1e-7–1e-6 cm²/s = 0.86–8.6", 0, 100,
        False, (0.86, 8.6),
    )  # fmt: skip
    lambda_p: Scalar = _p(1.5, "1/day", "free paclitaxel tissue clearance (besides exchange)", "assumed", 0, 1e4, True)
    p_p: Scalar = _p(1.0, "1/day", "vascular exchange of paclitaxel per unit vessel density", "assumed", 0, 100)
    b_l: Scalar = _p(1.0, "1", "leakiness gain of vascular exchange", "assumed", 0, 100)
    ptx_kappa: Scalar = _p(
        100.0,
        "1",
        "cell-bound/free paclitaxel at equilibrium (κ = k_on/k_off)",
        "assumed; tumour/medium 250–4400 in histocultures (Kuh et al. 1999)",
        0,
        1e5,
        True,
        (30.0, 300.0),
    )
    ptx_k_off: Scalar = _p(
        0.25,
        "1/day",
        "release of cell-bound paclitaxel",
        "16–72 % retained 72 h after washout (Kuh et al. 1999): 0.11–0.61 /day",
        0,
        100,
        True,
        (0.11, 0.61),
    )
    ptx_iv_ke: Scalar = _p(
        17.8, "1/day", "paclitaxel i.v. elimination", "t½ 43–69 min (Eiseman et al. 1994)", 0, 1e4, True, None
    )
    ptx_iv_v: Scalar = _p(
        0.315, "L/kg", "paclitaxel i.v. volume (CL/k_e, CL 3.3–4.5 mL/min/kg)", "Eiseman et al. 1994", 0, 100, True,
        None,
    )  # fmt: skip
    ptx_ip_ka: Scalar = _p(
        24.0, "1/day", "paclitaxel i.p. absorption", "t_max 2 h (Drug Metab Dispos 1995;23:713)", 0, 1e4, True,
        (16.0, 36.0),
    )  # fmt: skip
    ptx_ip_ke: Scalar = _p(
        4.97, "1/day", "paclitaxel i.p. terminal elimination", "t½ 3.0–3.7 h (ibid.)", 0, 1e4, True, (4.5, 5.5)
    )
    ptx_ip_v: Scalar = _p(
        0.92, "L/kg", "paclitaxel i.p. V/F", "fitted to C_max 13 µg/mL at 18 mg/kg (ibid.)", 0, 100, True, (0.7, 1.2)
    )
    # --- anakinra in tissue (nM) and plasma PK
    D_a: Scalar = _p(
        8.6, "mm²/day", "effective anakinra diffusivity", "as IL1β (both 17 kDa; Chary & Jain 1989 scaling)", 0, 100
    )
    lambda_a: Scalar = _p(
        30.0, "1/day", "anakinra tissue clearance", "as IL1β (17 kDa, renal route; Kudo et al. 1990)", 0, 1e4, True,
        (20.0, 50.0),
    )  # fmt: skip
    p_a: Scalar = _p(2.0, "1/day", "vascular exchange of anakinra per unit vessel density", "assumed", 0, 100)
    ana_ke: Scalar = _p(
        11.1, "1/day", "anakinra elimination (mouse t½ 1.5 h)", "brief: mouse t½ ~1–2 h (guess)", 0, 1e4, True,
        (8.3, 16.6),
    )  # fmt: skip
    ana_ka: Scalar = _p(24.0, "1/day", "anakinra s.c./i.p. absorption", "assumed (t_max ≈ 2 h)", 0, 1e4, True)
    ana_v: Scalar = _p(
        0.27, "L/kg", "anakinra V/F (absorbed) and V (i.v.)", "Kineret label: Vd 18 L/70 kg, F 95 %", 0, 100, True
    )
    # --- metastasis
    n_cell: Scalar = _p(1e6, "cells/mm³", "cells per unit density (carrying capacity)", "(10 µm)⁻³", 0, 1e9, True, None)
    k_circ: Scalar = _p(
        20.0, "1/day", "clearance of circulating tumour cells", "assumed: CTC t½ ≈ 50 min", 0, 1e4, True, (10.0, 40.0)
    )
    f_s: Scalar = _p(
        1e-3, "1", "fraction of cleared CTCs that seed", "brief 1e-4–1e-2 (guess)", 0, 1, False, (1e-4, 1e-2)
    )
    r_met: Scalar = _p(
        0.4, "1/day", "growth of metastatic burden", "brief 0.3–0.5 /day (guess)", 0, 5, False, (0.3, 0.5)
    )
    # --- host genotype
    host_il1b: Scalar = _p(
        1.0, "1", "g_β: host (macrophage) IL1β production; 0 in IL1β-KO", "genotype", 0, 1, False, None
    )
    host_il1r: Scalar = _p(1.0, "1", "g_H: host IL1R response; 0 in IL1R-KO", "genotype", 0, 1, False, None)
    # --- dosing schedules (arrays: times, amounts, i.v. flags)
    paclitaxel_doses: Doses = eqx.field(default_factory=Doses)
    anakinra_doses: Doses = eqx.field(default_factory=Doses)
    # --- prescribed vessel map v(x), one value per grid cell (1, relative vessel density)
    vessels: Float[Array, "*grid"] | None = None  # noqa: F722
    # --- the initial tumour radius (mm, from [initial]): the invasion diagnostics measure from it
    initial_radius: Scalar | None = None

    def __check_init__(self):
        for f in parameter_fields():
            value = getattr(self, f.name)
            if isinstance(value, jax.core.Tracer):
                continue  # traced (fitting, vmap): checked where concrete
            v = float(np.asarray(value))
            problem = range_check(f)(v)
            if problem:
                raise ValueError(f"Parameters.{f.name}={v}: {problem}")
        for ka, ke, what in ((self.ptx_ip_ka, self.ptx_ip_ke, "ptx_ip"), (self.ana_ka, self.ana_ke, "ana")):
            if not isinstance(ka, jax.core.Tracer) and float(ka) == float(ke):
                raise ValueError(
                    f"Parameters.{what}_ka = {what}_ke = {float(ka)}: absorption and elimination must differ"
                )


PAPER_MOLAR_MASS = {"paclitaxel": 853.9, "anakinra": 17257.6}
"""g/mol (paclitaxel C47H51NO14; anakinra 17.3 kDa, Kineret label)."""


def parameter_fields() -> tuple[dataclasses.Field, ...]:
    """The scalar parameter fields (not the dosing schedules), in declaration order."""
    return tuple(f for f in dataclasses.fields(Parameters) if "units" in f.metadata)


def plausible_range(field: dataclasses.Field) -> tuple[float, float] | None:
    """The range (low, high) that the uncertainty analysis draws ``field`` from, log-uniformly; None
    where the parameter is not uncertain (see :func:`_p`)."""
    return field.metadata["plausible"]


def range_check(field: dataclasses.Field) -> Check:
    """The allowed range of a parameter field, from its metadata: used by ``Parameters``
    itself and by the ``[parameters]`` config check."""
    return in_range(*field.metadata["range"])
