"""Benchmark the glioma model on the MNI152 atlas as users run it: one year at 2 mm and at 1 mm voxels.

Usage::

    python benchmarks/bench_glioma.py --out benchmarks/results [--resample 2 1] [--t-end 365] [--dt DAY]
        [--cell-diffusion implicit|explicit] [--repeats 2] [--no-reference] [--quick]

The run is ``experiments/glioma_atlas/atlas.toml`` (``[grid] image`` and ``[tissue] white/grey``: the
MNI152 2009a maps in nilearn's wheel, ``scale = 1/255``; a seed of 5 mm in right frontal white
matter; D_w = 0.13, D_g = 0.013 mm²/day, ρ = 0.012/day; monthly frames; float32 fields; implicit cell
diffusion, dt = 365/360 day) with ``grid.resample`` = 2 (99 × 117 × 95 cells) and 1 (the maps' own
197 × 233 × 189). Per resolution, in this process:

1. **setup**: reading the maps onto the grid (``config.load``: the model reads its images there);
2. **compile**: lowering and compiling the chunk of ``run.chunk_frames`` frames (AOT, apart);
3. **time to solution**: the run loop of ``tumorfield run`` without the HDF5 writes (``advance`` per
   chunk, per-step scalars recorded, ``jax.block_until_ready`` after each chunk), best of
   ``--repeats``; **cell-steps/s** = cells × steps / that time (all cells of the box; the brain's
   share is reported as ``domain_fraction``);
4. **accuracy** against the same run at dt/4: relative L2 of the tumour at ``t_end`` and the relative
   change of the imaging observables (``volume_flair``, ``volume_t1``, ``radius_flair``, ``total_cells``).

``--quick`` (a CPU smoke run): resample 8 (25 × 30 × 24), 30 days, explicit steps of 5 days, frames every
10 days, a 10 mm seed (a 5 mm one covers no 8 mm cell centre). Writes
``bench_glioma_<platform>_<n>_<UTC time>.json`` (``_timing.write_result``; ``n``: the first size's cells),
rewritten after every size; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ATLAS = REPO / "experiments" / "glioma_atlas" / "atlas.toml"
SCALARS = ("volume_flair", "volume_t1", "radius_flair", "total_cells")
SEED_CENTRE = [25.0, 30.0, 20.0]  # atlas.toml's: right frontal white matter (MNI mm)


def nilearn_data() -> Path:
    """nilearn's bundled data folder, which holds the MNI152 maps (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn is not installed: pip install nilearn (its wheel ships the MNI152 maps)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def atlas_config(directory: Path) -> Path:
    """``atlas.toml`` with its ``mni152/`` paths pointing into nilearn's data folder."""
    path = directory / "atlas.toml"
    path.write_text(ATLAS.read_text().replace('"mni152/', f'"{nilearn_data()}/'))
    return path


def overrides(args, resample: float, dt: float) -> list[str]:
    radius = max(5.0, 1.25 * resample)  # the seed must cover a cell centre
    return [
        f"grid.resample={resample}",
        f"time.t_end={args.t_end}",
        f"time.dt={dt}",
        f"time.save_every={args.save_every}",
        f'numerics.cell_diffusion="{args.cell_diffusion}"',
        f"run.chunk_frames={args.chunk_frames}",
        f"initial.tumor={{ centre = {SEED_CENTRE}, radius = {radius}, amplitude = 0.8 }}",
        'run.compilation_cache="off"',
    ]


def measure(config_path: Path, args, resample: float, dt: float, repeats: int) -> dict:
    """Setup, compile and best-of-``repeats`` time to solution of one run; its final tumour and scalars."""
    import equinox as eqx
    import jax
    import numpy as np
    import tumorfield_kernels as tk

    from tumorfield import config as cfg
    from tumorfield.problem import Problem

    t0 = time.perf_counter()
    config = cfg.load(config_path, overrides(args, resample, dt))
    problem = Problem.from_config(config)
    state0 = jax.block_until_ready(problem.initial_frame())
    setup_s = time.perf_counter() - t0
    sps, n_saves = config.steps_per_save, config.n_frames - 1
    chunks = [min(config.run.chunk_frames, n_saves - i) for i in range(0, n_saves, config.run.chunk_frames)]
    dynamic, static = eqx.partition(problem, eqx.is_array)
    step0 = np.int32(0)  # the dtype of Trajectory.final_step, which the next chunk starts from

    compiled, compile_s = {}, 0.0
    for n in sorted(set(chunks)):

        def chunk(arrays, state, step, n=n):
            return eqx.combine(arrays, static).advance(state, step, n, sps)

        t0 = time.perf_counter()
        compiled[n] = jax.jit(chunk).lower(dynamic, state0, step0).compile()
        compile_s += time.perf_counter() - t0

    def solve():
        state, step = state0, step0
        for n in chunks:
            traj = compiled[n](dynamic, state, step)
            jax.block_until_ready(traj)
            if not bool(traj.result == tk.RESULTS.successful):
                raise RuntimeError(f"the run failed at t ≈ {float(traj.t[-1]):.4g} day: {traj.result}")
            state, step = traj.final_state, traj.final_step.astype(step0.dtype)
        return state, traj

    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, traj = solve()
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    cells = config.grid.n_cells
    domain = np.asarray(problem.params["domain"])
    return {
        "shape": list(config.grid.shape),
        "voxel_mm": [round(s, 6) for s in config.grid.spacing],
        "cells": cells,
        "domain_fraction": float(domain.mean()),
        "dt": dt,
        "steps": config.n_steps,
        "chunks": chunks,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "wall_s": wall,
        "wall_s_all": walls,
        "cell_steps_per_s": cells * config.n_steps / wall,
        "s_per_simulated_day": wall / args.t_end,
        "tumor": np.asarray(state["tumor"], dtype=np.float64),
        "scalars": {name: float(traj.observed[name][-1]) for name in SCALARS if name in (traj.observed or {})},
    }


def bench(args) -> dict:
    import json

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # as `tumorfield run`: float64 available, fields float32
    device = jax.devices()[0]
    result = {
        "device": str(device),
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", None),
        "jax_version": jax.__version__,
        "config": str(ATLAS.relative_to(REPO)),
        "t_end": args.t_end,
        "save_every": args.save_every,
        "cell_diffusion": args.cell_diffusion,
        "repeats": args.repeats,
        "sizes": {},
    }
    from _timing import write_result  # benchmarks/ is the script's directory, first on sys.path

    written = None
    with tempfile.TemporaryDirectory() as tmp:
        config_path = atlas_config(Path(tmp))
        for resample in args.resample:
            print(f"resample {resample:g}: dt = {args.dt:.6g} day, {args.t_end:g} days …", flush=True)
            run = measure(config_path, args, resample, args.dt, args.repeats)
            tumor = run.pop("tumor")
            entry = {**run, "finite": bool(np.isfinite(tumor).all()), "max_tumor": float(tumor.max())}
            if args.reference:
                ref = measure(config_path, args, resample, args.dt / 4, 1)
                ref_tumor = ref.pop("tumor")
                entry["reference"] = {k: ref[k] for k in ("dt", "steps", "compile_s", "wall_s", "scalars")}
                entry["rel_l2_error_vs_dt_over_4"] = float(
                    np.linalg.norm(tumor - ref_tumor) / max(np.linalg.norm(ref_tumor), 1e-300)
                )
                entry["scalar_rel_change_vs_dt_over_4"] = {
                    name: abs(value - ref["scalars"][name]) / max(abs(ref["scalars"][name]), 1e-300)
                    for name, value in run["scalars"].items()
                }
            result["sizes"]["x".join(map(str, run["shape"]))] = entry
            print(
                f"  {entry['shape']} ({entry['cells']:,} cells, brain {entry['domain_fraction']:.0%}): setup "
                f"{entry['setup_s']:.2f} s, compile {entry['compile_s']:.2f} s, solve {entry['wall_s']:.3f} s, "
                f"{entry['cell_steps_per_s']:.3g} cell-steps/s"
                + (f", L2 vs dt/4 {entry['rel_l2_error_vs_dt_over_4']:.2e}" if args.reference else ""),
                flush=True,
            )
            if written is None:  # after every size, so that a stage timeout keeps what was measured
                written = write_result(args.out, "bench_glioma", entry["cells"], result)
            else:
                written.write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--resample", type=float, nargs="+", default=None, help="grid.resample values (2 1)")
    parser.add_argument("--t-end", type=float, default=None, help="days (365)")
    parser.add_argument("--dt", type=float, default=None, help="day (365/360; --quick: 5)")
    parser.add_argument("--save-every", type=float, default=None, help="day (t_end/12; --quick: 10)")
    parser.add_argument("--cell-diffusion", choices=("implicit", "explicit"), default=None)
    parser.add_argument("--chunk-frames", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the dt/4 run")
    parser.add_argument("--quick", action="store_true", help="8 mm cells, 30 days: a CPU smoke run")
    args = parser.parse_args(argv)
    quick = args.quick
    args.resample = args.resample or ([8.0] if quick else [2.0, 1.0])
    args.t_end = args.t_end or (30.0 if quick else 365.0)
    args.dt = args.dt or (5.0 if quick else args.t_end / 360)
    args.save_every = args.save_every or (10.0 if quick else args.t_end / 12)
    args.cell_diffusion = args.cell_diffusion or ("explicit" if quick else "implicit")
    steps = args.t_end / args.dt
    per_save = args.save_every / args.dt
    if abs(steps - round(steps)) > 1e-9 * steps or abs(per_save - round(per_save)) > 1e-6:
        raise SystemExit(f"--dt {args.dt} must divide --t-end {args.t_end} and --save-every {args.save_every}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    bench(args)


if __name__ == "__main__":
    main()
