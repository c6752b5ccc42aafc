"""A sweep file: a base run config and the values of swept keys, expanded into member configs.

.. code-block:: toml

    [sweep]
    base = "ptx.toml"          # a run config, relative to this file (absolute allowed)
    design = "lhs"             # "grid" | "lhs" | "list"
    samples = 16               # lhs only
    seed = 0                   # lhs only
    set = ["grid.shape=[32,32]"]
    [sweep.parameters]         # config key path → range (lhs) or list of values (grid, list)
    "parameters.k_i" = [0.5, 2.0]
    "dosing.anakinra.0.dose_mg_per_kg" = { lower = 1.0, upper = 50.0, scale = "log" }

Every member's config is built and checked by the run-config loader before any compute.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import config as cfg
from .._inputs import read_toml, read_toml_text
from .._schema import ConfigError, check_section, key, non_negative, one_of, section, section_keys
from ..config._loader import _parse_override
from ..config._toml import to_toml

DESIGNS = ("grid", "lhs", "list")
MAX_MEMBERS = 1_000_000


@section
class SweepSection:
    """``[sweep]``: the base config, the design and what every member shares."""

    base: str = key(doc="Run config the members start from (relative to the sweep file, absolute allowed).")
    design: str = key("grid", "", "`grid` (all combinations), `lhs` (Latin hypercube) or `list` (zipped).",
                      one_of(*DESIGNS))  # fmt: skip
    samples: int = key(0, "members", "Number of Latin-hypercube samples (`lhs` only).", non_negative)
    seed: int = key(0, "", "Seed of the Latin hypercube (`lhs` only).", non_negative)
    set: list = key([], "", "`section.key=value` overrides applied to every member, as `run --set`.")
    batch: int = key(0, "members", "Largest vmap batch; 0: as many as fit the memory.", non_negative)
    parameters: dict = key(doc="Swept config key paths → `[lower, upper]`/`{lower, upper, scale}` (lhs) or lists.")


@dataclass(frozen=True)
class Axis:
    """One swept key path: a range (``lhs``) or explicit values (``grid``, ``list``)."""

    path: str
    values: tuple | None = None
    lower: float | None = None
    upper: float | None = None
    log: bool = False
    integer: bool = False


def _range_axis(path: str, value) -> Axis:
    where = f"sweep.parameters.{path}"
    if isinstance(value, dict):
        unknown = set(value) - {"lower", "upper", "scale"}
        if unknown or not {"lower", "upper"} <= set(value):
            raise ConfigError(where, value, "a range is {lower = …, upper = …[, scale = 'linear' | 'log']}")
        lower, upper, scale = value["lower"], value["upper"], value.get("scale", "linear")
    elif isinstance(value, list) and len(value) == 2:
        (lower, upper), scale = value, "linear"
    else:
        raise ConfigError(where, value, "design 'lhs' takes a range [lower, upper] or {lower, upper, scale}")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lower, upper))
    if not numbers or not lower < upper:
        raise ConfigError(where, value, "lower and upper must be finite numbers with lower < upper")
    if scale not in ("linear", "log") or (scale == "log" and lower <= 0):
        raise ConfigError(where, value, "scale must be 'linear' or 'log', and a log range needs lower > 0")
    integer = isinstance(lower, int) and isinstance(upper, int)
    return Axis(path, lower=float(lower), upper=float(upper), log=scale == "log", integer=integer)


def _axes(section_values: dict) -> tuple[Axis, ...]:
    design, table = section_values["design"], section_values["parameters"]
    if not table:
        raise ConfigError("sweep.parameters", table, "needs at least one swept key path")
    axes = []
    for path, value in table.items():
        if len([p for p in path.split(".") if p]) < 2 or "" in path.split("."):
            raise ConfigError(f"sweep.parameters.{path}", value, "a key path is section.key[.index.key …]")
        if design == "lhs":
            axes.append(_range_axis(path, value))
        elif not isinstance(value, list) or not value:
            raise ConfigError(f"sweep.parameters.{path}", value, f"design {design!r} takes a non-empty list of values")
        else:
            axes.append(Axis(path, values=tuple(value)))
    if design == "list" and len({len(a.values) for a in axes}) > 1:
        lengths = {a.path: len(a.values) for a in axes}
        raise ConfigError("sweep.parameters", lengths, "design 'list' zips its lists: they must have equal lengths")
    if design == "lhs" and section_values["samples"] < 1:
        raise ConfigError("sweep.samples", section_values["samples"], "design 'lhs' needs samples ≥ 1")
    return tuple(axes)


def latin_hypercube(axes: tuple[Axis, ...], samples: int, seed: int) -> list[tuple]:
    """``samples`` points, one per stratum of every axis (McKay et al., Technometrics 21, 1979):
    ``u = (π(i) + U)/n`` per axis, mapped linearly (or in ``log``) onto ``[lower, upper]``."""
    rng = np.random.default_rng(seed)
    columns = []
    for axis in axes:
        u = (rng.permutation(samples) + rng.uniform(size=samples)) / samples
        if axis.log:
            column = np.exp(np.log(axis.lower) + u * (np.log(axis.upper) - np.log(axis.lower)))
        else:
            column = axis.lower + u * (axis.upper - axis.lower)
        columns.append([int(round(v)) if axis.integer else float(v) for v in column])
    return list(zip(*columns, strict=True))


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: the base config's text and source, and each member's swept values."""

    source: str
    section: SweepSection
    axes: tuple[Axis, ...]
    base_text: str
    base_source: str
    members: tuple[dict[str, Any], ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(axis.path for axis in self.axes)

    def member_config(self, index: int, overrides=()) -> cfg.RunConfig:
        """Member ``index``'s run config: the base, then ``[sweep] set`` and ``overrides`` (as
        ``run --set``), then the member's swept values; checked by the run-config loader (errors
        name the member and the key)."""
        document = tomllib.loads(self.base_text)
        for item in [*self.section.set, *overrides]:
            section, name, value = _parse_override(item)
            document.setdefault(section, {})[name] = value
        output = document.setdefault("output", {})
        if isinstance(output, dict):
            output.setdefault("fields", "none")  # a sweep keeps scalars and final states unless told otherwise
        for path, value in self.members[index].items():
            _set_path(document, path, value)
        try:
            return cfg.loads(to_toml(document), f"{self.base_source} (sweep member {index})")
        except ConfigError as error:
            raise error.in_file(f"{self.source}: member {index} ({_describe(self.members[index])})") from None


def _describe(values: dict) -> str:
    return ", ".join(f"{path} = {value!r}" for path, value in values.items())


def _set_path(document: dict, path: str, value) -> None:
    """``document[section][key][index]…[key] = value``; list indices must exist in the base."""
    parts = path.split(".")
    node = document.setdefault(parts[0], {})
    for i, part in enumerate(parts[1:-1], start=1):
        node = _child(node, part, ".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"sweep.parameters.{path}", value, f"{last!r} is not an index of a list of {len(node)}")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"sweep.parameters.{path}", value, "the path goes through a value that is not a table")


def _child(node, part: str, so_far: str):
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"sweep.parameters.{so_far}", part, f"not an index of the base's list of {len(node)}")
        return node[int(part)]
    if not isinstance(node, dict) or part not in node:
        raise ConfigError(f"sweep.parameters.{so_far}", None, "no such table or list in the base config")
    return node[part]


def config_digest(config: cfg.RunConfig) -> str:
    """First 16 hex digits of the SHA-256 of a member's resolved config."""
    return hashlib.sha256(config.text.encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every member's config is built and checked too (before any compute)."""
    path = Path(path)
    try:
        document = read_toml(path)
    except OSError as error:
        raise ConfigError("(file)", str(path), f"cannot be read: {error.strerror}", str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError("(TOML syntax)", None, str(error), str(path)) from None
    if set(document) != {"sweep"}:
        raise ConfigError("(sections)", sorted(document), "a sweep file has one section, [sweep]", str(path))
    try:
        values = check_section("sweep", document["sweep"], section_keys(SweepSection))
        axes = _axes(values)
    except ConfigError as error:
        raise error.in_file(str(path)) from None
    base = (path.parent / values["base"]).resolve()
    try:
        base_text = read_toml_text(base, key="sweep.base", named_in=str(path))
    except OSError as error:
        raise ConfigError("sweep.base", values["base"], f"cannot be read ({error.strerror})", str(path)) from None
    if not all(isinstance(item, str) for item in values["set"]):
        raise ConfigError("sweep.set", values["set"], "a list of 'section.key=value' strings", str(path))
    for item in values["set"]:
        _parse_override(item)  # a malformed override is refused here, naming it
    return Sweep(str(path), SweepSection(**values), axes, base_text, str(base), _expand(axes, values))


def _expand(axes, values) -> tuple[dict[str, Any], ...]:
    design = values["design"]
    if design == "grid":
        count = math.prod(len(a.values) for a in axes)
        rows = itertools.product(*(a.values for a in axes)) if count <= MAX_MEMBERS else ()
    elif design == "list":
        count = len(axes[0].values)
        rows = zip(*(a.values for a in axes), strict=True)
    else:
        count = values["samples"]
        rows = latin_hypercube(axes, count, values["seed"]) if count <= MAX_MEMBERS else ()
    if count > MAX_MEMBERS:
        raise ConfigError("sweep.parameters", count, f"the design has {count} members; at most {MAX_MEMBERS}")
    return tuple({axis.path: value for axis, value in zip(axes, row, strict=True)} for row in rows)
