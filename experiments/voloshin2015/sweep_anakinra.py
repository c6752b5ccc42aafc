"""Dose–response of anakinra under paclitaxel: where does the sign of its effect on metastasis turn?

Usage::

    python experiments/voloshin2015/sweep_anakinra.py [-o out/voloshin2015/sweep] [--doses 0 0.01 0.1 1 50]
        [--param a_iv --values 0.25 1 2 4 8] [--set grid.shape=[32,32] --set parameters.theta50=0.05 ...]
        [--tol 1e-3]
    python experiments/voloshin2015/sweep_anakinra.py --replot A/sweep.json B/sweep.json -o figure.png

Runs ``ptx_anakinra.toml`` once per daily anakinra dose (mg/kg, i.p., same days as
the arm) — dose 0 is paclitaxel alone, the baseline of the row — and, with ``--param
NAME --values v1 v2 …``, once per (value, dose): one ``tumorfield sweep`` (a grid
design over ``dosing.anakinra`` and ``parameters.NAME``, written to ``-o/sweep.toml``;
its members run in vmapped batches into ``-o/runs/``).

Everything is read back from the HDF5 files only. Per (value, dose) it records primary
tumour, metastatic burden, M2 fraction and leakiness and their ratios to the dose-0 run
of the same row; the effect of anakinra is the sign of (burden ratio − 1). Per row it
reports where that sign changes along the dose axis (between which doses), and per dose
the parameter value at which it changes (interpolated linearly in the ratio between the
two bracketing values). Writes ``sweep.json`` (all rows, sign changes, the command) and
``sweep.png``. Rerunning the same command keeps the complete members (the sweep
continues); ``--replot`` redraws 2D sweeps from their ``sweep.json`` into one figure.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import endpoints, first_dose_time, read_config  # noqa: E402

RATIO_KEYS = {
    "burden_over_ptx": "metastatic_burden",
    "tumor_over_ptx": "tumor_volume",
    "seeded_over_ptx": "seeded_cells",
    "m2_fraction_over_ptx": "m2_fraction",
    "leakiness_over_ptx": "mean_leakiness",
}
SIGN_WORD = {-1: "lowers", 0: "no effect", 1: "raises"}


# ---------------------------------------------------------------------------------------------
# Sign-change analysis (pure functions on numbers; unit-tested in tests/test_sweep_analysis.py)
# ---------------------------------------------------------------------------------------------


def effect_signs(ratios: Sequence[float], tol: float = 0.0) -> list[int]:
    """Sign of ``ratio − 1`` per entry: +1 raises, −1 lowers, 0 within ``tol`` of 1 (or not finite)."""
    out = []
    for r in ratios:
        d = float(r) - 1.0
        out.append(0 if not math.isfinite(d) or abs(d) <= tol else (1 if d > 0 else -1))
    return out


def sign_changes(x: Sequence[float], ratios: Sequence[float], tol: float = 0.0, log_x: bool = False) -> list[dict]:
    """Where ``ratio − 1`` changes sign along ``x`` (``x`` increasing).

    Entries within ``tol`` of 1 (sign 0) are skipped: a change is reported between two
    consecutive entries of opposite, non-zero sign. ``at_interpolated`` is the ``x`` where
    the straight line through the two bracketing (x, ratio) points crosses ratio = 1,
    linear in ``x`` (or in ``log x`` with ``log_x``); it is an interpolation, not a run.
    """
    x = [float(v) for v in x]
    if any(b <= a for a, b in zip(x, x[1:], strict=False)):
        raise ValueError("x must be strictly increasing")
    signs = effect_signs(ratios, tol)
    nonzero = [i for i, s in enumerate(signs) if s != 0]
    out = []
    for i, j in zip(nonzero, nonzero[1:], strict=False):
        if signs[i] == signs[j]:
            continue
        r1, r2 = float(ratios[i]), float(ratios[j])
        frac = (1.0 - r1) / (r2 - r1)
        if log_x and x[i] > 0:
            at = math.exp(math.log(x[i]) + frac * (math.log(x[j]) - math.log(x[i])))
        else:
            at = x[i] + frac * (x[j] - x[i])
        out.append(
            {
                "between": [x[i], x[j]],
                "ratios": [r1, r2],
                "from": SIGN_WORD[signs[i]],
                "to": SIGN_WORD[signs[j]],
                "at_interpolated": at,
            }
        )
    return out


def turning_points(x: Sequence[float], y: Sequence[float]) -> list[dict]:
    """Local minima of ``y`` along ``x`` (falling then rising), as the bracketing pair of ``x``."""
    slope = np.sign(np.diff(np.asarray(y, float)))
    return [
        {"between": [float(x[i]), float(x[i + 2])], "minimum_at": float(x[i + 1]), "from": "falling", "to": "rising"}
        for i in range(len(slope) - 1)
        if slope[i] < 0 < slope[i + 1]
    ]


def boundary_by_dose(values: Sequence[float], ratio_grid: np.ndarray, doses: Sequence[float], tol: float = 0.0):
    """Per dose (column of ``ratio_grid``, rows = ``values`` increasing): where the effect's sign changes."""
    out = []
    for k, dose in enumerate(doses):
        if dose <= 0:
            continue
        out.append({"dose_mg_per_kg": float(dose), "crossings": sign_changes(values, ratio_grid[:, k], tol)})
    return out


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def anakinra_doses(arm_entry: dict, dose: float) -> str:
    """The arm's anakinra schedule at ``dose`` mg/kg as a TOML list (``[]`` for dose 0: PTX alone)."""
    if dose <= 0:
        return "[]"
    entry = {**arm_entry, "dose_mg_per_kg": dose}
    return "[{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items()) + "}]"


def run_points(outdir: Path, overrides: list[str], key: str | None, values: list, doses: list[float]) -> list[Path]:
    """Every (value, dose) point as one ``tumorfield sweep`` (a grid design, members in vmapped
    batches; a rerun keeps complete members). Returns the member files, values outer, doses inner."""
    arm_entry = tomllib.loads((HERE / "ptx_anakinra.toml").read_text())["dosing"]["anakinra"][0]
    lines = ["[sweep]", f'base = "{HERE / "ptx_anakinra.toml"}"', 'design = "grid"',
             "set = [" + ", ".join(json.dumps(o) for o in [*overrides, "run.progress=none"]) + "]",
             "[sweep.parameters]"]  # fmt: skip
    if key is not None:
        lines.append(f'"{key}" = [{", ".join(repr(float(v)) for v in values)}]')
    lines.append('"dosing.anakinra" = [' + ", ".join(anakinra_doses(arm_entry, d) for d in doses) + "]")
    outdir.mkdir(parents=True, exist_ok=True)
    sweep_file = outdir / "sweep.toml"
    sweep_file.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "tumorfield.cli", "sweep", str(sweep_file), "-o", str(outdir / "runs")]
    subprocess.run(command, check=True)
    return [outdir / "runs" / f"member-{i:04d}.h5" for i in range(len(values) * len(doses))]


def record(path: Path) -> dict:
    from tumorfield.io import open_trajectory

    start = first_dose_time(read_config(path)) or 0.0
    with open_trajectory(path) as run:
        commit = str(run.metadata.get("git_commit", ""))
    return {**endpoints(path, start), "git_commit": commit}


def add_ratios(points: list[dict]) -> None:
    """Ratios to the dose-0 point of the same row (in place); nothing when the row has no dose 0."""
    base = next((p for p in points if p["dose_mg_per_kg"] == 0), None)
    if base is None:
        return
    for p in points:
        for name, key in RATIO_KEYS.items():
            p[name] = p[key] / base[key] if base[key] != 0 else math.inf


def summarise_row(points: list[dict], tol: float, study_dose: float) -> dict:
    doses = [p["dose_mg_per_kg"] for p in points]
    burden = [p["metastatic_burden"] for p in points]
    row: dict = {"turning_points": turning_points(doses, burden)}
    if "burden_over_ptx" not in points[0]:
        return row
    positive = [p for p in points if p["dose_mg_per_kg"] > 0]
    ratios = [p["burden_over_ptx"] for p in positive]
    signs = effect_signs(ratios, tol)
    for p, s in zip(positive, signs, strict=True):
        p["effect_sign"] = s
    low = min(positive, key=lambda p: p["burden_over_ptx"])
    top = max(positive, key=lambda p: p["dose_mg_per_kg"])
    at_study = next((p for p in positive if math.isclose(p["dose_mg_per_kg"], study_dose)), None)
    raising = [p["dose_mg_per_kg"] for p in positive if p["burden_over_ptx"] > 1 + tol]
    row.update(
        {
            "effect_sign_by_dose": {
                f"{p['dose_mg_per_kg']:g}": SIGN_WORD[s] for p, s in zip(positive, signs, strict=True)
            },
            "sign_changes_along_dose": sign_changes([p["dose_mg_per_kg"] for p in positive], ratios, tol, log_x=True),
            "lowest_dose_raising_metastasis_above_ptx_alone": min(raising) if raising else None,
            "min_burden_ratio": low["burden_over_ptx"],
            "dose_of_min_burden_ratio": low["dose_mg_per_kg"],
            "burden_ratio_at_highest_dose": top["burden_over_ptx"],
            "highest_dose_mg_per_kg": top["dose_mg_per_kg"],
        }
    )
    if at_study is not None:
        row["burden_ratio_at_study_dose"] = at_study["burden_over_ptx"]
        row["target_2_burden_ratio_ge_1.5_at_study_dose"] = at_study["burden_over_ptx"] >= 1.5
    return row


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------


def _dose_positions(doses: np.ndarray) -> tuple[np.ndarray, float | None]:
    """x positions on a log axis; dose 0 is put one decade below the smallest dose (shown apart)."""
    positive = doses[doses > 0]
    zero_at = positive.min() / 10 if positive.size else 1.0
    return np.where(doses > 0, doses, zero_at), (zero_at if (doses == 0).any() else None)


def _mark_zero(ax, zero_at, doses):
    if zero_at is None:
        return
    positive = doses[doses > 0]
    split = math.sqrt(zero_at * positive.min()) if positive.size else zero_at * 3
    ax.axvline(split, color="k", lw=0.6, ls=":")
    ticks = [zero_at, *[10.0**k for k in range(-6, 4) if positive.min() <= 10.0**k <= positive.max()]]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0\n(PTX)", *[f"{t:g}" for t in ticks[1:]]])
    ax.minorticks_off()


def figure_2d(results: list[dict], path: Path) -> None:
    """One row of panels per sweep: burden ratio against dose, and the sign map over dose × value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(results), 2, figsize=(12.5, 4.6 * len(results)), constrained_layout=True, squeeze=False
    )
    for result, (ax, bx) in zip(results, axes, strict=True):
        _panels_2d(fig, ax, bx, result)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panels_2d(fig, ax, bx, result: dict) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    tol = result["sign_tolerance"]
    doses = np.array(result["doses_mg_per_kg"], float)
    values = result["values"]
    grid = np.array(result["burden_ratio_grid"], float)
    x, zero_at = _dose_positions(doses)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(values)))
    for v, c, ratios in zip(values, colours, grid, strict=True):
        ax.plot(x, ratios, "o-", color=c, ms=4, label=f"{result['param']} = {v:g}")
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.9, ls="--")
    ax.axhline(1.5, color="tab:red", lw=0.7, ls=":", label="target 2 (1.5)")
    _mark_zero(ax, zero_at, doses)
    ax.set_xlabel("anakinra dose (mg/kg/day)")
    ax.set_ylabel("metastatic burden / PTX alone (same row)")
    fixed = ", ".join(o.removeprefix("parameters.") for o in result.get("overrides", []))
    ax.set_title(f"{fixed or 'no overrides'}; all else default", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    cols = np.flatnonzero(doses > 0)
    sub = grid[:, cols] - 1.0
    # each side of 0 saturates on its own extreme: the map is about the sign, not the size
    norm = TwoSlopeNorm(0.0, min(float(np.nanmin(sub)), -1e-3), max(float(np.nanmax(sub)), 1e-3))
    mesh = bx.pcolormesh(sub, cmap="RdBu_r", norm=norm)
    for i in range(sub.shape[0]):
        for j in range(sub.shape[1]):
            s = effect_signs([sub[i, j] + 1.0], tol)[0]
            bx.text(
                j + 0.5,
                i + 0.5,
                f"{'+−0'[[1, -1, 0].index(s)]}\n{sub[i, j] + 1:.3f}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if abs(norm(sub[i, j]) - 0.5) > 0.35 else "black",
            )
    for b in result["boundary_by_dose"]:
        j = int(np.flatnonzero(doses[cols] == b["dose_mg_per_kg"])[0])
        for c in b["crossings"]:
            # rows are evenly spaced: place the value piecewise-linearly between row centres
            y = float(np.interp(c["at_interpolated"], values, np.arange(len(values)))) + 0.5
            bx.plot([j, j + 1], [y, y], color="k", lw=2)
    bx.set_xticks(np.arange(len(cols)) + 0.5, [f"{d:g}" for d in doses[cols]])
    bx.set_yticks(np.arange(len(values)) + 0.5, [f"{v:g}" for v in values])
    bx.set_xlabel("anakinra dose (mg/kg/day)")
    bx.set_ylabel(result["param"])
    bx.set_title(
        f"sign of anakinra's effect on metastasis (burden ratio − 1; 0: within ±{tol:g});\n"
        f"black bar: {result['param']} where the sign changes (interpolated)",
        fontsize=9,
    )
    fig.colorbar(mesh, ax=bx, label="burden ratio − 1")


def figure_1d(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doses = np.array([r["dose_mg_per_kg"] for r in rows])
    base = rows[0] if rows[0]["dose_mg_per_kg"] == 0 else None
    x, zero_at = _dose_positions(doses)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for ax, key, label in zip(
        axes,
        ("metastatic_burden", "tumor_volume", "m2_fraction"),
        ("metastatic burden (cells)", "primary tumour", "M2 fraction in tumour"),
        strict=True,
    ):
        ax.semilogx(x, [r[key] for r in rows], "o-")
        if base is not None:
            ax.axhline(base[key], color="grey", ls="--", lw=0.8, label="PTX alone")
        _mark_zero(ax, zero_at, doses)
        ax.set_xlabel("anakinra dose (mg/kg/day)")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015/sweep")
    parser.add_argument("--doses", nargs="+", type=float, default=[0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 50.0])
    parser.add_argument("--param", help="model parameter of the second axis (overridden as parameters.NAME)")
    parser.add_argument("--values", nargs="+", type=float, help="values of --param, one row each")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override, all runs")
    parser.add_argument("--tol", type=float, default=1e-3, help="|ratio − 1| ≤ tol counts as no effect (sign 0)")
    parser.add_argument(
        "--replot",
        nargs="+",
        metavar="SWEEP_JSON",
        help="run nothing: draw the 2D sweeps of these sweep.json files, one row each, into -o (a .png path)",
    )
    args = parser.parse_args(argv)
    if args.replot:
        figure_2d([json.loads(Path(p).read_text()) for p in args.replot], Path(args.output))
        print(f"wrote {args.output}")
        return 0
    if (args.param is None) != (args.values is None):
        parser.error("--param and --values go together")
    doses = sorted(set(args.doses))
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    arm_entry = tomllib.loads((HERE / "ptx_anakinra.toml").read_text())["dosing"]["anakinra"][0]
    study_dose = float(arm_entry["dose_mg_per_kg"])
    key = None
    if args.param is not None:
        key = args.param if "." in args.param else f"parameters.{args.param}"
    values = sorted(set(args.values)) if args.values else [None]

    rows, points_by_value = [], []
    paths = iter(run_points(outdir, args.set, key, values, doses))
    for value in values:
        points = []
        for dose in doses:
            path = next(paths)
            point = {"dose_mg_per_kg": dose, **record(path), "h5": str(path)}
            if key:
                point = {"param": args.param, "value": value, **point}
            points.append(point)
        add_ratios(points)
        points_by_value.append((value, points, summarise_row(points, args.tol, study_dose)))
        rows.extend(points)

    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    result: dict = {
        "command": command,
        "overrides": args.set,
        "doses_mg_per_kg": doses,
        "study_dose_mg_per_kg": study_dose,
        "sign_tolerance": args.tol,
        "effect": "sign of (metastatic burden with anakinra / burden with PTX alone, same row) − 1",
        "git_commits_of_runs": sorted({p["git_commit"] for p in rows}),
        "rows": rows,
    }
    if key is None:
        summary = points_by_value[0][2]
        result.update(summary)
        result["turning_points"] = summary["turning_points"]
    else:
        has_base = 0.0 in doses
        result.update(
            {
                "param": args.param,
                "param_key": key,
                "values": values,
                "fixed_label": ", ".join(args.set),
                "by_value": [{"value": v, **s} for v, _, s in points_by_value],
            }
        )
        if has_base:
            grid = np.array([[p["burden_over_ptx"] for p in pts] for _, pts, _ in points_by_value])
            result["burden_ratio_grid"] = grid.tolist()
            result["boundary_by_dose"] = boundary_by_dose(values, grid, doses, args.tol)
            if study_dose in doses:
                # target 2 (burden ratio ≥ 1.5 at the study's dose): where it stops holding along the value axis
                column = grid[:, doses.index(study_dose)]
                where = {"raises": "above 1.5", "lowers": "below 1.5"}
                result["target_2_at_study_dose"] = {
                    "ratios": dict(zip((f"{v:g}" for v in values), column.tolist(), strict=True)),
                    "holds_for": [v for v, r in zip(values, column, strict=True) if r >= 1.5],
                    "crossings_of_1.5": [
                        {**c, "ratios": [r * 1.5 for r in c["ratios"]], "from": where[c["from"]], "to": where[c["to"]]}
                        for c in sign_changes(values, column / 1.5)
                    ],
                }
            result["boundary_note"] = (
                f"at_interpolated: the {args.param} where the burden ratio crosses 1, interpolated linearly "
                "in the ratio between the two bracketing values that were run (not itself a run)"
            )
    (outdir / "sweep.json").write_text(json.dumps(result, indent=2))

    if key is None:
        figure_1d(rows, outdir / "sweep.png")
    elif "boundary_by_dose" in result:
        figure_2d([result], outdir / "sweep.png")

    for value, points, summary in points_by_value:
        if key:
            print(f"--- {args.param} = {value:g}")
        for p in points:
            ratio = f" ratio {p['burden_over_ptx']:.4f}" if "burden_over_ptx" in p else ""
            print(
                f"dose {p['dose_mg_per_kg']:g} mg/kg: burden {p['metastatic_burden']:.4g}{ratio} "
                f"tumour {p['tumor_volume']:.4g} M2 fraction {p['m2_fraction']:.3f} "
                f"leakiness {p['mean_leakiness']:.3f}"
            )
        changes = summary.get("sign_changes_along_dose")
        if changes is not None:
            text = "; ".join(
                f"{c['from']} → {c['to']} between {c['between'][0]:g} and {c['between'][1]:g}" for c in changes
            )
            print("sign changes along dose:", text or "none")
        print("turning points:", summary["turning_points"] or "none (monotone over the doses swept)")
    for b in result.get("boundary_by_dose", []):
        text = "; ".join(
            f"{c['from']} → {c['to']} at {args.param} ≈ {c['at_interpolated']:.3g} (interpolated, between "
            f"{c['between'][0]:g} and {c['between'][1]:g})"
            for c in b["crossings"]
        )
        print(f"dose {b['dose_mg_per_kg']:g}: {text or 'no sign change over the values swept'}")
    print(f"wrote {outdir / 'sweep.json'} and {outdir / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
