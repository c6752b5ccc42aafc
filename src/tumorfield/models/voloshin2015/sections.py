"""Config sections of ``voloshin2015``: ``[host]``, ``[parameters]``, ``[dosing]``, ``[initial]``, ``[vessels]``.

``[parameters]`` is generated from the field metadata of :class:`Parameters` (default,
units, range and source live there); the other sections are declared here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._schema import LIMITS, fraction, in_range, key, make_section, non_negative, one_of, positive, section
from .parameters import parameter_fields, range_check
from .pk import ROUTES

GENOTYPES = {"wild_type": (1.0, 1.0), "il1b_ko": (0.0, 1.0), "il1r_ko": (1.0, 0.0)}
"""Host genotype → (g_β, g_H): IL1β knockout hosts make no IL1β; IL1R knockout hosts do not respond."""

DRUGS = ("paclitaxel", "anakinra")

GENOTYPE_PARAMETERS = ("host_il1b", "host_il1r")
"""Set by ``[host] genotype``; kept out of ``[parameters]`` so there is one way to say one thing."""


@section
class HostSection:
    """``[host]``: the host genotype."""

    genotype: str = key(
        "wild_type",
        "",
        "host genotype: wild_type, il1b_ko (no host IL1β, g_β = 0) or il1r_ko (no host IL1R response, g_H = 0)",
        one_of(*GENOTYPES),
    )


ParametersSection = make_section(
    "ParametersSection",
    "``[parameters]``: overrides of the scalar fields of ``Parameters`` (generated from their metadata).",
    {
        f.name: (
            float,
            key(float(f.default), f.metadata["units"], f"{f.metadata['doc']} [{f.metadata['source']}]", range_check(f)),
        )
        for f in parameter_fields()
        if f.name not in GENOTYPE_PARAMETERS
    },
    __name__,
)


def _dose_problem(where: str, entry) -> str | None:
    """What is wrong with one dose table ``{time, dose_mg_per_kg, route[, every, count]}``, else None."""
    if not isinstance(entry, Mapping):
        return f"{where} = {entry!r}: each dose is a table {{time, dose_mg_per_kg, route[, every, count]}}"
    unknown = set(entry) - {"time", "dose_mg_per_kg", "route", "every", "count"}
    if unknown:
        return f"{where}: unknown keys {sorted(unknown)}; allowed are time, dose_mg_per_kg, route, every, count"
    rules = {"time": _DOSE_TIME, "dose_mg_per_kg": _DOSE_AMOUNT, "every": _DOSE_TIME}
    for name, rule in rules.items():
        if name not in entry and name != "every":
            return f"{where}.{name} is missing"
        value = entry.get(name, 1.0)
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            return f"{where}.{name} = {value!r}: must be a number"
        if rule(value) or (name == "every" and not value > 0):
            return f"{where}.{name} = {value!r}: {rule(value) or 'must be > 0 (days between repeats)'}"
    route = entry.get("route", "ip")
    if route not in ROUTES:
        return f"{where}.route = {route!r}: allowed are {', '.join(map(repr, ROUTES))}"
    count = entry.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= LIMITS["doses"]:
        return f"{where}.count = {count!r}: must be a whole number from 1 to {LIMITS['doses']:,}"
    return None


_DOSE_TIME = in_range(0.0, LIMITS["t_end_days"])  # day
_DOSE_AMOUNT = in_range(0.0, LIMITS["dose_mg_per_kg"], lo_open=True)  # mg/kg


def _check_doses(drug: str):
    def check(entries):
        for i, entry in enumerate(entries):
            problem = _dose_problem(f"{drug}[{i}]", entry)
            if problem:
                return problem
        total = sum(entry.get("count", 1) for entry in entries)
        if total > LIMITS["doses"]:
            return f"{total:,} administrations of {drug} in all (counts summed); at most {LIMITS['doses']:,}"
        return None

    return check


_DOSES_DOC = (
    "doses: a list of {time (day), dose_mg_per_kg, route ('iv', 'ip', 'sc'), "
    "every (day, default 1), count (default 1)}; every time must be a whole number of steps"
)


@section
class DosingSection:
    """``[dosing]``: the schedule of each drug (tables, repeats unrolled by :func:`expand_doses`)."""

    paclitaxel: list[dict] = key([], "day, mg/kg", f"paclitaxel {_DOSES_DOC}", _check_doses("paclitaxel"))
    anakinra: list[dict] = key([], "day, mg/kg", f"anakinra {_DOSES_DOC}", _check_doses("anakinra"))


@section
class InitialSection:
    """``[initial]``: the implanted tumour and the resident macrophages."""

    tumor_radius: float = key(0.5, "mm", "radius of the implanted tumour (centred in the box)", positive)
    tumor_density: float = key(0.8, "1", "tumour density inside the initial radius", fraction)
    interface_width: float = key(0.1, "mm", "width of the tanh edge of the initial tumour", positive)
    m1: float = key(0.02, "1", "resident M1 macrophage density", fraction)
    m2: float = key(0.05, "1", "resident M2 macrophage density", fraction)


@section
class VesselsSection:
    """``[vessels]``: the prescribed vessel map (see :func:`~.vessels.vessel_map`)."""

    host_density: float = key(0.1, "1", "vessel density of host tissue", non_negative)
    rim_density: float = key(1.0, "1", "peak vessel density of the peritumoral rim", non_negative)
    rim_radius: float = key(1.5, "mm", "radius of the peritumoral vascular rim", positive)
    rim_width: float = key(0.4, "mm", "width of the rim", positive)
    intratumoral_count: int = key(
        12, "", "number of sparse intratumoral vessels (0: none)", in_range(0, LIMITS["vessels"])
    )
    intratumoral_density: float = key(0.8, "1", "peak density of an intratumoral vessel", non_negative)
    vessel_radius: float = key(0.1, "mm", "radius of an intratumoral vessel", positive)
    seed: int = key(0, "", "random seed of the intratumoral vessel positions (any integer ≥ 0)", non_negative)
    image: str = key(
        "",
        "path",
        "A NIfTI map of the relative vessel density (≥ 0, e.g. from CD31 staining or perfusion imaging) "
        "resampled onto the grid, instead of the synthetic map of the keys above (docs/images.md).",
    )


SECTIONS: dict[str, type] = {
    "host": HostSection,
    "parameters": ParametersSection,
    "dosing": DosingSection,
    "initial": InitialSection,
    "vessels": VesselsSection,
}


def expand_doses(entries) -> list[tuple[float, float, str, int]]:
    """``[(time, dose, route, index)]`` for every administration, repeats unrolled, sorted by time;
    ``index`` is the entry's position in its ``[dosing]`` list (for error messages)."""
    out = []
    for i, entry in enumerate(entries):
        every = float(entry.get("every", 1.0))
        for j in range(int(entry.get("count", 1))):
            out.append((float(entry["time"]) + j * every, float(entry["dose_mg_per_kg"]), entry.get("route", "ip"), i))
    return sorted(out)
