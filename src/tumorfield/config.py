"""Run configuration: TOML → validated, default-filled sections, a grid and a model.

Everything here runs before any compute; every problem is a
:class:`~tumorfield._schema.ConfigError` naming the file, the key path, the bad
value and what is allowed. The generic sections (``model``, ``grid``, ``time``,
``output``, ``run``) live here; each model adds its own sections through
``Model.schema``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tumorfield_kernels import Grid

from . import models
from ._schema import REQUIRED, ConfigError, Key, non_negative, one_of, positive

__all__ = ["RunConfig", "ConfigError", "GENERIC_SCHEMA", "load", "loads", "config_docs", "to_toml"]


def _shape(value) -> str | None:
    if not 1 <= len(value) <= 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return "must be a list of 1–3 integers (cells per axis, in (z, y, x) order)"
    if any(n < 2 for n in value):
        return "every axis needs at least 2 cells"
    return None


def _lengths(value) -> str | None:
    if not 1 <= len(value) <= 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return "must be a list of 1–3 numbers (mm, in (z, y, x) order)"
    if not all(v > 0 and math.isfinite(v) for v in value):
        return "every side must be a finite length > 0 mm"
    return None


def _finite_positive(value) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be a finite number > 0"


def _gzip_level(value) -> str | None:
    return None if 0 <= value <= 9 else "must be an integer in [0, 9]"


def _model_name(value) -> str | None:
    names = models.names()
    return None if value in names else f"allowed models are {', '.join(map(repr, names))}"


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tumorfield", "jax")


GENERIC_SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "name": Key(str, REQUIRED, "", "Registered model to run (e.g. `fisher_kpp`, `voloshin2015`).", _model_name),
    },
    "grid": {
        "shape": Key(list, REQUIRED, "cells", "Cells per axis, `[ny, nx]` or `[nz, ny, nx]`.", _shape),
        "length": Key(list, REQUIRED, "mm", "Box side per axis, same order as `shape`.", _lengths),
    },
    "time": {
        "t_end": Key(float, REQUIRED, "day", "End time; a whole number of `dt` and of `save_every`.", _finite_positive),
        "dt": Key(float, REQUIRED, "day", "Time step.", _finite_positive),
        "save_every": Key(
            float, REQUIRED, "day", "Interval between saved frames; a whole number of `dt`.", _finite_positive
        ),
    },
    "output": {
        "compression": Key(str, "lzf", "", "HDF5 filter of the field datasets.", one_of("none", "lzf", "gzip")),
        "gzip_level": Key(int, 4, "", 'gzip level (only with `compression = "gzip"`).', _gzip_level),
        "precision": Key(
            str,
            "float32",
            "",
            "Floating type of the fields, in memory and on disk (scalar ODE variables are always float64).",
            one_of("float32", "float64"),
        ),
    },
    "run": {
        "chunk_frames": Key(
            int, 10, "frames", "Frames computed per compiled call, written and checkpointed together.", positive
        ),
        "compilation_cache": Key(
            str,
            "",
            "",
            'Directory of the persistent JAX compilation cache; `""` = '
            '`~/.cache/tumorfield/jax` (or `$XDG_CACHE_HOME`), `"off"` disables it.',
        ),
        "seed": Key(
            int, 0, "", "Random seed, recorded in the output (for models with random initial data).", non_negative
        ),
        "progress": Key(
            str,
            "auto",
            "",
            "`bar` (tqdm), `lines` (a line every ~5 %), `none`, or `auto` (bar on a terminal, lines otherwise).",
            one_of("auto", "bar", "lines", "none"),
        ),
    },
}


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration.

    ``sections`` holds every section (generic and model), defaults filled in;
    ``text`` is the resolved TOML, enough to rerun.
    """

    source: str
    sections: dict[str, dict[str, Any]]
    grid: Grid
    model: models.Model
    n_steps: int
    steps_per_save: int

    @property
    def time(self) -> dict[str, Any]:
        return self.sections["time"]

    @property
    def output(self) -> dict[str, Any]:
        return self.sections["output"]

    @property
    def run(self) -> dict[str, Any]:
        return self.sections["run"]

    @property
    def n_frames(self) -> int:
        """Saved frames including the initial one."""
        return self.n_steps // self.steps_per_save + 1

    @property
    def compilation_cache(self) -> str | None:
        value = self.run["compilation_cache"]
        return None if value == "off" else (value or _default_cache())

    @property
    def text(self) -> str:
        return to_toml(self.sections)


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def _kind_name(kind) -> str:
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} Allowed: {', '.join(sorted(options))}"


def _check_section(name: str, given: Any, schema: Mapping[str, Key]) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise ConfigError(name, given, "must be a table ([section])")
    for key in given:
        if key not in schema:
            raise ConfigError(f"{name}.{key}", given[key], _suggest(key, schema))
    resolved = {}
    for key, spec in schema.items():
        path = f"{name}.{key}"
        if key not in given:
            if spec.default is REQUIRED:
                raise ConfigError(path, None, f"is required ({spec.doc.rstrip('.')}; {_units(spec)})")
            resolved[key] = spec.default
            continue
        value = given[key]
        if not _type_ok(value, spec.kind):
            raise ConfigError(path, value, f"must be {_kind_name(spec.kind)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(path, value, "must be a finite number")
        problem = spec.check(value) if spec.check is not None else None
        if problem:
            raise ConfigError(path, value, problem)
        resolved[key] = float(value) if spec.kind is float and isinstance(value, int) else value
    return resolved


def _units(spec: Key) -> str:
    return f"units: {spec.units}" if spec.units else "no units"


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


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def estimate_bytes(grid: Grid, n_fields: int, precision: str, chunk_frames: int) -> int:
    """Rough peak memory (bytes) of a run: the chunk of frames on device and on host, plus
    about 24 state-sized work arrays (ETDRK2 stages, DCT transforms, checkpointed scan)."""
    itemsize = 4 if precision == "float32" else 8
    state = grid.n_cells * n_fields * itemsize
    return state * (2 * chunk_frames + 24)


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


def _validate(document: dict[str, Any]) -> RunConfig:
    model_section = _check_section("model", document.get("model", {}), GENERIC_SCHEMA["model"])
    model_cls = models.get(model_section["name"])
    schema = {**GENERIC_SCHEMA, **model_cls.schema}
    for name in document:
        if name not in schema:
            raise ConfigError(name, document[name], _suggest(name, schema).replace("unknown key", "unknown section"))
    sections = {name: _check_section(name, document.get(name, {}), keys) for name, keys in schema.items()}

    shape, length = sections["grid"]["shape"], sections["grid"]["length"]
    if len(shape) != len(length):
        raise ConfigError("grid.length", length, f"needs {len(shape)} entries, one per axis of grid.shape={shape}")
    grid = Grid(shape, length)
    t = sections["time"]
    n_steps = _whole(t["t_end"], t["dt"], "time.t_end", f"time steps dt={t['dt']}")
    steps_per_save = _whole(t["save_every"], t["dt"], "time.save_every", f"time steps dt={t['dt']}")
    if n_steps % steps_per_save:
        raise ConfigError("time.t_end", t["t_end"], f"must be a whole number of save_every={t['save_every']} day")
    model = model_cls({name: sections[name] for name in model_cls.schema})
    model.validate(grid, t["t_end"], t["dt"])

    need = estimate_bytes(
        grid, len(model.system.fields), sections["output"]["precision"], sections["run"]["chunk_frames"]
    )
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(
            "grid.shape",
            shape,
            f"needs about {need / 2**30:.1f} GiB (with run.chunk_frames={sections['run']['chunk_frames']}) but "
            f"{available / 2**30:.1f} GiB is available; use a smaller grid or fewer chunk_frames",
        )
    return RunConfig("", sections, grid, model, n_steps, steps_per_save)


# --- TOML writing (tomllib only reads) ---------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Write resolved sections as TOML that :func:`loads` reads back to the same values."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in keys.items())
        lines.append("")
    return "\n".join(lines)


# --- documentation -------------------------------------------------------------------------


def _default_text(spec: Key) -> str:
    if spec.default is REQUIRED:
        return "**required**"
    return f"`{_toml_value(spec.default)}`"


def _table(name: str, keys: Mapping[str, Key]) -> list[str]:
    out = [f"### `[{name}]`", "", "| key | type | units | default | meaning |", "|---|---|---|---|---|"]
    for key, spec in keys.items():
        doc = spec.doc.replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{key}` | {_kind_name(spec.kind)} | {spec.units or '–'} | {_default_text(spec)} | {doc} |")
    return out + [""]


def config_docs() -> str:
    """Markdown reference of every configuration key (generic and per model), with units."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `tumorfield config-docs > docs/config.md`; do not edit by hand.",
        "     tests/test_config.py checks that this file matches the schemas. -->",
        "",
        "A run is one TOML file. Unknown keys, wrong types and out-of-range values are refused",
        "before any compute (exit code 2) with a message naming the file, the key, the value and",
        "what is allowed. Any key can be overridden on the command line with",
        "`--set section.key=value` (value in TOML syntax; bare words are strings).",
        "",
        "Units: lengths in mm, times in days. `t_end` and `save_every` must be whole multiples of",
        "`dt`, and `t_end` a whole multiple of `save_every`.",
        "",
        "## Generic sections",
        "",
    ]
    for name, keys in GENERIC_SCHEMA.items():
        lines += _table(name, keys)
    for model_name in models.names():
        cls = models.get(model_name)
        lines += [f"## Model `{model_name}`", ""]
        summary = (cls.__doc__ or "").strip().splitlines()
        if summary:
            lines += [summary[0], ""]
        for name, keys in cls.schema.items():
            lines += _table(name, keys)
    return "\n".join(lines).rstrip() + "\n"
