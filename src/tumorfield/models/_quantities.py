"""Units and descriptions of what a model computes, declared where it is computed.

A model lists its fields (``Model.fields``: ``{name: Field(units, long_name)}``) next to its
System and its observables (``Model.observables``) next to the code that computes them; the
writer puts ``units``/``long_name`` into the files from these and refuses a name without one.

Units strings follow :func:`tumorfield.io._writer.cf_units`: the units first (``mm^d`` is the
grid's volume unit, mm² in 2D, mm³ in 3D; ``"1"`` for a dimensionless quantity), optionally
followed by ``", description"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)


@dataclass(frozen=True)
class Quantity:
    """``units`` and ``long_name`` of one dataset of the output (both required, non-empty)."""

    units: str
    long_name: str

    def __post_init__(self):
        for attribute in ("units", "long_name"):
            value = getattr(self, attribute)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{type(self).__name__}.{attribute} must be a non-empty string (got {value!r})")


class Field(Quantity):
    """A field of the System (a time-dependent field or a scalar ODE variable)."""


class Observable(Quantity):
    """A key that ``Model.observe`` returns: one scalar per step, under ``/scalars/``."""


class Observables(Mapping[str, Observable]):
    """A model's observables, filled by decorating the functions that compute them::

        OBSERVABLES = Observables()

        @OBSERVABLES.declare(burden=Observable("mm^d", "tumour burden ∫ u"))
        def _burden(u, dv):
            return {"burden": jnp.sum(u) * dv}

    The decorator only records the declarations; the function is returned unchanged.
    """

    def __init__(self, **declared: Observable):
        self._table: dict[str, Observable] = {}
        self._add(declared)

    def declare(self, **declared: Observable) -> Callable[[_F], _F]:
        """Add ``declared`` (a decorator: put it on the function that computes these keys)."""
        self._add(declared)
        return lambda function: function

    def _add(self, declared: Mapping[str, Observable]) -> None:
        for name, quantity in declared.items():
            if not isinstance(quantity, Observable):
                raise TypeError(f"observable {name!r}: declare it as Observable(units, long_name), not {quantity!r}")
            if name in self._table:
                raise ValueError(f"observable {name!r} is declared twice")
            self._table[name] = quantity

    def __getitem__(self, name: str) -> Observable:
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Observables({', '.join(self._table)})"
