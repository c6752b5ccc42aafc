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

Every member's config is built and checked by the run-config loader before any compute. The
members' swept values are computed from the axes on access (:class:`Members`), so a design of 10⁶
members is not held as 10⁶ dicts; a design whose manifest would exceed :data:`MAX_MANIFEST_BYTES`
is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config as cfg
from .._inputs import read_toml, read_toml_text
from .._schema import ConfigError, check_section, key, non_negative, one_of, section, section_keys
from ..config._loader import _parse_override
from ..config._toml import to_toml
from ..run import Interrupted
from ..run._signals import pending

DESIGNS = ("grid", "lhs", "list")
MAX_MEMBERS = 1_000_000
"""The most members a design may have (checked before the design is expanded)."""
MAX_MANIFEST_BYTES = 64 * 2**20
"""The largest ``manifest.csv`` a sweep may have (64 MiB: about 5·10⁵ members of one swept float)."""
MAX_BATCH = 1024
"""The most members of one vmapped batch when ``[sweep] batch = 0`` (each holds its config and problem in memory)."""


@section
class SweepSection:
    """``[sweep]``: the base config, the design and what every member shares."""

    base: str = key(doc="Run config the members start from (relative to the sweep file, absolute allowed).")
    design: str = key("grid", "", "`grid` (all combinations), `lhs` (Latin hypercube) or `list` (zipped).",
                      one_of(*DESIGNS))  # fmt: skip
    samples: int = key(0, "members", "Number of Latin-hypercube samples (`lhs` only).", non_negative)
    seed: int = key(0, "", "Seed of the Latin hypercube (`lhs` only).", non_negative)
    set: list = key([], "", "`section.key=value` overrides applied to every member, as `run --set`.")
    batch: int = key(0, "members", f"Largest vmap batch; 0: as many as fit half the free memory, at most {MAX_BATCH}.",
                     non_negative)  # fmt: skip
    devices: int = key(0, "", "Local devices a batch is split over; 0: every local GPU/TPU, and one device on a CPU "
                       "(host devices share its cores).", non_negative)  # fmt: skip
    at_once: int = key(0, "members", "Members a device computes at once, in turn through its share of a batch; "
                       "0: all on a GPU/TPU, on a CPU as many as fit its last-level cache.", non_negative)  # fmt: skip
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
    return list(zip(*_lhs_columns(axes, samples, seed), strict=True))


def _lhs_columns(axes: tuple[Axis, ...], samples: int, seed: int) -> list[list]:
    """The points of :func:`latin_hypercube` as one list of values per axis."""
    rng = np.random.default_rng(seed)
    columns = []
    for axis in axes:
        u = (rng.permutation(samples) + rng.uniform(size=samples)) / samples
        if axis.log:
            column = np.exp(np.log(axis.lower) + u * (np.log(axis.upper) - np.log(axis.lower)))
        else:
            column = axis.lower + u * (axis.upper - axis.lower)
        columns.append(np.rint(column).astype(np.int64).tolist() if axis.integer else column.tolist())
    return columns


class Members(Sequence):
    """The members' swept values, ``members[i] == {path: value, …}``, computed from one column of values
    per axis on access: a ``grid`` design indexes the columns in mixed radix (the last axis varies
    fastest, as ``itertools.product``), the others zip them."""

    def __init__(self, paths: tuple[str, ...], columns: tuple[Sequence, ...], product: bool):
        self.paths, self.columns, self.product = paths, columns, product
        self._n = math.prod(len(c) for c in columns) if product else len(columns[0])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        index = operator.index(index)
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(f"member {index} of {self._n}")
        if not self.product:
            return {path: column[index] for path, column in zip(self.paths, self.columns, strict=True)}
        values = []
        for column in reversed(self.columns):
            index, digit = divmod(index, len(column))
            values.append(column[digit])
        return dict(zip(self.paths, reversed(values), strict=True))

    def __repr__(self) -> str:
        return f"<Members {self._n} of {', '.join(self.paths)}>"


def raise_if_signalled(doing: str) -> None:
    """Stop with :class:`~tumorfield.run.Interrupted` (exit 75) if SIGTERM/SIGUSR1/SIGINT arrived
    (:func:`~tumorfield.run._signals.pending`); ``doing`` says where, e.g. ``"while checking member 3 of 10"``."""
    if pending():
        raise Interrupted(f"interrupted by {pending()} {doing}; nothing was computed")


def cell(value) -> str:
    """A swept value as manifest text that reads back as the same TOML/JSON value (lists, strings, numbers)."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: the base config's text and source, and each member's swept values."""

    source: str
    section: SweepSection
    axes: tuple[Axis, ...]
    base_text: str
    base_source: str
    members: Members

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
    """The SHA-256 (64 hex digits) of a member's resolved config, as stored in its file (``/config``)."""
    return text_digest(config.text)


def text_digest(text: str) -> str:
    """The SHA-256 (hex) of a resolved config's text: what the manifest's ``digest`` column holds."""
    return hashlib.sha256(text.encode()).hexdigest()


def get_path(document: dict, path: str):
    """``document[section][key][index]…``: the value at a swept key path (KeyError if there is none)."""
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


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


def _expand(axes, values) -> Members:
    design = values["design"]
    paths = tuple(axis.path for axis in axes)
    if design == "grid":
        count = math.prod(len(a.values) for a in axes)
    else:
        count = len(axes[0].values) if design == "list" else values["samples"]
    if count > MAX_MEMBERS:
        raise ConfigError("sweep.parameters", count, f"the design has {count} members; at most {MAX_MEMBERS}")
    if design == "lhs":
        members = Members(paths, tuple(_lhs_columns(axes, count, values["seed"])), product=False)
    else:
        members = Members(paths, tuple(a.values for a in axes), product=design == "grid")
    _check_manifest_size(members)
    return members


def _quoted_bytes(text: str) -> int:
    """The bytes of ``text`` as a CSV cell (quoted where it holds a comma, quote or line break)."""
    quoted = any(ch in text for ch in ',"\r\n')
    return len(text.encode()) + (2 + text.count('"') if quoted else 0)


def _column_bytes(column) -> int:
    """The bytes of a column's cells (numbers: their ``repr``, which is their JSON)."""
    total = 0
    for k, value in enumerate(column):
        if k % 65536 == 0:
            raise_if_signalled("while sizing the manifest")
        total += len(repr(value)) if type(value) in (int, float) else _quoted_bytes(cell(value))
    return total


def _digits_total(n: int, width: int = 1) -> int:
    """``Σ len(f"{i:0{width}d}")`` over ``i < n``."""
    total, low = 0, 0
    for digits in range(1, len(str(max(n - 1, 0))) + 1):
        high = min(n, 10**digits)
        total += max(0, high - low) * max(digits, width)
        low = high
    return total


def manifest_bytes(members: Members) -> int:
    """The size of the sweep's ``manifest.csv`` with every status at its longest (``interrupted``):
    per row the member number, the cells, a 64-digit digest, ``member-NNNN.h5``, separators."""
    n = len(members)
    header = len(",".join(("member", *members.paths, "digest", "file", "status"))) + 2  # CSV lines end in \r\n
    cells = 0
    for column in members.columns:
        cells += _column_bytes(column) * (n // len(column) if members.product else 1)
    fixed = n * (64 + len("interrupted") + len("member-.h5") + len(members.paths) + 5)
    return header + cells + fixed + _digits_total(n) + _digits_total(n, width=4)


def _check_manifest_size(members: Members) -> None:
    """Refuse a design whose ``manifest.csv`` would exceed :data:`MAX_MANIFEST_BYTES`."""
    size = manifest_bytes(members)
    if size > MAX_MANIFEST_BYTES:
        n = len(members)
        raise ConfigError("sweep.parameters", n,
                          f"the manifest of {n} members would take {size / 2**20:.0f} MiB and exceed "
                          f"{MAX_MANIFEST_BYTES // 2**20} MiB (about {int(MAX_MANIFEST_BYTES / (size / n))} members "
                          f"of these values): split the sweep into several")  # fmt: skip
