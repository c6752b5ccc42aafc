"""The ``voloshin2015`` model class: typed config sections → parameters, initial state, diagnostics."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from tumorfield_kernels import Grid, ImageError, System

from ..._schema import ConfigError
from .._base import Model
from .._quantities import Field, Observables
from .observables import OBSERVABLES, observe
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
from .spec import FIELDS, SYSTEM
from .vessels import box_centre, radial_distance, vessel_map

DOSE_SLOTS = 32
"""Dose arrays are padded to a multiple of this, so every arm shares one compiled rollout."""

VESSELS = Field("1 (relative vessel density)", "prescribed vessel density")


class Voloshin2015(Model):
    """Voloshin et al. 2015: IL1β, paclitaxel, anakinra, M1/M2 macrophages, leaky vessels, metastasis.

    Config sections: ``[host]``, ``[parameters]``, ``[dosing]``, ``[initial]``, ``[vessels]``
    (:mod:`.sections`). Build from plain dicts with ``Voloshin2015.from_sections({...})``.
    """

    name: ClassVar[str] = "voloshin2015"
    section_types: ClassVar[dict[str, type]] = SECTIONS

    fields: ClassVar[dict[str, Field]] = FIELDS
    observables: ClassVar[Observables] = OBSERVABLES
    confined: ClassVar[tuple[str, ...]] = ("tumor",)
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
        self._vessel_images: dict[Grid, np.ndarray] = {}  # [vessels] image, read once per grid
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
        """The prescribed vessel density ``v(x)`` on ``grid`` (1, float64), from ``[vessels]``: its image,
        or the synthetic rim-and-sprouts map."""
        synthetic = {k: v for k, v in dataclasses.asdict(self.vessels).items() if k != "image"}
        if not self.vessels.image:
            return vessel_map(grid.mesh(), box_centre(grid.length), **synthetic)
        if grid not in self._vessel_images:
            self._vessel_images[grid] = self._read_vessels(grid)
        return self._vessel_images[grid]

    def _read_vessels(self, grid: Grid) -> np.ndarray:
        from ...io import read_image  # nibabel and scipy only where images are read

        try:
            density = read_image(self.vessels.image, grid, kind="continuous")
        except ImageError as error:
            raise ConfigError("vessels.image", self.vessels.image, str(error)) from None
        if np.any(density < 0):
            raise ConfigError("vessels.image", self.vessels.image, f"has negative values (min {density.min():.3g}); "
                              "a vessel density is ≥ 0")  # fmt: skip
        return density

    def params(self, grid: Grid) -> Parameters:
        """The parameter pytree on ``grid``: the scalars, the dose schedules, the vessel map and the
        initial tumour radius (which the invasion diagnostics measure from)."""
        radius = np.asarray(self.initial.tumor_radius, np.float64)
        return dataclasses.replace(self._params, vessels=self.vessel_map(grid), initial_radius=radius)

    def constant_fields(self, grid: Grid) -> dict[str, tuple[np.ndarray, str, str]]:
        return {"vessels": (self.vessel_map(grid), VESSELS.units, VESSELS.long_name)}

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

    initial_keys = ("tumor_radius", "tumor_density", "interface_width", "m1", "m2")

    def initial_values(self, grid: Grid) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self.initial, name), np.float64) for name in self.initial_keys}

    @staticmethod
    def initial_state_at(values, params: Parameters, grid: Grid):
        """:meth:`initial_state` in JAX, and ``params.initial_radius`` (the invasion diagnostics' origin) set to
        the tumour radius of ``values``."""
        import equinox as eqx
        import jax.numpy as jnp

        r = jnp.asarray(radial_distance(grid.mesh(), box_centre(grid.length)))
        edge = (r - values["tumor_radius"]) / values["interface_width"]
        tumor = values["tumor_density"] * 0.5 * (1.0 - jnp.tanh(edge))
        zeros = jnp.zeros(grid.shape, tumor.dtype)
        state = {
            "tumor": tumor,
            "ecm": 1.0 - 0.5 * tumor,
            "m1": jnp.full(grid.shape, values["m1"], tumor.dtype),
            "m2": jnp.full(grid.shape, values["m2"], tumor.dtype),
            **{name: zeros for name in ("il1b", "leakiness", "paclitaxel", "paclitaxel_bound", "anakinra")},
            **{name: jnp.zeros((), tumor.dtype) for name in ("circulating", "burden", "seeded")},
        }
        radius = jnp.asarray(values["tumor_radius"]).astype(jnp.result_type(params.initial_radius))
        return state, eqx.tree_at(lambda p: p.initial_radius, params, radius)

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
        self.vessel_map(grid)  # a vessel image is read (and refused) before any compute
        radius = self.initial.tumor_radius
        if any(radius >= side / 2 for side in grid.length):
            raise ConfigError("initial.tumor_radius", radius, f"must be smaller than half the box side {grid.length}")
