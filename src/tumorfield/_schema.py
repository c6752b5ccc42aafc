"""Typed, documented configuration keys shared by the config loader and the models.

A schema is ``{section: {key: Key}}``. The loader (``tumorfield.config``)
validates a TOML document against the union of the generic sections and the
selected model's sections, before any compute, and raises :class:`ConfigError`
naming the file, the key path, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REQUIRED = object()
"""Default marker for keys that must be given."""


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
    ``check(value)`` returns ``None`` when the value is fine, else a sentence
    saying what is allowed. ``units`` is shown in ``docs/config.md``.
    """

    kind: type | tuple[type, ...]
    default: Any
    units: str
    doc: str
    check: Callable[[Any], str | None] | None = None


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be ≥ 0"


def fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must lie in [0, 1]"


def one_of(*allowed) -> Callable[[Any], str | None]:
    def check(value):
        return None if value in allowed else f"allowed values are {', '.join(map(repr, allowed))}"

    return check
