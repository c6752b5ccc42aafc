"""Uncertainty of the Voloshin 2015 findings: a Latin hypercube over every uncertain parameter.

Usage::

    python experiments/voloshin2015/uncertainty.py [-o out/voloshin2015/uncertainty] [--samples 256]
        [--ko-samples 64] [--grid 24] [--dt 0.025] [--seed 0] [--batch 64] [--set section.key=value ...]
    python experiments/voloshin2015/uncertainty.py -o DIR --analyse-only   # re-read the files, redo figures

The parameter ranges are defined once, in the metadata of ``Parameters`` (``plausible`` in
``src/tumorfield/models/voloshin2015/parameters.py``: a source's range, or ×1/2–×2 of the
default where the value is assumed); every parameter with a range is drawn log-uniformly.
Each arm of the study runs on the same parameter sets through the sweep machinery
(``tumorfield.sweep.SweepRunner``: one ``tumorfield sweep`` file per arm, vmapped batches,
one HDF5 file per member): ``vehicle``, ``ptx`` and ``ptx_anakinra`` on all ``--samples``
sets (design ``lhs``, one seed, so the arms share the sets), the knockouts and ``anakinra`` on
the first ``--ko-samples`` of them (design ``list``, values read back from the manifest).
The default parameter set runs once per arm on the same grid (``reproduce.run_arm``).

Everything reported is read back from the HDF5 member files (``analysis.endpoints``), never
from memory: for each target of brief §5 the fraction of sets where it holds (an undefined
ratio or a tumour that does not grow under treatment fails), the median and 5–95 % interval of
each ratio, the percentile of the default set in each distribution, and partial rank
correlation coefficients (PRCC; Marino et al., J Theor Biol 2008;254:178) of every parameter
with each ratio. Writes ``DIR/uncertainty.json`` and ``DIR/figures/``.

A driver, not a file reader (``docs/architecture.md``): it imports the application to read the
parameter ranges and to run the sweeps; its analysis (``--analyse-only``) reads only files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import TARGET_NAMES, endpoints, jsonable, ratios, targets  # noqa: E402

MAIN_ARMS = ("vehicle", "ptx", "ptx_anakinra")
SMALL_ARMS = ("anakinra", "il1b_ko_ptx", "il1r_ko_ptx")
WINDOW_START = 3.0
"""Day of the first dose in every treated arm (checked against the stored configs)."""

REPORTED_RATIOS = {
    "tumour PTX+ana/PTX": "ptx_anakinra/ptx tumor_volume",
    "burden PTX+ana/PTX": "ptx_anakinra/ptx metastatic_burden",
    "M2 count PTX+ana/PTX": "ptx_anakinra/ptx m2_tumor",
    "M2 fraction PTX+ana/PTX": "ptx_anakinra/ptx m2_fraction",
    "leakiness PTX+ana/PTX": "ptx_anakinra/ptx mean_leakiness",
    "IL1β tissue PTX/vehicle": "ptx/vehicle il1b_mean_window",
    "IL1β production PTX/vehicle": "ptx/vehicle il1b_production_window",
}
SENSITIVITY_OF = ("burden PTX+ana/PTX", "tumour PTX+ana/PTX", "M2 fraction PTX+ana/PTX", "leakiness PTX+ana/PTX")


def uncertain_parameters() -> dict[str, tuple[float, float, float]]:
    """``name → (default, low, high)`` of every parameter with a plausible range (from the metadata)."""
    from tumorfield.models.voloshin2015.parameters import parameter_fields, plausible_range

    out = {}
    for f in parameter_fields():
        span = plausible_range(f)
        if span is not None and span[0] < span[1]:
            out[f.name] = (float(f.default), float(span[0]), float(span[1]))
    return out


def _toml_value(value) -> str:
    return json.dumps(value)


def write_sweep(path: Path, arm: str, design: str, common: list[str], batch: int, seed: int, *, ranges=None,
                values=None, samples: int = 0) -> None:  # fmt: skip
    """A ``tumorfield sweep`` file for ``arm``: an ``lhs`` over ``ranges`` or a ``list`` of ``values``."""
    lines = [
        "[sweep]",
        f"base = {_toml_value(str(HERE / f'{arm}.toml'))}",
        f'design = "{design}"',
        f"samples = {samples}",
        f"seed = {seed}",
        f"batch = {batch}",
        f"set = {json.dumps(common)}",
        "[sweep.parameters]",
    ]
    if design == "lhs":
        for name, (_, low, high) in ranges.items():
            lines.append(f'"parameters.{name}" = {{ lower = {low!r}, upper = {high!r}, scale = "log" }}')
    else:
        for name, column in values.items():
            lines.append(f'"parameters.{name}" = {json.dumps(column)}')
    path.write_text("\n".join(lines) + "\n")


def read_manifest(directory: Path) -> list[dict]:
    with open(directory / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_sweeps(root: Path, args) -> dict:
    """Run every arm's sweep (skipping complete members) and the default set; returns timings."""
    from reproduce import run_arm

    from tumorfield.sweep import SweepRunner

    common = [f"grid.shape=[{args.grid},{args.grid}]", f"time.dt={args.dt}", "time.save_every=21.0",
              'run.progress="none"', *args.set]  # fmt: skip
    ranges = uncertain_parameters()
    timings = {}
    for arm in MAIN_ARMS:
        sweep = root / f"sweep_{arm}.toml"
        write_sweep(sweep, arm, "lhs", common, args.batch, args.seed, ranges=ranges, samples=args.samples)
        started = time.perf_counter()
        SweepRunner(sweep, root / arm, log=lambda *a: None).run()
        timings[arm] = time.perf_counter() - started
        print(f"{arm}: {args.samples} members in {timings[arm]:.0f} s", flush=True)
    rows = read_manifest(root / MAIN_ARMS[0])
    for arm in MAIN_ARMS[1:]:
        other = read_manifest(root / arm)
        if [[r[f"parameters.{n}"] for n in ranges] for r in rows] != [
            [r[f"parameters.{n}"] for n in ranges] for r in other
        ]:
            raise SystemExit(f"{arm}: its Latin hypercube differs from {MAIN_ARMS[0]}'s (same seed, same ranges?)")
    k = min(args.ko_samples, args.samples)
    if k > 0:
        values = {n: [json.loads(r[f"parameters.{n}"]) for r in rows[:k]] for n in ranges}
        for arm in SMALL_ARMS:
            sweep = root / f"sweep_{arm}.toml"
            write_sweep(sweep, arm, "list", common, args.batch, args.seed, values=values)
            started = time.perf_counter()
            SweepRunner(sweep, root / arm, log=lambda *a: None).run()
            timings[arm] = time.perf_counter() - started
            print(f"{arm}: {k} members in {timings[arm]:.0f} s", flush=True)
    if args.no_default:
        return timings
    default_dir = root / "default"
    default_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for arm in (*MAIN_ARMS, *SMALL_ARMS):
        run_arm(arm, default_dir, common)
    timings["default (6 arms)"] = time.perf_counter() - started
    return timings


# --- analysis (HDF5 files only) ----------------------------------------------------------------


def _member_endpoints(directory: Path) -> list[dict | None]:
    """Endpoints of every member of one arm's sweep, None for a member that did not complete."""
    out = []
    for row in read_manifest(directory):
        path = directory / row["file"]
        if row["status"] != "complete" or not path.exists():
            out.append(None)
            continue
        from tumorfield.io import open_trajectory

        with open_trajectory(path) as run:
            dosing = run.config.get("dosing", {})
        starts = [e["time"] for doses in dosing.values() for e in doses]
        if starts and min(starts) != WINDOW_START:
            raise SystemExit(f"{path}: first dose at day {min(starts)}, the analysis assumes {WINDOW_START}")
        out.append(endpoints(path, WINDOW_START))
    return out


def prcc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Partial rank correlation of each column of ``x`` with ``y`` (rows with finite ``y`` only):
    ranks, then the correlation of the residuals of ``x_j`` and ``y`` after linear regression on the
    other columns (Marino et al. 2008). Needs more rows than columns."""
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    n, p = x.shape
    if n <= p + 1:
        return np.full(p, np.nan)
    rx = np.argsort(np.argsort(x, axis=0), axis=0).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    out = np.empty(p)
    for j in range(p):
        others = np.column_stack([np.ones(n), np.delete(rx, j, axis=1)])
        res_x = rx[:, j] - others @ np.linalg.lstsq(others, rx[:, j], rcond=None)[0]
        res_y = ry - others @ np.linalg.lstsq(others, ry, rcond=None)[0]
        out[j] = np.corrcoef(res_x, res_y)[0, 1]
    return out


def _quantiles(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": int(values.size), "undefined": int(values.size)}
    q5, q50, q95 = np.percentile(finite, [5, 50, 95])
    return {"n": int(values.size), "undefined": int(values.size - finite.size), "median": float(q50),
            "p5": float(q5), "p95": float(q95)}  # fmt: skip


def _fraction(flags: list[bool]) -> dict:
    """Fraction of sets where a target holds, with a 95 % Wilson interval (binomial; sets count as trials)."""
    n, k = len(flags), int(sum(flags))
    if n == 0:
        return {"n": 0}
    p, z = k / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"n": n, "holds": k, "fraction": p, "ci95": [centre - half, centre + half]}


def analyse(root: Path) -> dict:
    """Fractions, distributions, the default's percentiles and PRCCs, from the member files."""
    ranges = uncertain_parameters()
    arms = [a for a in (*MAIN_ARMS, *SMALL_ARMS) if (root / a / "manifest.csv").exists()]
    members = {arm: _member_endpoints(root / arm) for arm in arms}
    rows = read_manifest(root / MAIN_ARMS[0])
    x = np.log(np.array([[float(json.loads(r[f"parameters.{n}"])) for n in ranges] for r in rows]))
    n_sets = len(rows)
    k_small = min((len(members[a]) for a in SMALL_ARMS if a in members), default=0)
    per_set, flags = [], {}
    for i in range(n_sets):
        ep = {arm: members[arm][i] for arm in arms if i < len(members[arm])}
        failed = [arm for arm, e in ep.items() if e is None]
        ep = {arm: e for arm, e in ep.items() if e is not None}
        r = ratios(ep)
        t = targets(r, ep)
        per_set.append({"ratios": r, "targets": t, "failed_arms": failed})
        for number, name in TARGET_NAMES.items():
            if number in (6, 7, 8) and i >= k_small:
                continue  # the knockouts and anakinra alone ran on the first k_small sets only
            flags.setdefault(name, []).append(bool(t.get(name, {}).get("pass", False)))
    fractions = {name: _fraction(f) for name, f in flags.items()}
    distributions, columns = {}, {}
    for label, key in REPORTED_RATIOS.items():
        columns[label] = np.array([s["ratios"].get(key, math.nan) for s in per_set], dtype=float)
        distributions[label] = _quantiles(columns[label])
    alive = np.array([s["targets"].get(TARGET_NAMES[1], {}).get("treated_tumours_growing", False) for s in per_set])
    # the default parameter set, on the same grid
    default = {}
    if (root / "default").exists():
        paths = {arm: root / "default" / f"{arm}.h5" for arm in arms if (root / "default" / f"{arm}.h5").exists()}
        dep = {arm: endpoints(p, WINDOW_START) for arm, p in paths.items()}
        dr = ratios(dep)
        dt = targets(dr, dep)
        default = {"targets": {k: v["pass"] for k, v in dt.items()}, "ratios": {}}
        for label, key in REPORTED_RATIOS.items():
            value, col = dr.get(key, math.nan), columns[label]
            finite = col[np.isfinite(col)]
            pct = float(np.mean(finite < value) * 100) if finite.size and math.isfinite(value) else math.nan
            default["ratios"][label] = {"value": value, "percentile": pct}
    sensitivity = {}
    for label in SENSITIVITY_OF:
        y = np.log(columns[label])
        coefficients = prcc(x, y)
        order = np.argsort(-np.abs(np.nan_to_num(coefficients)))
        sensitivity[label] = [{"parameter": list(ranges)[j], "prcc": float(coefficients[j])} for j in order]
    return {
        "sets": n_sets,
        "small_arm_sets": k_small,
        "parameters": {n: {"default": d, "low": lo, "high": hi} for n, (d, lo, hi) in ranges.items()},
        "fraction_holding": fractions,
        "treated_tumours_growing": _fraction(list(alive)),
        "distributions": distributions,
        "target_1_size_median_in_0.7_0.95": bool(
            0.7 <= distributions["tumour PTX+ana/PTX"].get("median", math.nan) <= 0.95
        ),
        "default": default,
        "prcc": sensitivity,
        "failed_members": {arm: int(sum(e is None for e in members[arm])) for arm in arms},
        "_columns": columns,
        "_x": x,
    }


def compare(fine: Path, coarse: Path) -> dict:
    """Per-set relative change of each reported ratio, and agreement of every target's verdict,
    between two runs of this script on the same sets (e.g. 32² and 24²), from their member files."""
    a, b = analyse(fine), analyse(coarse)
    if not np.array_equal(a["_x"], b["_x"]):
        raise SystemExit(f"{fine} and {coarse} hold different parameter sets")
    out = {"fine": str(fine), "coarse": str(coarse), "ratios": {}, "targets": {}}
    for label in REPORTED_RATIOS:
        x, y = a["_columns"][label], b["_columns"][label]
        change = np.abs(y - x) / np.abs(x)
        change = change[np.isfinite(change)]
        out["ratios"][label] = {"median": float(np.median(change)), "max": float(np.max(change))}
    for name, f in a["fraction_holding"].items():
        g = b["fraction_holding"].get(name, {})
        out["targets"][name] = {"fine": f.get("fraction"), "coarse": g.get("fraction")}
    return out


def figures(result: dict, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    columns, written = result["_columns"], []
    labels = list(REPORTED_RATIOS)
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), constrained_layout=True)
    for ax, label in zip(axes.flat, labels, strict=False):
        values = columns[label][np.isfinite(columns[label])]
        ax.hist(np.log10(values), bins=30, color="0.6")
        ax.axvline(0.0, color="k", lw=1)
        d = result["default"].get("ratios", {}).get(label)
        if d and math.isfinite(d["value"]):
            ax.axvline(math.log10(d["value"]), color="C3", lw=2, label=f"default ({d['percentile']:.0f}th pct)")
            ax.legend(fontsize=8)
        ax.set_xlabel(f"log10 {label}")
    axes.flat[-1].axis("off")
    path = outdir / "voloshin_uncertainty_ratios.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    fig, axes = plt.subplots(1, len(SENSITIVITY_OF), figsize=(4.2 * len(SENSITIVITY_OF), 4.5), constrained_layout=True)
    for ax, label in zip(axes, SENSITIVITY_OF, strict=True):
        top = result["prcc"][label][:12][::-1]
        ax.barh([t["parameter"] for t in top], [t["prcc"] for t in top], color="C0")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-1, 1)
        ax.set_title(f"PRCC with log {label}", fontsize=9)
    path = outdir / "voloshin_uncertainty_prcc.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015/uncertainty")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--ko-samples", type=int, default=64)
    parser.add_argument("--grid", type=int, default=24, help="cells per side of the 8×8 mm box")
    parser.add_argument("--dt", type=float, default=0.025, help="day (the recorded results use 0.025)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="largest vmap batch")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument("--no-default", action="store_true", help="skip the runs at the default parameters")
    parser.add_argument("--compare-to", metavar="FINE_DIR", help="only compare -o's sets with FINE_DIR's")
    args = parser.parse_args(argv)
    root = Path(args.output)
    if args.compare_to:
        result = compare(Path(args.compare_to), root)
        (root / f"compare_to_{Path(args.compare_to).name}.json").write_text(json.dumps(result, indent=2))
        for label, c in result["ratios"].items():
            print(f"{label}: relative change median {c['median']:.2%}, max {c['max']:.2%}")
        for name, c in result["targets"].items():
            print(f"{name}: fine {c['fine']}, coarse {c['coarse']}")
        return 0
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings = {} if args.analyse_only else run_sweeps(root, args)
    result = analyse(root)
    result["timings_s"] = {**timings, "total": time.perf_counter() - started}
    result["command"] = " ".join(["python", "experiments/voloshin2015/uncertainty.py", *(argv or sys.argv[1:])])
    figures(result, root / "figures")
    (root / "uncertainty.json").write_text(json.dumps(jsonable(result), indent=2))
    for name, f in result["fraction_holding"].items():
        if f.get("n"):
            print(f"{f['fraction']:6.1%} of {f['n']} sets (95 % CI {f['ci95'][0]:.0%}–{f['ci95'][1]:.0%}): {name}")
    for label, d in result["distributions"].items():
        if "median" in d:
            pct = result["default"].get("ratios", {}).get(label, {})
            print(f"{label}: median {d['median']:.3g} [5–95 %: {d['p5']:.3g}–{d['p95']:.3g}], "
                  f"{d['undefined']} undefined; default {pct.get('value', math.nan):.3g} "
                  f"({pct.get('percentile', math.nan):.0f}th percentile)")  # fmt: skip
    for label, ranking in result["prcc"].items():
        print(f"PRCC {label}: " + ", ".join(f"{t['parameter']} {t['prcc']:+.2f}" for t in ranking[:6]))
    print(f"summary: {root / 'uncertainty.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
