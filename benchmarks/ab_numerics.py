"""Interleaved A/B of the numerics options on the README system (2D, in one process).

Per step, forward only: ``cell_diffusion`` explicit/implicit (``ExplicitDiffusion()`` /
``ImplicitDiffusion()``) × ``max_substeps`` 1/64 (``NoSubcycling()`` / ``Subcycle(64)``) at a dt
that needs no sub-cycling (the cost of the per-step bound and the cond), with the plain ``Scan()``
adjoint, alternating the callables, ``--repeats`` timings each, compile excluded (one warm-up call
each), ``block_until_ready``. The same under ``vmap`` over ``--members`` reaction rates (as sweeps
run), with and without ``Subcycle(axis_name=...)`` (``batch_axis`` before issue 21: members deciding
together whether to sub-cycle; without it the branch becomes a select and every member pays for
both). And the XLA temp memory of ``jit(grad(loss))`` with ``max_substeps`` 1 and 8 (sub-cycling
active at 2× the explicit limit) on 16², to show the checkpointed while loop's cost. Writes JSON.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ab_numerics.py --n 128 --steps 200 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import tumorfield_kernels as tk
from _timing import interleaved, write_result


def readme_system():
    return tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3, "c": 0.5},
        decay={"c": 1.0},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.05),),
        reaction=lambda state, params, t: {"u": params["r"] * state["u"] * (1 - state["u"]), "c": state["u"]},
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    system, grid = readme_system(), tk.Grid((args.n, args.n), 4.0)
    y, x = grid.mesh()
    u0 = np.exp(-((x - 2) ** 2 + (y - 2) ** 2) / 0.1)
    state = {"u": u0, "c": 0 * u0}
    params = {"r": 1.0}
    dt = 0.5 * tk.max_stable_dt(system, grid, state, params)["u"]
    diffusion = {"explicit": tk.ExplicitDiffusion(), "implicit": tk.ImplicitDiffusion()}
    variants = {(cd, ms): tk.Numerics(diffusion[cd], tk.substeps_from_cap(ms), tk.Scan())
                for cd in ("explicit", "implicit") for ms in (1, 64)}  # fmt: skip

    def call(cd, ms):
        traj = tk.advance(system, grid, state, dt=dt, n_saves=1, steps_per_save=args.steps, params=params,
                          numerics=variants[cd, ms])  # fmt: skip
        return jax.block_until_ready(traj.fields)

    compile_s = {}
    for key in variants:
        t0 = time.perf_counter()
        call(*key)
        compile_s[key] = time.perf_counter() - t0
    times = interleaved({key: lambda key=key: call(*key) for key in variants}, args.repeats, per=args.steps)

    # vmapped members (as sweeps): max_substeps 64, with and without the vmap axis named (batch_axis)
    rates = jnp.linspace(0.5, 1.5, args.members)

    def members(batch_axis):
        numerics = tk.Numerics(substeps=tk.Subcycle(64, axis_name=batch_axis), adjoint=tk.Scan())

        def one(r):
            traj = tk.advance(system, grid, state, dt=dt, n_saves=1, steps_per_save=args.steps, params={"r": r},
                              throw=False, numerics=numerics)  # fmt: skip
            return traj.fields

        return jax.jit(jax.vmap(one, axis_name="members"))

    vmapped = {"batch_axis=None": members(None), "batch_axis='members'": members("members")}
    for call in vmapped.values():
        jax.block_until_ready(call(rates))
    vmap_times = interleaved({k: lambda c=c: c(rates) for k, c in vmapped.items()}, args.repeats, per=args.steps)

    # reverse-mode temp memory with sub-cycling (16², explicit diffusion, dt = 2× the limit)
    g16 = tk.Grid((16, 16), 4.0)
    yy, xx = g16.mesh()
    s16 = {"u": np.exp(-((xx - 2) ** 2 + (yy - 2) ** 2) / 0.5), "c": 2.0 * np.exp(-((xx - 2) ** 2) / 0.3)}
    strong = tk.System(fields=("u", "c"), diffusion={"u": 1e-3, "c": 0.5}, decay={"c": 1.0},
                       taxis=(tk.Taxis(field="u", attractant="c", chi=2.0),))  # fmt: skip
    limit = tk.max_stable_dt(strong, g16, s16)["u"]
    memory = {}
    for ms, dt16 in ((1, 0.9 * limit), (8, 1.8 * limit)):

        def loss(u, ms=ms, dt16=dt16):
            traj = tk.simulate(strong, g16, {**s16, "u": u}, t_end=200 * dt16, dt=dt16, throw=False,
                               numerics=tk.Numerics(substeps=tk.substeps_from_cap(ms)))  # fmt: skip
            return jnp.sum(traj["u"][-1] ** 2), traj.stats.substeps

        compiled = jax.jit(jax.grad(lambda u: loss(u)[0])).lower(jnp.asarray(s16["u"])).compile()
        memory[ms] = {
            "dt_over_limit": dt16 / limit, "substeps": int(np.max(np.asarray(loss(jnp.asarray(s16["u"]))[1]))),
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
        }  # fmt: skip

    result = {
        "what": "README system 2D, per-step seconds (forward), interleaved A/B; grad temp memory 16², 200 steps",
        "backend": jax.default_backend(), "n": args.n, "steps": args.steps, "dt": dt,
        "per_step_s": {f"{cd}/max_substeps={ms}": {"median": float(np.median(v)), "all": v}
                       for (cd, ms), v in times.items()},
        "compile_plus_first_call_s": {f"{cd}/max_substeps={ms}": v for (cd, ms), v in compile_s.items()},
        "vmapped_per_step_s": {"members": args.members, "max_substeps": 64, **{
            k: {"median": float(np.median(v)), "all": v} for k, v in vmap_times.items()}},
        "grad_memory": {f"max_substeps={k}": v for k, v in memory.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    write_result(args.out, "ab_numerics", args.n, result)


if __name__ == "__main__":
    main()
