"""The fit file: ``[fit]`` and ``[fit.parameters]`` of ``FIT.toml``, checked before any compute.

```toml
[fit]
arms = { ptx = "ptx.toml", ptx_anakinra = "ptx_anakinra.toml" }  # name → run config (relative to this file)
data = "observations.csv"        # columns arm,t,observable,value,sigma
likelihood = "lognormal"         # "normal" | "lognormal"
max_iterations = 100

[fit.parameters]                 # fitted in a bounded log transform
r_n = { init = 0.4, lower = 0.2, upper = 1.0 }
```

Every problem is a :class:`~tumorfield._schema.ConfigError` naming the file, the key, the value
and the rule. The arms' run configs are loaded by :func:`tumorfield.config.load` with the
``--set`` overrides that are not ``fit.*`` (those apply to this file).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config as cfg
from .._schema import REQUIRED, ConfigError, check_section, key, one_of, positive, section, section_keys
from ..config._loader import _parse_override
from ..config._toml import to_toml


def _arms_rule(value) -> str | None:
    if not value:
        return 'must name at least one arm: { name = "run_config.toml", ... }'
    bad = [name for name, path in value.items() if not isinstance(path, str) or not path]
    return f"arm {bad[0]!r} must be the path of a run config (a string)" if bad else None


def _parameters_rule(value) -> str | None:
    if not value:
        return "must name at least one parameter to fit: name = { init = …, lower = …, upper = … }"
    bad = [name for name, entry in value.items() if not isinstance(entry, dict)]
    return f"{bad[0]} must be a table {{ init = …, lower = …, upper = … }}" if bad else None


@section
class FitSection:
    """``[fit]``: the arms, the data, the likelihood and the optimiser's limits."""

    arms: dict = key(
        REQUIRED,
        "",
        "Arm name → run config path (relative to the fit file); the arms share the fitted parameters.",
        _arms_rule,
    )
    data: str = key(REQUIRED, "", "CSV of observations: columns arm,t,observable,value,sigma (t in days).")
    likelihood: str = key(
        "normal",
        "",
        "`normal` (sigma: sd of value) or `lognormal` (sigma: sd of log value).",
        one_of("normal", "lognormal"),
    )
    max_iterations: int = key(100, "", "Largest number of L-BFGS iterations.", positive)
    tolerance: float = key(
        1e-6,
        "negative log-likelihood",
        "Stop when an iteration lowers the loss by less than "
        "this (relative to max(1, loss)) or the largest gradient component is below it.",
        positive,
    )
    max_linesearch_steps: int = key(20, "", "Largest number of trials of one line search.", positive)
    parameters: dict = key(REQUIRED, "", "Parameter name → { init, lower, upper } (natural units).", _parameters_rule)


@section
class FitParameter:
    """One entry of ``[fit.parameters]``: start value and bounds of the log transform (natural units)."""

    init: float = key(REQUIRED, "as the parameter", "Start value; strictly inside (lower, upper).")
    lower: float = key(None, "as the parameter", "Lower bound (> 0); default: the documented range's, if > 0.")
    upper: float = key(None, "as the parameter", "Upper bound; default: the documented range's, if finite.")


@dataclass(frozen=True)
class FitSpec:
    """A checked fit file: the typed ``[fit]`` section, its parameters, the arms' run configs."""

    source: str
    fit: FitSection
    parameters: dict[str, FitParameter]
    arms: dict[str, cfg.RunConfig]
    data_path: Path
    text: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parameters)


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``fit.*`` overrides (for this file) and the others (for every arm's run config)."""
    mine = [item for item in overrides if item.strip().startswith("fit.")]
    return mine, [item for item in overrides if item not in mine]


def _document(path: Path, overrides: Sequence[str]) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError("(file)", str(path), f"cannot be read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("(TOML syntax)", None, str(error)) from None
    for item in overrides:
        _, name, value = _parse_override(item)
        document.setdefault("fit", {})[name] = value
    unknown = set(document) - {"fit"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(name, document[name], "a fit file has only the [fit] section (and [fit.parameters])")
    return document


def _resolved_text(values: dict[str, Any], parameters: dict[str, FitParameter]) -> str:
    """The fit file with defaults filled in (stored in ``FIT.h5``; reads back to the same fit)."""
    resolved = {
        name: {k: v for k, v in dataclasses.asdict(p).items() if v is not None} for name, p in parameters.items()
    }
    return to_toml({"fit": {**values, "parameters": resolved}})


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> FitSpec:
    """Read and check ``FIT.toml`` and every arm's run config (``overrides``: ``--set`` items)."""
    path = Path(path)
    mine, for_arms = _split_overrides(overrides)
    try:
        values = check_section("fit", _document(path, mine).get("fit", {}), section_keys(FitSection))
        fit = FitSection(**values)
        parameters = {
            name: FitParameter(**check_section(f"fit.parameters.{name}", entry, section_keys(FitParameter)))
            for name, entry in fit.parameters.items()
        }
    except ConfigError as error:
        raise error.in_file(str(path)) from None
    base = path.parent
    arms = {name: cfg.load(base / arm_path, for_arms) for name, arm_path in fit.arms.items()}
    return FitSpec(str(path), fit, parameters, arms, base / fit.data, _resolved_text(values, parameters))
