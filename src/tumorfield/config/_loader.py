"""The loader: TOML text → checked, default-filled, typed sections, a grid and a model.

Everything here runs before any compute; every problem is a :class:`ConfigError`
naming the file, the key path, the bad value and what is allowed. Sections are
checked once, by :func:`tumorfield._schema.check_sections`, and built once into
their dataclasses; the model receives its own sections already typed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tumorfield_kernels import (
    ExplicitDiffusion,
    Grid,
    ImageError,
    ImplicitDiffusion,
    Numerics,
    check_split,
    choose_cell_diffusion,
    substeps_from_cap,
)

from .. import models
from .._compile_log import cache_directory
from .._inputs import parse_toml, read_text
from .._schema import LIMITS, ConfigError, check_section, check_sections, section_keys
from ._memory import check_memory
from ._sections import GENERIC_SECTIONS, ModelSection, NumericsSection, OutputSection, RunSection, TimeSection
from ._toml import to_toml


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration.

    ``time``, ``output``, ``run`` and ``numerics_section`` are the typed generic sections, ``grid`` the
    :class:`Grid` of ``[grid]``, ``model`` the model built from its own sections;
    ``sections`` holds every section (generic and model) as plain, default-filled
    dicts, and ``text`` the resolved TOML, enough to rerun.
    """

    source: str
    sections: dict[str, dict[str, Any]]
    grid: Grid
    time: TimeSection
    output: OutputSection
    run: RunSection
    numerics_section: NumericsSection
    model: models.Model
    n_steps: int
    steps_per_save: int
    input_images: tuple[tuple[str, str], ...] = ()
    """``(key path, absolute file path)`` of every image the config reads (``grid.image``, maps, scans):
    what a run file records with their SHA-256 and affines, and what ``resume`` checks."""

    @property
    def numerics(self) -> Numerics:
        """How this run is solved: ``[numerics]`` and ``output.precision`` as the core's :class:`Numerics`
        (``cell_diffusion = "auto"`` resolved: :attr:`cell_diffusion_choice`)."""
        section = self.numerics_section
        return Numerics(self.cell_diffusion_choice[0], substeps_from_cap(section.max_substeps),
                        dtype=self.output.precision)  # fmt: skip

    @functools.cached_property
    def cell_diffusion_choice(self) -> tuple[ExplicitDiffusion | ImplicitDiffusion, str]:
        """The cell diffusion of this run and why: as ``numerics.cell_diffusion`` says, or for ``"auto"``
        the core's :func:`~tumorfield_kernels.choose_cell_diffusion` from the initial state and ``dt``
        (decided from the config alone, so a resumed run decides the same)."""
        chosen = self.numerics_section.cell_diffusion
        if chosen != "auto":
            return (ImplicitDiffusion() if chosen == "implicit" else ExplicitDiffusion()), f"{chosen}: as configured"
        model, grid = self.model, self.grid
        system = model.system
        initial = model.initial_state(grid)
        state = {n: initial.get(n, np.zeros(() if n in system.scalars else grid.shape)) for n in system.fields}
        numerics = Numerics(dtype=self.output.precision)
        return choose_cell_diffusion(system, grid, state, model.params(grid), dt=self.time.dt, numerics=numerics)

    @property
    def n_frames(self) -> int:
        """Saved frames including the initial one."""
        return self.n_steps // self.steps_per_save + 1

    @property
    def compilation_cache(self) -> str | None:
        """Directory of the persistent compilation cache (None: off) for a run of this config read from the
        user's own file: :func:`tumorfield._compile_log.cache_directory` (the command line and the
        environment come before ``run.compilation_cache``)."""
        return cache_directory(self.run.compilation_cache)

    @property
    def text(self) -> str:
        return to_toml(self.sections)


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item:
        raise ConfigError("--set", item, "expected section.key=value (value in TOML syntax, e.g. time.dt=0.01)")
    path, text = item.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError("--set", item, "the key must be section.key, e.g. parameters.D=1e-3")
    try:
        value = _parse_toml(f"v = {text.strip()}")["v"]
    except ConfigError:
        value = text.strip()  # a bare word (gzip, float64) is taken as a string
    return parts[0], parts[1], value


def _parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with every failure (syntax, nesting too deep) a :class:`ConfigError`."""
    return parse_toml(text)


def _whole(value: float, dt: float, path: str, what: str) -> int:
    n = round(value / dt)
    if n < 1 or abs(n * dt - value) > 1e-9 * max(1.0, abs(value)):
        raise ConfigError(path, value, f"must be a whole, positive number of {what}")
    return n


def loads(text: str, source: str = "<string>", overrides: Sequence[str] = ()) -> RunConfig:
    """Validate TOML ``text`` (with ``--set`` style ``overrides``); ``source`` names it in errors."""
    try:
        document = _parse_toml(text)
        for item in overrides:
            section, key, value = _parse_override(item)
            document.setdefault(section, {})
            if not isinstance(document[section], dict):
                raise ConfigError(section, document[section], "must be a table ([section])")
            document[section][key] = value
        return dataclasses.replace(_validate(document, _base_directory(source)), source=source)
    except ConfigError as error:
        raise error.in_file(source) from None


def _read_text(path: Path) -> str:
    """The UTF-8 text of a config file (:func:`tumorfield._inputs.read_text`: a regular file of at most
    ``LIMITS["config_bytes"]``); anything else is a ConfigError."""
    return read_text(path, what="a TOML configuration")


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    return loads(_read_text(path), str(path), overrides)


def _base_directory(source: str) -> Path:
    """Where relative paths of a config point from: its file's directory (else the working directory)."""
    path = Path(source)
    return path.parent if path.suffix == ".toml" and path.exists() else Path.cwd()


IMAGE_KEYS = ("image", "file")
"""Keys (at any depth, e.g. ``[initial] tumor = {image = …}``) whose strings are paths of images."""


def resolve_image_paths(document: dict[str, Any], base: Path, types: dict[str, type], where: str = "") -> tuple:
    """Make every image path of ``document`` (keys :data:`IMAGE_KEYS` at any depth, and section keys
    documented with units ``path``, e.g. ``[tissue]`` maps) absolute, relative to ``base``, in place;
    returns ``(key path, path)`` of each."""
    found = []
    for name, value in document.items():
        path = f"{where}.{name}" if where else name
        if isinstance(value, dict):
            found += resolve_image_paths(value, base, types, path)
        elif isinstance(value, str) and value and (name in IMAGE_KEYS or _is_path_key(types, where, name)):
            document[name] = value if os.path.isabs(value) else str((base / value).resolve())
            found.append((path, document[name]))
    return tuple(found)


def _is_path_key(types: dict[str, type], section: str, name: str) -> bool:
    cls = types.get(section)
    return cls is not None and name in section_keys(cls) and section_keys(cls)[name].units == "path"


def _grid(grid: dict[str, Any]) -> Grid:
    """The :class:`Grid` of ``[grid]`` (from its image, or shape and length), refusing sizes beyond
    :data:`~tumorfield._schema.LIMITS`."""
    if grid["image"]:
        if grid["shape"] or grid["length"]:
            raise ConfigError("grid.image", grid["image"], "gives the shape and voxel size: drop grid.shape/length")
        try:
            image_grid = Grid.from_image(grid["image"], grid["resample"], max_cells=LIMITS["cells"])
        except ImageError as error:
            raise ConfigError("grid.image", grid["image"], str(error)) from None
        grid = {**grid, "shape": list(image_grid.shape), "length": list(image_grid.length)}
        _box_limits(grid["shape"], grid["length"])
        return image_grid
    if not grid["shape"] or not grid["length"]:
        raise ConfigError("grid.shape", grid["shape"], "grid.shape and grid.length are required (or grid.image)")
    if grid["resample"] != 1.0:
        raise ConfigError("grid.resample", grid["resample"], "applies to grid.image only")
    _box_limits(grid["shape"], grid["length"])
    return Grid(grid["shape"], grid["length"])


def _box_limits(shape, length) -> None:
    """Refuse sizes beyond :data:`~tumorfield._schema.LIMITS`."""
    if len(shape) != len(length):
        raise ConfigError("grid.length", length, f"needs {len(shape)} entries, one per axis of grid.shape={shape}")
    axis, cells = LIMITS["axis_cells"], LIMITS["cells"]
    if max(shape) > axis or math.prod(shape) > cells:
        raise ConfigError("grid.shape", shape, f"has {math.prod(shape):,} cells ({math.prod(shape) * 4 / 2**30:,.1f} "
                          f"GiB per float32 field); allowed are 2 to {axis:,} cells per axis and at most "
                          f"{cells:,} in all")  # fmt: skip
    lo, hi = LIMITS["length_mm"]
    if not all(lo <= side <= hi for side in length):
        raise ConfigError("grid.length", length, f"every side must lie in [{lo:g}, {hi:g}] mm")


def _steps(time: TimeSection) -> tuple[int, int]:
    """``(n_steps, steps_per_save)``, refusing times that are not whole numbers of steps and saves."""
    what = f"time steps dt={time.dt}"
    max_steps, max_frames, max_days = LIMITS["steps"], LIMITS["frames"], LIMITS["t_end_days"]
    if time.t_end > max_days:
        raise ConfigError("time.t_end", time.t_end, f"must be ≤ {max_days:g} day")
    if time.t_end / time.dt > max_steps * (1 + 1e-9):
        raise ConfigError("time.dt", time.dt, f"plans {time.t_end / time.dt:.3g} steps (t_end / dt); 1 to "
                          f"{max_steps:,} are allowed: use a larger dt or a shorter t_end")  # fmt: skip
    n_steps = _whole(time.t_end, time.dt, "time.t_end", what)
    steps_per_save = _whole(time.save_every, time.dt, "time.save_every", what)
    if n_steps % steps_per_save:
        raise ConfigError("time.t_end", time.t_end, f"must be a whole number of save_every={time.save_every} day")
    if n_steps // steps_per_save + 1 > max_frames:
        raise ConfigError("time.save_every", time.save_every, f"plans {n_steps // steps_per_save + 1:,} frames; "
                          f"1 to {max_frames:,} are allowed: save less often or shorten t_end")  # fmt: skip
    return n_steps, steps_per_save


def _check_stored_fields(fields, system) -> None:
    if isinstance(fields, list):
        unknown = [name for name in fields if name not in system.fields or name in system.scalars]
        if unknown:
            grid_fields = [f for f in system.fields if f not in system.scalars]
            raise ConfigError("output.fields", fields, f"{unknown} are not grid fields; the model has {grid_fields}")


def stored_fields(config) -> tuple[str, ...]:
    """The fields a run stores per frame: ``output.fields`` resolved, scalar ODE variables always."""
    system, chosen = config.model.system, config.output.fields
    if chosen == "all":
        return system.fields
    keep = set() if chosen == "none" else set(chosen)
    return tuple(f for f in system.fields if f in keep or f in system.scalars)


def _check_devices(devices, grid: Grid) -> None:
    """``[run] devices``: a count that splits the grid into slabs (``"all"`` is checked when the run starts)."""
    if isinstance(devices, int) and devices > 1:
        try:
            check_split(grid.shape, devices)
        except ValueError as error:
            raise ConfigError("run.devices", devices, str(error)) from None


def _validate(document: dict[str, Any], base: Path) -> RunConfig:
    model_name = check_section("model", document.get("model", {}), section_keys(ModelSection))["name"]
    model_cls = models.get(model_name)
    types = {**GENERIC_SECTIONS, **model_cls.section_types}
    images = resolve_image_paths(document, base, types)
    sections = check_sections(document, types)
    typed = {name: types[name](**values) for name, values in sections.items()}
    grid = _grid(sections["grid"])
    time, output, run = typed["time"], typed["output"], typed["run"]
    _check_devices(run.devices, grid)
    n_steps, steps_per_save = _steps(time)
    model = model_cls({name: typed[name] for name in model_cls.section_types})
    model.validate(grid, time.t_end, time.dt)
    _check_stored_fields(output.fields, model.system)
    check_memory(grid, len(model.system.fields), output.precision, run.chunk_frames)
    return RunConfig("", sections, grid, time, output, run, typed["numerics"], model, n_steps, steps_per_save, images)
