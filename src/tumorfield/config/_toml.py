"""TOML writing (``tomllib`` only reads): the resolved configuration, enough to rerun a run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def toml_value(value) -> str:
    """One value in TOML syntax (inline tables for mappings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else toml_value(key)


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Write resolved sections as TOML that :func:`tumorfield.config.loads` reads back to the same values."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in keys.items())
        lines.append("")
    return "\n".join(lines)
