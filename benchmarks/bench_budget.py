"""A device-independent performance budget: what XLA compiles one step into, checked against a committed budget.

Usage::

    python benchmarks/bench_budget.py [--out DIR] [--cases NAME ...] [--vjp] [--top 10] [--hlo DIR]
        [--check benchmarks/budget.json] [--write-budget benchmarks/budget.json]

Per case, ONE step of the model as ``tumorfield run`` takes it (``Problem.from_config``: the
config's numerics, ``numerics.cell_diffusion = "auto"`` resolved as ``RunConfig.numerics`` does,
float32 fields, float64 scalar ODEs; the rollout's ``Stepper.step(state, carried, t)`` with the
stepper's arrays as arguments, as the rollout holds them loop-invariant), lowered on abstract
shapes (nothing runs) and compiled; with ``--vjp`` also the reverse-mode step of a fit
(``jax.vjp`` of that step, forward recomputed, as ``SqrtCheckpointed``'s backward pass runs it):

- ``voloshin2015_ptx_256x256``: ``experiments/voloshin2015/ptx.toml`` at 256² on 8 × 8 mm;
- ``voloshin2015_ptx_64x64x64``: the same arm at 64³ on an 8 mm cube;
- ``glioma_atlas_99x117x95``: ``experiments/glioma_atlas/atlas.toml``'s grid (2 mm, 99 × 117 × 95),
  time step, numerics (implicit cell diffusion) and parameters, on a box of uniform white matter
  instead of the MNI152 maps (8 s to read): the maps are parameter arrays of the same shapes, so
  the compiled step is the same program.

Measured (``_cost.analyse``): XLA's ``cost_analysis()`` bytes accessed and flops per cell-step, the
fusions, kernels and FFTs of the program, the same on the common path (no sub-cycling), the top
consumers with their source lines, compile seconds; and the **floor** (:func:`floor`): the bytes per
cell-step of the method were every field read and written once per stage. JSON
``bench_budget_<platform>_<UTC time>.json`` in ``--out``; a table on stdout.

``--check BUDGET`` exits 1 naming the case, the figure, its budget and the measured value where a
figure is over budget, and warns where one has improved beyond the margin (tighten the budget);
``--write-budget BUDGET`` writes the measured figures with the margins of :data:`MARGINS`.
See ``benchmarks/README.md`` and ``docs/numerics.md`` §12.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import _cost  # benchmarks/ is the script's directory, first on sys.path

REPO = Path(__file__).resolve().parent.parent
PTX = REPO / "experiments" / "voloshin2015" / "ptx.toml"
ATLAS = REPO / "experiments" / "glioma_atlas" / "atlas.toml"
ATLAS_SHAPE = [99, 117, 95]  # atlas.toml's grid: the MNI152 maps (197 × 233 × 189 at 1 mm) at resample = 2
ATLAS_VOXEL_MM = 2.0
CASES = ("voloshin2015_ptx_256x256", "voloshin2015_ptx_64x64x64", "glioma_atlas_99x117x95")
# figure: (kind, value). "ratio": limit = recorded × value (fusions rounded up); "plus": limit = recorded + value.
# cost_analysis and the HLO are deterministic for one jax version (equal figures from two processes), so the
# margin absorbs no noise: 5 % lets a small deliberate change through (a term more in a model) and stops a
# regression of 5 % (at 256², 184 B of the common path's 3,681 per cell-step: 46 float32 passes); FFTs exact.
MARGINS = {
    "bytes_per_cell_step": ("ratio", 1.05),
    "common_bytes_per_cell_step": ("ratio", 1.05),
    "fusions": ("ratio", 1.05),
    "ffts": ("plus", 0),
}
PROGRAMS = ("step", "vjp")


def _config(case: str):
    """The run config of a case (``tumorfield.config``), loaded as ``tumorfield run`` loads it."""
    from tumorfield import config as cfg

    if case.startswith("voloshin2015_ptx_"):
        shape = [int(n) for n in case.removeprefix("voloshin2015_ptx_").split("x")]
        return cfg.load(PTX, [f"grid.shape={shape}", f"grid.length={[8.0] * len(shape)}"])
    if case == "glioma_atlas_99x117x95":
        return glioma_box(ATLAS_SHAPE)
    raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def glioma_box(shape):
    """``atlas.toml``'s run config on a box of ``shape`` cells of uniform white matter (2 mm cells), the
    tumour seeded at its centre: the glioma model's numerics and parameters without reading the maps."""
    from tumorfield import config as cfg
    from tumorfield.config import to_toml

    sections = tomllib.loads(ATLAS.read_text())
    sections["grid"] = {"shape": list(shape), "length": [ATLAS_VOXEL_MM * n for n in shape]}
    sections["tissue"] = {"uniform": "white"}
    centre = [ATLAS_VOXEL_MM * n / 2 for n in reversed(shape)]  # world (x, y, z) of the box centre
    sections["initial"]["tumor"] = {**sections["initial"]["tumor"], "centre": centre}
    return cfg.loads(to_toml(sections), source=f"{ATLAS.relative_to(REPO)} (box of uniform white matter)")


def floor(system, grid, params, numerics) -> dict:
    """Bytes per cell-step of the method were every array read and written once per stage.

    ``itemsize × [S × (2 F + C) + 2·ndim × 2 × 3 P]``: ``S = 2`` stages of the explicit step (SSP-RK2
    for cell fields, ETDRK2 for spectral and pointwise ones), each reading and writing the ``F``
    grid fields of the state (time-dependent and quasi-steady; scalar ODE variables are no cells)
    and reading the ``C`` constant maps of the model (parameters of the grid's shape); with implicit
    cell diffusion, ``2·ndim`` axis sweeps per step (a half step per axis before and after the
    explicit step), each an MPRK22 of 2 tridiagonal solves that read and write each of the ``P``
    split fields and read its face weights along the axis.

    Beside it, ``with_transforms``: the same plus one read and one write per DCT, ``T`` of them per
    step (each field solved by a DCT — quasi-steady, or exponential with diffusion — is transformed
    forward and back at each stage: ``T = 4 × those fields``); the floor of this *implementation*,
    whose transforms are separate passes.
    """
    import jax
    import numpy as np

    fields = [name for name in system.fields if name not in system.scalars]
    constants = [leaf for leaf in jax.tree_util.tree_leaves(params) if np.shape(leaf) == tuple(grid.shape)]
    split = numerics.cell_diffusion.split_fields(system)
    by_dct = [name for name in fields if name in system.quasi_steady or system.method(name) == "exponential"]
    spectral = [name for name in by_dct if system.diffusion.get(name, 0.0) != 0.0]  # a stored 0 is the float 0.0
    itemsize = numerics.float_dtype.itemsize
    explicit = 2 * (2 * len(fields) + len(constants))
    implicit = 2 * grid.ndim * 2 * 3 * len(split)
    transforms = 4 * len(spectral)
    return {
        "bytes_per_cell_step": itemsize * (explicit + implicit),
        "formula": "itemsize × [S × (2 F + C) + 2·ndim × 2 × 3 P]",
        "itemsize": itemsize,
        "stages": 2,
        "grid_fields": fields,
        "constant_maps": len(constants),
        "split_fields": list(split),
        "arrays_per_cell_step": explicit + implicit,
        "transformed_fields": spectral,
        "transforms_per_step": transforms,
        "with_transforms": itemsize * (explicit + implicit + 2 * transforms),
    }


def build(case: str):
    """``(step, vjp, arguments, facts)``: the step and its reverse-mode form as functions of abstract
    arguments (the stepper's arrays, the state, the carried spectral coefficients, the time)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import tumorfield_kernels as tk

    from tumorfield.problem import Problem

    t0 = time.perf_counter()
    config = _config(case)
    problem = Problem.from_config(config)
    system, grid, numerics = problem.system, problem.grid, problem.numerics
    stepper = eqx.filter_eval_shape(tk.make_stepper, system, grid, problem.params, problem.dt, numerics)
    arrays, static = eqx.partition(stepper, lambda x: isinstance(x, jax.ShapeDtypeStruct))
    state = eqx.filter_eval_shape(problem.initial_frame)
    carried = eqx.filter_eval_shape(lambda a, s: eqx.combine(a, static).prepare(s), arrays, state)
    t = jax.ShapeDtypeStruct((), jnp.dtype(numerics.float_dtype))

    def step(arrays, state, carried, t):
        new, new_carried, _ = eqx.combine(arrays, static).step(state, carried, t)
        return new, new_carried

    def vjp(arrays, state, carried, t, cotangent):
        _, pullback = jax.vjp(lambda a, s, c: step(a, s, c, t), arrays, state, carried)
        return pullback(cotangent)

    facts = {
        "config": config.source,
        "shape": list(grid.shape),
        "cells": grid.n_cells,
        "dtype": str(jnp.dtype(numerics.float_dtype)),
        "dt": problem.dt,
        "numerics": {
            "cell_diffusion": type(numerics.cell_diffusion).__name__,
            "cell_diffusion_reason": config.cell_diffusion_choice[1],
            "substeps": repr(numerics.substeps),
        },
        "floor": floor(system, grid, problem.params, numerics),
        "setup_s": time.perf_counter() - t0,
    }
    return step, vjp, (arrays, state, carried, t), facts


def measure(case: str, with_vjp: bool, top: int, hlo: Path | None = None) -> dict:
    import jax

    step, vjp, arguments, facts = build(case)
    cells, floor_bytes = facts["cells"], facts["floor"]["bytes_per_cell_step"]
    out = dict(facts)
    programs = {"step": (step, arguments)}
    if with_vjp:
        cotangent = jax.eval_shape(step, *arguments)
        programs["vjp"] = (vjp, (*arguments, cotangent))
    for name, (fn, args) in programs.items():
        print(f"  {case}: compiling the {name} …", flush=True)
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        cost = _cost.analyse(compiled, cells=cells, top=top)
        if hlo is not None:
            hlo.mkdir(parents=True, exist_ok=True)
            (hlo / f"{case}_{name}.hlo.txt").write_text(compiled.as_text())
        out[name] = {
            "lower_s": t1 - t0,
            "compile_s": t2 - t1,
            "bytes_per_cell_step": cost["bytes_per_cell"],
            "common_bytes_per_cell_step": cost["common_path"]["bytes_per_cell"],
            "ratio_to_floor": cost["bytes_per_cell"] / floor_bytes,
            "common_ratio_to_floor": cost["common_path"]["bytes_per_cell"] / floor_bytes,
            "flops_per_cell_step": cost["flops_per_cell"],
            "fusions": cost["fusions"],
            "kernels": cost["kernels"],
            "ffts": cost["ffts"],
            **cost,
        }
    return out


# --- the budget ---------------------------------------------------------------------------------


def figures(result: dict) -> dict[str, dict[str, float]]:
    """``{case: {"step.bytes_per_cell_step": value, …}}``: the budgeted figures of a measurement."""
    out = {}
    for case, entry in result["cases"].items():
        out[case] = {
            f"{program}.{figure}": entry[program][figure]
            for program in PROGRAMS
            if program in entry
            for figure in MARGINS
        }
    return out


def limit(figure: str, recorded: float) -> float:
    kind, value = MARGINS[figure.split(".", 1)[1]]
    if kind == "plus":
        return recorded + value
    bound = recorded * value
    return math.ceil(round(bound, 6)) if isinstance(recorded, int) else bound  # round: 100 × 1.1 is 110.00000000000001


def make_budget(result: dict) -> dict:
    return {
        "about": "bench_budget.py --check: each figure must stay ≤ limit; written by bench_budget.py --write-budget",
        "platform": result["platform"],
        "jax_version": result["jax_version"],
        "git": result["git"],
        "written": result["time"],
        "margins": {figure: f"{'×' if kind == 'ratio' else '+'} {value}" for figure, (kind, value) in MARGINS.items()},
        "cases": {
            case: {name: {"recorded": value, "limit": limit(name, value)} for name, value in values.items()}
            for case, values in figures(result).items()
        },
    }


def check(measured: dict[str, dict[str, float]], budget: dict, platform: str, jax_version: str | None = None):
    """``(failures, warnings)`` of ``measured`` (:func:`figures`) against ``budget`` (:func:`make_budget`):
    a failure where a figure exceeds its limit, a warning where it has improved by more than its margin
    (the budget should be tightened) or was not measured (a case or program left out)."""
    failures, warnings = [], []
    if budget.get("platform") != platform:
        return [f"the budget is for platform {budget.get('platform')!r}, this run is on {platform!r}"], []
    version = budget.get("jax_version")
    if jax_version is not None and version != jax_version:
        warnings.append(f"the budget was recorded with jax {version}, this is jax {jax_version}: XLA may fuse anew")
    for case, entries in budget["cases"].items():
        missing = [name for name in entries if name not in measured.get(case, {})]
        if missing:
            warnings.append(f"{case}: not measured: {', '.join(missing)} (--cases, --vjp)")
        for name, entry in entries.items():
            value, recorded, bound = measured.get(case, {}).get(name), entry["recorded"], entry["limit"]
            if value is None:
                continue
            if value > bound:
                failures.append(
                    f"{case}: {name} = {value:g} is over its budget {bound:g} (recorded {recorded:g} with jax "
                    f"{version}; +{100 * (value / recorded - 1):.1f} %)"
                )
            elif value < recorded and limit(name, value) < recorded:
                warnings.append(
                    f"{case}: {name} = {value:g} is {100 * (1 - value / recorded):.1f} % below the recorded "
                    f"{recorded:g}: tighten the budget (bench_budget.py --write-budget benchmarks/budget.json)"
                )
    return failures, warnings


def verdict(result: dict, budget_path: Path) -> int:
    """Prints the check of ``result`` (a measurement) against the budget file; 1 if over budget, else 0."""
    budget = json.loads(Path(budget_path).read_text())
    failures, warnings = check(figures(result), budget, result["platform"], result.get("jax_version"))
    for line in warnings:
        print(f"budget: warning: {line}")
    for line in failures:
        print(f"budget: OVER: {line}")
    print(f"budget: {len(failures)} over budget, {len(warnings)} warnings ({budget_path})")
    return 1 if failures else 0


# --- the run ------------------------------------------------------------------------------------


def _git() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def print_table(result: dict) -> None:
    print(
        f"{'case':<27} {'program':<5} {'cells':>9} {'B/cell-st':>9} {'common':>7} {'floor':>6} {'ratio':>6} "
        f"{'common':>6} {'fusions':>7} {'common':>6} {'FFTs':>5} {'common':>6} {'compile s':>9}"
    )
    for case, entry in result["cases"].items():
        for program in PROGRAMS:
            if program not in entry:
                continue
            m, common = entry[program], entry[program]["common_path"]
            print(
                f"{case:<27} {program:<5} {entry['cells']:>9} {m['bytes_per_cell_step']:>9.0f} "
                f"{m['common_bytes_per_cell_step']:>7.0f} {entry['floor']['bytes_per_cell_step']:>6} "
                f"{m['ratio_to_floor']:>6.1f} {m['common_ratio_to_floor']:>6.1f} {m['fusions']:>7} "
                f"{common['fusions']:>6} {m['ffts']:>5} {common['ffts']:>6} {m['compile_s']:>9.1f}"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder of the JSON result (none: not written)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--vjp", action="store_true", help="also the reverse-mode step (compiles 1–3 min per case)")
    parser.add_argument("--top", type=int, default=10, help="top consumers recorded per program")
    parser.add_argument("--hlo", type=Path, help="folder for the optimized HLO text of each program")
    parser.add_argument("--check", type=Path, help="budget file: exit 1 where a figure is over budget")
    parser.add_argument("--write-budget", type=Path, help="write the measured figures as the budget")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax

    jax.config.update("jax_enable_x64", True)  # as `tumorfield run`: float64 scalar ODEs, float32 fields
    device = jax.devices()[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "platform": device.platform,
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "jax_version": jax.__version__,
        "git": _git(),
        "time": stamp,
        "cases": {},
    }
    for case in args.cases:
        result["cases"][case] = measure(case, args.vjp, args.top, args.hlo)
    print_table(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"bench_budget_{device.platform}_{stamp}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
    if args.write_budget is not None:
        args.write_budget.write_text(json.dumps(make_budget(result), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.write_budget}")
    if args.check is None:
        return 0
    return verdict(result, args.check)


if __name__ == "__main__":
    sys.exit(main())
