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
   py-pde's numba backend: forward Euler at its stable dt, backward Euler
   (``ImplicitSolver``) at the largest dt its iteration converges at, and
   ``ScipySolver(method="BDF")`` with the stencil's Jacobian sparsity; the
   speed-up is also given against the fastest of the three.

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
from _sizes import label, parse_size  # noqa: E402
from _timing import best_seconds  # noqa: E402

import tumorfield as tf  # noqa: E402

DTYPE = jnp.float32
PRECISION = jnp.dtype(DTYPE).name  # the same, as the core's Numerics(dtype=...) takes it
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
        limits = tf.max_stable_dt_over_run(
            self.system, self.grid, self.initial, self.params, t_end=t_end, numerics=tf.Numerics(dtype=PRECISION)
        )
        return min(limits.values())

    def _function(self, n_steps, checkpoint):
        # no sub-cycling (the core's default before issue 21): a run whose dt outgrows the positivity
        # limit ends (and the timing refuses it) rather than cutting its steps
        numerics = tf.Numerics(substeps=tf.NoSubcycling(), adjoint=tf.SqrtCheckpointed() if checkpoint else tf.Scan(),
                               dtype=PRECISION)  # fmt: skip

        def run(state, params, dt):
            traj = tf.advance(
                self.system,
                self.grid,
                state,
                dt=dt,
                n_saves=1,
                steps_per_save=n_steps,
                params=params,
                numerics=numerics,
                throw=False,  # the in-run check stays on; its result is checked after the timing
            )
            return traj.final_state, traj.result == tf.RESULTS.successful

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
    import tumorfield_kernels as ops  # the public DCT pair

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
    run = _budgeted_fixed_step(stepper, state, dt, n_total, budget_s)
    out = {"dt": dt, "n_steps": n_total, "compile_s": compile_s, **run,
           "cell_updates_per_s": math.prod(shape) / run["step_s"], "dtype": str(state.data.dtype),
           "threads": _numba_threads()}  # fmt: skip
    if run["steps_run"] == n_total:
        u = state["u"].data
        out["rel_l2_u_vs_tumorfield_reference"] = rel_l2(u, reference_u)
        out["finite"] = bool(np.all(np.isfinite(state.data)))
    return out


def _budgeted_fixed_step(stepper, state, dt: float, n_total: int, budget_s: float) -> dict:
    """Run a fixed-step py-pde ``stepper`` for as many of ``n_total`` steps as fit in ``budget_s``.

    A 20-step probe gives the cost per step; the rest is extrapolated at the cost measured
    over the main chunk (``extrapolated`` says whether ``t_end`` was reached).
    """
    probe = min(n_total, 20)
    t0 = time.perf_counter()
    stepper(state, 0.0, probe * dt)
    probe_s = time.perf_counter() - t0
    done = probe
    affordable = max(0, int((budget_s - probe_s) / (probe_s / probe)))
    chunk = min(n_total - done, affordable)
    t0 = time.perf_counter()
    if chunk > 0:
        stepper(state, done * dt, (done + chunk) * dt)
        done += chunk
    main_s = time.perf_counter() - t0
    measured_s = probe_s + main_s
    step_s = (main_s / chunk) if chunk > 0 else probe_s / probe
    return {
        "steps_run": done,
        "run_s_measured": measured_s,
        "step_s": step_s,
        "extrapolated": done < n_total,
        "wall_s": measured_s + (n_total - done) * step_s,
    }


def run_pypde_implicit(shape, t_end: float, budget_s: float, reference_u) -> dict:
    """py-pde's ``ImplicitSolver`` (backward Euler) at the largest fixed dt whose iteration converges.

    py-pde solves each backward-Euler step by fixed-point iteration
    ``y ← y_n + dt f(y)`` (``maxiter`` 100, ``maxerror`` 1e-4), which contracts only
    while ``dt ‖∂f/∂y‖ < 1``: the cytokine's ``4 d D_c/Δx² + λ_c`` limits it as it limits
    forward Euler (0.9 × its limit ``2/ρ`` would iterate with factor 1.8: divergent). Tried:
    dt = (1/2, 1/4, 1/8) × the forward-Euler dt of :func:`run_pypde` (contraction factors
    ≈ 0.9, 0.45, 0.23), 5 steps each from the initial state (a numba compile each: dt is
    compiled in); the first that converges runs to ``t_end`` within ``budget_s``
    (extrapolated past it, as for Euler).
    """
    import pde

    equation, state, dt_euler = ref.pypde_problem(shape)
    tried, compile_s, chosen = [], 0.0, None
    for factor in (0.5, 0.25, 0.125):
        n_total = math.ceil(t_end / (factor * dt_euler))
        dt = t_end / n_total
        _, state, _ = ref.pypde_problem(shape)
        solver = pde.solvers.ImplicitSolver(equation, backend="numba")
        t0 = time.perf_counter()
        stepper = solver.make_stepper(state, dt)
        try:
            stepper(state, 0.0, dt)  # numba compiles on the first call
            compile_s += time.perf_counter() - t0
            stepper(state, dt, 5 * dt)
            ok = bool(np.all(np.isfinite(state.data)))
        except Exception as error:  # noqa: BLE001 - ConvergenceError, or a numba-wrapped one
            compile_s += time.perf_counter() - t0
            tried.append({"dt": dt, "converged": False, "error": f"{type(error).__name__}: {error}"[:200]})
            continue
        tried.append({"dt": dt, "converged": ok})
        if ok:
            chosen = (dt, n_total, stepper)
            break
    out = {"solver": "ImplicitSolver (backward Euler, fixed-point iteration)", "tried": tried, "compile_s": compile_s}
    if chosen is None:
        out["wall_s"] = None
        out["note"] = "no tried dt converged"
        return out
    dt, n_total, stepper = chosen
    _, state, _ = ref.pypde_problem(shape)
    out.update(dt=dt, n_steps=n_total, **_budgeted_fixed_step(stepper, state, dt, n_total, budget_s))
    out["cell_updates_per_s"] = math.prod(shape) / out["step_s"]
    out["dtype"] = str(state.data.dtype)
    if not out["extrapolated"]:
        out["rel_l2_u_vs_tumorfield_reference"] = rel_l2(state["u"].data, reference_u)
    return out


def _child(queue, fn, args):
    try:
        queue.put(("ok", fn(*args, report=lambda partial: queue.put(("partial", partial)))))
    except Exception as error:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(error).__name__}: {error}"))


def in_subprocess(fn, args, timeout_s: float):
    """``fn(*args, report=...)`` in a spawned process, killed after ``timeout_s``.

    Returns ``(status, value)``: ``("ok", result)``, ``("error", message)``, ``("partial", the
    last result ``fn`` reported before the time was up)`` or ``("timeout", message)``.
    """
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args), daemon=True)
    proc.start()
    deadline, last = time.monotonic() + timeout_s, None
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                status, value = queue.get(timeout=remaining)
            except queue_module.Empty:
                break
            if status != "partial":
                return status, value
            last = value
        return ("partial", last) if last is not None else ("timeout", f"no result within {timeout_s:.0f} s")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def stencil_sparsity(shape, n_fields: int = 3, radius: int = 2):
    """Sparsity of the reference problem's Jacobian for py-pde's flattened state ``(field, *cells)``.

    Every equation couples all fields at cells up to ``radius`` along each axis
    (``divergence(u*gradient(c))``: ``c`` at ±2, ``u`` at ±1; ``laplace``: ±1).
    """
    import scipy.sparse as sp

    pattern = None
    for axis, n in enumerate(shape):
        band = sp.diags([np.ones(n - abs(k)) for k in range(-radius, radius + 1)], list(range(-radius, radius + 1)))
        term = sp.identity(1, format="csr")
        for other, m in enumerate(shape):
            term = sp.kron(term, band if other == axis else sp.identity(m), format="csr")
        pattern = term if pattern is None else pattern + term
    return sp.kron(np.ones((n_fields, n_fields)), pattern, format="csr").astype(bool)


def run_pypde_bdf(
    shape, t_end: float, budget_s: float, reference_u, rtol: float, max_unknowns: float, report=None
) -> dict:
    """py-pde's ``ScipySolver`` with ``method="BDF"`` (adaptive, variable order 1–5, numba rhs).

    ``scipy.integrate.solve_ivp`` gets the stencil's Jacobian sparsity
    (:func:`stencil_sparsity`), so its finite-difference Jacobian and the LU of the Newton
    matrix are sparse (without it both are dense, ``(3 N)²``: infeasible beyond a few
    thousand cells). ``rtol`` as given, ``atol = rtol × 1e-3``. The run advances in 50
    pieces of ``t_end / 50``; when ``budget_s`` is spent before ``t_end``, ``wall_s`` is
    extrapolated by simulated time (``extrapolated``: true; the early transient, while the
    cytokine builds up, is the stiffest part, so this may overestimate). ``report(partial)``
    is called after each piece. Above ``max_unknowns`` unknowns it is not run (the sparse
    LU's fill-in does not fit this machine's memory and time).
    """
    import pde

    unknowns = 3 * math.prod(shape)
    out = {"solver": "ScipySolver(method='BDF')", "rtol": rtol, "atol": rtol * 1e-3, "unknowns": unknowns}
    if unknowns > max_unknowns:
        out["wall_s"] = None
        out["skipped"] = f"{unknowns:,} unknowns > --pypde-bdf-max-unknowns {max_unknowns:,.0f} (sparse LU fill-in)"
        return out
    equation, state, _ = ref.pypde_problem(shape)
    t0 = time.perf_counter()
    sparsity = stencil_sparsity(shape)
    out["sparsity_s"] = time.perf_counter() - t0
    solver = pde.solvers.ScipySolver(
        equation, backend="numba", method="BDF", rtol=rtol, atol=rtol * 1e-3, jac_sparsity=sparsity
    )
    t0 = time.perf_counter()
    stepper = solver.make_stepper(state)
    stepper(state.copy(), 0.0, 1e-9)  # numba compiles the right-hand side on the first call (on a copy)
    out["compile_s"] = time.perf_counter() - t0
    solver.info["steps"] = 0
    if report is not None:  # the parent learns when stepping began (wall clock: another process)
        report({**out, "t_reached": 0.0, "stepping_since_epoch_s": time.time()})
    pieces, t, elapsed = 50, 0.0, 0.0
    for k in range(1, pieces + 1):
        t_next = t_end * k / pieces
        t0 = time.perf_counter()
        stepper(state, t, t_next)
        elapsed += time.perf_counter() - t0
        t = t_next
        out.update(
            t_reached=t,
            run_s_measured=elapsed,
            rhs_evaluations=solver.info.get("steps"),
            extrapolated=t < t_end * (1 - 1e-12),
            wall_s=elapsed * t_end / t,
            dtype=str(state.data.dtype),
        )
        if report is not None:
            report(dict(out))
        if elapsed > budget_s and k < pieces:
            break
    if not out["extrapolated"]:
        out["rel_l2_u_vs_tumorfield_reference"] = rel_l2(state["u"].data, reference_u)
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
    parser.add_argument(
        "--pypde-solvers",
        nargs="+",
        default=["euler", "implicit", "bdf"],
        choices=("euler", "implicit", "bdf"),
        help="py-pde peers: EulerSolver, ImplicitSolver, ScipySolver(method='BDF') (default: all three)",
    )
    parser.add_argument(
        "--pypde-bdf-timeout", type=float, default=None, help="hard limit (s) of the BDF peer's process (20 × budget)"
    )
    parser.add_argument("--pypde-bdf-rtol", type=float, default=1e-4, help="rtol of the BDF peer (atol = rtol/1000)")
    parser.add_argument(
        "--pypde-bdf-max-unknowns",
        type=float,
        default=1.0e6,
        help="largest 3 × cells the BDF peer is run at (its sparse LU; default 1e6: 512² runs, 128³ does not)",
    )
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
            peers = {}
            if "euler" in args.pypde_solvers:
                print(f"[{label(shape)}] py-pde EulerSolver ...", flush=True)
                entry["pypde"] = peers["euler"] = run_pypde(shape, t_end, pypde_budget, reference["u"])
                if tts["wall_s"] is not None:
                    entry["speedup_time_to_solution"] = entry["pypde"]["wall_s"] / tts["wall_s"]
                best = max(entry["tumorfield_throughput"][k]["cell_updates_per_s"] for k in ("checkpoint", "scan"))
                entry["speedup_per_step"] = best / entry["pypde"]["cell_updates_per_s"]
            if "implicit" in args.pypde_solvers:
                print(f"[{label(shape)}] py-pde ImplicitSolver ...", flush=True)
                peers["implicit"] = run_pypde_implicit(shape, t_end, pypde_budget, reference["u"])
            if "bdf" in args.pypde_solvers:
                print(f"[{label(shape)}] py-pde ScipySolver(BDF) ...", flush=True)
                # in a child process with a hard limit: one piece of a large sparse-LU run can take very long
                bdf_args = (shape, t_end, pypde_budget, np.asarray(reference["u"]), args.pypde_bdf_rtol,
                            args.pypde_bdf_max_unknowns)  # fmt: skip
                limit_s = args.pypde_bdf_timeout if args.pypde_bdf_timeout is not None else 20 * pypde_budget
                started = time.time()
                status, value = in_subprocess(run_pypde_bdf, bdf_args, limit_s)
                if status == "partial" and value.get("t_reached", 0.0) == 0.0:
                    # compiled, but not even the first 1/50 of t_end within the limit: a lower bound
                    stepping_s = started + limit_s - value.pop("stepping_since_epoch_s")
                    value.update(wall_s=None, wall_s_lower_bound=50 * stepping_s, stepped_s_without_result=stepping_s)
                    value["note"] = f"no piece of t_end/50 within the {limit_s:.0f} s process limit"
                    peers["scipy_bdf"] = value
                elif status in ("ok", "partial"):
                    value.pop("stepping_since_epoch_s", None)
                    peers["scipy_bdf"] = value
                    if status == "partial":
                        value["note"] = f"stopped by the {limit_s:.0f} s process limit; extrapolated from t_reached"
                else:
                    peers["scipy_bdf"] = {"solver": "ScipySolver(method='BDF')", "wall_s": None,
                                          "skipped": f"{status}: {value} (numba compile included)"}  # fmt: skip
            entry["pypde_peers"] = peers
            timed = {name: p["wall_s"] for name, p in peers.items() if p.get("wall_s") is not None}
            if timed and tts["wall_s"] is not None:
                best_peer = min(timed, key=timed.get)
                entry["best_peer"] = best_peer
                entry["speedup_time_to_solution_vs_best_peer"] = timed[best_peer] / tts["wall_s"]
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
    peers = [(name, e) for name, e in result["sizes"].items() if e.get("pypde_peers")]
    if peers:
        print(f"\n{'size':>10} {'peer':>10} {'dt':>9} {'wall s':>10} {'compile s':>9} {'TTS x':>8}")
        for name, e in peers:
            tf_wall = e["tumorfield_time_to_solution"]["wall_s"]
            for peer, p in e["pypde_peers"].items():
                wall = p.get("wall_s")
                if wall is None:
                    print(f"{name:>10} {peer:>10} {p.get('skipped') or p.get('note', '')}")
                    continue
                print(
                    f"{name:>10} {peer:>10} {p.get('dt', float('nan')):>9.2e} {wall:>9.2f}"
                    f"{'*' if p.get('extrapolated') else ' '} {p.get('compile_s', float('nan')):>9.1f} "
                    f"{(wall / tf_wall) if tf_wall else float('nan'):>8.1f}"
                )
            if "best_peer" in e:
                speedup = e["speedup_time_to_solution_vs_best_peer"]
                print(f"{name:>10} best peer: {e['best_peer']}, speed-up {speedup:.1f}×")


if __name__ == "__main__":
    main()
