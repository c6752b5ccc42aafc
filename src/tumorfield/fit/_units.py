"""Units of the fit's data: the model's units of each observable, and the conversion of a datum's units to them.

A model declares each observable's units next to the code that computes it
(:class:`~tumorfield.models.Observable`, e.g. ``"mm^d"``: the grid's volume unit). On an arm's grid
they resolve, by :func:`tumorfield.io._writer.cf_units` (the rule of the files' ``units``
attribute), to concrete units — ``mm^d`` is mm² on a 2D grid (a 2D run's "volume" is an area, or
a volume per mm of slab thickness) and mm³ on a 3D one — and are read by `pint
<https://pint.readthedocs.io>`_ (with ``cell`` as a unit of its own dimension).

A datum with units (the CSV's optional ``units`` column) is converted to the model's units of its
observable (times the units of its ``[fit.observables]`` scale, where one is given); units of
another dimension are refused: a conversion between them is a modelling statement (e.g. a slab
thickness), which the user makes with ``[fit.observables] NAME = { scale, units }``. Pint is
imported only where some datum or scale has units.
"""

from __future__ import annotations

import functools
import re

from .._schema import ConfigError

_UDUNITS_POWER = re.compile(r"([A-Za-zµ]+)(-?\d+)")


def model_units(text: str, ndim: int) -> str:
    """The units of a model's ``Observable`` units string on a grid of ``ndim`` dimensions, as pint reads
    them (``"mm^d, volume where u ≥ 0.8"`` → ``"mm**2"`` in 2D; ``"pM·mm^d/day"`` → ``"pM mm**3/day"`` in 3D)."""
    from ..io._writer import cf_units

    units, _ = cf_units(text, ndim)
    return _UDUNITS_POWER.sub(r"\1**\2", units)


@functools.cache
def registry():
    """The unit registry (pint's default definitions, plus ``cell`` = ``cells``: a count of cells)."""
    import pint

    ureg = pint.UnitRegistry()
    ureg.define("cell = [cells] = cells")
    return ureg


def parse(units: str):
    """``units`` as pint units (``None`` if pint does not know them)."""
    import pint

    try:
        return registry().parse_units(units)
    except (pint.PintError, AttributeError, TypeError, ValueError, SyntaxError):
        return None


def _shown(units) -> str:
    text = f"{units:~P}"
    return text or "1 (dimensionless)"


@functools.cache
def factor(given: str, target: str) -> tuple[float | None, str]:
    """``(f, why)``: a value in units ``given`` is ``f ×`` the value in units ``target``; ``f`` is None when
    they do not convert, with ``why`` saying how they differ."""
    ureg = registry()
    source, goal = parse(given), parse(target)
    if source is None:
        return None, "pint does not know these units (e.g. mm^3, cm^3, mL, cells, 1/day, pM)"
    if goal is None:
        return None, f"the model's units {target!r} are not known to pint, so data with units cannot be converted"
    if source.dimensionality != goal.dimensionality:
        return None, (f"{_shown(source)} is {source.dimensionality} and {_shown(goal)} is {goal.dimensionality}: "
                      "they do not convert")  # fmt: skip
    zero = ureg.Quantity(0.0, source).to(goal).magnitude
    if zero != 0:
        return None, "an offset unit (e.g. degC): only a multiplicative conversion is allowed"
    return float(ureg.Quantity(1.0, source).to(goal).magnitude), ""


def check_scale_units(name: str, units: str) -> None:
    """Refuse ``[fit.observables] NAME.units`` that pint does not read."""
    if units and parse(units) is None:
        raise ConfigError(f"fit.observables.{name}.units", units, "pint does not know these units (e.g. mm, mm^2, 1)")


def target_units(observable_units: str, scale_units: str) -> str:
    """The units a datum is converted to: the model's units of its observable, times the units of its scale."""
    if not scale_units:
        return observable_units
    return f"({observable_units}) * ({scale_units})"


def shown(units: str) -> str:
    """``units`` as pint writes them short (``mm**2`` → ``mm²``), or as given if pint does not read them."""
    parsed = parse(units)
    return units if parsed is None else _shown(parsed)
