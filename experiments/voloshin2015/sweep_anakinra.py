"""Dose–response of anakinra under paclitaxel: where does metastasis turn from falling to rising?

Usage::

    python experiments/voloshin2015/sweep_anakinra.py [-o out/voloshin2015/sweep] [--doses 0 1 3 10 30 100]
        [--set grid.shape=[32,32] ...]

Runs ``ptx_anakinra.toml`` once per daily anakinra dose (mg/kg, i.p., same days as
the arm) through ``tumorfield run --set dosing.anakinra=[...]``, reads the HDF5
files only, and writes ``sweep.json`` and ``sweep.png``: primary tumour,
metastatic burden and M2 fraction against dose, relative to paclitaxel alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import endpoints, first_dose_time, read_config  # noqa: E402
from reproduce import run_arm  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015/sweep")
    parser.add_argument("--doses", nargs="+", type=float, default=[0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 30.0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    import tomllib

    arm = tomllib.loads((HERE / "ptx_anakinra.toml").read_text())["dosing"]["anakinra"][0]
    rows = []
    for dose in args.doses:
        if dose > 0:
            entry = {**arm, "dose_mg_per_kg": dose}
            inline = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items()) + "}"
            overrides = [*args.set, f"dosing.anakinra=[{inline}]"]
        else:
            overrides = [*args.set, "dosing.anakinra=[]"]
        tag = f"dose_{dose:g}"
        path = run_arm("ptx_anakinra", outdir, overrides)
        path = path.rename(outdir / f"{tag}.h5")
        start = first_dose_time(read_config(path)) or 0.0
        ep = endpoints(path, start)
        rows.append({"dose_mg_per_kg": dose, **ep})
    base = rows[0] if rows[0]["dose_mg_per_kg"] == 0 else None
    burden = np.array([r["metastatic_burden"] for r in rows])
    doses = np.array([r["dose_mg_per_kg"] for r in rows])
    slope = np.sign(np.diff(burden))
    turns = [
        {"between_mg_per_kg": [float(doses[i]), float(doses[i + 2])], "from": "falling", "to": "rising"}
        for i in range(len(slope) - 1)
        if slope[i] < 0 < slope[i + 1]
    ]
    result = {"rows": rows, "turning_points": turns}
    if base is not None:
        above = [float(d) for d, b in zip(doses, burden, strict=True) if b > base["metastatic_burden"] and d > 0]
        result["lowest_dose_raising_metastasis_above_ptx_alone"] = min(above) if above else None
        for r in rows:
            r["burden_over_ptx"] = r["metastatic_burden"] / base["metastatic_burden"]
            r["tumor_over_ptx"] = r["tumor_volume"] / base["tumor_volume"]
    (outdir / "sweep.json").write_text(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.where(doses > 0, doses, doses[doses > 0].min() / 3 if (doses > 0).any() else 1.0)
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
        ax.set_xlabel("anakinra dose (mg/kg/day; leftmost point = 0)")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.savefig(outdir / "sweep.png", dpi=110)
    for r in rows:
        print(
            f"dose {r['dose_mg_per_kg']:g} mg/kg: burden {r['metastatic_burden']:.4g} "
            f"tumour {r['tumor_volume']:.4g} M2 fraction {r['m2_fraction']:.3f}"
        )
    print("turning points:", turns or "none (monotone over the doses swept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
