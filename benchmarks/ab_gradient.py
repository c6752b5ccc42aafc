"""Interleaved A/B of a fit's gradient cost: ``value_and_grad`` ÷ forward of the fit loss of
``bench_fit.py`` (voloshin2015 PTX arm, four parameters) under variants of the reverse pass.

Usage::

    python benchmarks/ab_gradient.py --out benchmarks/results [--shape 64] [--days 21] [--repeats 7]
        [--variants hand jax_own no_subcycling]

Variants (each a fresh trace and compile in this process; timed alternately, compile apart):

- ``hand``: the shipped code (the limited upwind flux's reverse rule written out, ``_stencils.axis_flux``);
- ``jax_own``: the flux differentiated by JAX's own rules (the tree before that rule), by swapping the
  private ``_stencils._flux`` for its undecorated value while tracing;
- ``no_subcycling``: ``hand`` with ``[numerics] max_substeps = 1`` (no sub-cycling branch in the step).

Each variant reports the best and median time of the compiled loss and of its ``value_and_grad``
over ``--repeats`` interleaved rounds, and ``gradient ÷ forward`` of the medians (the issue's measure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fit  # noqa: E402


def _variant(name: str, directory: Path, shape: int, days: float):
    import jax
    from tumorfield_kernels import _stencils

    from tumorfield.fit import Fit

    overrides = [f"grid.shape=[{shape},{shape}]", f"time.t_end={days}", f"time.save_every={days}",
                 'run.compilation_cache="off"']  # fmt: skip
    if name == "no_subcycling":
        overrides.append("numerics.max_substeps=1")
    fit = Fit.load(bench_fit.write_problem(directory, days), overrides)
    import jax.numpy as jnp

    z = jnp.asarray(fit.bounds.to_unconstrained(fit.bounds.init))
    original = _stencils._flux
    if name == "jax_own":
        _stencils._flux = lambda layout, *arrays: _stencils._flux_value(layout, *arrays)
    try:
        start = time.perf_counter()
        forward = jax.jit(fit._loss).lower(z, fit.arrays).compile()
        forward_compile = time.perf_counter() - start
        start = time.perf_counter()
        gradient = jax.jit(jax.value_and_grad(fit._loss)).lower(z, fit.arrays).compile()
        gradient_compile = time.perf_counter() - start
    finally:
        _stencils._flux = original
    value = float(forward(z, fit.arrays))
    value_g, grad = gradient(z, fit.arrays)
    return {"forward": forward, "gradient": gradient, "args": (z, fit.arrays), "loss": value,
            "loss_from_gradient": float(value_g), "grad": [float(g) for g in grad],
            "forward_compile_s": forward_compile, "gradient_compile_s": gradient_compile,
            "steps": fit.groups[0].n_steps}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--days", type=float, default=21.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", nargs="+", default=["hand", "jax_own", "no_subcycling"],
                        choices=["hand", "jax_own", "no_subcycling"])  # fmt: skip
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    with tempfile.TemporaryDirectory() as tmp:
        built = {name: _variant(name, Path(tmp) / name, args.shape, args.days) for name in args.variants}
    times = {name: {"forward": [], "gradient": []} for name in built}
    for _ in range(args.repeats):
        for name, v in built.items():
            for part in ("forward", "gradient"):
                start = time.perf_counter()
                jax.block_until_ready(v[part](*v["args"]))
                times[name][part].append(time.perf_counter() - start)
    device = jax.devices()[0]
    result = {"problem": f"voloshin2015 PTX arm, {args.shape}², {args.days} days, fit of {', '.join(bench_fit.NAMES)}",
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
        path = args.out / f"ab_gradient_{device.platform}_{args.shape}_{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
