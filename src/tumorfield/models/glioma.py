"""Glioma proliferation–invasion (PI) model on brain tissue maps (issue 22).

.. math::
    ∂_t u = ∇·(D(x) ∇u) + ρ u (1 − u),      D(x) = D_w · white(x) + D_g · grey(x)

``u`` is the tumour cell density as a fraction of the carrying capacity (Swanson, Alvord & Murray
2000; Swanson, Alvord & Murray 2002; Harpold, Alvord & Swanson 2007). ``white`` and ``grey`` are
tissue probability maps (NIfTI, ``[tissue]``) read onto the run's grid; the brain (``tissue.domain``,
or where ``white + grey ≥ tissue.threshold``) is the domain: no flux crosses its boundary and
cells outside stay 0. Without maps the box is a uniform white (or grey) slab, where the front
travels at ``2 √(D ρ)``. Documented in ``docs/model.md`` ("Glioma: proliferation–invasion").
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import Grid, ImageError, System

from .._schema import REQUIRED, ConfigError, in_range, key, one_of, positive, section
from ._base import Model
from ._quantities import Field, Observable, Observables

T1GD_THRESHOLD = 0.8
"""Density (fraction of capacity) above which tumour enhances on T1-Gd MRI (Harpold et al. 2007)."""
FLAIR_THRESHOLD = 0.16
"""Density above which tumour is visible on T2/FLAIR MRI (Swanson et al. 2008; Harpold et al. 2007)."""
SEED_KEYS, LABEL_KEYS, DENSITY_KEYS = {"centre", "radius", "amplitude"}, {"image", "labels"}, {"image", "scale"}


@section
class GliomaParameters:
    """``[parameters]`` of ``glioma``."""

    D_w: float = key(
        0.13,
        "mm²/day",
        "Tumour cell diffusivity in white matter; 0.13 mm²/day = 1.3e-3 cm²/day, the order of the PI-model "
        "literature (Swanson et al. 2000, 2002; Harpold et al. 2007 report patient values spanning orders of "
        "magnitude); allowed 0–10.",
        in_range(0.0, 10.0),
    )
    D_g: float = key(
        0.013,
        "mm²/day",
        "Tumour cell diffusivity in grey matter; D_w / 10 (Harpold et al. 2007 give D_w/D_g ≈ 10; Swanson et "
        "al. 2000 used 5); allowed 0–10.",
        in_range(0.0, 10.0),
    )
    rho: float = key(
        0.012,
        "1/day",
        "Net proliferation rate; 0.012/day for high-grade glioma (Swanson et al. 2000), patient values "
        "≈ 0.012–0.05/day and beyond (Harpold et al. 2007); allowed 0–1.",
        in_range(0.0, 1.0),
    )
    n_cell: float = key(
        1e5,
        "cells/mm³",
        "Cell density at carrying capacity, for total_cells; 1e5 cells/mm³ = 1e8 cells/cm³, the value of the "
        "PI-model literature (e.g. Swanson et al. 2008; assumed here).",
        positive,
    )


@section
class GliomaTissue:
    """``[tissue]`` of ``glioma``: tissue maps and the domain (the brain)."""

    white: str = key(
        "", "path", "White-matter probability map (NIfTI, [0, 1] after scale); '' = none (a uniform slab)."
    )
    grey: str = key("", "path", "Grey-matter probability map (NIfTI, [0, 1] after scale); given with white.")
    scale: float = key(
        1.0, "1", "Multiplies the white and grey voxels (1/255 for 8-bit maps like nilearn's MNI152).", positive
    )
    domain: str = key(
        "",
        "path",
        "Brain mask (NIfTI, [0, 1]; the domain is where its cell average ≥ 0.5); '' = where white + grey ≥ threshold.",
    )
    threshold: float = key(
        0.1,
        "1",
        "Without tissue.domain: the domain is where white + grey ≥ threshold "
        "(brain parenchyma; CSF and outside-brain cells excluded).",
        in_range(0.0, 2.0, lo_open=True),
    )
    uniform: str = key(
        "",
        "",
        "Without maps: the tissue of the whole box, 'white' (D = D_w; also '') or 'grey' (D = D_g).",
        one_of("", "white", "grey"),
    )


def _tumor_rule(value) -> str | None:
    """The three forms of ``[initial] tumor`` (their images are read and checked by ``validate``)."""
    forms = "{ centre = [x, y(, z)], radius, amplitude }, { image, labels = { 1 = 0.8, ... } } or { image, scale }"
    given = set(value)
    if "image" not in given:
        if not given <= SEED_KEYS or "centre" not in given:
            return f"must be one of {forms}; a seed needs centre (unknown keys: {sorted(given - SEED_KEYS)})"
        centre = value["centre"]
        if not isinstance(centre, list) or len(centre) not in (2, 3) or not all(_number(c) for c in centre):
            return "centre must be a list of 2 or 3 world coordinates [x, y(, z)] in mm"
        if not (_number(value.get("radius", 1.0)) and value.get("radius", 1.0) > 0):
            return "radius must be a number > 0 (mm)"
        if not (_number(value.get("amplitude", 1.0)) and 0 < value.get("amplitude", 1.0) <= 1):
            return "amplitude must lie in (0, 1] (fraction of carrying capacity)"
        return None
    if not isinstance(value["image"], str) or not value["image"]:
        return "image must be the path of a NIfTI file"
    if "labels" in given:
        if given != LABEL_KEYS:
            return f"a label image takes image and labels only (not {sorted(given - LABEL_KEYS)}); forms: {forms}"
        labels = value["labels"]
        if not isinstance(labels, dict) or not labels:
            return "labels must be a table { label = density, ... }, e.g. { 1 = 0.8, 2 = 0.16 }"
        for label, density in labels.items():
            if not label.lstrip("-").isdigit():
                return f"labels: {label!r} is not a whole number"
            if not (_number(density) and 0 <= density <= 1):
                return f"labels.{label} = {density!r}: a density must lie in [0, 1]"
        return None
    if not given <= DENSITY_KEYS:
        return f"a density image takes image and scale only (not {sorted(given - DENSITY_KEYS)}); forms: {forms}"
    if not (_number(value.get("scale", 1.0)) and value.get("scale", 1.0) > 0):
        return "scale must be a number > 0"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@section
class GliomaInitial:
    """``[initial]`` of ``glioma``: the tumour at t = 0 (multiplied by the domain)."""

    tumor: dict = key(
        REQUIRED,
        "1 (fraction of capacity)",
        "A seed { centre = [x, y(, z)] (world mm), radius = 2.0 (mm), amplitude = 0.8 }: amplitude·exp(−|x − "
        "centre|²/radius²); a segmentation { image, labels = { 1 = 0.8, 2 = 0.16 } } (label → density, 0 = "
        "background); or a density map { image, scale = 1.0 } in [0, 1].",
        _tumor_rule,
    )


def _diffusivity(p):
    return p["D_w"] * p["white"] + p["D_g"] * p["grey"]


def _growth(state, p, t):
    u = state["tumor"]
    return {"tumor": p["rho"] * u * (1 - u)}


def _domain(p):
    return p["domain"]


SYSTEM = System(fields=("tumor",), diffusion={"tumor": _diffusivity}, reaction=_growth, domain=_domain)
"""One System for every glioma run: the maps are leaves of ``params``, so runs on one grid share a rollout."""

FIELDS = {"tumor": Field("1", "tumour cell density (fraction of carrying capacity)")}

OBSERVABLES = Observables()


@OBSERVABLES.declare(
    volume_t1=Observable("mm^d, volume where u ≥ 0.8", "T1Gd-visible volume"),
    volume_flair=Observable("mm^d, volume where u ≥ 0.16", "FLAIR-visible volume"),
    total_cells=Observable(
        "cells/mm (2D) or cells (3D), n_cell ∫ u dV; in 2D per mm of slab thickness", "total tumour cells"
    ),
    radius_flair=Observable("mm, of a disc (2D) or sphere (3D) of volume_flair", "FLAIR-visible equivalent radius"),
    tumor_mass=Observable("mm^d, ∫ u dV", "tumour mass"),
)
def _observe(u, n_cell, dv: float, ndim: int):
    t1 = jnp.sum((u >= T1GD_THRESHOLD).astype(u.dtype)) * dv
    flair = jnp.sum((u >= FLAIR_THRESHOLD).astype(u.dtype)) * dv
    mass = jnp.sum(u) * dv
    radius = jnp.sqrt(flair / math.pi) if ndim == 2 else jnp.cbrt(3 * flair / (4 * math.pi))
    return {
        "volume_t1": t1,
        "volume_flair": flair,
        "total_cells": n_cell * mass,
        "radius_flair": radius,
        "tumor_mass": mass,
    }


class Glioma(Model):
    """Proliferation–invasion of glioma cells in white and grey matter, inside the brain."""

    name = "glioma"
    section_types: ClassVar[dict[str, type]] = {
        "parameters": GliomaParameters,
        "tissue": GliomaTissue,
        "initial": GliomaInitial,
    }
    batchable_sections = ("parameters",)
    fields: ClassVar[dict[str, Field]] = FIELDS
    observables: ClassVar[Observables] = OBSERVABLES
    confined: ClassVar[tuple[str, ...]] = ("tumor",)

    def __init__(self, sections):
        super().__init__(sections)
        self.parameters: GliomaParameters = self.config["parameters"]
        self.tissue: GliomaTissue = self.config["tissue"]
        self.initial: GliomaInitial = self.config["initial"]
        self._cache: dict[Grid, dict[str, np.ndarray]] = {}

    @property
    def system(self) -> System:
        return SYSTEM

    # --- maps, read once per grid -------------------------------------------------------------

    def maps(self, grid: Grid) -> dict[str, np.ndarray]:
        """``white``, ``grey``, ``domain`` (0/1) and ``tumor`` (initial, masked) on ``grid``, float64;
        read once per grid. Every problem is a :class:`ConfigError` naming the key and the file."""
        if grid not in self._cache:
            self._cache[grid] = self._read(grid)
        return self._cache[grid]

    def _read(self, grid: Grid) -> dict[str, np.ndarray]:
        tissue = self.tissue
        if bool(tissue.white) != bool(tissue.grey):
            given, missing = ("white", "grey") if tissue.white else ("grey", "white")
            raise ConfigError(
                f"tissue.{missing}",
                "",
                f"tissue.{given} is given: give both maps, or neither (a uniform slab, tissue.uniform)",
            )
        if tissue.white:
            if tissue.uniform:
                raise ConfigError("tissue.uniform", tissue.uniform, "applies only without tissue maps (white, grey)")
            white = _image("tissue.white", tissue.white, grid, "probability", tissue.scale)
            grey = _image("tissue.grey", tissue.grey, grid, "probability", tissue.scale)
        else:
            ones, zeros = np.ones(grid.shape), np.zeros(grid.shape)
            white, grey = (zeros, ones) if tissue.uniform == "grey" else (ones, zeros)
        if tissue.domain:
            mask = _image("tissue.domain", tissue.domain, grid, "probability", 1.0)
            domain = (mask >= 0.5).astype(np.float64)
            if not domain.any():
                raise ConfigError(
                    "tissue.domain",
                    tissue.domain,
                    "the brain mask is empty on this grid: no cell "
                    "averages ≥ 0.5 (is it the right image, on the grid's world coordinates?)",
                )
        else:
            domain = (white + grey >= tissue.threshold).astype(np.float64)
            if not domain.any():
                raise ConfigError(
                    "tissue.white",
                    tissue.white,
                    f"the domain (white + grey ≥ tissue.threshold = "
                    f"{tissue.threshold}) is empty on this grid: are white and grey probability maps "
                    "in [0, 1] (tissue.scale), on the grid's world coordinates?",
                )
        tumor, cell = self._initial(grid)
        if cell is not None and not domain[cell]:
            raise ConfigError(
                "initial.tumor.centre",
                self.initial.tumor["centre"],
                "the seed is centred outside the "
                "domain (the brain); centre is in world coordinates (mm), grid.world_affine()",
            )
        tumor = tumor * domain
        if not tumor.sum() > 0:
            raise ConfigError(
                "initial.tumor",
                self.initial.tumor,
                "the initial tumour has no mass inside the domain (the brain): it lies outside it, or outside the grid",
            )
        return {"white": white, "grey": grey, "domain": domain, "tumor": tumor}

    def _initial(self, grid: Grid) -> tuple[np.ndarray, tuple[int, ...] | None]:
        """The initial tumour before masking, and for a seed the cell nearest its centre."""
        spec = self.initial.tumor
        if "image" not in spec:
            return _seed(spec, grid)
        path = spec["image"]
        if "labels" in spec:
            labels = _image("initial.tumor.image", path, grid, "labels", 1.0)
            density = {int(label): float(value) for label, value in spec["labels"].items()}
            unknown = sorted(set(np.unique(labels).tolist()) - set(density) - {0})
            if unknown:
                raise ConfigError(
                    "initial.tumor.labels",
                    spec["labels"],
                    f"{path}: labels {unknown} occur in the "
                    "image (on this grid) but have no density; give each one (0 is background)",
                )
            table = {0: 0.0, **density}
            return np.vectorize(lambda v: table[int(v)], otypes=[np.float64])(labels), None
        return _image("initial.tumor.image", path, grid, "probability", float(spec.get("scale", 1.0))), None

    # --- the Model interface ------------------------------------------------------------------

    def params(self, grid: Grid) -> dict[str, Any]:
        """Every parameter and map as an array leaf (traced: one compiled rollout per grid)."""
        p, maps = self.parameters, self.maps(grid)
        values = {name: jnp.asarray(getattr(p, name)) for name in ("D_w", "D_g", "rho", "n_cell")}
        return {**values, **{name: jnp.asarray(maps[name]) for name in ("white", "grey", "domain")}}

    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        return {"tumor": self.maps(grid)["tumor"].copy()}

    initial_keys = ("tumor.radius", "tumor.amplitude")

    def initial_values(self, grid: Grid) -> dict[str, np.ndarray]:
        spec = self.initial.tumor
        if "image" in spec:
            raise ConfigError("initial.tumor", spec, "is an image, not a seed { centre, radius, amplitude }: only a "
                              "seed's radius and amplitude are a closed form to fit")  # fmt: skip
        self.maps(grid)  # the seed's checks (inside the grid and the domain)
        return {"tumor.radius": np.asarray(float(spec.get("radius", 2.0))),
                "tumor.amplitude": np.asarray(float(spec.get("amplitude", 0.8))),
                "tumor.centre": np.asarray(spec["centre"], np.float64)}  # fmt: skip

    @staticmethod
    def initial_state_at(values, params, grid: Grid):
        """The seed of :func:`_seed` times the domain, in JAX (world coordinates, as :meth:`initial_state`)."""
        centre = values["tumor.centre"]
        world = jnp.asarray(grid.world_coordinates(centre.shape[0]).reshape(centre.shape[0], -1))
        r2 = jnp.sum((world - centre[:, None]) ** 2, axis=0).reshape(grid.shape)
        seed = values["tumor.amplitude"] * jnp.exp(-r2 / values["tumor.radius"] ** 2)
        return {"tumor": seed * params["domain"]}, params

    @staticmethod
    def observe(state, params, t, grid: Grid):
        return _observe(state["tumor"], params["n_cell"], grid.cell_volume, grid.ndim)

    def constant_fields(self, grid: Grid) -> dict[str, tuple[np.ndarray, str, str]]:
        maps = self.maps(grid)
        return {
            "white_matter": (maps["white"], "1", "white-matter fraction"),
            "grey_matter": (maps["grey"], "1", "grey-matter fraction"),
            "domain": (maps["domain"], "1", "domain (brain) mask, 1 inside"),
        }

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        """Reads every image and builds the initial tumour now, so that errors come before any compute."""
        self.maps(grid)


def _image(key_path: str, path: str, grid: Grid, kind: str, scale: float) -> np.ndarray:
    """``read_image`` with its :class:`ImageError` as a :class:`ConfigError` naming ``key_path``."""
    from ..io import read_image  # nibabel and scipy only where images are read

    try:
        return read_image(path, grid, kind=kind, scale=scale)
    except ImageError as error:
        raise ConfigError(key_path, path, str(error)) from None


def _seed(spec: dict, grid: Grid) -> tuple[np.ndarray, tuple[int, ...]]:
    """``amplitude · exp(−|x − centre|²/radius²)`` with ``x`` the world coordinates (mm) of the cell centres,
    and the index of the cell nearest the centre (ConfigError if the centre is outside the grid)."""
    centre = np.asarray(spec["centre"], np.float64)
    radius, amplitude = float(spec.get("radius", 2.0)), float(spec.get("amplitude", 0.8))
    if grid.ndim == 3 and len(centre) != 3:
        raise ConfigError("initial.tumor.centre", spec["centre"], "a 3D grid needs 3 world coordinates [x, y, z] (mm)")
    world = grid.world_coordinates(len(centre)).reshape(len(centre), -1)  # on a 2D grid: the distance in-plane
    r2 = np.sum((world - centre[:, None]) ** 2, axis=0)
    nearest = float(np.sqrt(r2.min()))
    reach = 0.5 * float(np.linalg.norm(grid.spacing)) * (1 + 1e-9)  # half a cell diagonal (a corner included)
    if nearest > reach:
        raise ConfigError(
            "initial.tumor.centre",
            spec["centre"],
            f"lies outside the grid (the nearest cell centre is "
            f"{nearest:.3g} mm away); centre is in world coordinates (mm), grid.world_affine()",
        )
    cell = np.unravel_index(int(np.argmin(r2)), grid.shape)
    return (amplitude * np.exp(-r2 / radius**2)).reshape(grid.shape), cell
