"""Fitted ``[initial]`` keys: ``[fit.parameters] "initial.KEY" = { init, lower, upper }``.

A model lists the ``[initial]`` keys whose number its initial state is a closed form of
(``Model.initial_keys``: ``fisher_kpp`` ``radius``, ``amplitude``; ``voloshin2015`` ``tumor_radius``,
``tumor_density``, ``interface_width``, ``m1``, ``m2``; ``glioma`` ``tumor.radius``,
``tumor.amplitude`` of a seed) and computes that state in JAX (``Model.initial_state_at``), so the
fit differentiates through it (:mod:`._problem`). Checked here before any compute: the key is one of
them, every arm's configuration builds its initial state in that closed form (not an image), and
``init``, ``lower``, ``upper`` each pass the model's own rules for the key — the ``[initial]`` section's
rule and the model's checks against the grid (``validate``: e.g. a tumour inside the box) — with
``0 < lower < init < upper`` for the bounded log transform. ``lower`` and ``upper`` are required (an
``[initial]`` key documents no range).
"""

from __future__ import annotations

import copy
import dataclasses
import math

from .._schema import ConfigError, check_section, section_keys
from ._problem import INITIAL


def _replaced(model, key: str, value: float):
    """The model with ``[initial] key`` set to ``value``, checked by the section's rules and ``model.validate``
    (the caller names the key and value of a refusal)."""
    section = model.config["initial"]
    raw = copy.deepcopy({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})
    table, _, leaf = key.rpartition(".")
    (raw[table] if table else raw)[leaf] = value
    cls = type(section)
    checked = check_section("initial", raw, section_keys(cls))
    return type(model)({**model.config, "initial": cls(**checked)})


def initial_entry(spec, name: str, entry) -> tuple[float, float, float]:
    """``(init, lower, upper)`` of the fitted ``[initial]`` key ``name`` (``"initial.KEY"``), checked against
    every arm (see the module docstring)."""
    key = name[len(INITIAL) :]
    where = f"fit.parameters.{name}"
    for arm, config in spec.arms.items():
        model = config.model
        allowed = type(model).initial_keys
        if key not in allowed:
            those = f"those are {', '.join(repr(INITIAL + k) for k in allowed)}" if allowed else "it has none"
            rule = f"is not an [initial] key the initial state of model {model.name!r} is differentiable in; {those}"
            raise ConfigError(where, name, rule)
        try:
            model.initial_values(config.grid)
        except ConfigError as error:
            raise ConfigError(where, name, f"arm {arm!r}: {error} — so it cannot be fitted") from None
    values = {"init": entry.init, "lower": entry.lower, "upper": entry.upper}
    for which in ("lower", "upper"):
        if values[which] is None:
            raise ConfigError(f"{where}.{which}", None, "is required for an [initial] key (it documents no range); "
                              "a log transform needs 0 < lower < upper < inf")  # fmt: skip
    for which, value in values.items():
        if not math.isfinite(value):
            raise ConfigError(f"{where}.{which}", value, "must be finite")
        for arm, config in spec.arms.items():
            try:
                _replaced(config.model, key, value).validate(config.grid, config.time.t_end, config.time.dt)
            except ConfigError as error:
                raise ConfigError(f"{where}.{which}", value, f"arm {arm!r}: {error}") from None
    lo, hi = float(values["lower"]), float(values["upper"])
    if not 0 < lo < hi:
        raise ConfigError(where, {"lower": lo, "upper": hi}, "needs 0 < lower < upper")
    if not lo < entry.init < hi:
        raise ConfigError(f"{where}.init", entry.init, f"must lie strictly inside ({lo}, {hi})")
    return float(entry.init), lo, hi
