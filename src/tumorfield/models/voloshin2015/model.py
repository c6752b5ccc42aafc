"""The ``voloshin2015`` model class: typed config sections → parameters, initial state, diagnostics."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from tumorfield_kernels import Grid, System

from ..._schema import ConfigError
from .. import register
from .._base import Model
from .observables import observe
from .parameters import Parameters
from .pk import DOSE_TOLERANCE, Doses
from .sections import (
    DRUGS,
    GENOTYPES,
    SECTIONS,
    DosingSection,
    HostSection,
    InitialSection,
    VesselsSection,
    expand_doses,
)
from .spec import SYSTEM
from .vessels import box_centre, radial_distance, vessel_map

DOSE_SLOTS = 32
"""Dose arrays are padded to a multiple of this, so every arm shares one compiled rollout."""

VESSELS_UNITS, VESSELS_LONG_NAME = "1 (relative vessel density)", "prescribed vessel density"


@register
class Voloshin2015(Model):
    """Voloshin et al. 2015: IL1β, paclitaxel, anakinra, M1/M2 macrophages, leaky vessels, metastasis.

    Config sections: ``[host]``, ``[parameters]``, ``[dosing]``, ``[initial]``, ``[vessels]``
    (:mod:`.sections`). Build from plain dicts with ``Voloshin2015.from_sections({...})``.
    """

    name: ClassVar[str] = "voloshin2015"
    section_types: ClassVar[dict[str, type]] = SECTIONS

    field_units: ClassVar[dict[str, str]] = {
        "tumor": "1",
        "ecm": "1",
        "mde": "1",
        "chemo": "1",
        "m1": "1",
        "m2": "1",
        "il1b": "pM",
        "vegf": "pM",
        "leakiness": "1",
        "paclitaxel": "nM",
        "paclitaxel_bound": "nM",
        "anakinra": "nM",
        "circulating": "cells",
        "burden": "cells",
        "seeded": "cells",
    }
    field_long_names: ClassVar[dict[str, str]] = {
        "tumor": "tumour cell density (fraction of carrying capacity)",
        "ecm": "extracellular matrix density (fraction of normal matrix density)",
        "mde": "matrix-degrading enzyme (normalised)",
        "chemo": "macrophage chemoattractant CCL2/CSF-1 (normalised)",
        "m1": "M1 (anti-tumour) macrophage density (fraction of carrying capacity)",
        "m2": "M2 (pro-tumour, pro-angiogenic) macrophage density (fraction of carrying capacity)",
        "il1b": "IL1β concentration",
        "vegf": "VEGF-A concentration",
        "leakiness": "fraction of leaky vessel wall",
        "paclitaxel": "free (interstitial) paclitaxel concentration",
        "paclitaxel_bound": "cell-bound paclitaxel (per tissue volume)",
        "anakinra": "tissue anakinra concentration",
        "circulating": "circulating tumour cells",
        "burden": "metastatic burden",
        "seeded": "cumulative seeded cells",
    }
    scalar_units: ClassVar[dict[str, str]] = {
        "tumor_volume": "mm^d",
        "tumor_region_volume": "mm^d",
        "metastatic_burden": "cells",
        "circulating_cells": "cells",
        "seeded_cells": "cells",
        "shed_rate": "cells/day",
        "m1_total": "mm^d",
        "m2_total": "mm^d",
        "m1_tumor": "mm^d",
        "m2_tumor": "mm^d",
        "m2_fraction": "1",
        "mean_leakiness": "1",
        "il1b_mean": "pM",
        "il1b_production": "pM·mm^d/day",
        "vegf_mean": "pM",
        "paclitaxel_mean": "nM",
        "paclitaxel_cell_mean": "nM",
        "kill_effect": "1",
        "anakinra_mean": "nM",
        "plasma_paclitaxel": "nM",
        "plasma_anakinra": "nM",
        "phi_tumor": "1",
        "phi_host": "1",
        "front_radius": "mm",
        "invasion_distance": "mm",
        "invasive_fraction": "1",
        "motility_index": "1",
    }
    scalar_long_names: ClassVar[dict[str, str]] = {
        "tumor_volume": "tumour volume ∫ n (density × volume)",
        "tumor_region_volume": "volume of the tumour region (n ≥ 0.1)",
        "metastatic_burden": "metastatic burden",
        "circulating_cells": "circulating tumour cells",
        "seeded_cells": "cumulative seeded cells",
        "shed_rate": "shedding rate into the circulation",
        "m1_total": "M1 macrophages in the box (density × volume)",
        "m2_total": "M2 macrophages in the box (density × volume)",
        "m1_tumor": "M1 macrophages among tumour cells, ∫ n M1 (density × volume)",
        "m2_tumor": "M2 macrophages among tumour cells, ∫ n M2 (density × volume)",
        "m2_fraction": "tumour-weighted M2 fraction ∫ n M2 / ∫ n (M1 + M2)",
        "mean_leakiness": "leakiness where tumour cells meet vessels, ∫ v n ℓ / ∫ v n",
        "il1b_mean": "tumour-weighted mean IL1β ∫ n I / ∫ n",
        "il1b_production": "macrophage IL1β production",
        "vegf_mean": "tumour-weighted mean VEGF-A",
        "paclitaxel_mean": "tumour-weighted mean free paclitaxel",
        "paclitaxel_cell_mean": "tumour-weighted mean cell-bound paclitaxel as medium equivalent B/κ",
        "kill_effect": "tumour-weighted mean cytotoxic effect E_P",
        "anakinra_mean": "tumour-weighted mean anakinra",
        "plasma_paclitaxel": "plasma paclitaxel",
        "plasma_anakinra": "plasma anakinra",
        "phi_tumor": "tumour-weighted mean IL1 response Φ_T",
        "phi_host": "macrophage-weighted mean host IL1 response Φ_H",
        "front_radius": "equivalent radius of the region with tumour ≥ 0.05",
        "invasion_distance": "invasion distance: front radius − initial tumour radius",
        "invasive_fraction": "share of tumour mass beyond the initial radius",
        "motility_index": "tumour-weighted mean haptotactic gain 1 + a_χ Φ_T",
    }
    scalar_observables: ClassVar[dict[str, str]] = {
        "burden": "metastatic_burden",
        "circulating": "circulating_cells",
        "seeded": "seeded_cells",
    }
    """The ODE scalars that ``observe`` returns unchanged every step: stored once, as the observable."""

    def __init__(self, sections):
        super().__init__(sections)
        self.host: HostSection = self.config["host"]
        self.parameters = self.config["parameters"]
        self.dosing: DosingSection = self.config["dosing"]
        self.initial: InitialSection = self.config["initial"]
        self.vessels: VesselsSection = self.config["vessels"]
        self.doses = {drug: expand_doses(getattr(self.dosing, drug)) for drug in DRUGS}
        self._params = self._build_params()

    @property
    def system(self) -> System:
        return SYSTEM

    def _build_params(self) -> Parameters:
        """Every parameter but the vessel map (which needs the grid); refuses cross-parameter conflicts."""
        g_beta, g_h = GENOTYPES[self.host.genotype]
        doses = {
            drug: Doses([d[0] for d in items], [d[1] for d in items], [d[2] for d in items], pad_to=DOSE_SLOTS)
            for drug, items in self.doses.items()
        }
        values = dataclasses.asdict(self.parameters)
        try:
            return Parameters(
                **values,
                host_il1b=g_beta,
                host_il1r=g_h,
                paclitaxel_doses=doses["paclitaxel"],
                anakinra_doses=doses["anakinra"],
            )
        except ValueError as error:  # cross-parameter invariants (e.g. k_a ≠ k_e)
            raise ConfigError("parameters", values, str(error)) from None

    def vessel_map(self, grid: Grid) -> np.ndarray:
        """The prescribed vessel density ``v(x)`` on ``grid`` (1, float64), from ``[vessels]``."""
        return vessel_map(grid.mesh(), box_centre(grid.length), **dataclasses.asdict(self.vessels))

    def params(self, grid: Grid) -> Parameters:
        """The parameter pytree on ``grid``: the scalars, the dose schedules, the vessel map and the
        initial tumour radius (which the invasion diagnostics measure from)."""
        radius = np.asarray(self.initial.tumor_radius, np.float64)
        return dataclasses.replace(self._params, vessels=self.vessel_map(grid), initial_radius=radius)

    def constant_fields(self, grid: Grid) -> dict[str, tuple[np.ndarray, str, str]]:
        return {"vessels": (self.vessel_map(grid), VESSELS_UNITS, VESSELS_LONG_NAME)}

    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        """A tanh-edged tumour in the box centre on remodelled matrix, resident macrophages, no drugs."""
        ini = self.initial
        r = radial_distance(grid.mesh(), box_centre(grid.length))
        tumor = ini.tumor_density * 0.5 * (1.0 - np.tanh((r - ini.tumor_radius) / ini.interface_width))
        zeros = np.zeros(grid.shape)
        return {
            "tumor": tumor,
            "ecm": 1.0 - 0.5 * tumor,  # the implanted tumour has already remodelled its matrix
            "m1": np.full(grid.shape, ini.m1),
            "m2": np.full(grid.shape, ini.m2),
            "il1b": zeros,
            "leakiness": zeros,
            "paclitaxel": zeros,
            "paclitaxel_bound": zeros,
            "anakinra": zeros,
            "circulating": np.zeros(()),
            "burden": np.zeros(()),
            "seeded": np.zeros(()),
        }

    @staticmethod
    def observe(state, params: Parameters, t, grid: Grid) -> dict[str, Any]:
        return observe(state, params, t, grid, params.initial_radius)

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        """Doses on step boundaries and the tumour inside the box. (The CTC clearance ``k_circ`` sets no
        rule: the core advances the ODE variables with their decay exact, ``ScalarETDRK2``.)"""
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
        radius = self.initial.tumor_radius
        if any(radius >= side / 2 for side in grid.length):
            raise ConfigError("initial.tumor_radius", radius, f"must be smaller than half the box side {grid.length}")
