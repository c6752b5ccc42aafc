"""Endpoints, study targets and figures of the Voloshin 2015 arms, read from HDF5 files only.

Nothing here imports the model: every number comes from the file that ``tumorfield run``
writes, read through its one reader, :func:`tumorfield.io.open_trajectory` (the per-step
diagnostics ``scalars``, the fields, the frame times and the stored ``config``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tumorfield.io import open_trajectory

ARMS = ("vehicle", "ptx", "anakinra", "ptx_anakinra", "il1b_ko_ptx", "il1r_ko_ptx")

ENDPOINT_SCALARS = (
    "tumor_volume",
    "metastatic_burden",
    "seeded_cells",
    "m2_tumor",
    "m1_tumor",
    "m2_fraction",
    "m2_total",
    "mean_leakiness",
    "il1b_mean",
    "il1b_production",
    "invasion_distance",
    "invasive_fraction",
    "front_radius",
    "motility_index",
    "kill_effect",
    "paclitaxel_cell_mean",
)
WINDOW_SCALARS = (
    "il1b_mean",
    "il1b_production",
    "m2_fraction",
    "mean_leakiness",
    "shed_rate",
    "motility_index",
    "phi_host",
    "kill_effect",
    "anakinra_mean",
)
"""Also averaged over the treatment window (first dose → endpoint): drug effects come in pulses."""


def read_config(path: str | Path) -> dict:
    """The resolved configuration stored in the trajectory ``path`` (parsed TOML)."""
    with open_trajectory(path) as run:
        return run.config


def first_dose_time(config: Mapping) -> float | None:
    times = [entry["time"] for doses in config.get("dosing", {}).values() for entry in doses]
    return min(times) if times else None


def endpoints(path: str | Path, window_start: float) -> dict[str, float]:
    """Final values of the diagnostics, their means over ``t ≥ window_start`` (suffix ``_window``),
    and the tumour volume at ``window_start`` (``tumor_volume_at_start``: is the treated tumour growing?)."""
    out = {}
    with open_trajectory(path) as run:
        scalars, t = run.scalars, run.scalars_t
        for name in ENDPOINT_SCALARS:
            out[name] = float(scalars[name][-1])
        in_window = t >= window_start - 1e-9
        for name in WINDOW_SCALARS:
            out[f"{name}_window"] = float(np.mean(scalars[name][in_window]))
        out["tumor_volume_at_start"] = float(scalars["tumor_volume"][int(np.argmax(in_window))])
        out["t_end"] = float(t[-1])
    return out


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN (undefined) where it is not a finite number: 0/0, x/0 or a NaN operand.

    NaN fails every comparison, so a target built on an undefined ratio fails; the targets also
    say so explicitly (``defined``)."""
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0.0:
        return math.nan
    return a / b


def difference(a: float, b: float) -> float:
    """``a − b``, NaN unless both are finite."""
    a, b = float(a), float(b)
    return a - b if math.isfinite(a) and math.isfinite(b) else math.nan


def growing(ep: Mapping[str, float]) -> bool:
    """A living treated tumour: finite, positive and larger at the endpoint than at the first dose
    (the study's PTX-treated primaries grew). Threshold-free: no density cut is involved."""
    end, start = ep["tumor_volume"], ep["tumor_volume_at_start"]
    return bool(math.isfinite(end) and math.isfinite(start) and end > start > 0.0)


TUMOR_KEYS = ("tumor_volume", "metastatic_burden", "seeded_cells", "m2_tumor", "m2_fraction", "mean_leakiness")


def ratios(ep: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The ratios of brief §5 (arms named as in :data:`ARMS`; arms that are missing are skipped).
    Every value is :func:`ratio` (NaN where undefined) or :func:`difference`."""
    r = {}
    pa, p, veh = ep.get("ptx_anakinra"), ep.get("ptx"), ep.get("vehicle")
    if pa is not None and p is not None:
        for key in (*TUMOR_KEYS, "invasion_distance", "invasive_fraction", "motility_index_window"):
            r[f"ptx_anakinra/ptx {key}"] = ratio(pa[key], p[key])
        r["m2_fraction shift, PTX (ptx_anakinra − ptx)"] = difference(pa["m2_fraction"], p["m2_fraction"])
    if p is not None and veh is not None:
        for key in ("il1b_mean", "il1b_production", "il1b_mean_window", "il1b_production_window"):
            r[f"ptx/vehicle {key}"] = ratio(p[key], veh[key])
        r["ptx/vehicle motility_index_window"] = ratio(p["motility_index_window"], veh["motility_index_window"])
    for ko in ("il1b_ko_ptx", "il1r_ko_ptx"):
        if ko in ep and p is not None:
            for key in ("tumor_volume", "metastatic_burden", "m2_tumor", "m2_fraction", "mean_leakiness"):
                r[f"{ko}/ptx {key}"] = ratio(ep[ko][key], p[key])
    if "il1b_ko_ptx" in ep and p is not None:
        for key in ("invasion_distance", "invasive_fraction", "motility_index_window"):
            r[f"ptx/il1b_ko_ptx {key}"] = ratio(p[key], ep["il1b_ko_ptx"][key])
    if "anakinra" in ep and veh is not None:
        r["anakinra/vehicle m2_tumor"] = ratio(ep["anakinra"]["m2_tumor"], veh["m2_tumor"])
        r["m2_fraction shift, no PTX (anakinra − vehicle)"] = difference(
            ep["anakinra"]["m2_fraction"], veh["m2_fraction"]
        )
    return r


def _item(ok: bool, values: Mapping[str, float], **extra) -> dict:
    """One target: ``pass`` only if every value it rests on is defined (finite) and ``ok`` holds."""
    defined = all(math.isfinite(v) for v in values.values())
    return {"pass": bool(ok) and defined, "defined": defined, **extra, **values}


def _greater(values, than=1.0) -> bool:
    return all(v > than for v in values)  # NaN > 1 is False


TARGET_NAMES = {
    1: "1 primary tumour PTX+anakinra/PTX < 1, treated tumours alive and growing",
    2: "2 metastatic burden PTX+anakinra/PTX > 1",
    3: "3 M2 count and fraction higher under PTX+anakinra",
    4: "4 mean leakiness higher under PTX+anakinra",
    5: "5 IL1β (tissue and macrophage production) higher under PTX than vehicle",
    6: "6 IL1β-KO and IL1R-KO + PTX: same directions as 1–4 against WT + PTX",
    7: "7 invasiveness raised by PTX-induced IL1β, reduced by anakinra",
    8: "8 M2 shift under blockade smaller without PTX than with PTX",
}
"""Brief §5: directions, not bands (the study reports directions). The sizes are reported with
their intervals by ``uncertainty.py``."""


def targets(r: Mapping[str, float], ep: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """Targets 1–8 of brief §5 that the arms in ``ep`` allow (8: the M2-shift control; the no-IL1β
    and dose-sweep controls are separate). Targets 1–4 need a living, growing tumour in both
    treated arms; 5 in the PTX arm (:func:`growing`)."""
    out = {}
    if "ptx" in ep and "ptx_anakinra" in ep:
        alive = growing(ep["ptx"]) and growing(ep["ptx_anakinra"])
        tumour = r["ptx_anakinra/ptx tumor_volume"]
        out[TARGET_NAMES[1]] = _item(tumour < 1 and alive, {"ratio": tumour}, treated_tumours_growing=alive)
        burden = r["ptx_anakinra/ptx metastatic_burden"]
        out[TARGET_NAMES[2]] = _item(burden > 1 and alive, {"ratio": burden}, treated_tumours_growing=alive)
        m2 = {"count_ratio": r["ptx_anakinra/ptx m2_tumor"], "fraction_ratio": r["ptx_anakinra/ptx m2_fraction"]}
        out[TARGET_NAMES[3]] = _item(_greater(m2.values()) and alive, m2, treated_tumours_growing=alive)
        leak = r["ptx_anakinra/ptx mean_leakiness"]
        out[TARGET_NAMES[4]] = _item(leak > 1 and alive, {"ratio": leak}, treated_tumours_growing=alive)
    if "ptx" in ep and "vehicle" in ep:
        alive = growing(ep["ptx"])
        il1b = {
            "tissue_ratio": r["ptx/vehicle il1b_mean_window"],
            "production_ratio": r["ptx/vehicle il1b_production_window"],
        }
        out[TARGET_NAMES[5]] = _item(_greater(il1b.values()) and alive, il1b, ptx_tumour_growing=alive)
    kos = [ko for ko in ("il1b_ko_ptx", "il1r_ko_ptx") if ko in ep]
    if kos and "ptx" in ep:
        values = {k: v for k, v in r.items() if k.startswith(tuple(f"{ko}/ptx" for ko in kos))}
        ok = all(
            r[f"{ko}/ptx tumor_volume"] < 1
            and _greater(r[f"{ko}/ptx {key}"] for key in ("metastatic_burden", "m2_tumor", "m2_fraction",
                                                          "mean_leakiness"))
            for ko in kos
        )  # fmt: skip
        out[TARGET_NAMES[6]] = _item(ok and len(kos) == 2, values)
    if all(arm in ep for arm in ("ptx", "ptx_anakinra", "il1b_ko_ptx", "vehicle")):
        values = {
            "ptx_over_il1b_ko": r["ptx/il1b_ko_ptx invasion_distance"],
            "ptx_over_vehicle_motility": r["ptx/vehicle motility_index_window"],
            "anakinra_over_ptx": r["ptx_anakinra/ptx invasion_distance"],
        }
        ok = values["ptx_over_il1b_ko"] > 1 and values["ptx_over_vehicle_motility"] > 1
        out[TARGET_NAMES[7]] = _item(ok and values["anakinra_over_ptx"] < 1, values)
    if "m2_fraction shift, no PTX (anakinra − vehicle)" in r and "m2_fraction shift, PTX (ptx_anakinra − ptx)" in r:
        values = {
            "shift_without_ptx": r["m2_fraction shift, no PTX (anakinra − vehicle)"],
            "shift_with_ptx": r["m2_fraction shift, PTX (ptx_anakinra − ptx)"],
        }
        out[TARGET_NAMES[8]] = _item(0 <= values["shift_without_ptx"] < values["shift_with_ptx"], values)
    return out


def jsonable(obj):
    """``obj`` with NaN/inf floats as None (JSON has no NaN) and keys starting with ``_`` dropped."""
    if isinstance(obj, Mapping):
        return {k: jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def window_start_of(paths: Mapping[str, str | Path]) -> float:
    """The first dose of any arm (day): the start of the treatment window."""
    starts = [first_dose_time(read_config(path)) for path in paths.values()]
    return min((s for s in starts if s is not None), default=0.0)


def summary(paths: Mapping[str, str | Path]) -> dict:
    """Endpoints of every arm, ratios and targets, from the HDF5 files ``paths[arm]``."""
    window_start = window_start_of(paths)
    ep = {arm: endpoints(path, window_start) for arm, path in paths.items()}
    r = ratios(ep)
    return {"treatment_window_start_day": window_start, "endpoints": ep, "ratios": r, "targets": targets(r, ep)}


# --- figures ---------------------------------------------------------------------------------


def figures(paths: Mapping[str, str | Path], outdir: str | Path) -> list[Path]:
    """Time courses of every arm and endpoint snapshot panels, drawn from the HDF5 files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    panels = (
        ("tumor_volume", "primary tumour (mm² or mm³)", False),
        ("metastatic_burden", "metastatic burden (cells)", True),
        ("m2_fraction", "M2 fraction in tumour", False),
        ("mean_leakiness", "mean vessel leakiness", False),
        ("il1b_mean", "IL1β in tumour (pM)", False),
        ("invasion_distance", "invasion distance (mm)", False),
    )
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (name, label, log) in zip(axes.flat, panels, strict=True):
        for arm, path in paths.items():
            with open_trajectory(path) as run:
                ax.plot(run.scalars_t, run.scalars[name], label=arm)
        ax.set_xlabel("time (day)")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=8)
    path = outdir / "time_courses.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fields = ("tumor", "m2", "leakiness", "il1b")
    arms = list(paths)
    fig, axes = plt.subplots(len(fields), len(arms), figsize=(2.3 * len(arms), 2.3 * len(fields)), squeeze=False)
    snapshots, units = {}, {}
    for arm in arms:
        with open_trajectory(paths[arm]) as run:
            for field in fields:
                data = run.field(field)[-1]
                snapshots[arm, field] = data[data.shape[0] // 2] if data.ndim == 3 else data  # 3D: mid-plane
                units[arm, field] = run.field(field).units
    # one colour scale per row, so that arms compare by eye
    top = {field: max(float(np.max(snapshots[arm, field])) for arm in arms) for field in fields}
    for j, arm in enumerate(arms):
        for i, field in enumerate(fields):
            ax = axes[i, j]
            im = ax.imshow(snapshots[arm, field], origin="lower", cmap="magma", vmin=0.0, vmax=top[field])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(arm, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{field} ({units[arm, field]})", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = outdir / "endpoint_snapshots.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
