"""Interleaved A/B of the gradient cost, ``value_and_grad`` ÷ forward, under variants of the reverse pass.

Usage::

    python benchmarks/ab_gradient.py --out benchmarks/results [--shape 64] [--days 21] [--repeats 7]
        [--variants hand jax_own no_subcycling]
    python benchmarks/ab_gradient.py --glioma --out benchmarks/results [--shape 24] [--steps 36] [--repeats 7]

Default: the fit loss of ``bench_fit.py`` (voloshin2015 PTX arm, four parameters).
``--glioma``: ``experiments/glioma_atlas/atlas.toml`` on a ``shape``³ box of white matter (2 mm cells,
implicit cell diffusion), ``steps`` steps under the shipped ``SqrtCheckpointed``, the loss the sum of the
final state, differentiated with respect to the parameters and the initial state; variants ``hand``
(the shipped solve, differentiated implicitly) and ``jax_own`` (the cyclic reduction differentiated
by JAX through every level).

Variants (each a fresh trace and compile in this process; timed alternately, compile apart):

- ``hand``: the shipped code (the limited upwind flux's reverse rule written out, ``_stencils.axis_flux``);
- ``jax_own``: the flux differentiated by JAX's own rules (the tree before that rule), by swapping the
  private ``_stencils._flux`` for its undecorated value while tracing;
- ``no_subcycling``: ``hand`` with ``[numerics] max_substeps = 1`` (no sub-cycling branch in the step);
- ``every_step``: ``hand`` with every step's entering carry stored instead of ``SqrtCheckpointed``'s two
  levels (``lax.scan`` of ``jax.checkpoint(step)``): O(steps) memory, one forward sweep fewer — what the
  O(√steps) memory of the shipped schedule costs (not a shipped choice).

Each variant reports the best and median time of the compiled loss and of its ``value_and_grad``
over ``--repeats`` interleaved rounds, and ``gradient ÷ forward`` of the medians (the issue's measure).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fit  # noqa: E402
from _timing import interleaved  # noqa: E402


def _variant(name: str, directory: Path, shape: int, days: float):
    import jax
    from tumorfield_kernels import SqrtCheckpointed, _stencils

    from tumorfield.fit import Fit

    overrides = [f"grid.shape=[{shape},{shape}]", f"time.t_end={days}", f"time.save_every={days}",
                 'run.compilation_cache="off"']  # fmt: skip
    if name == "no_subcycling":
        overrides.append("numerics.max_substeps=1")
    fit = Fit.load(bench_fit.write_problem(directory, days), overrides)
    import jax.numpy as jnp

    z = jnp.asarray(fit.bounds.to_unconstrained(fit.bounds.init))
    original, two_level = _stencils._flux, SqrtCheckpointed.__call__
    if name == "jax_own":
        _stencils._flux = lambda layout, *arrays: _stencils._flux_value(layout, *arrays)
    if name == "every_step":
        SqrtCheckpointed.__call__ = lambda self, step, carry, length: bench_fit.checkpointed_steps(step, carry, length)
    try:
        forward, _, forward_compile = bench_fit.timed_compile(fit._loss, z, fit.arrays)
        gradient, _, gradient_compile = bench_fit.timed_compile(jax.value_and_grad(fit._loss), z, fit.arrays)
    finally:
        _stencils._flux, SqrtCheckpointed.__call__ = original, two_level
    value = float(forward(z, fit.arrays))
    value_g, grad = gradient(z, fit.arrays)
    return {"forward": forward, "gradient": gradient, "args": (z, fit.arrays), "loss": value,
            "loss_from_gradient": float(value_g), "grad": [float(g) for g in grad],
            "forward_compile_s": forward_compile, "gradient_compile_s": gradient_compile,
            "steps": fit.groups[0].n_steps}  # fmt: skip


def _glioma_variant(name: str, shape: int, steps: int):
    import jax
    import jax.numpy as jnp
    import tumorfield_kernels as tk
    from bench_budget import glioma_box
    from tumorfield_kernels import _diffusion

    from tumorfield.problem import Problem

    problem = Problem.from_config(glioma_box([shape] * 3))
    system, grid, numerics, state = problem.system, problem.grid, problem.numerics, problem.initial_frame()

    def reduction(back, ahead, rhs):  # the solve as before: JAX differentiates every reduction level
        zero = jnp.zeros_like(back[:1])
        lower = -jnp.concatenate([zero, ahead[:-1]], axis=0)
        return _diffusion._reduce(lower, 1.0 + ahead + jnp.concatenate([zero, back[:-1]], axis=0), -back, rhs)

    def loss(params, state):
        stepper = tk.make_stepper(system, grid, params, problem.dt, numerics)

        def one(carry, _):
            s, i = carry
            return (stepper.step(s, stepper.prepare(s), i * stepper.dt)[0], i + 1), None

        (s, _), _ = numerics.adjoint(one, (state, jnp.zeros((), stepper.dt.dtype)), steps)
        return sum(jnp.sum(v.astype(jnp.float64)) for v in jax.tree_util.tree_leaves(s))

    shipped = _diffusion._tridiagonal_solve
    if name == "jax_own":
        _diffusion._tridiagonal_solve = reduction
    try:
        forward, _, forward_compile = bench_fit.timed_compile(loss, problem.params, state)
        gradient, _, gradient_compile = bench_fit.timed_compile(jax.value_and_grad(loss, (0, 1)), problem.params, state)
    finally:
        _diffusion._tridiagonal_solve = shipped
    value = float(forward(problem.params, state))
    leaves = [x for x in jax.tree_util.tree_leaves(gradient(problem.params, state)[1]) if x.ndim == 0]
    return {"forward": forward, "gradient": gradient, "args": (problem.params, state), "loss": value,
            "grad": [float(g) for g in leaves], "forward_compile_s": forward_compile,
            "gradient_compile_s": gradient_compile, "steps": steps}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--days", type=float, default=21.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--glioma", action="store_true", help="the glioma model's scan (variants hand, jax_own)")
    parser.add_argument("--steps", type=int, default=36, help="steps of the --glioma scan")
    parser.add_argument("--variants", nargs="+", default=["hand", "jax_own", "no_subcycling"],
                        choices=["hand", "jax_own", "no_subcycling", "every_step"])  # fmt: skip
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    built = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            if args.glioma and name in ("no_subcycling", "every_step"):
                continue
            # the rollout is a jitted function whose traces JAX caches: without this the second variant
            # would reuse the first's inner program and time it again
            jax.clear_caches()
            built[name] = (_glioma_variant(name, args.shape, args.steps) if args.glioma
                           else _variant(name, Path(tmp) / name, args.shape, args.days))  # fmt: skip
    calls = {(name, part): functools.partial(v[part], *v["args"]) for name, v in built.items()
             for part in ("forward", "gradient")}  # fmt: skip
    for call in calls.values():
        jax.block_until_ready(call())
    measured = interleaved(calls, args.repeats)
    times = {name: {part: measured[(name, part)] for part in ("forward", "gradient")} for name in built}
    device = jax.devices()[0]
    fitted = ", ".join(bench_fit.NAMES)
    problem = (f"glioma_atlas on a {args.shape}³ box, {args.steps} steps" if args.glioma else
               f"voloshin2015 PTX arm, {args.shape}², {args.days} days, fit of {fitted}")  # fmt: skip
    result = {"problem": problem,
              "device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "jax": jax.__version__,
              "repeats": args.repeats, "variants": {}}  # fmt: skip
    for name, v in built.items():
        f, g = times[name]["forward"], times[name]["gradient"]
        row = {"steps": v["steps"], "forward_best_s": min(f), "forward_median_s": statistics.median(f),
               "gradient_best_s": min(g), "gradient_median_s": statistics.median(g),
               "ratio_median": statistics.median(g) / statistics.median(f), "ratio_best": min(g) / min(f),
               "forward_compile_s": v["forward_compile_s"], "gradient_compile_s": v["gradient_compile_s"],
               "loss": v["loss"], "grad": v["grad"]}  # fmt: skip
        result["variants"][name] = row
        print(f"{name:14s} forward {row['forward_median_s']:.3f} s  value_and_grad {row['gradient_median_s']:.3f} s  "
              f"ratio (medians) {row['ratio_median']:.2f}  (best) {row['ratio_best']:.2f}")  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        model = "glioma" if args.glioma else "ptx"
        path = args.out / f"ab_gradient_{model}_{device.platform}_{args.shape}_{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
