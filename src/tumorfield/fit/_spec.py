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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config as cfg
from .._inputs import read_toml
from .._schema import REQUIRED, ConfigError, check_section, key, one_of, positive, section, section_keys
from ..config._loader import _parse_override
from ..config._toml import to_toml


def _tables_rule(where: str):
    def rule(value) -> str | None:
        bad = [i for i, entry in enumerate(value) if not isinstance(entry, dict)]
        return f"{where}[{bad[0]}] must be a table ([[{where}]])" if bad else None

    return rule


def _tables_rule_named(value) -> str | None:
    bad = [name for name, entry in value.items() if not isinstance(entry, dict)]
    return f"{bad[0]} must be a table {{ scale = …, units = … }}" if bad else None


def _arms_rule(value) -> str | None:
    if not value:
        return 'must name at least one arm: { name = "run_config.toml", ... }'
    bad = [name for name, path in value.items() if not isinstance(path, str) or not path]
    return f"arm {bad[0]!r} must be the path of a run config (a string)" if bad else None


def _parameters_rule(value) -> str | None:
    bad = [name for name, entry in value.items() if not isinstance(entry, dict)]
    return f"{bad[0]} must be a table {{ init = …, lower = …, upper = … }}" if bad else None


def _continuation_rule(value) -> str | None:
    numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(value) or any(not v > 1 or v > 64 for v in numbers):
        return "must be coarsening factors > 1 (and ≤ 64), e.g. [4, 2]"
    if any(a <= b for a, b in zip(numbers, numbers[1:], strict=False)):
        return "must be decreasing: the coarsest grid first, e.g. [4, 2]"
    return None


@section
class FitSection:
    """``[fit]``: the arms, the data, the likelihood and the optimiser's limits."""

    arms: dict = key(
        REQUIRED,
        "",
        "Arm name → run config path (relative to the fit file); the arms share the fitted parameters.",
        _arms_rule,
    )
    data: str = key(
        "", "", "CSV of observations: columns arm,t,observable,value,sigma (t in days); optional with `[[fit.images]]`."
    )
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
    parameters: dict = key(
        {},
        "",
        "Parameter name → { init, lower, upper } (natural units); also an "
        '[initial] key of the model, "initial.KEY" (docs/fitting.md).',
        _parameters_rule,
    )
    observables: dict = key(
        {},
        "",
        "Observable name → { scale, units }: its data are scale × the model's "
        "observable (docs/fitting.md, Units); scalar fits only.",
        _tables_rule_named,
    )
    images: list = key([], "", "`[[fit.images]]`: the scans (docs/calibration.md).", _tables_rule("fit.images"))
    origin: dict = key({}, "", "`[fit.origin]`: the unknown initial tumour of one field (docs/calibration.md).")
    maps: dict = key({}, "", "`[fit.maps]`: spatially varying parameters with a Gaussian prior (docs/calibration.md).")
    uncertainty: dict = key({}, "", "`[fit.uncertainty]`: the posterior method (docs/calibration.md).")
    forecast: list = key([], "day", "Days to forecast from the calibrated model (also `tumorfield fit --forecast`).")
    continuation: list = key(
        [], "", "Grid continuation of a calibration: coarsening factors, coarse first (e.g. [4, 2]); each stage "
        "starts the next, the arms' own grid last.", _continuation_rule,
    )  # fmt: skip


@section
class FitImage:
    """One ``[[fit.images]]`` table: a scan of one field of one arm at one time."""

    arm: str = key(REQUIRED, "", "The arm (a name of `[fit] arms`) the scan is of.")
    t: float = key(REQUIRED, "day", "Time of the scan, on the arm's step grid.")
    field: str = key(REQUIRED, "", "The model field the scan measures (e.g. `tumor`).")
    file: str = key(REQUIRED, "path", "NIfTI image on the arm's grid (or resampled onto it); relative to the fit file.")
    kind: str = key(REQUIRED, "", "`density` (a map of the field) or `segmentation` (a label image).",
                    one_of("density", "segmentation"))  # fmt: skip
    thresholds: dict = key({}, "", "segmentation: label → the field's threshold, nested (e.g. { 1 = 0.8, 2 = 0.16 }).")
    sigma: float = key(0.05, "as the field", "density: sd of the voxel-wise Gaussian misfit.", positive)
    width: float = key(
        0.05, "as the field", "segmentation: width of the smoothed threshold S((u − θ)/width), S logistic.", positive
    )
    label_sigma: float = key(
        0.2, "1", "segmentation: sd of the misfit of the smoothed indicator S((u − θ)/width) against the label.",
        positive,
    )  # fmt: skip


@section
class FitOrigin:
    """``[fit.origin]``: the unknown initial state of one field. ``kind = "gaussian"``: a seed
    ``amplitude · exp(−|x − centre|²/radius²)`` in world coordinates (mm); ``kind = "map"``: the whole
    initial field ``u₀(x) = S(μ(x) + m(x))`` (``S`` logistic, values in (0, 1)) with a Gaussian prior on
    the log-odds perturbation ``m`` as in ``[fit.maps]`` around ``μ = logit(max(the arm's initial field, floor))``."""

    field: str = key(
        REQUIRED, "", "The field whose initial state is the unknown (the arm's own initial state is replaced)."
    )
    kind: str = key("gaussian", "", "`gaussian` (a seed: centre, radius, amplitude) or `map` (the whole "
                    "initial field, with a prior: prior_sd, correlation_length, floor).",
                    one_of("gaussian", "map"))  # fmt: skip
    centre: dict = key(
        {}, "mm", "gaussian: { init = [x, y(, z)], lower = [...], upper = [...] }; bounds default to the domain."
    )
    radius: dict = key({"init": 2.0, "lower": 0.5, "upper": 10.0}, "mm", "gaussian: { init, lower, upper }.")
    amplitude: dict = key({"init": 0.5, "lower": 0.01, "upper": 1.0}, "1", "gaussian: { init, lower, upper } (peak).")
    prior_sd: float = key(1.5, "1 (log-odds)", "map: prior sd of m(x), the log-odds perturbation (grid average).",
                          positive)  # fmt: skip
    correlation_length: float = key(4.0, "mm", "map: correlation length ℓ of the prior, C ∝ (I − ℓ²Δ)⁻².", positive)
    floor: float = key(1e-4, "1", "map: the prior mean's floor, μ = logit(max(u₀ of the arm, floor)); in (0, 0.5).",
                       lambda v: None if 0 < v < 0.5 else "must lie in (0, 0.5)")  # fmt: skip

    GAUSSIAN_KEYS = ("centre", "radius", "amplitude")
    MAP_KEYS = ("prior_sd", "correlation_length", "floor")


@section
class FitMap:
    """One entry of ``[fit.maps]``: a parameter varying over the cells, ``θ(x) = θ · exp(m(x))``, with a
    Gaussian prior on ``m`` (bi-Laplacian covariance, Matérn-like)."""

    prior_sd: float = key(REQUIRED, "1 (log space)", "Prior sd of m(x) (averaged over the grid).", positive)
    correlation_length: float = key(REQUIRED, "mm", "Correlation length ℓ of the prior: C ∝ (I − ℓ²Δ)⁻².", positive)


@section
class FitUncertainty:
    """``[fit.uncertainty]``: how the posterior is described."""

    method: str = key("laplace", "", "`laplace` (Gauss–Newton for scalars and origin, a low-rank posterior for maps), "
                      "`nuts` (a No-U-Turn sampler over scalars and origin) or `none`.",
                      one_of("laplace", "nuts", "none"))  # fmt: skip
    rank: int = key(50, "", "Rank of the low-rank posterior of the maps (≤ the number of map unknowns).", positive)
    samples: int = key(200, "", "Posterior samples (NUTS draws per chain; Laplace draws for the forecast).", positive)
    chains: int = key(4, "", "NUTS chains, vmapped in one compiled program.", positive)
    warmup: int = key(300, "", "NUTS warm-up (adaptation) steps per chain.", positive)


@section
class FitParameter:
    """One entry of ``[fit.parameters]``: start value and bounds of the log transform (natural units)."""

    init: float = key(REQUIRED, "as the parameter", "Start value; strictly inside (lower, upper).")
    lower: float = key(None, "as the parameter", "Lower bound (> 0); default: the documented range's, if > 0.")
    upper: float = key(None, "as the parameter", "Upper bound; default: the documented range's, if finite.")


@section
class FitObservable:
    """One entry of ``[fit.observables]``: the data of this observable are ``scale ×`` the model's value."""

    scale: float = key(1.0, "as units", "Factor from the model's observable to the data's quantity.", positive)
    units: str = key("", "", 'Units of scale (pint), e.g. "mm" for a slab thickness; "": dimensionless.')


@dataclass(frozen=True)
class FitSpec:
    """A checked fit file: the typed ``[fit]`` section, its parameters, the arms' run configs."""

    source: str
    fit: FitSection
    parameters: dict[str, FitParameter]
    arms: dict[str, cfg.RunConfig]
    data_path: Path | None
    text: str
    images: tuple[FitImage, ...] = ()
    origin: FitOrigin | None = None
    maps: dict[str, FitMap] = dataclasses.field(default_factory=dict)
    uncertainty: FitUncertainty = dataclasses.field(default_factory=FitUncertainty)
    arm_overrides: tuple[str, ...] = ()
    """The ``--set`` items applied to every arm's run config (a coarser grid of a continuation adds one)."""
    observables: dict[str, FitObservable] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parameters)

    @property
    def from_images(self) -> bool:
        """A calibration from scans (``[[fit.images]]``, an origin or maps): :mod:`._calibration`."""
        return bool(self.images or self.origin or self.maps)


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``fit.*`` overrides (for this file) and the others (for every arm's run config)."""
    mine = [item for item in overrides if item.strip().startswith("fit.")]
    return mine, [item for item in overrides if item not in mine]


def _document(path: Path, overrides: Sequence[str]) -> dict[str, Any]:
    document = read_toml(path)  # a regular file of at most 1 MiB of UTF-8 TOML, not nested too deeply
    for item in overrides:
        _, name, value = _parse_override(item)
        document.setdefault("fit", {})[name] = value
    unknown = set(document) - {"fit"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(name, document[name], "a fit file has only the [fit] section (and its sub-tables)")
    return document


def _resolved_text(values: dict[str, Any], parameters: dict[str, FitParameter]) -> str:
    """The fit file with defaults filled in (stored in ``FIT.h5``; reads back to the same fit)."""
    resolved = {
        name: {k: v for k, v in dataclasses.asdict(p).items() if v is not None} for name, p in parameters.items()
    }
    return to_toml({"fit": {**values, "parameters": resolved}})


def _sub(name: str, cls, entry):
    return cls(**check_section(name, entry, section_keys(cls)))


def _checked(values: dict[str, Any]):
    """The typed sub-tables of ``[fit]``; and the rules that tie them together."""
    fit = FitSection(**values)
    parameters = {name: _sub(f"fit.parameters.{name}", FitParameter, e) for name, e in fit.parameters.items()}
    images = tuple(_sub(f"fit.images[{i}]", FitImage, e) for i, e in enumerate(fit.images))
    origin = _sub("fit.origin", FitOrigin, fit.origin) if fit.origin else None
    maps = {name: _sub(f"fit.maps.{name}", FitMap, e) for name, e in fit.maps.items()}
    uncertainty = _sub("fit.uncertainty", FitUncertainty, fit.uncertainty)
    observables = {name: _sub(f"fit.observables.{name}", FitObservable, e) for name, e in fit.observables.items()}
    if not (images or origin or maps):
        if not fit.data:
            raise ConfigError("fit.data", fit.data, "is required (a CSV of observations), or give [[fit.images]]")
        if not parameters:
            raise ConfigError("fit.parameters", {}, "must name at least one parameter to fit: "
                              "name = { init = …, lower = …, upper = … }")  # fmt: skip
    elif not images:
        raise ConfigError("fit.images", [], "an origin or maps are fitted to scans: give [[fit.images]]")
    elif not (parameters or origin or maps):
        raise ConfigError("fit.parameters", {}, "nothing to fit: name parameters, an origin or maps")
    if fit.continuation and not images:
        raise ConfigError("fit.continuation", fit.continuation, "is for calibrations from scans ([[fit.images]])")
    if origin is not None:
        _check_origin_keys(fit.origin, origin)
    return fit, parameters, images, origin, maps, uncertainty, observables


def _check_origin_keys(raw: dict, origin: FitOrigin) -> None:
    """The keys of ``[fit.origin]`` belong to its kind: a seed's centre is required, a map's prior keys
    are refused on a seed and the seed's keys on a map."""
    own, other = (
        (FitOrigin.GAUSSIAN_KEYS, FitOrigin.MAP_KEYS) if origin.kind == "gaussian"
        else (FitOrigin.MAP_KEYS, FitOrigin.GAUSSIAN_KEYS)
    )  # fmt: skip
    stray = [k for k in other if k in raw]
    if stray:
        raise ConfigError(f"fit.origin.{stray[0]}", raw[stray[0]], f"is not a key of kind = {origin.kind!r} "
                          f"(its keys: field, kind, {', '.join(own)})")  # fmt: skip
    if origin.kind == "gaussian" and not origin.centre:
        raise ConfigError("fit.origin.centre", {}, 'is required with kind = "gaussian": { init = [x, y(, z)] } (mm)')


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> FitSpec:
    """Read and check ``FIT.toml`` and every arm's run config (``overrides``: ``--set`` items)."""
    path = Path(path)
    mine, for_arms = _split_overrides(overrides)
    try:
        values = check_section("fit", _document(path, mine).get("fit", {}), section_keys(FitSection))
        fit, parameters, images, origin, maps, uncertainty, observables = _checked(values)
    except ConfigError as error:
        raise (error if error.file else error.in_file(str(path))) from None
    base = path.parent
    arms = {name: cfg.load(base / arm_path, for_arms) for name, arm_path in fit.arms.items()}
    images = tuple(dataclasses.replace(image, file=str((base / image.file).resolve())) for image in images)
    data_path = base / fit.data if fit.data else None
    text = _resolved_text(values, parameters)
    return FitSpec(str(path), fit, parameters, arms, data_path, text, images, origin, maps, uncertainty,
                   tuple(for_arms), observables)  # fmt: skip
