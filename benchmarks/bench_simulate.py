"""Benchmark tumorfield's ``simulate`` on the reference problem, against py-pde.

Usage::

    python benchmarks/bench_simulate.py --out benchmarks/results [--sizes 256 512 1024 64x3 128x3] [--quick]

Per grid size it measures (float32, device auto-detected):

1. per-step throughput: compile time (AOT ``lower().compile()``) apart from
   run time (after ``block_until_ready``), for the checkpointed and the plain
   ``lax.scan`` rollout; cell-updates per second; and the fraction of the
   memory-bandwidth limit, with the bandwidth measured in the same run;
2. time to solution: wall time to reach ``t_end`` with the tumour field within
   ``--tol`` relative L2 of a fine reference (tumorfield at 4× smaller dt),
   for tumorfield at the largest accepted dt meeting the tolerance, and for
   py-pde's numba backend (forward Euler at its stable dt).

See ``benchmarks/README.md`` for what is counted and how.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reference_problem as ref  # noqa: E402
from _timing import best_seconds  # noqa: E402

import tumorfield as tf  # noqa: E402

DTYPE = jnp.float32
# Minimal traffic of one step, in bytes per cell: 2 stages × 3 fields × (read + write) × 4 bytes.
# A fused implementation cannot move less; the DCTs of the spectral field and the stencil
# temporaries add to what the core really moves, so the fraction is of an optimistic bound.
BYTES_PER_CELL_STEP = 2 * 3 * 2 * 4


# --- machine ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure_bandwidth(n_elements: int, repeats: int = 10) -> dict:
    """Sustained bandwidth (bytes/s) of a jitted triad ``y = a x + b`` and of a numpy copy.

    The triad reads ``x``, ``b`` and writes ``y``: 3 × 4 bytes per element.
    The numpy copy reads and writes 8 bytes per float64 element (host memory).
    """
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (n_elements,), DTYPE)
    b = jax.random.uniform(jax.random.PRNGKey(1), (n_elements,), DTYPE)
    a = jnp.asarray(1.0001, DTYPE)
    triad_bw = 12 * n_elements / best_seconds(lambda a, x, b: a * x + b, a, x, b, repeats=repeats)
    del x, b

    host_n = min(n_elements, 1 << 25)
    src = np.random.default_rng(0).random(host_n)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    host_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        host_times.append(time.perf_counter() - t0)
    copy_bw = 16 * host_n / min(host_times)
    return {
        "jax_triad_bytes_per_s": triad_bw,
        "jax_triad_elements": n_elements,
        "numpy_copy_bytes_per_s": copy_bw,
        "numpy_copy_elements": host_n,
    }


# --- tumorfield ---------------------------------------------------------------


def parse_size(text: str) -> tuple[int, ...]:
    """``"512"`` → (512, 512); ``"128x3"`` → (128, 128, 128)."""
    if "x" in text:
        n, d = text.split("x")
        return (int(n),) * int(d)
    return (int(text),) * 2


def label(shape) -> str:
    return "x".join(str(n) for n in shape)


class TumorfieldRunner:
    """AOT-compiled rollouts of ``n_steps`` steps of a traced ``dt``, cached by ``(n_steps, checkpoint)``."""

    def __init__(self, shape):
        self.shape = shape
        self.grid = tf.Grid(shape=shape, length=ref.box(len(shape)))
        self.system = ref.tumorfield_system(tf)
        self.params = {k: jnp.asarray(v, DTYPE) for k, v in ref.tumorfield_params().items()}
        self.initial = {k: jnp.asarray(v, DTYPE) for k, v in ref.initial_state(shape).items()}
        self.compiled = {}
        self.compile_seconds = {}

    def max_dt(self, t_end: float) -> float:
        """Largest dt whose explicit part stays positive along the whole run to ``t_end``.

        The taxis limit tightens as the attractant builds up, so the limit at
        ``t = 0`` is not enough: ``tf.max_stable_dt_over_run`` probes the run
        and takes the smallest limit over its frames. Every timed run still
        checks positivity in-run.
        """
        limits = tf.max_stable_dt_over_run(self.system, self.grid, self.initial, self.params, t_end=t_end, dtype=DTYPE)
        return min(limits.values())

    def _function(self, n_steps, checkpoint):
        def run(state, params, dt):
            final, _, traj = tf.advance(
                self.system,
                self.grid,
                state,
                dt=dt,
                n_saves=1,
                steps_per_save=n_steps,
                params=params,
                checkpoint=checkpoint,
                throw=False,  # the in-run check stays on; its result is checked after the timing
                dtype=DTYPE,
            )
            return final, traj.result == tf.RESULTS.successful

        return jax.jit(run)

    def compile(self, n_steps, checkpoint=True):
        key = (n_steps, checkpoint)
        if key not in self.compiled:
            t0 = time.perf_counter()
            lowered = self._function(n_steps, checkpoint).lower(self.initial, self.params, jnp.asarray(0.0, DTYPE))
            t1 = time.perf_counter()
            self.compiled[key] = lowered.compile()
            t2 = time.perf_counter()
            self.compile_seconds[key] = {"trace_lower_s": t1 - t0, "compile_s": t2 - t1}
        return self.compiled[key]

    def run(self, n_steps, dt, checkpoint=True):
        """Returns ``(final state, run seconds)``; compiles first, outside the timing."""
        fn = self.compile(n_steps, checkpoint)
        dt = jnp.asarray(dt, DTYPE)
        jax.block_until_ready(dt)
        t0 = time.perf_counter()
        out, ok = jax.block_until_ready(fn(self.initial, self.params, dt))
        seconds = time.perf_counter() - t0
        if not bool(ok):
            raise RuntimeError(f"{label(self.shape)}: the timed run at dt = {float(dt)} day did not end successfully")
        return out, seconds


def rel_l2(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def step_floor(shape, bandwidth: float) -> dict:
    """What a step of the reference problem cannot avoid, measured on this device.

    ETDRK2 of the spectral field needs four n-dimensional real transforms per step
    (two forward, two inverse); a DCT can at best cost what a real FFT of the same
    size costs (Makhoul: reorder + ``rfftn`` + O(n) twiddles). The floor is
    ``2 (t_rfftn + t_irfftn) + 48 B × cells / bandwidth``; the core's own transform
    pair (``to_spectral`` + ``from_spectral``) is timed beside it.
    """
    from tumorfield_kernels import _spectral as ops

    x = jnp.asarray(np.random.default_rng(0).random(shape), DTYPE)
    spectrum = jnp.fft.rfftn(x)
    rfft_s = best_seconds(jnp.fft.rfftn, x)
    irfft_s = best_seconds(lambda z: jnp.fft.irfftn(z, s=shape), spectrum)
    dct_s = best_seconds(ops.to_spectral, x)
    idct_s = best_seconds(ops.from_spectral, x)
    traffic_s = BYTES_PER_CELL_STEP * math.prod(shape) / bandwidth
    return {
        "rfftn_s": rfft_s,
        "irfftn_s": irfft_s,
        "core_dct_s": dct_s,
        "core_idct_s": idct_s,
        "min_traffic_s": traffic_s,
        "floor_step_s": 2 * (rfft_s + irfft_s) + traffic_s,
    }


def throughput(runner: TumorfieldRunner, n_steps: int, dt: float, bandwidth: float, repeats: int) -> dict:
    out = {"floor": step_floor(runner.shape, bandwidth)}
    cells = math.prod(runner.shape)
    for checkpoint in (True, False):
        runner.compile(n_steps, checkpoint)
        times = []
        for _ in range(repeats):
            state, seconds = runner.run(n_steps, dt, checkpoint)
            times.append(seconds)
        best = min(times)
        finite = all(bool(jnp.all(jnp.isfinite(v))) for v in state.values())
        per_step = best / n_steps
        achieved = BYTES_PER_CELL_STEP * cells / per_step
        out["checkpoint" if checkpoint else "scan"] = {
            "n_steps": n_steps,
            "dt": dt,
            **runner.compile_seconds[(n_steps, checkpoint)],
            "run_s_best": best,
            "run_s_all": times,
            "step_s": per_step,
            "cell_updates_per_s": cells * n_steps / best,
            "min_bytes_per_step": BYTES_PER_CELL_STEP * cells,
            "achieved_min_bytes_per_s": achieved,
            "fraction_of_bandwidth_limit": achieved / bandwidth,
            "fraction_of_step_floor": out["floor"]["floor_step_s"] / per_step,
            "finite": finite,
        }
    return out


def time_to_solution(runner: TumorfieldRunner, t_end: float, tol: float, max_halvings: int) -> tuple[dict, dict]:
    """Largest accepted ``dt = t_end / n`` whose tumour field is within ``tol`` of a 4× finer reference.

    ``n₀ = ⌈t_end / dt_stable⌉`` gives the largest accepted dt that divides
    ``t_end``; candidates take ``n₀·2^k`` steps (``k ≤ max_halvings``), each
    judged against a run with 4× as many steps (second order: the reference's
    own error is ~1/16 of the candidate's, so the measured error is within ~6 %).
    Runs are cached by step count, so a reference is reused as a later candidate.
    Returns the summary and the finest reference state.
    """
    dt_stable = runner.max_dt(t_end)
    n0 = math.ceil(t_end / dt_stable * (1 + 1e-9))
    runs = {}

    def run(n):
        if n not in runs:
            runs[n] = runner.run(n, t_end / n, checkpoint=False)
        return runs[n]

    candidates, chosen = [], None
    for k in range(max_halvings + 1):
        n = n0 * 2**k
        state, seconds = run(n)
        reference, ref_seconds = run(4 * n)
        err = rel_l2(state["u"], reference["u"])
        candidates.append(
            {
                "n_steps": n,
                "dt": t_end / n,
                "run_s": seconds,
                "rel_l2_u": err,
                "reference_n_steps": 4 * n,
                "reference_run_s": ref_seconds,
                "reference_est_rel_l2_u": err / 15,  # Richardson, second order: e(n/4) = e(n)/16
                **runner.compile_seconds[(n, False)],
            }
        )
        if err <= tol:
            chosen = candidates[-1]
            break
    finest = runs[max(runs)][0]
    return {
        "t_end": t_end,
        "dt_stable": dt_stable,
        "candidates": candidates,
        "chosen": chosen,
        "wall_s": None if chosen is None else chosen["run_s"],
    }, finest


# --- py-pde -------------------------------------------------------------------


def pypde_available() -> bool:
    try:
        import numba  # noqa: F401
        import pde  # noqa: F401
    except ImportError:
        return False
    return True


def run_pypde(shape, t_end: float, budget_s: float, reference_u) -> dict:
    """Forward Euler at py-pde's stable dt; wall time to ``t_end``, extrapolated past ``budget_s``.

    A fixed-step explicit run costs the same per step, so the time to solution
    is ``steps × (seconds per step)`` measured over as many steps as fit in
    ``budget_s``; ``extrapolated`` says whether the run reached ``t_end``.
    """
    import pde

    equation, state, dt = ref.pypde_problem(shape)
    n_total = math.ceil(t_end / dt)
    dt = t_end / n_total
    solver = pde.solvers.EulerSolver(equation, backend="numba")
    t0 = time.perf_counter()
    stepper = solver.make_stepper(state, dt)
    stepper(state, 0.0, dt)  # numba compiles on the first call
    compile_s = time.perf_counter() - t0
    equation, state, _ = ref.pypde_problem(shape)  # fresh initial data
    # probe the step cost, then run as many steps as the budget allows
    probe = min(n_total, 20)
    t0 = time.perf_counter()
    t = stepper(state, 0.0, probe * dt)
    probe_s = time.perf_counter() - t0
    done = probe
    remaining = n_total - done
    affordable = max(0, int((budget_s - probe_s) / (probe_s / probe)))
    chunk = min(remaining, affordable)
    t0 = time.perf_counter()
    if chunk > 0:
        stepper(state, done * dt, (done + chunk) * dt)
        done += chunk
    main_s = time.perf_counter() - t0
    measured_s = probe_s + main_s
    step_s = (main_s / chunk) if chunk > 0 else probe_s / probe
    out = {
        "dt": dt,
        "n_steps": n_total,
        "steps_run": done,
        "compile_s": compile_s,
        "run_s_measured": measured_s,
        "step_s": step_s,
        "cell_updates_per_s": math.prod(shape) / step_s,
        "extrapolated": done < n_total,
        "wall_s": measured_s + (n_total - done) * step_s,
        "dtype": str(state.data.dtype),
        "threads": _numba_threads(),
    }
    del t
    if done == n_total:
        u = state["u"].data
        out["rel_l2_u_vs_tumorfield_reference"] = rel_l2(u, reference_u)
        out["finite"] = bool(np.all(np.isfinite(state.data)))
    return out


def _numba_threads():
    try:
        import numba

        return numba.get_num_threads()
    except Exception:  # pragma: no cover - informational only
        return None


# --- driver -------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON result")
    parser.add_argument("--sizes", nargs="+", default=None, help="e.g. 256 512 1024 64x3 128x3")
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (development)")
    parser.add_argument("--t-end", type=float, default=0.5, help="days simulated for time to solution")
    parser.add_argument("--tol", type=float, default=1e-3, help="relative L2 tolerance on the tumour field")
    parser.add_argument("--no-pypde", action="store_true", help="skip py-pde even if installed")
    parser.add_argument(
        "--pypde-sizes",
        nargs="*",
        default=None,
        help="sizes at which py-pde runs (default: 512 and 128x3; with --quick 64 and 32x3); "
        "its numba compile takes 1-3 min per size",
    )
    parser.add_argument(
        "--pypde-budget",
        type=float,
        default=None,
        help="seconds of py-pde stepping per size before extrapolating (30; 5 with --quick)",
    )
    parser.add_argument("--throughput-cells", type=float, default=None, help="cells × steps per throughput run")
    args = parser.parse_args(argv)

    if args.sizes is None:
        args.sizes = ["64", "128", "32x3"] if args.quick else ["256", "512", "1024", "64x3", "128x3"]
    t_end = args.t_end if not args.quick else min(args.t_end, 0.1)
    pypde_budget = args.pypde_budget if args.pypde_budget is not None else (5.0 if args.quick else 30.0)
    work = args.throughput_cells if args.throughput_cells is not None else (2e6 if args.quick else 3e7)
    use_pypde = not args.no_pypde and pypde_available()
    pypde_sizes = (
        args.pypde_sizes if args.pypde_sizes is not None else (["64", "32x3"] if args.quick else ["512", "128x3"])
    )

    device = jax.devices()[0]
    on_gpu = device.platform != "cpu"
    bandwidth = measure_bandwidth((1 << 28) if on_gpu else (1 << 24 if args.quick else 1 << 25))
    limit = bandwidth["jax_triad_bytes_per_s"]
    result = {
        "benchmark": "bench_simulate",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": str(device),
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", None),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "tumorfield_version": tf.__version__,
        "dtype": "float32",
        "quick": args.quick,
        "t_end": t_end,
        "tol": args.tol,
        "bandwidth": bandwidth,
        "bytes_model": "2 stages × 3 fields × (read + write) × 4 B = 48 B per cell per step (lower bound)",
        "sizes": {},
    }
    if use_pypde:
        import pde

        result["pypde_version"] = pde.__version__

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"bench_simulate_{device.platform}_{stamp}{'_quick' if args.quick else ''}.json"
    for text in args.sizes:
        shape = parse_size(text)
        cells = math.prod(shape)
        runner = TumorfieldRunner(shape)
        entry = {"shape": shape, "cells": cells, "box_mm": ref.box(len(shape))}
        print(f"[{label(shape)}] time to solution ...", flush=True)
        tts, reference = time_to_solution(runner, t_end, args.tol, max_halvings=2)
        entry["tumorfield_time_to_solution"] = tts
        # steps of the largest accepted dt (or smaller, where that many steps would pass t_end:
        # positivity is only established up to t_end); the cost of a step does not depend on dt
        n_steps = max(4, math.ceil(work / cells))
        dt = t_end / max(tts["candidates"][0]["n_steps"], n_steps)
        print(f"[{label(shape)}] throughput, {n_steps} steps ...", flush=True)
        entry["tumorfield_throughput"] = throughput(runner, n_steps, dt, limit, repeats=2)
        if use_pypde and text in pypde_sizes:
            print(f"[{label(shape)}] py-pde ...", flush=True)
            entry["pypde"] = run_pypde(shape, t_end, pypde_budget, reference["u"])
            if tts["wall_s"] is not None:
                entry["speedup_time_to_solution"] = entry["pypde"]["wall_s"] / tts["wall_s"]
            best = max(entry["tumorfield_throughput"][k]["cell_updates_per_s"] for k in ("checkpoint", "scan"))
            entry["speedup_per_step"] = best / entry["pypde"]["cell_updates_per_s"]
        result["sizes"][label(shape)] = entry
        del runner, reference
        path.write_text(json.dumps(result, indent=2, default=_json_default))  # after every size

    print_table(result)
    print(f"wrote {path}")
    return result


def _json_default(x):
    if isinstance(x, np.generic | jax.Array):
        return np.asarray(x).tolist()
    raise TypeError(type(x))


def print_table(result):
    bw = result["bandwidth"]
    print(
        f"\ndevice {result['device']} ({result['cpu_model']}), jax {result['jax_version']}; "
        f"triad {bw['jax_triad_bytes_per_s'] / 1e9:.1f} GB/s, numpy copy {bw['numpy_copy_bytes_per_s'] / 1e9:.1f} GB/s"
    )
    header = (
        f"{'size':>10} {'compile s':>9} {'step ms ckpt':>12} {'step ms scan':>12} {'Mcell/s':>8} "
        f"{'%bw':>5} {'%floor':>6} {'tf dt':>8} {'tf s':>7} {'pde dt':>8} {'pde s':>8} {'TTS x':>6} {'step x':>6}"
    )
    print(header)
    for name, e in result["sizes"].items():
        thr = e["tumorfield_throughput"]
        tts = e["tumorfield_time_to_solution"]
        best = max((thr["checkpoint"], thr["scan"]), key=lambda v: v["cell_updates_per_s"])
        chosen = tts["chosen"] or {}
        pp = e.get("pypde", {})
        print(
            f"{name:>10} {thr['scan']['compile_s']:>9.2f} {thr['checkpoint']['step_s'] * 1e3:>12.3f} "
            f"{thr['scan']['step_s'] * 1e3:>12.3f} {best['cell_updates_per_s'] / 1e6:>8.1f} "
            f"{100 * best['fraction_of_bandwidth_limit']:>5.1f} {100 * best['fraction_of_step_floor']:>6.1f} "
            f"{chosen.get('dt', float('nan')):>8.2e} "
            f"{tts['wall_s'] if tts['wall_s'] is not None else float('nan'):>7.3f} "
            f"{pp.get('dt', float('nan')):>8.2e} {pp.get('wall_s', float('nan')):>8.2f}"
            f"{'*' if pp.get('extrapolated') else ' '}"
            f"{e.get('speedup_time_to_solution', float('nan')):>6.1f} {e.get('speedup_per_step', float('nan')):>6.2f}"
        )
    print("* py-pde time extrapolated from the measured steps (fixed-step cost is constant)")


if __name__ == "__main__":
    main()
