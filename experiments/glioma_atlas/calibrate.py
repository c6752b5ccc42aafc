"""Calibrate the glioma model of a synthetic patient on the MNI152 anatomy from two segmentations.

Usage::

    python experiments/glioma_atlas/calibrate.py [-o out/glioma_calibrate] [--quick]

1. **Truth**: a run of ``atlas.toml`` (the MNI152 white/grey matter maps, ``grow.py``'s config) on a grid
   twice as fine as the fit's (no inverse crime: the fit never sees its own discretisation), from a known
   seed in right frontal white matter, with known ``D_w`` and ``ρ``: 1 mm cells for a fit at 2 mm, or 4 mm
   for ``--quick``'s 8 mm.
2. **Scans**: segmentations of the truth at two days (label 1 where ``u ≥ 0.8``, 2 where ``0.16 ≤ u < 0.8``),
   NIfTI on the truth's grid, and a third, later one held back.
3. **Fit**: ``fit.toml`` with ``[fit.origin]`` (the seed's centre in world mm, radius, amplitude),
   ``[fit.parameters] D_w, rho`` (started off the truth), ``[fit.uncertainty] method = "laplace"`` and
   ``forecast`` = the held-back day; ``tumorfield fit fit.toml -o FIT.h5``.
4. **Figures from FIT.h5** (``<out>/figures``): each scan's labels over the prediction, the forecast's
   probability of presence with the held-back scan's contours, the recovered origin with the truth and the
   estimate ± SE. Prints the origin's error (mm and fit voxels), the relative errors of ``D_w`` and ``ρ``
   and the Dice at 0.16 of the forecast against the held-back scan.

``--quick``: 8 mm fit cells (25 × 30 × 24), truth at 4 mm, scans at days 20 and 40, the forecast at 60,
faster growth (``D_w`` 0.3 mm²/day, ``ρ`` 0.1/day) so that it shows on 8 mm cells — a few minutes of CPU.
The full run (2 mm fit, 1 mm truth, scans at 120 and 240 days, forecast at 360, the atlas's parameters)
is for a GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LEVELS = {1: 0.8, 2: 0.16}
"""Label → threshold of the truth's field: 1 the enhancing core (T1Gd-like), 2 the oedema rim (FLAIR-like)."""

FULL = {"resample": 2, "dt": 1.0, "scans": (120.0, 240.0), "forecast": 360.0, "D_w": 0.13, "rho": 0.012,
        "radius": 5.0, "start": {"D_w": 0.06, "rho": 0.02}, "cell_diffusion": "implicit", "samples": 100}  # fmt: skip
QUICK = {"resample": 8, "dt": 5.0, "scans": (20.0, 40.0), "forecast": 60.0, "D_w": 0.3, "rho": 0.1,
         "radius": 10.0, "start": {"D_w": 0.15, "rho": 0.05}, "cell_diffusion": "implicit", "samples": 40}  # fmt: skip
TRUE_CENTRE = (25.0, 30.0, 20.0)
"""Right frontal white matter (MNI mm), as ``atlas.toml``."""
START_CENTRE = (17.0, 24.0, 13.0)
"""The fit's start: about 12 mm from the truth."""


def arm_config(setup: dict, resample: int, dt: float, t_end: float, D_w: float, rho: float) -> str:
    """``atlas.toml`` with absolute MNI152 paths, the grid's ``resample``, a horizon and the parameters."""
    sys.path.insert(0, str(HERE))
    from grow import nilearn_data

    from tumorfield.config._toml import to_toml

    text = (HERE / "atlas.toml").read_text().replace('"mni152/', f'"{nilearn_data().as_posix()}/')
    document = tomllib.loads(text)
    document["grid"]["resample"] = resample
    document["time"] = {"t_end": t_end, "dt": dt, "save_every": t_end}
    document["parameters"].update(D_w=D_w, D_g=D_w / 10, rho=rho)
    document["numerics"]["cell_diffusion"] = setup["cell_diffusion"]
    document["initial"]["tumor"] = {"centre": list(TRUE_CENTRE), "radius": setup["radius"], "amplitude": 0.8}
    document["output"]["precision"] = "float64"
    document.pop("run", None)
    return to_toml(document)


def truth(setup: dict, outdir: Path) -> dict:
    """Run the truth on the fine grid; write the scans (and the held-back one) as label NIfTI. Returns
    ``{day: path}``."""
    import jax

    jax.config.update("jax_enable_x64", True)  # the truth in float64, as the fit's arm
    import tumorfield as tf
    from tumorfield.io import write_nifti
    from tumorfield.problem import Problem

    fine = setup["resample"] // 2
    days = (*setup["scans"], setup["forecast"])
    dt = setup["dt"] / 2
    text = arm_config(setup, fine, dt, days[-1], setup["D_w"], setup["rho"])
    (outdir / "truth.toml").write_text(text)
    problem = Problem.from_config(tf.config.loads(text))
    started = time.perf_counter()
    every = float(np.gcd.reduce([round(d / dt) for d in days])) * dt
    run = tf.simulate(problem.system, problem.grid, problem.y0, t_end=days[-1], dt=dt, params=problem.params,
                      numerics=problem.numerics, saveat=tf.SaveAt(every=every))  # fmt: skip
    u_all = np.asarray(run["tumor"])
    print(f"truth: {problem.grid.shape} cells of {problem.grid.spacing[0]:g} mm, {time.perf_counter() - started:.1f} s")
    paths = {}
    for day in days:
        u = u_all[round(day / every)]
        labels = np.where(u >= LEVELS[1], 1, np.where(u >= LEVELS[2], 2, 0)).astype(np.int32)
        paths[day] = write_nifti(outdir / f"seg_day{day:g}.nii.gz", labels, problem.grid)
        print(f"  day {day:g}: {np.sum(labels == 1)} core, {np.sum(labels == 2)} rim cells")
    return paths


def fit_file(setup: dict, outdir: Path, scans: dict) -> Path:
    """``arm.toml`` (the fit's grid, twice as coarse; parameters at the start values) and ``fit.toml``."""
    start = setup["start"]
    (outdir / "arm.toml").write_text(
        arm_config(setup, setup["resample"], setup["dt"], max(setup["scans"]), start["D_w"], start["rho"])
    )
    images = "".join(
        f'[[fit.images]]\narm = "patient"\nt = {day}\nfield = "tumor"\nfile = "{Path(scans[day]).name}"\n'
        f'kind = "segmentation"\nthresholds = {{ 1 = {LEVELS[1]}, 2 = {LEVELS[2]} }}\n\n'
        for day in setup["scans"]
    )
    d, r = setup["D_w"], setup["rho"]
    text = f"""[fit]
arms = {{ patient = "arm.toml" }}
max_iterations = 60
forecast = [{setup["forecast"]}]

{images}[fit.parameters]
D_w = {{ init = {start["D_w"]}, lower = {d / 10:g}, upper = {d * 10:g} }}
rho = {{ init = {start["rho"]}, lower = {r / 10:g}, upper = {r * 10:g} }}

[fit.origin]
field = "tumor"
centre = {{ init = {list(START_CENTRE)} }}
radius = {{ init = {setup["radius"]}, lower = {setup["radius"] / 4:g}, upper = {setup["radius"] * 3:g} }}
amplitude = {{ init = 0.5, lower = 0.05, upper = 1.0 }}

[fit.uncertainty]
method = "laplace"
samples = {setup["samples"]}
"""
    path = outdir / "fit.toml"
    path.write_text(text)
    return path


def _slice_at(volume: np.ndarray, k: int) -> np.ndarray:
    """The axial slice ``k`` of a 3D array (third array axis), transposed for imshow (first axis across)."""
    return volume[:, :, k].T


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.sum(a & b) / total) if total else 1.0


def report(setup: dict, out: Path, scans: dict, figures: Path) -> dict:
    """Read FIT.h5: the errors, the forecast's Dice, and the figures."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tumorfield.export import _grid_of
    from tumorfield.io import read_image

    figures.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "r") as h5:
        fit = h5["fit"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in fit["parameters"][()]]
        estimate, se = (
            dict(zip(names, fit["estimate"][()], strict=True)),
            dict(zip(names, fit["std_error"][()], strict=True)),
        )
        affine = np.asarray(fit["arms/patient"].attrs["grid_affine"])
        scan_data = [
            (float(g.attrs["t"]), g["prediction"][()], g["observed"][()], dict(g.attrs)) for g in fit["scans"].values()
        ]
        initial = fit["origin/initial"][()]
        day = setup["forecast"]
        group = fit[f"forecast/patient/{day:g}"]
        forecast, probability = group["estimate"][()], group["probability"][()]
        loss = fit["history/loss"][()]
    grid = _grid_of(initial.shape, affine)
    spacing = np.asarray(grid.spacing)
    centre = np.array([estimate[f"origin.centre.{i}"] for i in range(3)])
    centre_se = np.array([se[f"origin.centre.{i}"] for i in range(3)])
    error = centre - np.asarray(TRUE_CENTRE)
    to_voxel = np.linalg.inv(affine)
    k = int(round((to_voxel @ np.r_[TRUE_CENTRE, 1.0])[2]))
    held = read_image(scans[day], grid, kind="labels")
    dice = _dice(forecast >= LEVELS[2], held >= 1)

    fig, axes = plt.subplots(1, len(scan_data), figsize=(4.5 * len(scan_data), 4.5), squeeze=False)
    for ax, (t, prediction, observed, attrs) in zip(axes[0], sorted(scan_data, key=lambda s: s[0]), strict=True):
        ax.imshow(_slice_at(prediction, k), origin="lower", cmap="magma", vmin=0, vmax=1)
        obs = _slice_at(observed, k)
        ax.contour(obs >= 1, levels=[0.5], colors="cyan", linewidths=1)
        ax.contour(obs == 1, levels=[0.5], colors="lime", linewidths=1)
        ax.contour(
            _slice_at(prediction, k), levels=sorted(LEVELS.values()), colors="white", linestyles="--", linewidths=0.8
        )
        ax.set_title(
            f"day {t:g}: Dice@0.16 {attrs.get('dice@0.16', np.nan):.3f}, @0.8 {attrs.get('dice@0.8', np.nan):.3f}"
        )
    fig.suptitle(f"scans (cyan: label ≥ 1, green: label 1) over the prediction (dashed: u = 0.16, 0.8), slice z = {k}")
    fig.savefig(figures / "scans.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(_slice_at(probability, k), origin="lower", cmap="viridis", vmin=0, vmax=1)
    ax.contour(_slice_at(held, k) >= 1, levels=[0.5], colors="red", linewidths=1.2)
    ax.contour(_slice_at(forecast, k), levels=[LEVELS[2]], colors="white", linestyles="--", linewidths=0.8)
    fig.colorbar(image, ax=ax, label="probability of presence (u ≥ 0.16)")
    ax.set_title(f"forecast day {day:g} (red: held-back scan, label ≥ 1); Dice@0.16 {dice:.3f}")
    fig.savefig(figures / "forecast.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(_slice_at(initial, k), origin="lower", cmap="magma")
    true_voxel, est_voxel = (to_voxel @ np.r_[TRUE_CENTRE, 1.0])[:2], (to_voxel @ np.r_[centre, 1.0])[:2]
    ax.plot(*true_voxel, "c+", ms=14, mew=2, label="truth")
    ax.errorbar(*est_voxel, xerr=1.96 * centre_se[0] / spacing[0], yerr=1.96 * centre_se[1] / spacing[1],
                fmt="wx", ms=10, capsize=4, label="estimate ± 1.96 SE")  # fmt: skip
    ax.legend(loc="lower right")
    ax.set_title(f"recovered origin (slice z = {k}): error {np.linalg.norm(error):.2f} mm")
    fig.savefig(figures / "origin.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    found = {
        "origin_error_mm": float(np.linalg.norm(error)),
        "origin_error_voxels": float(np.linalg.norm(error / spacing)),
        "origin_se_mm": centre_se.tolist(),
        "D_w": (estimate["D_w"], se["D_w"], setup["D_w"]),
        "rho": (estimate["rho"], se["rho"], setup["rho"]),
        "dice_forecast_0.16": dice,
        "iterations": len(loss) - 1,
    }
    print(f"origin: estimate {np.round(centre, 2).tolist()} mm (± {np.round(centre_se, 2).tolist()} SE), truth "
          f"{list(TRUE_CENTRE)}: error {found['origin_error_mm']:.2f} mm = {found['origin_error_voxels']:.2f} "
          f"voxels of {spacing[0]:g} mm")  # fmt: skip
    for name in ("D_w", "rho"):
        value, s, true = found[name]
        print(f"{name}: {value:.4g} ± {s:.2g} (truth {true:g}): relative error {(value - true) / true:+.1%}")
    print(f"forecast day {day:g}: Dice at 0.16 against the held-back scan {dice:.3f}")
    print(f"figures: {', '.join(str(figures / n) for n in ('scans.png', 'forecast.png', 'origin.png'))}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/glioma_calibrate", help="output directory")
    parser.add_argument("--quick", action="store_true", help="8 mm fit cells, truth at 4 mm, 60 days (CPU minutes)")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    outdir = Path(args.output).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    scans = truth(setup, outdir)
    path, out = fit_file(setup, outdir, scans), outdir / "FIT.h5"
    command = [sys.executable, "-m", "tumorfield.cli", "fit", str(path), "-o", str(out), "--overwrite"]
    started = time.perf_counter()
    result = subprocess.run(command, text=True, capture_output=True)
    print(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"tumorfield fit failed (exit {result.returncode}):\n{result.stderr}")
    print(f"fit: {time.perf_counter() - started:.1f} s → {out}")
    report(setup, out, scans, outdir / "figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
