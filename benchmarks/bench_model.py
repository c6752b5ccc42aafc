"""Benchmark the full voloshin2015 model as users run it: the PTX arm to day 21, now and before issue 14.

Usage::

    python benchmarks/bench_model.py --out benchmarks/results [--sizes 256 512 64x3 128x3] [--t-end 21]
        [--cell-diffusion explicit implicit] [--baseline 2e64a49 | --baseline-tree DIR | --no-baseline]
        [--repeats 2] [--no-reference | --no-baseline-reference] [--dt-from-t0] [--max-dt DAY] [--lean]
        [--worker-timeout S] [--no-limits] [--quick]

The arm is ``experiments/voloshin2015/ptx.toml`` (paclitaxel 20 mg/kg i.p. every 4 days
from day 3; 8 mm box per axis; frames every 0.5 day; float32 fields, float64 scalar ODEs,
as ``tumorfield run`` runs it). Per grid and per source tree (this checkout, and the commit
before issue 14 exported with ``git archive`` into a temporary folder), one subprocess with
``PYTHONPATH=TREE/src:TREE/kernels`` measures:

1. **the largest accepted dt**: the largest ``save_every / k`` (so that it divides the save
   interval and the dose times, which are whole days) within the solver's positivity limit
   over the run (``tumorfield_kernels.max_stable_dt_over_run``, the pre-check ``tumorfield
   run`` applies at t = 0, extended over the run) that the config accepts
   (``Voloshin2015.validate``) and that completes with the in-run positivity check on;
2. **time to solution** at that dt: the run loop of ``tumorfield run`` (``advance`` over
   chunks of ``run.chunk_frames`` frames, per-step scalars recorded, ``block_until_ready``
   after each chunk) without the HDF5 writes; the first run compiles (XLA compile seconds
   from ``jax.monitoring``, reported apart), the next ``--repeats`` runs are timed warm;
3. **its error** against a run at dt/4: relative L2 of the tumour field at ``t_end``, and
   the relative change of the main scalars (tumour volume, front radius, …);
4. **cell-steps per second** and the **fraction of the memory-bandwidth bound** under the
   bytes model :data:`BYTES_MODEL`, with the bandwidth of this device measured in the same
   subprocess by a large jitted copy (``y = x + 1``, float32, read + write) and a STREAM triad
   (``a = b + s·c``, float32, 2 reads + 1 write); and under XLA's own count
   (``xla_cost``): ``cost_analysis()["bytes accessed"]`` of one compiled step of the run's
   stepper (``tk.make_stepper``, with the per-step observables unless ``--lean``) ÷ cells
   (``xla_bytes_per_cell_step``; XLA counts a conditional at its costliest branch: the
   sub-cycled step) and, where ``benchmarks/_cost.py`` reads the program's HLO, its **common
   path** (every conditional at its cheapest branch: the step without sub-cycling, the one the
   runs take unless ``substeps`` says otherwise) with its kernels and largest consumers.
   ``bytes_per_cell_step`` is the common path's (else XLA's; ``bytes_basis`` says which): with the
   timed runs' cell-steps/s, the bandwidth reached as a fraction of the triad and of the device's
   peak (:data:`PEAK_BANDWIDTH`, from ``device_kind``). One step, not the rollout: XLA's cost
   analysis counts a loop's body once, not once per iteration (``xla_cost.loop_probe`` checks
   this on the backend at hand), so the rollout's figure ÷ steps would be wrong by the steps;
5. **what binds the step**: the positivity limit at every saved frame, for the run's own
   system, with the taxis coefficients set to zero (the diffusion + reaction limit) and with
   the cell fields' diffusion set to zero (the taxis + reaction limit); with issue 14's core,
   ``tumorfield_kernels.step_limits`` (explicit, split and diffusion-alone limits); not with
   ``--no-limits`` (three programs fewer to compile: the 3D stage of ``gpu_suite.sh``).

The worker rewrites its result after every phase (status ``partial``), so a worker stopped by
``--worker-timeout`` or by a signal still leaves what it measured in the JSON (its status then
``timeout`` or ``interrupted``).

Where the checkout has ``[numerics] cell_diffusion``, each value in ``--cell-diffusion`` is a
separate run. One JSON file ``bench_model_<platform>_<UTC time>.json`` holds every tree and
grid; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sizes import label, parse_size  # benchmarks/ is the script's directory, first on sys.path

REPO = Path(__file__).resolve().parent.parent
CONFIG = Path("experiments/voloshin2015/ptx.toml")
BOX_MM = 8.0
SAVE_EVERY = 0.5  # day; the doses of the arm are at whole days, so dt = SAVE_EVERY / k divides them


def steps_per_save(dt_max: float) -> int:
    """The fewest steps ``k`` per saved frame with ``SAVE_EVERY / k ≤ dt_max`` (to round-off)."""
    return max(1, math.ceil(SAVE_EVERY / dt_max * (1 - 1e-9)))


BASELINE_COMMIT = "2e64a49"
MAIN_SCALARS = (
    "tumor_volume",
    "front_radius",
    "invasion_distance",
    "invasive_fraction",
    "m2_fraction",
    "metastatic_burden",
    "circulating_cells",
)
BYTES_MODEL = (
    "bytes per cell-step = itemsize × (2 stages × (read + write) × grid fields + 2 stages × read × constant "
    "fields); voloshin2015: 4 B × (2 × 2 × 11 + 2 × 1) = 184 B (11 grid fields: tumor, ecm, mde, chemo, m1, "
    "m2, il1b, vegf, leakiness, paclitaxel, anakinra; 1 constant field: the vessel map). A lower bound on "
    "the traffic: the DCTs of the spectral and quasi-steady fields and the stencil temporaries move more."
)

PEAK_BANDWIDTH = (  # (pattern of device_kind, bytes/s, source); the first match wins
    (r"\bGH200\b", None, "GH200: 4.0 TB/s (96 GB HBM3) or 4.9 TB/s (144 GB HBM3e), not told apart by its name"),
    (r"\bH200\b", 4.8e12, "NVIDIA H200 Tensor Core GPU datasheet: 4.8 TB/s (H200 SXM and NVL)"),
    (r"\bH100\b.*\bNVL\b", 3.9e12, "NVIDIA H100 Tensor Core GPU datasheet: H100 NVL 3.9 TB/s"),
    (r"\bH100\b.*\bPCIe\b", 2.0e12, "NVIDIA H100 Tensor Core GPU datasheet: H100 PCIe 2 TB/s"),
    (r"\bH100\b", 3.35e12, "NVIDIA H100 Tensor Core GPU datasheet: H100 SXM 3.35 TB/s"),
)
ISSUE_BANDWIDTH = 2.7e12
"""Issue 24's estimate of the bandwidth the step can reach on an H100 (≈ 2.7 TB/s): its goal is ≥ 1 G
cell-steps/s for the full 3D model, estimated as this ÷ the bytes per cell-step."""


def peak_bandwidth(device_kind: str | None) -> dict:
    """The device's peak memory bandwidth from :data:`PEAK_BANDWIDTH` (``bytes_per_s`` None: not in it)."""
    import re

    for pattern, value, source in PEAK_BANDWIDTH:
        if device_kind and re.search(pattern, device_kind):
            return {"bytes_per_s": value, "source": source, "device_kind": device_kind}
    return {"bytes_per_s": None, "source": "device_kind not in bench_model.PEAK_BANDWIDTH", "device_kind": device_kind}


def has_numerics_keys(tree: Path) -> dict:
    """Whether the tree's core (``advance(cell_diffusion=…)``, issue 14; ``Numerics(cell_diffusion=…)``,
    issue 21) and config (``[numerics] cell_diffusion``) know the cell-diffusion option of issue 14."""
    core = tree / "kernels" / "tumorfield_kernels"
    folder = tree / "src" / "tumorfield" / "config"
    return {
        "core": any(p.exists() and "cell_diffusion" in p.read_text(errors="replace") for p in core.glob("_*.py")),
        "config": any("cell_diffusion" in p.read_text(errors="replace") for p in folder.glob("*.py")),
    }


# --- worker (runs in a subprocess, on the tree named by PYTHONPATH) ----------------------------


def _copy_bandwidth(n_elements: int, repeats: int = 10) -> dict:
    """Sustained bandwidth (bytes/s) of a jitted ``y = x + 1`` (float32: 4 B read + 4 B written)."""
    import jax
    import jax.numpy as jnp

    x = jnp.arange(n_elements, dtype=jnp.float32)
    compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
    jax.block_until_ready(compiled(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x))
        times.append(time.perf_counter() - t0)
    return {"copy_bytes_per_s": 8 * n_elements / min(times), "copy_elements": n_elements, "copy_s_all": times}


def _triad_bandwidth(n_elements: int, repeats: int = 10) -> dict:
    """Sustained bandwidth (bytes/s) of a jitted STREAM triad ``a = b + 1.5 c`` (float32: 2 × 4 B read, 4 B written)."""
    import jax
    import jax.numpy as jnp

    b = jnp.arange(n_elements, dtype=jnp.float32)
    c = jnp.ones(n_elements, dtype=jnp.float32)
    compiled = jax.jit(lambda u, v: u + 1.5 * v).lower(b, c).compile()
    jax.block_until_ready(compiled(b, c))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(b, c))
        times.append(time.perf_counter() - t0)
    return {"triad_bytes_per_s": 12 * n_elements / min(times), "triad_elements": n_elements, "triad_s_all": times}


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return dict(cost or {})


def _loop_probe() -> dict:
    """Whether XLA's cost analysis on this backend counts a loop's body once per iteration: the bytes of
    a ``fori_loop`` of 4 and of 16 iterations over 2²⁰ floats (the same when it counts the body once)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((1 << 20,), jnp.float32)
    found = {}
    for n in (4, 16):
        loop = jax.jit(lambda v, n=n: jax.lax.fori_loop(0, n, lambda i, a: a * 1.0001 + 1.0, v))
        found[n] = float(_cost(loop.lower(x).compile()).get("bytes accessed", float("nan")))
    return {"bytes_4_iterations": found[4], "bytes_16_iterations": found[16],
            "counts_iterations": bool(found[16] > 2 * found[4])}  # fmt: skip


def _step_cost(system, grid, params, dt, numerics, state, t, observe, cells: int) -> dict:
    """XLA's cost analysis of one compiled step of the rollout (the stepper's step, then the per-step
    observables where the run records them) at ``state``: bytes accessed, flops, compile seconds; and
    ``benchmarks/_cost.py``'s reading of its HLO (the common path, kernels, largest consumers) where
    it succeeds.

    The arrays of the system, the parameters, ``t`` and ``dt`` are arguments (as in the rollout), not
    constants folded into the program."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import tumorfield_kernels as tk

    dynamic, static = eqx.partition((system, params, numerics), eqx.is_array)

    def build(dynamic, dt):
        system_, params_, numerics_ = eqx.combine(dynamic, static)
        return tk.make_stepper(system_, grid, params_, dt, numerics_)

    def one(dynamic, state, carried, t, dt):
        stepper = build(dynamic, dt)
        new, carried, _ = stepper.step(state, carried, t)
        observed = None if observe is None else observe(new, stepper.params, t + dt)
        return new, carried, observed

    dtype = numerics.float_dtype
    t_, dt_ = jnp.asarray(t, dtype), jnp.asarray(dt, dtype)
    carried = jax.eval_shape(lambda d, s, dt: build(d, dt).prepare(s), dynamic, state, dt_)
    t0 = time.perf_counter()
    compiled = jax.jit(one).lower(dynamic, state, carried, t_, dt_).compile()
    compile_s = time.perf_counter() - t0
    cost = _cost(compiled)
    memory = compiled.memory_analysis()
    out = {
        "what": "one step of the rollout (Stepper.step" + (", then the per-step observables)" if observe else ")"),
        "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
        "flops": float(cost.get("flops", float("nan"))),
        "compile_s": compile_s,
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None) if memory is not None else None,
    }
    try:  # benchmarks/_cost.py (issue 24, part 3), where this tree has it: the HLO's common path
        import _cost as hlo_cost

        found = hlo_cost.analyse(compiled, cells=cells, top=8)
        out["hlo"] = {k: found[k] for k in ("kernels", "fusions", "ffts", "estimate_vs_xla", "common_path", "top")
                      if k in found}  # fmt: skip
    except Exception as error:  # noqa: BLE001 - absent or unreadable: XLA's figure alone, said so
        out["hlo"] = {"error": f"{type(error).__name__}: {error}"}
    return out


def _peak_memory_bytes() -> dict:
    import resource

    import jax

    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has memory statistics
        stats = None
    out = {"host_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if stats:
        out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
        out["device_bytes_limit"] = stats.get("bytes_limit")
    return out


def _limit_variants(system):
    """The run's system, with taxis off (diffusion + reaction limit), with cell diffusion off (taxis + reaction)."""
    import equinox as eqx
    from tumorfield_kernels import Taxis

    taxis_fields = {tx.field for tx in system.taxis}
    no_taxis = eqx.tree_at(
        lambda s: s.taxis,
        system,
        tuple(Taxis(field=tx.field, attractant=tx.attractant, chi=0.0) for tx in system.taxis),
    )
    diffusion = {name: (0.0 if name in taxis_fields else d) for name, d in system.diffusion.items()}
    no_cell_diffusion = eqx.tree_at(lambda s: s.diffusion, system, diffusion)
    return {"run": system, "diffusion_reaction": no_taxis, "taxis_reaction": no_cell_diffusion}


def worker(spec: dict, out: dict | None = None) -> dict:
    """One tree, one grid, one cell-diffusion option: dt, time to solution, error, limits.

    Fills ``out`` (a new dict by default) as it goes and writes it to ``spec["result"]`` after every
    phase with status ``partial``, so that a worker stopped early leaves what it measured."""
    import jax

    jax.config.update("jax_enable_x64", True)  # as `tumorfield run`: scalar ODEs in float64, fields float32
    import jax.numpy as jnp
    import numpy as np
    import tumorfield_kernels as tk

    import tumorfield
    from tumorfield import config as cfg

    compile_s = {"total": 0.0}

    def on_duration(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compile_s["total"] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    device = jax.devices()[0]
    shape = tuple(spec["shape"])
    cells = math.prod(shape)
    out = {} if out is None else out

    def save(phase: str) -> None:
        out["status"], out["phase_done"] = "partial", phase
        if spec.get("result"):
            Path(spec["result"]).write_text(json.dumps(out, indent=2, default=_json_default))

    out.update({
        "tree": spec["tree"],
        "tumorfield_file": tumorfield.__file__,
        "device": str(device),
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", None),
        "jax_version": jax.__version__,
        "shape": shape,
        "cells": cells,
        "cell_diffusion": spec.get("cell_diffusion"),
        "persistent_compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR"),  # None: compiles afresh
    })  # fmt: skip
    out["bandwidth"] = {**_copy_bandwidth(spec["bandwidth_elements"]), **_triad_bandwidth(spec["bandwidth_elements"])}
    bandwidth = out["bandwidth"]["copy_bytes_per_s"]
    out["peak_bandwidth"] = peak_bandwidth(out["device_kind"])
    save("bandwidth")
    t_end = spec["t_end"]
    base = [
        f"grid.shape={list(shape)}",
        f"grid.length={[BOX_MM] * len(shape)}",
        f"time.t_end={t_end}",
        'run.compilation_cache="off"',
    ]
    if spec.get("cell_diffusion") and spec.get("config_has_numerics"):
        base.append(f'numerics.cell_diffusion="{spec["cell_diffusion"]}"')
    config_path = Path(spec["tree"]) / CONFIG

    def load(dt, save_every=SAVE_EVERY):
        return cfg.load(config_path, [*base, f"time.dt={dt}", f"time.save_every={save_every}"])

    config = load(SAVE_EVERY / 25)
    model, grid, system = config.model, config.grid, config.model.system
    precision = config.output.precision
    dtype = jnp.dtype(precision)
    params = tk.cast_floats(model.params(grid), precision)
    # the tree's core takes its numerics as issue 21's Numerics objects, or as keywords (issue 14:
    # cell_diffusion and max_substeps beside dtype; before it, dtype only): the baseline tree runs too
    objects = hasattr(tk, "Numerics")
    numerics = {}  # the numerics of issue 14, where the core has them: the config's [numerics], else the spec's
    if objects or "cell_diffusion" in inspect.signature(tk.advance).parameters:
        section = config.sections.get("numerics", {})
        numerics["cell_diffusion"] = section.get("cell_diffusion", spec.get("cell_diffusion") or "explicit")
        numerics["max_substeps"] = int(section.get("max_substeps", 1))
    out["numerics"] = numerics
    if objects:
        run_numerics = config.numerics  # [numerics] and output.precision, as `tumorfield run` solves
        dtype_kw = {"numerics": tk.Numerics(dtype=precision)}
        limit_kw = {"numerics": run_numerics}
    else:
        dtype_kw = {"dtype": precision}
        limit_kw = {"dtype": precision, **{k: v for k, v in numerics.items() if k == "cell_diffusion"}}
    initial = tk.initial_frame(system, grid, model.initial_state(grid), params, **dtype_kw)
    grid_fields = [f for f in system.fields if f not in system.scalars]
    n_const = len(model.constant_fields(grid))
    bytes_per_cell_step = dtype.itemsize * (2 * 2 * len(grid_fields) + 2 * n_const)
    out.update(
        precision=precision,
        grid_fields=grid_fields,
        constant_fields=n_const,
        bytes_per_cell_step=bytes_per_cell_step,
        t_end=t_end,
        save_every=SAVE_EVERY,
        chunk_frames=config.run.chunk_frames,
    )

    # 1. the largest accepted dt
    print(f"  worker {label(shape)}: probing the positivity limit over the run", flush=True)
    t0 = time.perf_counter()
    if spec.get("dt_from_t0"):
        limits = tk.max_stable_dt(system, grid, initial, params, **limit_kw)
        limit = 0.5 * min(limits.values())  # a margin for the taxis steepening over the run
        out["dt_rule"] = "0.5 × the positivity limit at t = 0 (no probe over the run)"
    else:
        limits = tk.max_stable_dt_over_run(system, grid, initial, params, t_end=t_end, **limit_kw)
        limit = min(limits.values())
        out["dt_rule"] = "positivity limit over the run (max_stable_dt_over_run)"
    out["probe_s"] = time.perf_counter() - t0
    save("probe")
    out["positivity_limit_dt"] = {k: float(v) for k, v in limits.items()}
    k = steps_per_save(limit)
    if spec.get("max_dt"):  # a cap for accuracy: the dt/4 error of the largest accepted dt may be too large
        k = max(k, steps_per_save(spec["max_dt"]))
        out["max_dt"] = spec["max_dt"]

    lean = bool(spec.get("lean"))

    def observe(state, p, t):  # one function object for every run: `advance` compiles per function object
        return model.observe(state, p, t, grid)

    observe = None if lean else observe
    out["lean"] = lean  # no per-step scalars, plain scan: a smoke test that compiles faster

    if objects:
        adjoint = tk.Scan() if lean else tk.SqrtCheckpointed()
        advance_numerics = tk.Numerics(run_numerics.cell_diffusion, run_numerics.substeps, adjoint, precision)

        def advance(state, step, dt, n_saves, sps):
            """One chunk: ``(final state, its step number, trajectory, sub-steps per frame or None)``."""
            traj = tk.advance(
                system, grid, state, dt=dt, n_saves=n_saves, steps_per_save=sps, params=params, step=step,
                numerics=advance_numerics, saveat=tk.SaveAt(observe=observe), throw=False,
            )  # fmt: skip
            return traj.final_state, traj.final_step, traj, traj.stats.substeps
    else:

        def advance(state, step, dt, n_saves, sps):
            state, step, traj = tk.advance(
                system, grid, state, dt=dt, n_saves=n_saves, steps_per_save=sps, params=params, step=step,
                observe=observe, checkpoint=not lean, dtype=precision, throw=False, **numerics,
            )  # fmt: skip
            return state, step, traj, getattr(traj, "substeps", None)  # issue 14: sub-steps per frame

    def chunks_of(cfg_):
        n_saves, chunk = cfg_.n_frames - 1, cfg_.run.chunk_frames
        return [min(chunk, n_saves - i) for i in range(0, n_saves, chunk)]

    def run(cfg_, chunks, collect_limits=False):
        """The run loop of ``tumorfield run`` without the writes; returns the final state, scalars, seconds.

        ``chunks``: frames per ``advance`` call (``run.chunk_frames``, the last one shorter).
        """
        dt, sps = cfg_.time.dt, cfg_.steps_per_save
        state, step, ok = initial, 0, True
        last_scalars, substeps = {}, []
        frame_limits = {name: [] for name in variants} if collect_limits else None
        t0 = time.perf_counter()
        for n in chunks:
            new_state, new_step, traj, frame_substeps = advance(state, step, dt, n, sps)
            jax.block_until_ready((new_state, traj))
            if not bool(traj.result == tk.RESULTS.successful):
                ok = False
                break
            observed = traj.observed or {}
            last_scalars = {name: float(v[-1]) for name, v in observed.items()}
            if frame_substeps is not None:  # since issue 14: sub-steps per frame (sub-cycling)
                substeps.append(np.asarray(frame_substeps))
            if collect_limits:
                for j in range(n):
                    frame = {name: traj.fields[name][j] for name in system.fields}
                    tj = float(traj.t[j])
                    for vname, lim in frame_limits_at(frame, tj).items():
                        frame_limits[vname].append(lim)
            state, step = new_state, new_step
        seconds = time.perf_counter() - t0
        info = {"ok": ok, "seconds": seconds, "n_steps": int(step), "scalars": last_scalars}
        if substeps:
            s = np.concatenate([np.ravel(a) for a in substeps])
            info["substeps"] = {"max": float(np.max(s)), "mean": float(np.mean(s)), "total": float(np.sum(s))}
        if collect_limits:
            info["frame_limits"] = frame_limits
        return state, info

    if hasattr(tk, "step_limits"):  # issue 14's core: explicit, split (taxis + decay) and diffusion-alone limits
        variants = ("run", "explicit", "taxis_reaction", "diffusion")

        def frame_limits_at(frame, t):
            per_field = tk.step_limits(system, grid, frame, params, t=t, **dtype_kw)
            run = tk.max_stable_dt(system, grid, frame, params, t=t, **limit_kw)
            return {
                "run": min(run.values(), default=math.inf),
                "explicit": min((v["explicit"] for v in per_field.values()), default=math.inf),
                "taxis_reaction": min((v["split"] for v in per_field.values()), default=math.inf),
                "diffusion": min((v["diffusion"] for v in per_field.values()), default=math.inf),
            }
    else:  # before issue 14: the same limits from systems with taxis, or the cells' diffusion, set to zero
        systems = _limit_variants(system)
        variants = tuple(systems)

        def frame_limits_at(frame, t):
            limits = {}
            for name, vsys in systems.items():
                lim = tk.max_stable_dt(vsys, grid, frame, params, t=t, **dtype_kw)
                limits[name] = min(lim.values(), default=math.inf)
            return limits

    tries, refused = [], None
    accepted = None
    for _ in range(4):
        config_dt = None
        for _ in range(10_000):  # the model's own rules on dt (e.g. k_circ · dt ≤ 1): smaller dt until accepted
            dt = SAVE_EVERY / k
            try:
                config_dt = load(dt)
                break
            except cfg.ConfigError as error:
                refused = {"dt": dt, "refused": str(error)}
                k += 1
        if config_dt is None:
            break
        c0 = compile_s["total"]
        print(f"  worker {label(shape)}: first run at dt = {dt:.4g} day (compiles)", flush=True)
        final, info = run(config_dt, chunks_of(config_dt), collect_limits=spec.get("limits", True))
        tries.append({"dt": dt, "ok": info["ok"], "first_run_s": info["seconds"], "compile_s": compile_s["total"] - c0})
        if info["ok"]:
            accepted = (dt, config_dt, final, info)
            break
        k += 1
    out["dt_tries"] = tries
    out["config_refused_larger_dt"] = refused  # the last dt the config refused, with its rule (None: none)
    if accepted is None:
        out["status"] = "no accepted dt"
        return out
    dt, config_dt, final, first = accepted
    n_steps = first["n_steps"]
    out["accepted_dt"] = dt
    out["n_steps"] = n_steps
    if "frame_limits" in first:
        lim = {name: float(min(v)) for name, v in first["frame_limits"].items()}
        out["limits_over_saved_frames"] = lim
        diffusion_limit = lim.get("diffusion", lim.get("diffusion_reaction"))
        out["diffusion_limited_dt"] = diffusion_limit
        out["taxis_reaction_limited_dt"] = lim["taxis_reaction"]
    binding_limit = None
    if refused is not None and len(tries) == 1:
        out["binding"] = "config rule"  # the model's rule on dt, not positivity (see config_refused_larger_dt)
    elif "frame_limits" not in first:
        out["binding"] = "not measured (--no-limits)"
    elif numerics.get("cell_diffusion") == "implicit":
        out["binding"] = "taxis/reaction"  # the cells' diffusion is implicit: it imposes no limit
        binding_limit = lim["taxis_reaction"]
    else:
        out["binding"] = "diffusion" if diffusion_limit < lim["taxis_reaction"] else "taxis/reaction"
        binding_limit = min(diffusion_limit, lim["taxis_reaction"])
    cap = spec.get("max_dt")
    if cap and dt == SAVE_EVERY / steps_per_save(cap) and (binding_limit is None or cap < binding_limit):
        out["binding"] = "--max-dt cap"  # the cap set the accepted dt, below the limit that would otherwise set it
    out["compile_s"] = tries[-1]["compile_s"]
    out["first_run_s"] = first["seconds"]
    if "substeps" in first:
        out["substeps"] = first["substeps"]
    save("first run")

    # 2. time to solution, warm
    print(f"  worker {label(shape)}: {spec['repeats']} timed runs", flush=True)
    times = []
    for _ in range(spec["repeats"]):
        final, info = run(config_dt, chunks_of(config_dt))
        if not info["ok"]:
            raise RuntimeError(f"{label(shape)}: a timed run at dt = {dt} day did not end successfully")
        times.append(info["seconds"])
    wall = min(times) if times else first["seconds"] - out["compile_s"]
    out["run_s_all"] = times
    out["wall_s"] = wall
    out["s_per_simulated_day"] = wall / t_end
    out["step_s"] = wall / n_steps
    out["cell_steps_per_s"] = cells * n_steps / wall
    achieved = bytes_per_cell_step * cells * n_steps / wall
    out["achieved_model_bytes_per_s"] = achieved
    out["fraction_of_bandwidth_bound"] = achieved / bandwidth
    out["scalars"] = first["scalars"]
    tumor = np.asarray(final["tumor"], np.float64)
    out["finite"] = bool(all(np.all(np.isfinite(np.asarray(v))) for v in final.values()))
    out["min_tumor"] = float(tumor.min())
    save("timed runs")
    work = Path(spec["save_dir"])
    np.save(work / "tumor.npy", tumor)

    # 4. XLA's bytes per cell-step, from one compiled step (see the module docstring)
    if objects and hasattr(tk, "make_stepper"):
        print(f"  worker {label(shape)}: XLA cost analysis of one step", flush=True)
        out["xla_cost"] = {"loop_probe": _loop_probe()}
        out["xla_cost"].update(_step_cost(system, grid, params, dt, advance_numerics, initial, 0.0, observe, cells))
        out.update(
            _xla_figures(out["xla_cost"], cells, out["cell_steps_per_s"], out["bandwidth"], out["peak_bandwidth"])
        )
        save("xla cost")
    else:
        out["xla_cost"] = {"skipped": "this tree's core has no tk.make_stepper / tk.Numerics"}

    # 3. error against dt/4
    if spec.get("reference", True):
        # saves 4× as often, so each chunk has the same steps per save and frames: the same compiled program
        config_ref = load(dt / 4, SAVE_EVERY / 4)
        print(f"  worker {label(shape)}: reference at dt/4", flush=True)
        c0 = compile_s["total"]
        ref_final, ref = run(config_ref, chunks_of(config_dt) * 4)
        out["reference"] = {
            "dt": dt / 4,
            "ok": ref["ok"],
            "run_s": ref["seconds"],
            "compile_s": compile_s["total"] - c0,
            "scalars": ref["scalars"],
        }
        if ref["ok"]:
            ref_tumor = np.asarray(ref_final["tumor"], np.float64)
            np.save(work / "tumor_reference.npy", ref_tumor)
            out["rel_l2_tumor_vs_dt4"] = float(np.linalg.norm(tumor - ref_tumor) / np.linalg.norm(ref_tumor))
            out["scalar_rel_change_vs_dt4"] = {
                name: abs(out["scalars"][name] - ref["scalars"][name]) / max(abs(ref["scalars"][name]), 1e-30)
                for name in MAIN_SCALARS
                if name in out["scalars"] and name in ref["scalars"]
            }
    out["memory"] = _peak_memory_bytes()
    out["status"] = "ok"
    out.pop("phase_done", None)
    return out


def _xla_figures(cost: dict, cells: int, cell_steps_per_s: float, bandwidth: dict, peak: dict) -> dict:
    """From the bytes of one step: bytes per cell-step (the common path's where ``_cost`` read it, else
    XLA's), the bandwidth the timed runs reached with them, as fractions of the measured triad and of
    the device's peak, and the cell-steps/s each would allow (the issue's estimate: at
    :data:`ISSUE_BANDWIDTH`)."""
    common = cost.get("hlo", {}).get("common_path", {}).get("bytes")
    if common:
        per_cell_step = common / cells
        basis = "common path (benchmarks/_cost.py: every conditional at its cheapest branch, no sub-cycling)"
    else:
        per_cell_step = cost["bytes_accessed"] / cells
        basis = "XLA bytes accessed (a conditional at its costliest branch)"
    achieved = per_cell_step * cell_steps_per_s
    triad, top = bandwidth["triad_bytes_per_s"], peak["bytes_per_s"]
    cost.update(
        xla_bytes_per_cell_step=cost["bytes_accessed"] / cells,
        bytes_per_cell_step=per_cell_step,
        bytes_basis=basis,
        achieved_bytes_per_s=achieved,
        fraction_of_triad=achieved / triad,
        fraction_of_peak=achieved / top if top else None,
        cell_steps_per_s_at_triad=triad / per_cell_step,
        cell_steps_per_s_at_peak=top / per_cell_step if top else None,
        cell_steps_per_s_at_issue_bandwidth=ISSUE_BANDWIDTH / per_cell_step,
    )
    return {
        "xla_bytes_per_cell_step": cost["xla_bytes_per_cell_step"],
        "bytes_per_cell_step": per_cell_step,
        "fraction_of_peak_bandwidth": cost["fraction_of_peak"],
        "fraction_of_triad_bandwidth": cost["fraction_of_triad"],
    }


def _worker_main(spec_path: str) -> int:
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where a worker is stuck
    spec = json.loads(Path(spec_path).read_text())
    result = {}
    try:
        worker(spec, result)
    except Exception as error:  # noqa: BLE001 - reported in the JSON, the driver goes on
        import traceback

        traceback.print_exc()
        result.update(status="error", error=f"{type(error).__name__}: {error}")  # with what was measured before
    Path(spec["result"]).write_text(json.dumps(result, indent=2, default=_json_default))
    return 0


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic | np.ndarray):
        return np.asarray(x).tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))


# --- driver ------------------------------------------------------------------------------------


def export_tree(commit: str, into: Path) -> Path:
    """``git archive COMMIT`` of this repository, unpacked into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run_worker(tree: Path, spec: dict, work: Path, timeout: float | None) -> dict:
    """One worker subprocess on ``tree``; its result, or a status saying why there is none."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "tree": str(tree), "save_dir": str(work), "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree / 'kernels'}", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(work / "spec.json")],
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:  # what the worker measured before (its last `partial` result), if any
        return {**_partial(work), "status": "timeout", "timeout_s": timeout, "tree": str(tree)}
    except BaseException:  # a signal to the driver (a stage timeout): the worker's partial result goes up with it
        _INTERRUPTED["run"] = {**_partial(work), "status": "interrupted", "tree": str(tree)}
        raise
    if not (work / "result.json").exists():
        return {"status": "error", "error": f"worker exited {proc.returncode} without a result", "tree": str(tree)}
    result = json.loads((work / "result.json").read_text())
    result["worker_wall_s"] = time.perf_counter() - t0
    return result


_INTERRUPTED: dict = {}  # the run under way when the driver was stopped, with what its worker had measured


def _partial(work: Path) -> dict:
    try:
        return json.loads((work / "result.json").read_text())
    except (OSError, ValueError):
        return {}


def _rel_l2(a_path: Path, b_path: Path) -> float | None:
    import numpy as np

    if not (a_path.exists() and b_path.exists()):
        return None
    a, b = np.load(a_path), np.load(b_path)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="directory of the JSON")
    parser.add_argument("--sizes", nargs="+", default=None, help="e.g. 256 512 64x3 128x3 (default)")
    parser.add_argument("--t-end", type=float, default=None, help="days simulated (21; 1 with --quick)")
    parser.add_argument(
        "--cell-diffusion",
        nargs="+",
        default=None,
        choices=("explicit", "implicit"),
        help="values of numerics.cell_diffusion to run on this checkout (default: both, where the key exists)",
    )
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="commit to compare with (git archive)")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="an exported tree instead of --baseline")
    parser.add_argument("--no-baseline", action="store_true", help="only this checkout")
    parser.add_argument("--repeats", type=int, default=None, help="warm timed runs per dt (2; 1 with --quick)")
    parser.add_argument("--no-reference", action="store_true", help="skip the dt/4 reference runs")
    parser.add_argument(
        "--no-baseline-reference", action="store_true", help="skip the dt/4 reference of the baseline tree only"
    )
    parser.add_argument("--dt-from-t0", action="store_true", help="dt from half the t = 0 limit (no probe run)")
    parser.add_argument("--max-dt", type=float, default=None, help="cap on dt (day), e.g. for accuracy")
    parser.add_argument("--worker-timeout", type=float, default=None, help="seconds per worker subprocess")
    parser.add_argument(
        "--lean", action="store_true", help="no per-step scalars, plain scan (compiles faster; smoke tests)"
    )
    parser.add_argument(
        "--no-limits", action="store_true", help="no positivity limits at the saved frames (3 programs fewer)"
    )
    parser.add_argument("--quick", action="store_true", help="32², 16³, one day, one repeat (CPU smoke test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        raise SystemExit(_worker_main(args.worker))
    # a stage timeout (SIGTERM) still removes the scratch folder and keeps the JSON written so far
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    sizes = args.sizes or (["32", "16x3"] if args.quick else ["256", "512", "64x3", "128x3"])
    t_end = args.t_end if args.t_end is not None else (1.0 if args.quick else 21.0)
    steps = t_end / SAVE_EVERY
    if abs(steps - round(steps)) > 1e-9 or steps < 1:
        parser.error(f"--t-end={t_end} must be a positive whole number of save intervals ({SAVE_EVERY} day)")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 2)

    scratch = Path(tempfile.mkdtemp(prefix="bench_model_"))
    trees = {"current": REPO}
    if not args.no_baseline:
        if args.baseline_tree is not None:
            trees[f"baseline_{args.baseline}"] = args.baseline_tree.resolve()
        else:
            trees[f"baseline_{args.baseline}"] = export_tree(args.baseline, scratch / "baseline_tree")
    options, config_keys = {}, {}
    for name, tree in trees.items():
        keys = has_numerics_keys(tree)
        config_keys[name] = keys["config"]
        options[name] = list(args.cell_diffusion or ("implicit", "explicit")) if keys["core"] else [None]
    result = {
        "benchmark": "bench_model",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": str(CONFIG),
        "overrides": f"grid.shape, grid.length = {BOX_MM} mm per axis, time.t_end, time.save_every = {SAVE_EVERY}",
        "t_end": t_end,
        "repeats": repeats,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "trees": {name: str(path) for name, path in trees.items()},
        "git_commit": _git_head(),
        "bytes_model": BYTES_MODEL,
        "bandwidth_model": "jitted y = x + 1, float32, 8 B per element (read + write), best of 10, per subprocess; "
        "and a STREAM triad a = b + 1.5 c, float32, 12 B per element",
        "xla_cost_model": "cost_analysis()['bytes accessed'] of one compiled step (Stepper.step, then the per-step "
        "observables unless --lean) ÷ cells; bytes_per_cell_step: its common path (benchmarks/_cost.py) where read; "
        "fractions of the triad and of the device's peak (PEAK_BANDWIDTH) from it",
        "sizes": {},
    }
    if args.quick:
        result["note"] = "quick: a smoke test of the script, not a measurement"
    bandwidth_elements = (1 << 22) if args.quick else (1 << 26)
    path = None
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    entry = None
    try:
        for text in sizes:
            shape = parse_size(text)
            entry = {"shape": shape, "cells": math.prod(shape), "runs": {}}
            for name, tree in trees.items():
                for option in options[name]:
                    key = name if option is None else f"{name}:{option}"
                    print(f"[{label(shape)}] {key} ...", flush=True)
                    spec = {
                        "shape": shape,
                        "t_end": t_end,
                        "repeats": repeats,
                        "reference": not (args.no_reference or (args.no_baseline_reference and name != "current")),
                        "dt_from_t0": args.dt_from_t0,
                        "max_dt": args.max_dt,
                        "lean": args.lean,
                        "limits": not args.no_limits,
                        "cell_diffusion": option,
                        "config_has_numerics": config_keys[name],
                        "bandwidth_elements": bandwidth_elements,
                    }
                    work = scratch / label(shape) / key.replace(":", "_")
                    run = run_worker(tree, spec, work, args.worker_timeout)
                    run["work"] = str(work)
                    entry["runs"][key] = run
                    if path is None and "platform" in run:
                        path = args.out / f"bench_model_{run['platform']}_{stamp}{'_quick' if args.quick else ''}.json"
            _compare(entry)
            for run in entry["runs"].values():
                run.pop("work", None)
            result["sizes"][label(shape)] = entry
            if path is not None:
                path.write_text(json.dumps(result, indent=2, default=_json_default))  # after every size
            entry = None
    except BaseException:  # stopped (a stage timeout's SIGTERM, ^C): the size under way as far as it got
        if entry is not None:
            if _INTERRUPTED:
                entry["runs"][f"{key} (interrupted)"] = _INTERRUPTED.pop("run")
            for run in entry["runs"].values():
                run.pop("work", None)
            result["sizes"][label(shape)] = {**entry, "interrupted": True}
            platform = next((r["platform"] for r in entry["runs"].values() if "platform" in r), "unknown")
            path = path or args.out / f"bench_model_{platform}_{stamp}{'_quick' if args.quick else ''}.json"
            path.write_text(json.dumps(result, indent=2, default=_json_default))
            print(f"stopped: wrote what was measured to {path}", flush=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if path is None:
        path = args.out / f"bench_model_unknown_{stamp}.json"
        path.write_text(json.dumps(result, indent=2, default=_json_default))
    print_table(result)
    print(f"wrote {path}")
    return result


def _compare(entry: dict) -> None:
    """Speed-ups of each current run over the baseline, and the current tumour field against its reference."""
    runs = entry["runs"]
    baseline = next((k for k in runs if k.startswith("baseline")), None)
    base = runs.get(baseline) if baseline else None
    comparisons = {}
    for key, run in runs.items():
        if key.startswith("baseline") or run.get("status") != "ok":
            continue
        c = {}
        if base and base.get("status") == "ok":
            c["speedup_time_to_solution"] = base["wall_s"] / run["wall_s"]
            c["dt_ratio"] = run["accepted_dt"] / base["accepted_dt"]
            c["step_speedup"] = base["step_s"] / run["step_s"]
            l2 = _rel_l2(Path(run["work"]) / "tumor.npy", Path(base["work"]) / "tumor_reference.npy")
            if l2 is not None:
                c["rel_l2_tumor_vs_baseline_dt4"] = l2
            l2 = _rel_l2(Path(run["work"]) / "tumor.npy", Path(base["work"]) / "tumor.npy")
            if l2 is not None:  # the baseline at its own (smaller) dt
                c["rel_l2_tumor_vs_baseline"] = l2
        if c:
            comparisons[f"{key} vs {baseline}"] = c
    entry["comparisons"] = comparisons


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def print_table(result: dict) -> None:
    header = (
        f"{'size':>8} {'run':>28} {'dt (day)':>9} {'bind':>9} {'steps':>6} {'compile s':>9} {'TTS s':>8} "
        f"{'s/day':>8} {'Mcell-st/s':>10} {'%bw':>5} {'B/cell-st':>9} {'%peak':>5} {'%triad':>6} {'L2 vs dt/4':>10} "
        f"{'speed-up':>8}"
    )
    print(header)
    nan = float("nan")
    for size, entry in result["sizes"].items():
        for key, run in entry["runs"].items():
            if run.get("status") != "ok":
                print(f"{size:>8} {key:>28} {run.get('status')}: {run.get('error', '')}")
                continue
            speedup = next((c["speedup_time_to_solution"] for k, c in entry.get("comparisons", {}).items()
                            if k.startswith(f"{key} vs")), float("nan"))  # fmt: skip
            print(
                f"{size:>8} {key:>28} {run['accepted_dt']:>9.3g} {run['binding'][:9]:>9} {run['n_steps']:>6} "
                f"{run['compile_s']:>9.2f} {run['wall_s']:>8.3f} {run['s_per_simulated_day']:>8.3f} "
                f"{run['cell_steps_per_s'] / 1e6:>10.2f} {100 * run['fraction_of_bandwidth_bound']:>5.1f} "
                f"{run.get('bytes_per_cell_step', nan):>9.0f} "
                f"{100 * (run.get('fraction_of_peak_bandwidth') or nan):>5.1f} "
                f"{100 * run.get('fraction_of_triad_bandwidth', nan):>6.1f} "
                f"{run.get('rel_l2_tumor_vs_dt4', nan):>10.2e} {speedup:>8.2f}"
            )


if __name__ == "__main__":
    main()
