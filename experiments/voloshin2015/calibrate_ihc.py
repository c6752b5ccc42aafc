"""Calibrate IL1 and macrophage parameters of voloshin2015 from day-21 tumour and M2 density maps (IHC).

Usage::

    python experiments/voloshin2015/calibrate_ihc.py [--out out/voloshin2015_ihc] [--quick]
        [--cells 32] [--refine 2] [--dt 0.05] [--truth-dt 0.02] [--max-iterations 40] [--seed 0]

1. **Truth**: the paclitaxel arm ``ptx.toml`` and the paclitaxel + anakinra arm ``ptx_anakinra.toml``
   (2D, 8 × 8 mm) at the model's defaults, on a grid ``--refine`` times finer than the fit's and with a
   smaller step (no inverse crime: the fit never sees its own discretisation): 64² cells and dt 0.02
   day (the study's) for a fit at 32² and dt 0.05.
2. **Scans**: per arm, the tumour and the M2-macrophage density at day 21 — what quantitative
   immunohistochemistry of the excised tumour gives (tumour cells, CD206⁺ macrophages per carrying
   capacity) — as NIfTI on the truth's grid, with the noise of IHC quantification
   ``d = u · exp(σ_m ε₁ − σ_m²/2) + σ_a ε₂`` (ε iid N(0, 1) per voxel): a mean-preserving multiplicative
   stain-intensity factor (σ_m = 10 %) and an additive background (σ_a = 0.02 for the tumour, 0.01 for
   M2, in units of carrying capacity). The fit file's ``sigma`` is that noise's expected root-mean-square
   on the fit grid (block averages of ``refine^d`` independent voxels): a constant-σ Gaussian likelihood
   of a heteroscedastic noise, as a user who knows only its typical size would write.
3. **Fit**: ``fit.toml`` with four ``[[fit.images]]`` density scans (tumour and M2 of both arms at
   t = 21) and five IL1/macrophage parameters started off the truth (:data:`PARAMETERS`), ``[fit.uncertainty]
   method = "laplace"``; ``tumorfield fit fit.toml -o FIT.h5`` on the coarse grid.
4. **Scalars for comparison**: the study's scalar time series (``fit/observations.py``: tumour volume
   twice a week, metastatic burden at days 14 and 21, the M2 fraction at day 21, lognormal noise) of
   the same two arms on the same coarse grid, noise-free at the truth, and a scalar fit of the same five
   parameters started at the truth (``scalar_fit.toml`` → ``SCALAR.h5``): its Gauss–Newton standard
   errors are those of the scalar observables at the truth.
5. **Report** (from FIT.h5 and SCALAR.h5): ``summary.json`` and ``summary.md`` (parameter, truth,
   estimate, relative error, SE from the images, SE from the scalars, what the images pin down that
   the scalars could not), ``figures/scans.png`` (scan, prediction and residual of the tumour and M2 of
   each arm) and ``figures/std_errors.png``.

``--quick``: the paclitaxel arm only, 10² fit cells (truth 20²), dt 0.1 day, 2 iterations: a smoke
test of the whole chain (its numbers mean nothing). The default run takes about 5 minutes on a 2-core
CPU, most of it compiling; the measured table and what it means are in ``IHC_CALIBRATION.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "fit"))

from observations import SCHEDULE  # noqa: E402

DAY = 21.0
"""The day of the scans (the study's endpoint)."""
SCANNED = ("tumor", "m2")
NOISE = {"tumor": (0.10, 0.02), "m2": (0.10, 0.01)}
"""Field → (σ_m multiplicative, σ_a additive in units of carrying capacity) of the IHC quantification."""
PARAMETERS = {
    # name: (truth = the model's default, start of the fit)
    "rho_1": (20.0, 12.0),  # pM/day, IL1β production by M1 macrophages
    "a_chi": (1.0, 2.0),  # IL1 gain of tumour haptotaxis (invasiveness)
    "k_n": (0.8, 0.5),  # 1/day, tumour-driven M1 → M2 polarisation
    "R_0": (0.3, 0.45),  # 1/day, macrophage recruitment per unit vessel density
    "chi_m": (0.05, 0.1),  # mm²/day, macrophage chemotaxis
}
FIT_SUBSTEPS = 1
"""``numerics.max_substeps`` of the fit's arms: no sub-cycling (none is needed at these steps), which halves
the compile time of the gradient; a trial that would need it is a failed run, a rejected trial."""
BOUND_FACTOR = 5.0
"""Fit bounds: truth / 5 to truth × 5 (log transform)."""
MECHANISM = {
    "rho_1": "IL1β made by M1 macrophages sets the receptor occupancy Φ_T that drives the tumour's invasive "
    "spread and the host response Φ_H that turns M2 back to M1, locally: the maps see where the "
    "tumour edge sits and how M2 is distributed inside it, which the tumour volume and the single "
    "tumour-weighted M2 fraction average away",
    "a_chi": "IL1β-raised haptotaxis changes the shape of the tumour edge (how far and how steeply the "
    "density falls off), not how much tumour there is: the tumour map shows it directly, the volume "
    "curve barely",
    "k_n": "tumour-driven M1 → M2 polarisation acts where the tumour is (n/(K_n + n)), so it sets the "
    "contrast of M2 density between tumour and surrounding tissue, which the M2 map resolves and the "
    "tumour-weighted M2 fraction mixes with every other polarisation rate",
    "R_0": "recruitment from vessels sets how many macrophages there are, also outside the tumour, and the "
    "space they take from tumour cells; the M2 map counts them everywhere",
    "chi_m": "chemotaxis moves macrophages up the tumour's chemoattractant gradient, so it redistributes "
    "M2 towards the tumour without changing their total much: only a map of where they are sees it",
}
FULL = {"cells": 32, "refine": 2, "dt": 0.05, "truth_dt": 0.02, "max_iterations": 40,
        "arms": ("ptx", "ptx_anakinra")}  # fmt: skip
QUICK = {"cells": 10, "refine": 2, "dt": 0.1, "truth_dt": 0.05, "max_iterations": 2, "arms": ("ptx",)}


def arm_config(arm: str, cells: int, dt: float, values: dict[str, float], substeps: int | None = None) -> str:
    """``<arm>.toml`` on ``cells²`` cells (same 8 × 8 mm box), step ``dt``, to day 21, in float64, with the
    fitted parameters at ``values`` (and ``numerics.max_substeps``, if given)."""
    from tumorfield.config._toml import to_toml

    document = tomllib.loads((HERE / f"{arm}.toml").read_text())
    document["grid"]["shape"] = [cells, cells]
    document["time"] = {"t_end": DAY, "dt": dt, "save_every": DAY}
    document["parameters"] = dict(values)
    document["output"]["precision"] = "float64"
    document.pop("run", None)
    if substeps is not None:
        document["numerics"] = {"max_substeps": substeps}
    return to_toml(document)


def _run(text: str, dt: float, observe: bool = False):
    """One run of a config text to day 21: ``(grid, last frame {field: array}, (t, {observable: series}))``."""
    import jax

    import tumorfield as tf
    from tumorfield.problem import Problem

    config = tf.config.loads(text)
    if config.compilation_cache:  # the persistent compilation cache, as tumorfield run and fit use it
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache)
    problem = Problem.from_config(config)
    saveat = tf.SaveAt(every=DAY, observe=problem.observe if observe else None)
    run = tf.simulate(problem.system, problem.grid, problem.y0, t_end=DAY, dt=dt, params=problem.params,
                      numerics=problem.numerics, saveat=saveat)  # fmt: skip
    last = {name: np.asarray(run.fields[name][-1]) for name in SCANNED}
    series = (np.asarray(run.t_observed), {k: np.asarray(v) for k, v in run.observed.items()}) if observe else None
    return problem.grid, last, series


def ihc_noise(u: np.ndarray, field: str, rng) -> np.ndarray:
    """``u · exp(σ_m ε₁ − σ_m²/2) + σ_a ε₂``: the IHC quantification noise of :data:`NOISE`."""
    s_m, s_a = NOISE[field]
    return u * np.exp(s_m * rng.standard_normal(u.shape) - 0.5 * s_m**2) + s_a * rng.standard_normal(u.shape)


def expected_sigma(u: np.ndarray, field: str, refine: int) -> float:
    """The root-mean-square of the noise over the scan, on the fit grid: a block average of ``refine^d``
    independent voxels of variance ``u² (exp(σ_m²) − 1) + σ_a²``."""
    s_m, s_a = NOISE[field]
    variance = np.mean(u**2 * np.expm1(s_m**2) + s_a**2)
    return float(np.sqrt(variance / refine**u.ndim))


def block_mean(u: np.ndarray, refine: int) -> np.ndarray:
    """The mean of every ``refine^d`` block of ``u``: the fine field on the fit grid (what ``read_image``
    gives for an aligned coarsening by whole voxels)."""
    shape = [s for n in u.shape for s in (n // refine, refine)]
    return u.reshape(shape).mean(axis=tuple(range(1, 2 * u.ndim, 2)))


def truth(setup: dict, outdir: Path, seed: int) -> tuple[dict, dict]:
    """The fine runs; the noisy scans as NIfTI. Returns ``{(arm, field): (path, sigma)}`` and the clean
    maps on the fit grid ``{(arm, field): array}``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from tumorfield.io import write_nifti

    rng = np.random.default_rng(seed)
    values = {name: true for name, (true, _) in PARAMETERS.items()}
    fine, scans, clean = setup["cells"] * setup["refine"], {}, {}
    for arm in setup["arms"]:
        text = arm_config(arm, fine, setup["truth_dt"], values)
        (outdir / f"truth_{arm}.toml").write_text(text)
        started = time.perf_counter()
        grid, last, _ = _run(text, setup["truth_dt"])
        print(f"truth {arm}: {fine}² cells, dt {setup['truth_dt']:g} day, {time.perf_counter() - started:.1f} s")
        for field in SCANNED:
            u = last[field]
            path = write_nifti(outdir / f"ihc_{arm}_{field}_day21.nii.gz", ihc_noise(u, field, rng), grid)
            scans[arm, field] = (path, expected_sigma(u, field, setup["refine"]))
            clean[arm, field] = block_mean(u, setup["refine"])
            print(f"  {field}: range [{u.min():.3g}, {u.max():.3g}], σ on the fit grid {scans[arm, field][1]:.3g}")
    return scans, clean


def fit_file(setup: dict, outdir: Path, scans: dict) -> Path:
    """``arm_<arm>.toml`` (the fit's grid, the parameters at their start values) and ``fit.toml``."""
    start = {name: init for name, (_, init) in PARAMETERS.items()}
    arms = {arm: f"arm_{arm}.toml" for arm in setup["arms"]}
    for arm, name in arms.items():
        (outdir / name).write_text(arm_config(arm, setup["cells"], setup["dt"], start, FIT_SUBSTEPS))
    images = "".join(
        f'[[fit.images]]\narm = "{arm}"\nt = {DAY}\nfield = "{field}"\nfile = "{Path(path).name}"\n'
        f'kind = "density"\nsigma = {sigma:.6g}\n\n'
        for (arm, field), (path, sigma) in scans.items()
    )
    path = outdir / "fit.toml"
    path.write_text(f"""# IL1 and macrophage parameters from day-21 tumour and M2 density maps (calibrate_ihc.py)
[fit]
arms = {_inline(arms)}
max_iterations = {setup["max_iterations"]}

{images}[fit.parameters]
{_parameter_table(start)}
[fit.uncertainty]
method = "laplace"
""")
    return path


def _inline(table: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in table.items()) + " }"


def _parameter_table(init: dict[str, float]) -> str:
    return "".join(
        f"{name} = {{ init = {init[name]:g}, lower = {true / BOUND_FACTOR:g}, upper = {true * BOUND_FACTOR:g} }}\n"
        for name, (true, _) in PARAMETERS.items()
    )


def scalar_file(setup: dict, outdir: Path) -> tuple[Path, dict]:
    """The study's scalar series of the same arms on the fit grid, noise-free at the truth
    (``observations.csv``), and ``scalar_fit.toml`` started at the truth. Also returns the coarse runs'
    day-21 maps at the truth (the fit grid's own discretisation error against the block-averaged truth)."""
    truth_values = {name: true for name, (true, _) in PARAMETERS.items()}
    rows, coarse = ["arm,t,observable,value,sigma"], {}
    for arm in setup["arms"]:
        text = arm_config(arm, setup["cells"], setup["dt"], truth_values, FIT_SUBSTEPS)
        _, last, (t, series) = _run(text, setup["dt"], True)
        coarse[arm] = last
        for name, (days, sigma) in SCHEDULE.items():
            for day in days:
                rows.append(f"{arm},{day:g},{name},{float(series[name][int(np.argmin(np.abs(t - day)))]):.17g},{sigma}")
    (outdir / "observations.csv").write_text("\n".join(rows) + "\n")
    arms = {arm: f"arm_{arm}.toml" for arm in setup["arms"]}
    path = outdir / "scalar_fit.toml"
    path.write_text(f"""# The same parameters from the study's scalar series, noise-free, started at the truth:
# the Gauss–Newton standard errors of these observables at the truth (calibrate_ihc.py).
[fit]
arms = {_inline(arms)}
data = "observations.csv"
likelihood = "lognormal"
max_iterations = 1
max_linesearch_steps = 1

[fit.parameters]
{_parameter_table(truth_values)}""")
    return path, coarse


def tumorfield_fit(path: Path, out: Path, log: Path) -> str:
    """``tumorfield fit PATH -o OUT`` in this process (its table returned, its progress into ``log``)."""
    from tumorfield.cli import main as cli

    table = io.StringIO()
    with log.open("w") as handle, contextlib.redirect_stdout(table), contextlib.redirect_stderr(handle):
        code = cli(["fit", str(path), "-o", str(out), "--overwrite"])
    if code != 0:
        raise SystemExit(f"tumorfield fit {path.name} failed (exit {code}); see {log}")
    return table.getvalue()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_fit(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as h5:
        fit = h5["fit"]
        names = [_text(n) for n in fit["parameters"][()]]
        found = {k: dict(zip(names, fit[k][()], strict=True)) for k in ("estimate", "std_error")}
        found["correlation"] = (names, fit["correlation"][()])
        found["loss"] = fit["history/loss"][()]
        found["attrs"] = {
            "status": _text(h5.attrs["status"]),
            "message": _text(h5.attrs["message"]),
            "n_iterations": int(h5.attrs["n_iterations"]),
        }
        found["scans"] = [
            {"prediction": g["prediction"][()], "observed": g["observed"][()],
             **{k: (_text(v) if isinstance(v, bytes | str) else v) for k, v in g.attrs.items()}}
            for _, g in sorted(fit["scans"].items(), key=lambda item: int(item[0]))
        ] if "scans" in fit else []  # fmt: skip
    return found


def _percent(x: float) -> str:
    return "∞" if not math.isfinite(x) else f"{x:.0%}" if x >= 0.1 else f"{x:.1%}"


def _sentence(name: str, se_image: float, se_scalar: float, estimate: float, true: float) -> str:
    """What the images pin down that the scalars could not, from the two relative SEs and the mechanism."""
    rel_i, rel_s = se_image / true, se_scalar / true
    if not math.isfinite(rel_s) or rel_s > 0.5 > rel_i:
        verdict = f"the images pin it down (SE {_percent(rel_i)}) where the scalars cannot (SE {_percent(rel_s)})"
    elif rel_i < rel_s:
        verdict = (f"both constrain it, the images {rel_s / rel_i:.0f}× tighter (SE {_percent(rel_i)} against "
                   f"{_percent(rel_s)})")  # fmt: skip
    else:
        verdict = f"the scalars constrain it as well or better (SE {_percent(rel_s)} against {_percent(rel_i)})"
    recovered = abs(estimate - true) <= 3 * se_image
    note = "" if recovered else f"; not recovered within 3 SE (estimate {(estimate - true) / true:+.1%} off the truth)"
    return f"{verdict}{note}: {MECHANISM[name]}."


def report(setup: dict, outdir: Path, scans: dict, clean: dict, coarse: dict, timings: dict) -> dict:
    """``summary.json``, ``summary.md`` and the figures, read from FIT.h5 and SCALAR.h5."""
    images, scalars = _read_fit(outdir / "FIT.h5"), _read_fit(outdir / "SCALAR.h5")
    rows = []
    for name, (true, start) in PARAMETERS.items():
        estimate, se_i, se_s = images["estimate"][name], images["std_error"][name], scalars["std_error"][name]
        rows.append({
            "parameter": name, "truth": true, "start": start, "estimate": float(estimate),
            "relative_error": float((estimate - true) / true), "se_images": float(se_i), "se_scalars": float(se_s),
            "relative_se_images": float(se_i / true), "relative_se_scalars": float(se_s / true),
            "z": float((estimate - true) / se_i), "comment": _sentence(name, se_i, se_s, estimate, true),
        })  # fmt: skip
    per_scan = []
    for scan in images["scans"]:
        key = scan["arm"], scan["field"]
        # the fit grid's own discretisation error: the coarse run at the truth against the block-averaged fine truth
        discretisation = coarse[scan["arm"]][scan["field"]] - clean[key]
        per_scan.append({
            "arm": scan["arm"], "field": scan["field"], "ccc": float(scan.get("ccc", np.nan)), "sigma": scans[key][1],
            "discretisation_rms": float(np.sqrt(np.mean(discretisation**2))),
            "residual_rms": float(np.sqrt(np.mean((scan["prediction"] - scan["observed"]) ** 2))),
        })  # fmt: skip
    names, corr = images["correlation"]
    _, corr_s = scalars["correlation"]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "setup": {k: (list(v) if isinstance(v, tuple) else v) for k, v in setup.items()},
        "noise": {field: {"sigma_multiplicative": m, "sigma_additive": a} for field, (m, a) in NOISE.items()},
        "parameters": rows,
        "images": {
            "status": images["attrs"]["status"],
            "message": images["attrs"]["message"],
            "iterations": images["attrs"]["n_iterations"],
            "loss": float(images["loss"][-1]),
            "correlation": {f"{names[i]}~{names[j]}": float(corr[i, j]) for i, j in pairs},
            "scans": per_scan,
        },  # fmt: skip
        "scalars": {
            "status": scalars["attrs"]["status"],
            "correlation": {f"{names[i]}~{names[j]}": float(corr_s[i, j]) for i, j in pairs},
            "observations": {k: list(v[0]) for k, v in SCHEDULE.items()},
            "sigma_log": {k: v[1] for k, v in SCHEDULE.items()},
        },  # fmt: skip
        "timings_s": timings,
    }
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2))
    (outdir / "summary.md").write_text(markdown_table(rows))
    summary["figures"] = [str(p) for p in figures(outdir / "FIT.h5", rows, outdir / "figures")]
    return summary


def markdown_table(rows: list[dict]) -> str:
    head = ("| parameter | truth | estimate | rel. error | SE images | SE scalars | what the images pin down |\n"
            "|---|---|---|---|---|---|---|\n")  # fmt: skip
    body = "".join(
        f"| `{r['parameter']}` | {r['truth']:g} | {r['estimate']:.4g} | {r['relative_error']:+.1%} | "
        f"{r['se_images']:.3g} ({r['relative_se_images']:.1%}) | {r['se_scalars']:.3g} "
        f"({r['relative_se_scalars']:.0%}) | {r['comment']} |\n"
        for r in rows
    )
    return head + body


def figures(path: Path, rows: list[dict], outdir: Path) -> list[Path]:
    """Scan, prediction and residual of every scan (from FIT.h5); the relative SEs of images and scalars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    scans = _read_fit(path)["scans"]
    fig, axes = plt.subplots(len(scans), 3, figsize=(11, 3.3 * len(scans)), squeeze=False)
    for row, scan in zip(axes, scans, strict=True):
        observed, prediction = scan["observed"], scan["prediction"]
        top = max(observed.max(), prediction.max())
        for ax, image, title in ((row[0], observed, "IHC scan (on the fit grid)"), (row[1], prediction, "prediction")):
            shown = ax.imshow(image.T, origin="lower", cmap="magma", vmin=0, vmax=top)
            ax.set_title(title, fontsize=9)
        row[0].set_ylabel(f"{scan['arm']}: {scan['field']}, day {scan['t']:g}")
        fig.colorbar(shown, ax=row[:2], shrink=0.8)
        residual = prediction - observed
        limit = np.abs(residual).max()
        shown = row[2].imshow(residual.T, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        row[2].set_title(f"prediction − scan (CCC {scan.get('ccc', np.nan):.3f})", fontsize=9)
        fig.colorbar(shown, ax=row[2], shrink=0.8)
        for ax in row:
            ax.set(xticks=[], yticks=[])
    written = [outdir / "scans.png"]
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["relative_se_images"] for r in rows], 0.4, label="images (tumour + M2 at day 21)")
    scalar = [r["relative_se_scalars"] if math.isfinite(r["relative_se_scalars"]) else 1e3 for r in rows]
    ax.bar(x + 0.2, scalar, 0.4, label="scalar series (volume, metastases, M2 fraction)")
    ax.set(xticks=x, xticklabels=[r["parameter"] for r in rows], yscale="log", ylabel="SE / truth")
    ax.axhline(0.5, color="k", lw=0.8, ls="--", label="SE = 50 % (not pinned down above)")
    ax.legend(fontsize=8)
    written.append(outdir / "std_errors.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", "-o", default="out/voloshin2015_ihc", help="output directory")
    parser.add_argument("--quick", action="store_true", help="one arm, 10² cells, 2 iterations: a smoke test")
    parser.add_argument("--cells", type=int, help="fit grid cells per side (default 32; --quick 10)")
    parser.add_argument("--refine", type=int, help="truth grid = refine × finer (default 2)")
    parser.add_argument("--dt", type=float, help="the fit's step, day (default 0.05; --quick 0.1)")
    parser.add_argument("--truth-dt", type=float, help="the truth's step, day (default 0.02; --quick 0.05)")
    parser.add_argument("--max-iterations", type=int, help="L-BFGS iterations (default 40; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the IHC noise")
    args = parser.parse_args(argv)
    setup = dict(QUICK if args.quick else FULL)
    for key in ("cells", "refine", "dt", "truth_dt", "max_iterations"):
        if getattr(args, key) is not None:
            setup[key] = getattr(args, key)
    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    clock, timings = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    scans, clean = truth(setup, outdir, args.seed)
    lap("truth")
    path = fit_file(setup, outdir, scans)
    print(tumorfield_fit(path, outdir / "FIT.h5", outdir / "fit.log"))
    lap("fit_images")
    scalar_path, coarse = scalar_file(setup, outdir)
    print(tumorfield_fit(scalar_path, outdir / "SCALAR.h5", outdir / "scalar_fit.log"))
    lap("scalar_uncertainty")
    summary = report(setup, outdir, scans, clean, coarse, timings)
    lap("report")
    timings["total"] = round(sum(timings.values()), 1)
    (outdir / "summary.json").write_text(json.dumps({**summary, "timings_s": timings}, indent=2))
    print(markdown_table(summary["parameters"]))
    print(f"wall time {timings}; {outdir / 'summary.json'}, {outdir / 'summary.md'}, figures in {outdir / 'figures'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
