"""Interleaved A/B, in one process: reverse mode through the transform primitives or through JAX's
transpose of Makhoul's algorithm.

``to_spectral``/``from_spectral`` are primitives whose transpose is the other (the orthonormal DCT
is orthogonal, ``docs/numerics.md`` §3); variant ``autodiff`` traces the same algorithm
(``_forward_impl``/``_inverse_impl``) as plain JAX code, so that reverse mode transposes it op by op.
On the voloshin2015 PTX arm at ``--n``² (float32 fields, 4 days in, dt 0.02 day):

1. ``step_backward``: the backward pass of one ``Stepper.step`` with its residuals stored (the
   jitted pull-back of ``jax.vjp``), and the forward step for scale;
2. ``gradient``: ``value_and_grad`` with respect to ``r_n, delta_p, a_iv, k_i`` of the sum of the
   state after ``--block`` steps of the two-level checkpointed scan the fits use, per step.

Each variant is compiled once (compile excluded), the variants alternated ``--repeats`` times
(``_timing.interleaved``). Writes ``ab_transform_adjoint_<platform>_<n>_<time>.json``.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ab_transform_adjoint.py --n 64 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import contextlib
import json

import jax

jax.config.update("jax_enable_x64", True)  # as `tumorfield fit`: scalar ODEs in float64, fields float32
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved, write_result  # noqa: E402
from bench_fit import ptx_steps, state_sum  # noqa: E402
from tumorfield_kernels import SqrtCheckpointed, _spectral  # noqa: E402  (_spectral: the A/B swaps its transforms)


@contextlib.contextmanager
def transforms(variant: str):
    """While tracing: the primitives (``primitive``) or the algorithm as plain JAX code (``autodiff``)."""
    saved = _spectral.to_spectral, _spectral.from_spectral
    if variant == "autodiff":
        _spectral.to_spectral = lambda u, dirichlet=False, batch=0: _spectral._forward_impl(
            u, dirichlet=dirichlet, batch=batch
        )
        _spectral.from_spectral = lambda u, dirichlet=False, batch=0: _spectral._inverse_impl(
            u, dirichlet=dirichlet, batch=batch
        )
    try:
        yield
    finally:
        _spectral.to_spectral, _spectral.from_spectral = saved


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    build, steps, theta, state = ptx_steps(args.n)
    stepper, t = build(theta), jnp.float32(4.0)

    def step(s):
        return stepper.step(s, stepper.prepare(s), t)[0]

    def loss(theta):
        return state_sum(steps(SqrtCheckpointed(), theta, state, args.block))

    forward = jax.jit(step).lower(state).compile()
    calls = {"forward_step": lambda: forward(state)}
    for variant in ("primitive", "autodiff"):
        with transforms(variant):
            out, pull = jax.vjp(step, state)
            cotangent = jax.tree_util.tree_map(jnp.ones_like, out)
            backward = jax.jit(lambda pull, c: pull(c)).lower(pull, cotangent).compile()
            gradient = jax.jit(jax.value_and_grad(loss)).lower(theta).compile()
        calls[f"step_backward/{variant}"] = lambda b=backward, p=pull, c=cotangent: b(p, c)
        calls[f"gradient/{variant}"] = lambda g=gradient: g(theta)
    for call in calls.values():
        jax.block_until_ready(call())
    times = interleaved(calls, args.repeats)
    per_step = {k: v if k.startswith("step") or k.startswith("forward") else [x / args.block for x in v]
                for k, v in times.items()}  # fmt: skip
    summary = {k: {"median": float(np.median(v)), "min": float(min(v))} for k, v in per_step.items()}
    forward_median = summary["forward_step"]["median"]
    for key in list(summary):
        summary[key]["over_forward_step"] = summary[key]["median"] / forward_median
    result = {"what": __doc__.splitlines()[0], "backend": jax.default_backend(), "device": str(jax.devices()[0]),
              "jax": jax.__version__, "n": args.n, "block_steps": args.block, "repeats": args.repeats,
              "per_step_s": summary, "all_s": per_step}  # fmt: skip
    print(json.dumps(summary, indent=1))
    write_result(args.out, "ab_transform_adjoint", args.n, result)


if __name__ == "__main__":
    main()
