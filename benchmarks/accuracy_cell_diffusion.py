"""Accuracy of explicit vs implicit (MPRK22, split) cell diffusion on the voloshin2015 PTX arm.

Runs ``experiments/voloshin2015/ptx.toml`` (grid from ``--shape``) to ``--t-end`` with each
``cell_diffusion`` at the config's dt and at larger multiples where accepted, and compares the
tumour field at the end with an explicit run at dt/4 (relative L2). Prints JSON (timings include
compilation; they are not speed claims).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/accuracy_cell_diffusion.py --shape 64 64 --t-end 21
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tumorfield_kernels import (
    ExplicitDiffusion,
    ImplicitDiffusion,
    Numerics,
    SaveAt,
    Scan,
    Subcycle,
    cast_floats,
    initial_frame,
    simulate,
    step_limits,
)

import tumorfield.config as cfg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--t-end", type=float, default=21.0)
    parser.add_argument("--multiples", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    args = parser.parse_args()
    text = open("experiments/voloshin2015/ptx.toml").read().replace("shape = [64, 64]", f"shape = {args.shape}")
    config = cfg.loads(text)
    model, grid, dt0 = config.model, config.grid, config.time.dt
    params = cast_floats(model.params(grid), "float32")
    float32 = Numerics(dtype="float32")
    frame = initial_frame(model.system, grid, model.initial_state(grid), params, numerics=float32)
    limits = step_limits(model.system, grid, frame, params, numerics=float32)
    diffusion = {"explicit": ExplicitDiffusion(), "implicit": ImplicitDiffusion()}

    def run(dt, cell_diffusion):
        t0 = time.perf_counter()
        numerics = Numerics(diffusion[cell_diffusion], Subcycle(64), Scan(), dtype="float32")
        traj = simulate(model.system, grid, frame, t_end=args.t_end, dt=dt, params=params, numerics=numerics,
                        saveat=SaveAt(every=args.t_end), throw=False)  # fmt: skip
        tumor = np.asarray(traj["tumor"][-1], np.float64)
        return tumor, traj, time.perf_counter() - t0

    reference, _, _ = run(dt0 / 4, "explicit")
    rows = []
    for cell_diffusion in ("explicit", "implicit"):
        for multiple in args.multiples:
            dt = dt0 * multiple
            n = round(args.t_end / dt)
            if abs(n * dt - args.t_end) > 1e-9:
                continue
            tumor, traj, wall = run(dt, cell_diffusion)
            err = float(np.linalg.norm(tumor - reference) / np.linalg.norm(reference))
            rows.append({
                "cell_diffusion": cell_diffusion, "dt": dt, "result": "successful" if traj.successful else "failed",
                "rel_l2_vs_explicit_dt_over_4": err,
                "max_substeps": int(np.max(np.asarray(traj.stats.substeps))), "min_tumor": float(tumor.min()),
                "wall_s_incl_compile": wall,
            })  # fmt: skip
            print(rows[-1], flush=True)
    print(json.dumps({"shape": args.shape, "t_end": args.t_end, "dt_config": dt0, "limits_t0": limits, "runs": rows}))


if __name__ == "__main__":
    main()
