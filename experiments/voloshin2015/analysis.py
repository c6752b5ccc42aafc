"""Endpoints, study targets and figures of the Voloshin 2015 arms, read from HDF5 files only.

Nothing here imports the model: every number comes from the file that ``tumorfield run``
writes, read through its one reader, :func:`tumorfield.io.open_trajectory` (the per-step
diagnostics ``scalars``, the fields, the frame times and the stored ``config``).
"""

from __future__ import annotations

import math
import textwrap
import warnings
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


TIME_COURSES = ("tumor_volume", "metastatic_burden", "m2_fraction", "mean_leakiness", "il1b_mean", "invasion_distance")
"""The series of the time-course figures (labels and units read from the files)."""
REFERENCE_ARM = "ptx"
"""The arm the other arms are divided by in ``time_courses.png`` (the study's comparisons are against PTX)."""


def pretty_units(units: str) -> str:
    """CF units as a label shows them: ``mm2`` → mm², ``mm3`` → mm³ (a 2D run's volume is an area)."""
    return str(units).replace("mm2", "mm²").replace("mm3", "mm³")


def _series(path, names) -> dict:
    """``name → (t, values, units, long_name)`` of the per-step series ``names`` in the file ``path``."""
    with open_trajectory(path) as run:
        t = np.asarray(run.scalars_t)
        return {name: (t, np.asarray(run.scalars[name]), run.scalars.units[name], run.scalars.long_names[name])
                for name in names}  # fmt: skip


def _ratio_on(t, numerator, denominator) -> np.ndarray:
    """``numerator / denominator`` (each ``(t, values)``) at the times ``t``: NaN where the denominator
    is 0 or not finite (a ratio that is undefined is not drawn)."""
    a = np.interp(t, numerator[0], numerator[1]) if not np.array_equal(numerator[0], t) else numerator[1]
    b = np.interp(t, denominator[0], denominator[1]) if not np.array_equal(denominator[0], t) else denominator[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    return np.where(np.isfinite(ratio) & (np.abs(b) > 1e-300), ratio, np.nan)


def uncertainty_bands(root: str | Path, arm: str, reference: str, names, t) -> dict:
    """5–95 % bands over the parameter sets of ``uncertainty.py``'s output ``root`` of ``arm``/``reference``
    for every series in ``names``, at the times ``t``: ``name → (p5, p95, n_sets)``; {} where ``root`` has no
    member files of both arms. Sets are paired by their row in the arms' manifests (the same hypercube)."""
    import csv

    root = Path(root)
    manifests = {a: root / a / "manifest.csv" for a in (arm, reference)}
    if not all(m.exists() for m in manifests.values()):
        return {}
    rows = {}
    for a, manifest in manifests.items():
        with open(manifest, newline="") as f:
            rows[a] = list(csv.DictReader(f))
    ratios = {name: [] for name in names}
    for row, ref_row in zip(rows[arm], rows[reference], strict=False):
        files = root / arm / row["file"], root / reference / ref_row["file"]
        if row["status"] != "complete" or ref_row["status"] != "complete" or not all(f.exists() for f in files):
            continue
        mine, theirs = _series(files[0], names), _series(files[1], names)
        for name in names:
            ratios[name].append(_ratio_on(t, mine[name][:2], theirs[name][:2]))
    out = {}
    for name, curves in ratios.items():
        if len(curves) >= 2:
            stack = np.vstack(curves)
            with warnings.catch_warnings():  # all sets undefined at a time (0/0 at t = 0): NaN, not drawn
                warnings.simplefilter("ignore", RuntimeWarning)
                out[name] = (np.nanpercentile(stack, 5, axis=0), np.nanpercentile(stack, 95, axis=0), len(curves))
    return out


def ratio_figure(plt, data: Mapping[str, dict], reference: str, uncertainty=None):
    """``time_courses.png``: per series of :data:`TIME_COURSES`, every arm of ``data`` (arm → :func:`_series`)
    divided by ``reference`` on a linear axis, a line at 1, and the 5–95 % band of the same ratio over the
    parameter sets of ``uncertainty`` (``uncertainty.py``'s output directory) where it has both arms."""
    others = [arm for arm in data if arm != reference]
    t_ref = data[reference][TIME_COURSES[0]][0]
    bands = {arm: uncertainty_bands(uncertainty, arm, reference, TIME_COURSES, t_ref) for arm in others} \
        if uncertainty else {}  # fmt: skip
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True, sharex=True)
    for ax, name in zip(axes.flat, TIME_COURSES, strict=True):
        units, long_name = data[reference][name][2], data[reference][name][3]
        for k, arm in enumerate(others):
            ratio = _ratio_on(t_ref, data[arm][name][:2], data[reference][name][:2])
            ax.plot(t_ref, ratio, color=f"C{k}", label=arm)
            band = bands.get(arm, {}).get(name)
            if band is not None:
                ax.fill_between(t_ref, band[0], band[1], color=f"C{k}", alpha=0.2, lw=0,
                                label=f"{arm}: 5–95 % of {band[2]} parameter sets")  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_title(textwrap.fill(f"{long_name} [{pretty_units(units)}]", 48), fontsize=9)
        ax.set_ylabel(f"{name}: arm / {reference} arm", fontsize=8)
        ax.set_gid(name)
    for ax in axes[-1]:
        ax.set_xlabel("time (day)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"every arm over the {reference} arm (1: no difference)", fontsize=11)
    return fig


def figures(paths: Mapping[str, str | Path], outdir: str | Path, uncertainty: str | Path | None = None) -> list[Path]:
    """The figures of the arms ``paths`` (HDF5 files), into ``outdir``:

    - ``time_courses.png``: every arm divided by the PTX arm (:data:`REFERENCE_ARM`, else the first),
      per series of :data:`TIME_COURSES`, on linear axes: the study's claims are ratios (PTX+anakinra
      over PTX: a 1.2× burden), which a log axis over nine decades hides. With ``uncertainty`` (the
      output directory of ``uncertainty.py``), the 5–95 % band of the same ratio over its parameter sets;
    - ``time_courses_absolute.png``: the series themselves, linear axes, labels and units from the files
      (a 2D run's tumour volume in mm², a 3D run's in mm³);
    - ``endpoint_snapshots.png``: the last frame of tumour, M2, leakiness and IL1β per arm.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    data = {arm: _series(path, TIME_COURSES) for arm, path in paths.items()}
    reference = REFERENCE_ARM if REFERENCE_ARM in paths else next(iter(paths))
    fig = ratio_figure(plt, data, reference, uncertainty)
    path = outdir / "time_courses.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True, sharex=True)
    for ax, name in zip(axes.flat, TIME_COURSES, strict=True):
        units, long_name = data[reference][name][2], data[reference][name][3]
        for arm in paths:
            ax.plot(data[arm][name][0], data[arm][name][1], label=arm)
        ax.set_title(textwrap.fill(long_name, 48), fontsize=9)
        ax.set_ylabel(f"{name} ({pretty_units(units)})", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (day)")
    axes.flat[0].legend(fontsize=7)
    path = outdir / "time_courses_absolute.png"
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
