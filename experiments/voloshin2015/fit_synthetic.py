"""Fit four parameters shared by the six arms of the study to synthetic observations; report recovery.

Usage::

    python experiments/voloshin2015/fit_synthetic.py [-o out/voloshin2015_fit] [--seed 0]
        [--set grid.shape=[32,32] --set time.dt=0.05 ...]

1. runs every arm at the configs' parameters (the truth) with ``tumorfield run``;
2. samples observations from those files (``fit/observations.py``: tumour volume twice a week,
   metastatic burden at days 14 and 21, the M2 fraction at day 21, lognormal noise);
3. fits ``r_n``, ``delta_p``, ``a_iv``, ``k_i`` jointly with ``tumorfield fit fit/fit.toml``;
4. reads ``FIT.h5`` back: recovery (estimate − truth in standard errors), the Gauss–Newton
   standard errors and correlations, which parameters these observables cannot pin down, and
   one figure per arm of data against prediction (``figures/<arm>.png``), all from the file.

Writes ``<out>/truth/<arm>.h5``, ``observations.csv``, ``FIT.h5``, ``fit.log``, ``report.json`` and
``figures/``. ``--set`` overrides go to every arm, in both the truth runs and the fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "fit"))

from analysis import ARMS  # noqa: E402
from observations import SCHEDULE, sample  # noqa: E402
from reproduce import run_arm  # noqa: E402

from tumorfield.io import open_trajectory  # noqa: E402

FIT_FILE = HERE / "fit" / "fit.toml"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def truth(paths: dict[str, Path], names) -> dict[str, float]:
    """The fitted parameters' values in the truth runs, from their stored (resolved) configs."""
    values = []
    for path in paths.values():
        with open_trajectory(path) as run:
            values.append(tomllib.loads(run.config_text)["parameters"])
    found = {name: values[0][name] for name in names}
    assert all(v[name] == found[name] for v in values for name in names), "arms disagree on the truth"
    return found


def fit(observations: Path, out: Path, overrides: list[str]) -> str:
    """``tumorfield fit`` in a subprocess; its stdout (the table) is returned, stderr goes to fit.log."""
    command = [
        sys.executable,
        "-m",
        "tumorfield.cli",
        "fit",
        str(FIT_FILE),
        "-o",
        str(out / "FIT.h5"),
        "--overwrite",
        "--set",
        f'fit.data="{observations.resolve()}"',
    ]
    for item in ["run.progress=none", *overrides]:
        command += ["--set", item]
    with (out / "fit.log").open("w") as log:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tumorfield fit failed (exit {result.returncode}); see {out / 'fit.log'}")
    return result.stdout


def report(path: Path, true_values: dict[str, float]) -> dict:
    """Recovery and identifiability, from ``FIT.h5``."""
    with h5py.File(path) as h5:
        names = [_text(n) for n in h5["fit/parameters"][()]]
        estimate, se, corr = h5["fit/estimate"][()], h5["fit/std_error"][()], h5["fit/correlation"][()]
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items() if k != "config"}
    rows = {}
    for i, name in enumerate(names):
        z = (estimate[i] - true_values[name]) / se[i] if np.isfinite(se[i]) and se[i] > 0 else float("nan")
        rows[name] = {
            "truth": true_values[name],
            "estimate": float(estimate[i]),
            "std_error": float(se[i]),
            "relative_se": float(se[i] / abs(estimate[i])),
            "z": float(z),
            "within_3_se": bool(abs(z) < 3),
        }
    pairs = [(names[i], names[j], float(corr[i, j])) for i in range(len(names)) for j in range(i + 1, len(names))]
    poorly = [n for n, r in rows.items() if not r["relative_se"] <= 0.5]
    correlated = [(a, b, c) for a, b, c in pairs if abs(c) > 0.95]
    return {
        "parameters": rows,
        "correlations": pairs,
        "not_pinned_down": poorly,
        "strongly_correlated": correlated,
        "fit": attrs,
    }


def figures(path: Path, outdir: Path) -> list[Path]:
    """One figure per arm: every observed series (prediction at the estimate) with its data (±σ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    with h5py.File(path) as h5:
        data = {k: h5[f"fit/data/{k}"][()] for k in ("arm", "observable", "t", "value", "sigma")}
        arm_of, name_of = np.array([_text(a) for a in data["arm"]]), np.array([_text(o) for o in data["observable"]])
        for arm in h5["fit/prediction"]:
            prediction = h5[f"fit/prediction/{arm}"]
            observables = [name for name in SCHEDULE if name in prediction]
            fig, axes = plt.subplots(1, len(observables), figsize=(4 * len(observables), 3.2), squeeze=False)
            for ax, name in zip(axes[0], observables, strict=True):
                ax.plot(prediction["t"][()], prediction[name][()], color="C0", label="fit")
                rows = (arm_of == arm) & (name_of == name)
                value, sigma = data["value"][rows], data["sigma"][rows]
                ax.errorbar(
                    data["t"][rows],
                    value,
                    yerr=[value * (1 - np.exp(-sigma)), value * (np.exp(sigma) - 1)],
                    fmt="o",
                    color="k",
                    ms=4,
                    label="data",
                )
                ax.set(title=f"{arm}: {name}", xlabel="day", yscale="log" if name == "metastatic_burden" else "linear")
            axes[0][0].legend()
            fig.tight_layout()
            written.append(outdir / f"{arm}.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015_fit", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override, all arms")
    parser.add_argument("--seed", type=int, default=0, help="seed of the observation noise")
    args = parser.parse_args(argv)
    out = Path(args.output)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    paths = {arm: run_arm(arm, out / "truth", args.set) for arm in ARMS}
    observations = sample(paths, out / "observations.csv", seed=args.seed)
    table = fit(observations, out, args.set)
    print(table)
    with FIT_FILE.open("rb") as handle:
        names = list(tomllib.load(handle)["fit"]["parameters"])
    result = report(out / "FIT.h5", truth(paths, names))
    result["overrides"], result["seed"] = args.set, args.seed
    result["figures"] = [str(p) for p in figures(out / "FIT.h5", out / "figures")]
    (out / "report.json").write_text(json.dumps(result, indent=2))
    for name, row in result["parameters"].items():
        print(
            f"{name:>8}: truth {row['truth']:.4g}, estimate {row['estimate']:.4g} ± {row['std_error']:.3g} "
            f"({row['relative_se']:.0%}), z = {row['z']:+.2f}{'' if row['within_3_se'] else '  <-- beyond 3 SE'}"
        )
    if result["not_pinned_down"] or result["strongly_correlated"]:
        print(
            "not pinned down by these observables:",
            ", ".join(result["not_pinned_down"]) or "—",
            "; correlated beyond 0.95:",
            ", ".join(f"{a}~{b} ({c:+.3f})" for a, b, c in result["strongly_correlated"]) or "—",
        )
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
