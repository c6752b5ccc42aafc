"""The loader: TOML text → checked, default-filled, typed sections, a grid and a model.

Everything here runs before any compute; every problem is a :class:`ConfigError`
naming the file, the key path, the bad value and what is allowed. Sections are
checked once, by :func:`tumorfield._schema.check_sections`, and built once into
their dataclasses; the model receives its own sections already typed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tumorfield_kernels import Grid

from .. import models
from .._schema import ConfigError, check_section, check_sections, section_keys
from ._memory import check_memory
from ._sections import GENERIC_SECTIONS, ModelSection, OutputSection, RunSection, TimeSection
from ._toml import to_toml


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tumorfield", "jax")


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration.

    ``time``, ``output`` and ``run`` are the typed generic sections, ``grid`` the
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
    model: models.Model
    n_steps: int
    steps_per_save: int

    @property
    def n_frames(self) -> int:
        """Saved frames including the initial one."""
        return self.n_steps // self.steps_per_save + 1

    @property
    def compilation_cache(self) -> str | None:
        """Directory of the persistent compilation cache, None when ``run.compilation_cache = "off"``."""
        value = self.run.compilation_cache
        return None if value == "off" else (value or _default_cache())

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
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word (gzip, float64) is taken as a string
    return parts[0], parts[1], value


def _whole(value: float, dt: float, path: str, what: str) -> int:
    n = round(value / dt)
    if n < 1 or abs(n * dt - value) > 1e-9 * max(1.0, abs(value)):
        raise ConfigError(path, value, f"must be a whole, positive number of {what}")
    return n


def loads(text: str, source: str = "<string>", overrides: Sequence[str] = ()) -> RunConfig:
    """Validate TOML ``text`` (with ``--set`` style ``overrides``); ``source`` names it in errors."""
    try:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("(TOML syntax)", None, str(error)) from None
        for item in overrides:
            section, key, value = _parse_override(item)
            document.setdefault(section, {})
            if not isinstance(document[section], dict):
                raise ConfigError(section, document[section], "must be a table ([section])")
            document[section][key] = value
        return dataclasses.replace(_validate(document), source=source)
    except ConfigError as error:
        raise error.in_file(source) from None


def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError("(file)", str(path), f"cannot be read: {error.strerror}", str(path)) from None
    return loads(text, str(path), overrides)


def _grid(grid: dict[str, Any]) -> Grid:
    shape, length = grid["shape"], grid["length"]
    if len(shape) != len(length):
        raise ConfigError("grid.length", length, f"needs {len(shape)} entries, one per axis of grid.shape={shape}")
    return Grid(shape, length)


def _steps(time: TimeSection) -> tuple[int, int]:
    """``(n_steps, steps_per_save)``, refusing times that are not whole numbers of steps and saves."""
    what = f"time steps dt={time.dt}"
    n_steps = _whole(time.t_end, time.dt, "time.t_end", what)
    steps_per_save = _whole(time.save_every, time.dt, "time.save_every", what)
    if n_steps % steps_per_save:
        raise ConfigError("time.t_end", time.t_end, f"must be a whole number of save_every={time.save_every} day")
    return n_steps, steps_per_save


def _validate(document: dict[str, Any]) -> RunConfig:
    model_name = check_section("model", document.get("model", {}), section_keys(ModelSection))["name"]
    model_cls = models.get(model_name)
    types = {**GENERIC_SECTIONS, **model_cls.section_types}
    sections = check_sections(document, types)
    typed = {name: types[name](**values) for name, values in sections.items()}
    grid = _grid(sections["grid"])
    time, output, run = typed["time"], typed["output"], typed["run"]
    n_steps, steps_per_save = _steps(time)
    model = model_cls({name: typed[name] for name in model_cls.section_types})
    model.validate(grid, time.t_end, time.dt)
    check_memory(grid, len(model.system.fields), output.precision, run.chunk_frames)
    return RunConfig("", sections, grid, time, output, run, model, n_steps, steps_per_save)
