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
)
WINDOW_SCALARS = ("il1b_mean", "il1b_production", "m2_fraction", "mean_leakiness", "shed_rate", "motility_index")
"""Also averaged over the treatment window (first dose → endpoint): drug effects come in pulses."""


def read_config(path: str | Path) -> dict:
    """The resolved configuration stored in the trajectory ``path`` (parsed TOML)."""
    with open_trajectory(path) as run:
        return run.config


def first_dose_time(config: Mapping) -> float | None:
    times = [entry["time"] for doses in config.get("dosing", {}).values() for entry in doses]
    return min(times) if times else None


def endpoints(path: str | Path, window_start: float) -> dict[str, float]:
    """Final values of the diagnostics, and their means over ``t ≥ window_start`` (suffix ``_window``)."""
    out = {}
    with open_trajectory(path) as run:
        scalars, t = run.scalars, run.scalars_t
        for name in ENDPOINT_SCALARS:
            out[name] = float(scalars[name][-1])
        in_window = t >= window_start - 1e-9
        for name in WINDOW_SCALARS:
            out[f"{name}_window"] = float(np.mean(scalars[name][in_window]))
        out["t_end"] = float(t[-1])
    return out


def _ratio(a, b):
    return a / b if b != 0 else math.inf


def ratios(ep: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The ratios of brief §5 (arms named as in :data:`ARMS`)."""
    r = {}
    pa, p = ep["ptx_anakinra"], ep["ptx"]
    for key in ("tumor_volume", "metastatic_burden", "seeded_cells", "m2_tumor", "m2_fraction", "mean_leakiness"):
        r[f"ptx_anakinra/ptx {key}"] = _ratio(pa[key], p[key])
    for key in ("il1b_mean", "il1b_production", "il1b_mean_window", "il1b_production_window"):
        r[f"ptx/vehicle {key}"] = _ratio(p[key], ep["vehicle"][key])
    for ko in ("il1b_ko_ptx", "il1r_ko_ptx"):
        for key in ("tumor_volume", "metastatic_burden", "m2_tumor", "m2_fraction", "mean_leakiness"):
            r[f"{ko}/ptx {key}"] = _ratio(ep[ko][key], p[key])
    for key in ("invasion_distance", "invasive_fraction", "motility_index_window"):
        r[f"ptx/il1b_ko_ptx {key}"] = _ratio(p[key], ep["il1b_ko_ptx"][key])
        r[f"ptx_anakinra/ptx {key}"] = _ratio(pa[key], p[key])
    r["ptx/vehicle motility_index_window"] = _ratio(p["motility_index_window"], ep["vehicle"]["motility_index_window"])
    r["anakinra/vehicle m2_tumor"] = _ratio(ep["anakinra"]["m2_tumor"], ep["vehicle"]["m2_tumor"])
    r["m2_fraction shift, no PTX (anakinra − vehicle)"] = ep["anakinra"]["m2_fraction"] - ep["vehicle"]["m2_fraction"]
    r["m2_fraction shift, PTX (ptx_anakinra − ptx)"] = pa["m2_fraction"] - p["m2_fraction"]
    return r


def targets(r: Mapping[str, float]) -> dict[str, dict]:
    """Targets 1–8 of brief §5 (8: the M2-shift control; the no-IL1β and dose-sweep controls are separate)."""

    def item(ok, **values):
        return {"pass": bool(ok), **values}

    ko_ok = all(
        r[f"{ko}/ptx tumor_volume"] < 1
        and r[f"{ko}/ptx metastatic_burden"] > 1
        and r[f"{ko}/ptx m2_tumor"] > 1
        and r[f"{ko}/ptx m2_fraction"] > 1
        and r[f"{ko}/ptx mean_leakiness"] > 1
        for ko in ("il1b_ko_ptx", "il1r_ko_ptx")
    )
    shift_ptx = r["m2_fraction shift, PTX (ptx_anakinra − ptx)"]
    shift_none = r["m2_fraction shift, no PTX (anakinra − vehicle)"]
    return {
        "1 primary tumour PTX+anakinra/PTX in [0.70, 0.95]": item(
            0.70 <= r["ptx_anakinra/ptx tumor_volume"] <= 0.95, ratio=r["ptx_anakinra/ptx tumor_volume"]
        ),
        "2 metastatic burden PTX+anakinra/PTX ≥ 1.5": item(
            r["ptx_anakinra/ptx metastatic_burden"] >= 1.5, ratio=r["ptx_anakinra/ptx metastatic_burden"]
        ),
        "3 M2 count and fraction higher under PTX+anakinra": item(
            r["ptx_anakinra/ptx m2_tumor"] > 1 and r["ptx_anakinra/ptx m2_fraction"] > 1,
            count_ratio=r["ptx_anakinra/ptx m2_tumor"],
            fraction_ratio=r["ptx_anakinra/ptx m2_fraction"],
        ),
        "4 mean leakiness higher under PTX+anakinra": item(
            r["ptx_anakinra/ptx mean_leakiness"] > 1, ratio=r["ptx_anakinra/ptx mean_leakiness"]
        ),
        "5 IL1β (tissue and macrophage production) higher under PTX than vehicle": item(
            r["ptx/vehicle il1b_mean_window"] > 1 and r["ptx/vehicle il1b_production_window"] > 1,
            tissue_ratio=r["ptx/vehicle il1b_mean_window"],
            production_ratio=r["ptx/vehicle il1b_production_window"],
        ),
        "6 IL1β-KO and IL1R-KO + PTX: same directions as 1–4 against WT + PTX": item(
            ko_ok, **{k: v for k, v in r.items() if k.startswith(("il1b_ko_ptx/ptx", "il1r_ko_ptx/ptx"))}
        ),
        "7 invasiveness raised by PTX-induced IL1β, reduced by anakinra": item(
            r["ptx/il1b_ko_ptx invasion_distance"] > 1
            and r["ptx/vehicle motility_index_window"] > 1
            and r["ptx_anakinra/ptx invasion_distance"] < 1,
            ptx_over_il1b_ko=r["ptx/il1b_ko_ptx invasion_distance"],
            ptx_over_vehicle_motility=r["ptx/vehicle motility_index_window"],
            anakinra_over_ptx=r["ptx_anakinra/ptx invasion_distance"],
        ),
        "8 M2 shift under blockade smaller without PTX than with PTX": item(
            0 <= shift_none < shift_ptx, shift_without_ptx=shift_none, shift_with_ptx=shift_ptx
        ),
    }


def summary(paths: Mapping[str, str | Path]) -> dict:
    """Endpoints of every arm, ratios and targets, from the HDF5 files ``paths[arm]``."""
    starts = [first_dose_time(read_config(path)) for path in paths.values()]
    window_start = min((s for s in starts if s is not None), default=0.0)
    ep = {arm: endpoints(path, window_start) for arm, path in paths.items()}
    out = {"treatment_window_start_day": window_start, "endpoints": ep}
    if all(arm in ep for arm in ARMS):
        r = ratios(ep)
        out["ratios"] = r
        out["targets"] = targets(r)
    return out


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
