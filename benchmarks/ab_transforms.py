"""Interleaved A/B, in one process: the quasi-steady fields' transforms batched or one field at a time.

The full voloshin2015 PTX arm (its initial frame, float32) at ``--n``², one step of the whole
system (``Stepper.step``, ``cell_diffusion`` explicit at dt 0.005 or implicit at dt 0.05),
``--steps`` steps per call in a ``fori_loop``, the two variants alternated ``--repeats`` times,
compile excluded (one warm-up call each), ``block_until_ready``. Also the XLA flop counts of
``rates()`` and of one reaction evaluation (is the reaction the expensive part of a stage?).
Writes ``ab_transforms_<platform>_<n>_<time>.json``.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ab_transforms.py --n 512 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # as `tumorfield run`: scalar ODEs in float64, fields float32
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tumorfield_kernels as tk  # noqa: E402
from _timing import interleaved, write_result  # noqa: E402
from tumorfield_kernels._stepper import Stepper  # noqa: E402

from tumorfield import config as cfg  # noqa: E402

ARM = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015" / "ptx.toml"


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--cell-diffusion", nargs="+", default=["explicit", "implicit"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    overrides = [f"grid.shape=[{args.n},{args.n}]", "grid.length=[8.0,8.0]", "time.t_end=1", "time.dt=0.005"]
    config = cfg.load(ARM, [*overrides, 'run.compilation_cache="off"'])
    model, grid, system = config.model, config.grid, config.model.system
    params = tk.cast_floats(model.params(grid), "float32")
    state = tk.initial_frame(system, grid, model.initial_state(grid), params, numerics=tk.Numerics(dtype="float32"))
    state = {k: jnp.asarray(v) for k, v in state.items()}
    t0 = jnp.float32(0.0)
    result = {"what": __doc__.splitlines()[0], "backend": jax.default_backend(), "device": str(jax.devices()[0]),
              "jax": jax.__version__, "n": args.n, "steps_per_call": args.steps, "per_step_s": {}}  # fmt: skip
    for cd in args.cell_diffusion:
        dt = jnp.float32(0.05 if cd == "implicit" else 0.005)
        calls, outs = {}, {}
        for batch in (False, True):
            stepper = Stepper.build(system, grid, params, dt, cd, 1, batch_transforms=batch)

            def run(s, stepper=stepper):
                def body(i, s):
                    return stepper.step(s, stepper.prepare(s), t0)[0]

                return jax.lax.fori_loop(0, args.steps, body, s)

            calls[batch] = jax.jit(run)
            outs[batch] = jax.block_until_ready(calls[batch](state))
        difference = max(
            float(jnp.max(jnp.abs(outs[True][k] - outs[False][k])) / (jnp.max(jnp.abs(outs[False][k])) + 1e-30))
            for k in outs[False]
            if outs[False][k].ndim
        )
        times = interleaved({b: lambda c=c: c(state) for b, c in calls.items()}, args.repeats, per=args.steps)
        entry = {
            f"batched={b}": {"median": float(np.median(v)), "min": float(min(v)), "all": v} for b, v in times.items()
        }
        entry["max_relative_difference"] = difference
        entry["batched_over_per_field"] = entry["batched=True"]["median"] / entry["batched=False"]["median"]
        result["per_step_s"][cd] = entry
        print(cd, json.dumps(entry), flush=True)
    stepper = Stepper.build(system, grid, params, jnp.float32(0.005))
    result["flops"] = {
        "rates": _flops(lambda s: stepper.rates(s, t0)[0], state),
        "solve_quasi_steady": _flops(lambda s: stepper.solve_quasi_steady(s, t0), state),
        "reaction_once": _flops(lambda s: stepper._reaction(s, t0), state),
    }
    print(json.dumps(result["flops"]))
    write_result(args.out, "ab_transforms", args.n, result)


if __name__ == "__main__":
    main()
