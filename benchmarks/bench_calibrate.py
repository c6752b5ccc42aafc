"""Benchmark a calibration from scans (``tumorfield fit`` with ``[[fit.images]]``): origin + D_w + ρ of the glioma
model from two segmentations on a 3D box of N³ cells.

Usage::

    python benchmarks/bench_calibrate.py --out benchmarks/results [--size 64] [--max-iterations 40] [--repeats 5]
        [--uncertainty laplace|none] [--quick]

The problem: the glioma model (no tissue maps: white matter everywhere) on a cube of 96 mm (N³ cells of
96/N mm), implicit cell diffusion, float64; a truth run on the same grid from a Gaussian seed at a known
off-centre point with known ``D_w`` and ``ρ``; segmentations at days 30 and 60 (label 1: u ≥ 0.8, 2: u ≥
0.16); the fit starts ~10 mm off the seed, at half ``D_w`` and ``ρ``, and fits the seed's centre, radius and
amplitude, ``D_w`` and ``ρ`` (7 unknowns), then their Gauss–Newton standard errors (the Laplace posterior).

Measures:

1. ``gradient ÷ forward``: the compiled loss-and-gradient against the compiled loss alone (both AOT,
   compile apart), interleaved ``--repeats`` times (:func:`_timing.interleaved`), best and median;
2. memory: XLA's ``memory_analysis()`` of both compiled programs (temp, argument, output bytes) where the
   backend has it, the device's ``peak_bytes_in_use`` where it reports one, and the process's peak RSS;
3. time to solution: ``calibrate`` (L-BFGS to the stopping rule or ``--max-iterations``, then Gauss–Newton),
   wall, with the XLA compile seconds it spent apart (``run`` = wall − compile), iterations, status;
4. the recovered errors: origin (mm, voxels), ``D_w`` and ``ρ`` relative, and the scans' Dice.

``--quick``: 3 repeats, at most 4 iterations (a smoke form; ``--size 24`` runs in a minute on CPU).
``--uncertainty none``: no Laplace posterior after the minimum (one program fewer to compile; the
standard errors are NaN). The JSON is written after (1)–(2) with ``status: partial`` and rewritten
at the end (``status: complete``), so a run stopped during the calibration keeps the gradient ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LENGTH = 96.0
TRUTH = {"D_w": 0.2, "rho": 0.05, "centre": (52.0, 44.0, 50.0), "radius": 5.0, "amplitude": 0.8}
START = {"D_w": 0.1, "rho": 0.025, "centre": (46.0, 50.0, 45.0), "radius": 5.0, "amplitude": 0.5}
DAYS = (30.0, 60.0)
DT = 1.0
LEVELS = {1: 0.8, 2: 0.16}


def arm_text(n: int) -> str:
    t = TRUTH
    return f"""[model]
name = "glioma"
[grid]
shape = [{n}, {n}, {n}]
length = [{LENGTH}, {LENGTH}, {LENGTH}]
[time]
t_end = {DAYS[-1]}
dt = {DT}
save_every = {DAYS[-1]}
[parameters]
D_w = {t["D_w"]}
rho = {t["rho"]}
[initial]
tumor = {{ centre = {list(t["centre"])}, radius = {t["radius"]}, amplitude = {t["amplitude"]} }}
[numerics]
cell_diffusion = "implicit"
[output]
precision = "float64"
"""


def fit_text(max_iterations: int, uncertainty: str = "laplace") -> str:
    s, t = START, TRUTH
    images = "".join(
        f'[[fit.images]]\narm = "box"\nt = {day}\nfield = "tumor"\nfile = "seg_{day:g}.nii.gz"\n'
        f'kind = "segmentation"\nthresholds = {{ 1 = {LEVELS[1]}, 2 = {LEVELS[2]} }}\n\n'
        for day in DAYS
    )
    return f"""[fit]
arms = {{ box = "arm.toml" }}
max_iterations = {max_iterations}

{images}[fit.parameters]
D_w = {{ init = {s["D_w"]}, lower = {t["D_w"] / 10}, upper = {t["D_w"] * 10} }}
rho = {{ init = {s["rho"]}, lower = {t["rho"] / 10}, upper = {t["rho"] * 10} }}

[fit.origin]
field = "tumor"
centre = {{ init = {list(s["centre"])} }}
radius = {{ init = {s["radius"]}, lower = 1.0, upper = 15.0 }}
amplitude = {{ init = {s["amplitude"]}, lower = 0.05, upper = 1.0 }}

[fit.uncertainty]
method = "{uncertainty}"
"""


def write_problem(directory: Path, n: int, max_iterations: int, uncertainty: str = "laplace") -> Path:
    """The truth's scans, ``arm.toml`` and ``fit.toml`` in ``directory``; returns the fit file."""
    import tumorfield as tf
    from tumorfield.io import write_nifti
    from tumorfield.problem import Problem

    text = arm_text(n)
    (directory / "arm.toml").write_text(text)
    problem = Problem.from_config(tf.config.loads(text))
    run = tf.simulate(problem.system, problem.grid, problem.y0, t_end=DAYS[-1], dt=DT, params=problem.params,
                      numerics=problem.numerics, saveat=tf.SaveAt(every=DAYS[0]))  # fmt: skip
    for k, day in enumerate(DAYS, start=1):
        u = np.asarray(run["tumor"][k])
        labels = np.where(u >= LEVELS[1], 1, np.where(u >= LEVELS[2], 2, 0)).astype(np.int32)
        write_nifti(directory / f"seg_{day:g}.nii.gz", labels, problem.grid)
    (directory / "fit.toml").write_text(fit_text(max_iterations, uncertainty))
    return directory / "fit.toml"


def _memory(compiled) -> dict:
    try:
        found = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 — not every backend has it
        return {}
    if found is None:
        return {}
    names = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "generated_code_size_in_bytes")
    return {name: int(getattr(found, name)) for name in names if hasattr(found, name)}


def _device_peak() -> int | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def gradient_ratio(calibration, repeats: int) -> dict:
    """Compiled loss and loss-and-gradient at the start, compile apart, interleaved repeats."""
    import jax
    import jax.numpy as jnp
    from _timing import interleaved

    z0, arrays = jnp.asarray(calibration.z0()), calibration.arrays
    out, compiled = {}, {}
    for key, fn in (("forward", calibration.loss), ("gradient", jax.value_and_grad(calibration.loss))):
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(z0, arrays)
        t1 = time.perf_counter()
        compiled[key] = lowered.compile()
        t2 = time.perf_counter()
        jax.block_until_ready(compiled[key](z0, arrays))  # warm-up
        out[key] = {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "memory": _memory(compiled[key])}
    times = interleaved({k: (lambda c=c: c(z0, arrays)) for k, c in compiled.items()}, repeats)
    for key, values in times.items():
        out[key].update(best_s=min(values), median_s=statistics.median(values), times_s=values)
    out["ratio_best"] = out["gradient"]["best_s"] / out["forward"]["best_s"]
    out["ratio_median"] = out["gradient"]["median_s"] / out["forward"]["median_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="directory of the JSON result")
    parser.add_argument("--size", type=int, default=64, help="cells per axis (N³)")
    parser.add_argument("--max-iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of forward and gradient")
    parser.add_argument("--uncertainty", choices=("laplace", "none"), default="laplace", help="after the minimum")
    parser.add_argument("--quick", action="store_true", help="3 repeats, at most 4 iterations (a smoke form)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.max_iterations = min(args.repeats, 3), min(args.max_iterations, 4)

    import jax

    jax.config.update("jax_enable_x64", True)
    from _timing import write_result

    from tumorfield import _compile_log
    from tumorfield.fit._calibrate import calibrate
    from tumorfield.fit._calibration import Calibration
    from tumorfield.fit._spec import load_spec

    _compile_log.install()
    n = args.size
    print(f"bench_calibrate: {n}³ cells of {LENGTH / n:g} mm on {jax.default_backend()} ({jax.devices()[0]})")
    with tempfile.TemporaryDirectory(prefix="bench_calibrate_") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        path = write_problem(directory, n, args.max_iterations, args.uncertainty)
        truth_s = time.perf_counter() - t0
        calibration = Calibration(load_spec(path))
        ratio = gradient_ratio(calibration, args.repeats)
        print(f"forward {ratio['forward']['best_s']:.4g} s, loss+gradient {ratio['gradient']['best_s']:.4g} s: "
              f"gradient ÷ forward {ratio['ratio_best']:.2f} (median {ratio['ratio_median']:.2f}); compile "
              f"{ratio['forward']['compile_s']:.1f} + {ratio['gradient']['compile_s']:.1f} s")  # fmt: skip
        record = {**_header(args, n), "status": "partial", "truth_s": truth_s, "gradient": ratio}
        written = write_result(args.out, "bench_calibrate", n, record)  # rewritten at the end
        compiled_before = _compile_log.seconds()
        t0 = time.perf_counter()
        result = calibrate(calibration, log=lambda line: print(f"  {line}", flush=True))
        wall = time.perf_counter() - t0
        compile_s = _compile_log.seconds() - compiled_before
    names = list(result.names)
    est = dict(zip(names, result.estimate.tolist(), strict=True))
    se = dict(zip(names, result.std_error.tolist(), strict=True))
    centre = np.array([est[f"origin.centre.{i}"] for i in range(3)])
    error_mm = float(np.linalg.norm(centre - np.asarray(TRUTH["centre"])))
    errors = {
        "origin_mm": error_mm,
        "origin_voxels": error_mm / (LENGTH / n),
        "D_w_relative": (est["D_w"] - TRUTH["D_w"]) / TRUTH["D_w"],
        "rho_relative": (est["rho"] - TRUTH["rho"]) / TRUTH["rho"],
    }
    solution = {
        "wall_s": wall,
        "compile_s": compile_s,
        "run_s": wall - compile_s,
        "iterations": result.minimum.n_iterations,
        "status": result.status,
        "message": result.minimum.message,
        "loss": float(result.minimum.loss),
    }
    memory = {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device_peak_bytes": _device_peak(),
        "loss_and_gradient": ratio["gradient"]["memory"],
        "loss": ratio["forward"]["memory"],
        "state_bytes": 8 * n**3 * 2,
    }
    print(f"time to solution {wall:.1f} s ({compile_s:.1f} s compile, {wall - compile_s:.1f} s run), "
          f"{solution['iterations']} iterations, {result.status}")  # fmt: skip
    print(f"origin error {error_mm:.2f} mm ({errors['origin_voxels']:.2f} voxels), D_w {errors['D_w_relative']:+.1%}, "
          f"ρ {errors['rho_relative']:+.1%}; peak RSS {memory['peak_rss_bytes'] / 2**20:.0f} MiB, XLA temp of the "
          f"loss+gradient {memory['loss_and_gradient'].get('temp_size_in_bytes', 0) / 2**20:.0f} MiB")  # fmt: skip
    record = {
        **_header(args, n),
        "status": "complete",
        "truth_s": truth_s,
        "gradient": ratio,
        "solution": solution,
        "memory": memory,
        "truth": {k: list(v) if isinstance(v, tuple) else v for k, v in TRUTH.items()},
        "estimate": est,
        "std_error": se,
        "errors": errors,
        "metrics": {str(k): v for k, v in result.metrics.items()},
    }
    written.write_text(json.dumps(record, indent=1))
    print(f"wrote {written}")
    return 0


def _header(args, n: int) -> dict:
    import jax

    return {
        "benchmark": "bench_calibrate",
        "size": n,
        "cells": n**3,
        "spacing_mm": LENGTH / n,
        "days": list(DAYS),
        "steps": round(DAYS[-1] / DT),
        "quick": args.quick,
        "max_iterations": args.max_iterations,
        "uncertainty": args.uncertainty,
        "repeats": args.repeats,
        "platform": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
    }


if __name__ == "__main__":
    raise SystemExit(main())
