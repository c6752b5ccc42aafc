"""Benchmark the fit's loss on the PTX arm of the Voloshin 2015 study (``tumorfield fit`` internals).

Usage::

    python benchmarks/bench_fit.py --out benchmarks/results [--shape 64] [--days 21] [--sweep 3 6 12 21]
        [--parts gradient decomposition compile memory] [--repeats 5] [--quick]

Measures, for ``r_n, delta_p, a_iv, k_i`` (started at the model's defaults, bounded by their plausible
ranges widened ×/÷ 4: :func:`start_and_bounds`) fitted to tumour volume (days 3, 7, 10, 14, 17, 21)
and metastatic burden (days 14, 21) of ``experiments/voloshin2015/ptx.toml`` (float32 fields,
its ``dt``):

1. ``gradient ÷ forward``: the compiled ``value_and_grad`` of the loss against the compiled loss
   alone (goal ≤ 4), each AOT-compiled, compile apart, timed in ``--repeats`` interleaved pairs
   (:func:`_timing.interleaved`: a change of load hits both alike): ``ratio`` of the best times,
   ``ratio_median`` of the medians;
2. compile of one L-BFGS iteration (value and gradient, two-loop, zoom line search: the one
   program a fit compiles) in a fresh process with an empty persistent cache (cold) and again
   with the cache it filled (warm): import, load, trace + lower (warm: load the iteration's
   ``jax.export`` file from the cache and lower its call instead, ``program``), XLA compile or
   cache load, the size of the export file, and the time until the first iteration has run
   ("starts computing": everything before that run);
3. where the gradient's time goes (``decomposition``): per step of the arm's ``Stepper`` over
   ``--block`` steps (a checkpoint block's length), the forward step, and the gradient (of the
   final state's sum, with respect to the four parameters) of a scan that stores every step's
   residuals (one forward sweep + the backward pass: memory ∝ steps), of one whose steps are
   checkpointed (two sweeps + backward) and of the fit's two-level scan (three sweeps +
   backward). ``backward ÷ forward`` (the step-checkpointed scan's gradient less its two forward
   sweeps, over the forward) bounds what any checkpointing can reach with O(√steps) memory: at
   least one sweep to place the checkpoints and one to recompute from them, so
   ``gradient ÷ forward ≥ 2 + backward ÷ forward`` (``best_with_sqrt_memory``);
4. reverse-mode memory against the number of steps: XLA temp bytes of ``jit(grad(L))`` for runs
   of ``--sweep`` days with tumour volume at the end only, and for the longest with the study's
   schedule (8 observations, 6 check frames), against the bytes of one state.

The observed values are placeholders (1.0): timing and memory do not depend on them. The JSON is
written when the run starts (``status: running``) and again after every part, so a run stopped early
keeps the parts it finished (``status: complete`` at the end). ``--quick``: 8², one day, the gradient
part only (a CPU smoke run of the script, as ``gpu_suite.sh --quick`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARM = ROOT / "experiments" / "voloshin2015" / "ptx.toml"
PARTS = {
    "gradient": "gradient ÷ forward",
    "decomposition": "where a gradient step's time goes: forward sweeps and the backward pass",
    "compile": "compile of one L-BFGS iteration, fresh processes",
    "memory": "reverse-mode memory against steps",
}
NAMES = ("r_n", "delta_p", "a_iv", "k_i")
WIDEN = 4.0
"""The bounds: each parameter's plausible range (``docs/model.md``) widened ×/÷ this, within its allowed range."""


def start_and_bounds() -> dict[str, tuple[float, float, float]]:
    """``name → (init, lower, upper)``: the model's default (``delta_p`` 0.6 — the fraction of divisions
    dying at full paclitaxel effect —, ``k_i`` 1.0/day, …) and the widened plausible range, read from
    ``tumorfield.models.voloshin2015.parameters`` so that they follow the model."""
    from tumorfield.models.voloshin2015.parameters import Parameters

    fields = {f.name: f for f in dataclasses.fields(Parameters)}
    out = {}
    for name in NAMES:
        field = fields[name]
        low, high, _ = field.metadata["range"]
        p_low, p_high = field.metadata["plausible"]
        out[name] = (field.default, max(p_low / WIDEN, low), min(p_high * WIDEN, high))
    return out


def write_problem(directory: Path, days: float, data_days=None) -> Path:
    """A fit file for the PTX arm over ``days`` and placeholder data; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    schedule = data_days or [d for d in (3, 7, 10, 14, 17, 21) if d <= days] or [days]
    rows = [f"ptx,{d},tumor_volume,1.0,0.05" for d in schedule]
    rows += [f"ptx,{d},metastatic_burden,1.0,0.2" for d in (14, 21) if d <= days and data_days is None]
    (directory / "obs.csv").write_text("arm,t,observable,value,sigma\n" + "\n".join(rows) + "\n")
    values = start_and_bounds().items()
    parameters = "\n".join(f"{n} = {{ init = {v}, lower = {lo}, upper = {hi} }}" for n, (v, lo, hi) in values)
    text = f'[fit]\narms = {{ ptx = "{ARM}" }}\ndata = "obs.csv"\nlikelihood = "lognormal"\n[fit.parameters]\n'
    (directory / "fit.toml").write_text(text + parameters + "\n")
    return directory / "fit.toml"


def load(path: Path, shape: int, days: float, cache: str = "off"):
    import jax.numpy as jnp

    from tumorfield.fit import Fit

    overrides = [
        f"grid.shape=[{shape},{shape}]",
        f"time.t_end={days}",
        f"time.save_every={days}",
        f'run.compilation_cache="{cache}"',
    ]
    fit = Fit.load(path, overrides)
    return fit, jnp.asarray(fit.bounds.to_unconstrained(fit.bounds.init))


def timed_compile(fn, *args):
    """``(compiled, trace + lower s, compile s)``."""
    import jax

    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    traced = time.perf_counter()
    compiled = lowered.compile()
    return compiled, traced - start, time.perf_counter() - traced


def gradient_over_forward(directory: Path, shape: int, days: float, repeats: int) -> dict:
    """Forward and ``value_and_grad`` of the fit's loss: compiled apart, warmed up, then ``repeats``
    interleaved calls of each (best and median)."""
    import jax

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import interleaved

    fit, z = load(write_problem(directory, days), shape, days)
    forward, f_trace, f_compile = timed_compile(fit._loss, z, fit.arrays)
    gradient, g_trace, g_compile = timed_compile(jax.value_and_grad(fit._loss), z, fit.arrays)
    calls = {"forward": lambda: forward(z, fit.arrays), "value_and_grad": lambda: gradient(z, fit.arrays)}
    for call in calls.values():
        jax.block_until_ready(call())  # warm-up
    times = interleaved(calls, repeats)
    t_f, t_g = min(times["forward"]), min(times["value_and_grad"])
    m_f, m_g = statistics.median(times["forward"]), statistics.median(times["value_and_grad"])
    group = fit.groups[0]
    return {
        "steps": group.n_steps,
        "frames": group.frames,
        "repeats": repeats,
        "forward_s": t_f,
        "value_and_grad_s": t_g,
        "ratio": t_g / t_f,
        "forward_median_s": m_f,
        "value_and_grad_median_s": m_g,
        "ratio_median": m_g / m_f,
        "forward_times_s": times["forward"],
        "value_and_grad_times_s": times["value_and_grad"],
        "forward_trace_s": f_trace,
        "forward_compile_s": f_compile,
        "value_and_grad_trace_s": g_trace,
        "value_and_grad_compile_s": g_compile,
    }


def child_compile(path: Path, shape: int, days: float, cache: str) -> dict:
    """In a fresh process (``--child``): the times to the first computed L-BFGS iteration."""
    started = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from tumorfield import _compile_log

    imported = time.perf_counter()
    _compile_log.install()
    _compile_log.enable_persistent_cache(cache)
    fit, z = load(path, shape, days, cache)
    loaded = time.perf_counter()
    args = (z, fit._optimiser.init(z), jnp.asarray(jnp.inf), jnp.zeros_like(z), fit.arrays)
    step = fit._step.compile(*args)  # trace + lower (or load its jax.export), then XLA compile (or cache load)
    built = time.perf_counter()
    jax.block_until_ready(step(*args))  # the start's value and gradient (see _optimise._start)
    ran = time.perf_counter()
    exported = Path(cache) / "tumorfield-fit" / f"{step.key}.jaxexport" if step.key else None
    return {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "trace_lower_s": step.timings["trace_lower_s"],
        "compile_or_load_s": step.timings["compile_s"],
        "first_iteration_s": ran - built,
        "starts_computing_s": built - started,
        "program": step.source,
        "export_bytes": exported.stat().st_size if exported is not None and exported.exists() else None,
        "cache_hits": _compile_log.cache_hits(),
        "cache_misses": _compile_log.cache_misses(),
    }


def cold_and_warm(directory: Path, shape: int, days: float, warm_repeats: int = 3) -> dict:
    """One cold process, then ``warm_repeats`` warm ones (the first is ``warm``; all their
    "starts computing" times and the median are ``warm_starts_computing_s`` and
    ``warm_median_s``: on a shared machine one process can be unlucky)."""
    path = write_problem(directory, days)
    cache = str(directory / "cache")
    out, warm = {}, []
    for label in ("cold", *(["warm"] * max(1, warm_repeats))):
        command = [
            sys.executable,
            __file__,
            "--child",
            str(path),
            "--shape",
            str(shape),
            "--days",
            str(days),
            "--cache",
            cache,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if result.returncode != 0:
            sys.exit(result.stderr)
        found = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  {label}: {found}", flush=True)
        out.setdefault(label, found)
        if label == "warm":
            warm.append(found["starts_computing_s"])
    out["warm_starts_computing_s"], out["warm_median_s"] = warm, statistics.median(warm)
    return out


def ptx_steps(shape: int):
    """``(build, steps, theta, state)`` of the PTX arm at ``shape``² (float32 fields, its ``dt``):
    ``build(theta)`` is its ``Stepper`` (``tk.make_stepper``; explicit cell diffusion and, as the
    measurements before issue 21, no sub-cycling) with ``NAMES`` at ``theta`` (the model's defaults),
    ``steps(scan, theta, state, length)`` the state after ``length`` steps run by ``scan`` (a
    ``tk.Scan``), and ``state`` the one 4 days in (paclitaxel given, fields no longer smooth)."""
    import jax
    import jax.numpy as jnp
    import tumorfield_kernels as tk

    from tumorfield import config as cfg
    from tumorfield.fit._transform import with_values

    config = cfg.load(ARM, [f"grid.shape=[{shape},{shape}]", 'run.compilation_cache="off"'])
    model, grid, system = config.model, config.grid, config.model.system
    numerics = tk.Numerics(substeps=tk.NoSubcycling(), dtype=config.output.precision)
    params = tk.cast_floats(model.params(grid), config.output.precision)
    state = tk.initial_frame(system, grid, model.initial_state(grid), params, numerics=numerics)
    dt, t = jnp.asarray(config.time.dt, jnp.float32), jnp.asarray(4.0, jnp.float32)
    theta = jnp.asarray([start_and_bounds()[n][0] for n in NAMES])

    def build(theta):
        return tk.make_stepper(system, grid, with_values(params, NAMES, theta), dt, numerics)

    def steps(scan, theta, state, length):
        stepper = build(theta)

        def one(s, _):
            return stepper.step(s, stepper.prepare(s), t)[0], None

        return scan(one, state, length)[0]

    state = jax.jit(lambda s: steps(tk.Scan(), theta, s, int(4.0 / config.time.dt)))(state)
    return build, steps, theta, state


def state_sum(state):
    """The sum of every leaf of ``state`` in float64: a scalar loss that depends on every field."""
    import jax
    import jax.numpy as jnp

    return sum(jnp.sum(v.astype(jnp.float64)) for v in jax.tree_util.tree_leaves(state))


def checkpointed_steps(step, carry, length):
    """``lax.scan(step, carry, None, length)`` whose reverse pass stores every step's entering carry and
    re-runs each step for its VJP: O(length) carries, one forward sweep fewer than ``SqrtCheckpointed``."""
    import jax
    from jax import lax

    return lax.scan(jax.checkpoint(step, prevent_cse=False), carry, None, length=length)


def decomposition(shape: int, block: int, repeats: int) -> dict:
    """Per-step forward and gradient times of the PTX arm's step over ``block`` steps (see the module
    docstring, item 3), from the state of :func:`ptx_steps`."""
    import jax
    from _timing import best_of
    from tumorfield_kernels import Scan, SqrtCheckpointed

    _, steps, theta, state = ptx_steps(shape)

    class CheckpointedSteps(Scan):
        def __call__(self, step, carry, length):
            return checkpointed_steps(step, carry, length)

    def total(scan):
        def loss(theta):
            return state_sum(steps(scan, theta, state, block))

        return loss

    forward = jax.jit(total(Scan())).lower(theta).compile()
    out = {"block_steps": block, "forward_step_s": best_of(forward, theta, repeats=repeats) / block}
    for label, scan in (("stored", Scan()), ("checkpointed_steps", CheckpointedSteps()),
                        ("two_level", SqrtCheckpointed())):  # fmt: skip
        compiled = jax.jit(jax.value_and_grad(total(scan))).lower(theta).compile()
        out[f"{label}_gradient_step_s"] = best_of(compiled, theta, repeats=repeats) / block
        out[f"{label}_temp_bytes"] = compiled.memory_analysis().temp_size_in_bytes
    f = out["forward_step_s"]
    # the pure backward pass of a step: the checkpointed scan's gradient less its two forward sweeps
    # (the stored scan is no cheaper on CPU: writing and reading every step's residuals costs more)
    out["backward_over_forward"] = (out["checkpointed_steps_gradient_step_s"] - 2 * f) / f
    out["ratios"] = {k: out[f"{k}_gradient_step_s"] / f for k in ("stored", "checkpointed_steps", "two_level")}
    out["best_with_sqrt_memory"] = 2.0 + out["backward_over_forward"]
    return out


def memory_sweep(directory: Path, shape: int, sweep: list[float]) -> list[dict]:
    import jax

    rows = []
    cases = [(days, "end only", [days]) for days in sweep] + [(sweep[-1], "study schedule", None)]
    for days, label, data_days in cases:
        fit, z = load(write_problem(directory / f"m{days}_{label[:3]}", days, data_days), shape, days)
        compiled, _, _ = timed_compile(jax.grad(fit._loss), z, fit.arrays)
        group = fit.groups[0]
        itemsize = 4 if fit.spec.arms["ptx"].output.precision == "float32" else 8
        cells = [x[0].size for x in jax.tree_util.tree_leaves(fit.arrays["groups"][0]["initial"]) if x.ndim > 1]
        rows.append({"days": days, "data": label, "steps": group.n_steps, "frames": group.frames,
                     "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
                     "state_bytes": itemsize * sum(cells)})  # fmt: skip
        print(f"  {rows[-1]}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for the JSON result")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--days", type=float, default=21.0)
    parser.add_argument("--sweep", type=float, nargs="*", default=[3.0, 6.0, 12.0, 21.0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each program (interleaved: gradient)")
    parser.add_argument("--block", type=int, default=32, help="steps of the decomposition part (a block's length)")
    parser.add_argument("--warm-repeats", type=int, default=3, help="warm processes of the compile part")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure")
    parser.add_argument("--quick", action="store_true", help="8², one day, the gradient part (a CPU smoke run)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_compile(args.child, args.shape, args.days, args.cache)))
        return 0
    if args.quick:
        args.shape, args.days, args.parts = 8, 1.0, ["gradient"]
    import jax

    jax.config.update("jax_enable_x64", True)
    device = jax.devices()[0]
    result = {
        "problem": f"voloshin2015 PTX arm, {args.shape}², {args.days} days, fit of {', '.join(NAMES)}",
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "quick": args.quick,
        "status": "running",
    }
    path = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        parts = "" if set(args.parts) == set(PARTS) else "_" + "_".join(args.parts)
        path = args.out / f"bench_fit_{device.platform}_{args.shape}_{stamp}{parts}.json"

    def write() -> None:  # at the start and after every part: a run stopped early keeps what it measured
        if path is not None:
            path.write_text(json.dumps(result, indent=2))

    write()
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            print(PARTS[part], flush=True)
            if part == "gradient":
                result[part] = gradient_over_forward(Path(tmp) / "g", args.shape, args.days, args.repeats)
                print(f"  {result[part]}", flush=True)
            elif part == "decomposition":
                result[part] = decomposition(args.shape, args.block, args.repeats)
                print(f"  {result[part]}", flush=True)
            elif part == "compile":
                result[part] = cold_and_warm(Path(tmp) / "c", args.shape, args.days, args.warm_repeats)
            else:
                result[part] = memory_sweep(Path(tmp) / "m", args.shape, args.sweep)
            write()
    result["status"] = "complete"
    write()
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
