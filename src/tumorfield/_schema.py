"""Typed, documented configuration keys and the one function that checks a section against them.

A config section is a frozen, keyword-only dataclass whose fields are keys
(:func:`key`): each field's annotation is the kind TOML must yield, and its
metadata the default, units, meaning and range check. :func:`section_keys` reads
that table back as ``{key: Key}`` (for checking and for ``docs/config.md``);
:func:`check_section` checks a plain TOML table against it, for the generic
sections of ``tumorfield.config`` and for every model's sections alike. Problems
are :class:`ConfigError`\\ s naming the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED = object()
"""Default marker for keys that must be given."""

Check = Callable[[Any], str | None]
"""``check(value)`` returns ``None`` when the value is fine, else a sentence saying what is allowed."""


class ConfigError(ValueError):
    """Bad user input: exit code 2, no traceback."""

    def __init__(self, key_path: str, value: Any, allowed: str, file: str | None = None):
        self.key_path, self.value, self.allowed, self.file = key_path, value, allowed, file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{key_path} = {value!r}: {allowed}")

    def in_file(self, file: str) -> ConfigError:
        return ConfigError(self.key_path, self.value, self.allowed, file)


@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``kind`` is the Python type TOML yields (``float`` accepts ints too);
    ``check`` says what values are allowed (see :data:`Check`). ``units`` is
    shown in ``docs/config.md``.
    """

    kind: type | tuple[type, ...]
    default: Any
    units: str
    doc: str
    check: Check | None = None


# --- limits and rules ----------------------------------------------------------------------

LIMITS: dict[str, Any] = {
    "config_bytes": 2**20,  # size of a TOML input (run config, sweep file and base, fit file)
    "csv_bytes": 64 * 2**20,  # size of a CSV input (fit data, a sweep's manifest)
    "observations": 10**6,  # rows of a fit's data
    "steps": 10**9,  # time steps of a run (t_end / dt)
    "frames": 10**6,  # saved frames of a run
    "t_end_days": 1e6,  # end time (day)
    "axis_cells": 2**16,  # cells per grid axis
    "cells": 2**30,  # cells of a grid
    "length_mm": (1e-6, 1e6),  # side of the box (mm)
    "doses": 10_000,  # administrations of one drug, repeats unrolled
    "dose_mg_per_kg": 1e4,  # one administration
    "vessels": 1_000,  # intratumoral vessels (each costs a pass over the grid)
}
"""Bounds of every size-like input; each refusal names the key and the allowed range."""


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be ≥ 0"


def fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must lie in [0, 1]"


def one_of(*allowed) -> Check:
    def check(value):
        return None if value in allowed else f"allowed values are {', '.join(map(repr, allowed))}"

    return check


def in_range(lo: float, hi: float, lo_open: bool = False) -> Check:
    """``lo ≤ value ≤ hi`` (``lo < value`` when ``lo_open``); NaN is refused."""

    def check(value):
        ok = (lo < value if lo_open else lo <= value) and value <= hi and value == value
        return None if ok else f"must be {'>' if lo_open else '≥'} {lo} and ≤ {hi}"

    return check


# --- sections as dataclasses -------------------------------------------------------------------


def key(default: Any = REQUIRED, units: str = "", doc: str = "", check: Check | None = None) -> Any:
    """A config key as a dataclass field: its default (or :data:`REQUIRED`), units, meaning and check.

    The field's annotation gives the key's kind (``float``, ``int``, ``str``, ``list[...]``).
    """
    meta = {"key": (default, units, doc, check)}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _collect_keys(cls: type) -> type:
    """Store ``{field: Key}`` on the section class ``cls`` (kind from each field's annotation)."""
    hints = typing.get_type_hints(cls)
    cls.__section_keys__ = {f.name: Key(_kind(hints[f.name]), *f.metadata["key"]) for f in dataclasses.fields(cls)}
    return cls


def _kind(hint):
    """The TOML type(s) of an annotation: ``float``, ``list[str]`` → ``list``, ``str | list`` → ``(str, list)``."""
    if isinstance(hint, types.UnionType):
        return tuple(typing.get_origin(h) or h for h in typing.get_args(hint))
    return typing.get_origin(hint) or hint


def section(cls: type) -> type:
    """Class decorator: ``cls`` as a frozen, keyword-only dataclass whose fields are :func:`key`\\ s."""
    return _collect_keys(dataclasses.dataclass(frozen=True, kw_only=True)(cls))


def make_section(name: str, doc: str, fields: Mapping[str, tuple[type, Any]], module: str) -> type:
    """A section class built from ``{key: (kind, key(...))}`` (for key tables generated from metadata)."""
    cls = dataclasses.make_dataclass(
        name,
        [(k, kind, spec) for k, (kind, spec) in fields.items()],
        frozen=True,
        kw_only=True,
        namespace={"__doc__": doc},
    )
    cls.__module__ = module
    return _collect_keys(cls)


def section_keys(cls: type) -> dict[str, Key]:
    """``{key: Key}`` of a section class, in declaration order."""
    return cls.__section_keys__


# --- checking ----------------------------------------------------------------------------------


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def kind_name(kind) -> str:
    """``float`` → "a number", ``list`` → "a list", ... (for messages and docs)."""
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def suggest(word: str, options, what: str = "key") -> str:
    """The message for a misspelt ``word``: ``unknown key; did you mean 'x'? Allowed: ...``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what}{hint} Allowed: {', '.join(sorted(options))}"


def units_text(spec: Key) -> str:
    return f"units: {spec.units}" if spec.units else "no units"


def _check_value(path: str, value, spec: Key):
    if not _type_ok(value, spec.kind):
        raise ConfigError(path, value, f"must be {kind_name(spec.kind)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(path, value, "must be a finite number")
    problem = spec.check(value) if spec.check is not None else None
    if problem:
        raise ConfigError(path, value, problem)
    return float(value) if spec.kind is float and isinstance(value, int) else value


def check_section(name: str, given: Any, keys: Mapping[str, Key]) -> dict[str, Any]:
    """The TOML table ``given`` of section ``name`` checked against ``keys``, defaults filled in.

    Refuses unknown keys (suggesting the closest), missing required keys, wrong kinds,
    non-finite numbers and values the key's check refuses; ints given for float keys
    become floats.
    """
    if not isinstance(given, Mapping):
        raise ConfigError(name, given, "must be a table ([section])")
    for k in given:
        if k not in keys:
            raise ConfigError(f"{name}.{k}", given[k], suggest(k, keys))
    resolved = {}
    for k, spec in keys.items():
        path = f"{name}.{k}"
        if k in given:
            resolved[k] = _check_value(path, given[k], spec)
        elif spec.default is REQUIRED:
            raise ConfigError(path, None, f"is required ({spec.doc.rstrip('.')}; {units_text(spec)})")
        else:
            resolved[k] = copy.deepcopy(spec.default)
    return resolved


def check_sections(document: Mapping[str, Any], types: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """Every section of ``types`` (name → section class) checked from ``document``; unknown sections refused."""
    for name in document:
        if name not in types:
            raise ConfigError(name, document[name], suggest(name, types, "section"))
    return {name: check_section(name, document.get(name, {}), section_keys(cls)) for name, cls in types.items()}
