"""Bench: one grid over the devices of a node — what a decomposed step communicates, and the step
time it predicts for an 8-GPU NVLink node against a measured one-device step (a prediction on paper).

Usage::

    python benchmarks/bench_decomposed.py [--sizes 128x3 256x3] [--devices 8] [--out DIR] [--quick]

For each grid size, a 3D voloshin2015 step (the ``ptx`` arm's model, ``max_substeps = 1``: the step
without the sub-cycling branch; ``--cell-diffusion``):

1. **one device**: the step time on the default device (a compiled loop of ``--steps`` steps of
   ``Stepper.step``, the rollout's step; best of ``--repeats``), and ``memory_analysis`` of that program;
2. **the decomposed step's HLO** on ``N = --devices`` devices — the default backend's when it has ``N``,
   else ``N`` forced CPU host devices (``--xla_force_host_platform_device_count``; the collectives and
   their shapes are those of the ``shard_map`` s, the same on every backend): per step (the loop's body)
   the number of all-to-alls, collective-permutes, all-gathers and all-reduces and the bytes each device
   sends — ``(N − 1)/N`` of an all-to-all's operand (its own block stays), all of a collective-permute's,
   ``2(N − 1)/N`` of an all-reduce's (ring) — and the per-device memory of the decomposed program;
3. **the prediction**: ``t_N = t_1 / N + bytes / B + collectives × λ``: perfect division of the compute,
   the bytes at the link bandwidth ``B`` and a fixed latency ``λ`` per collective. ``B`` defaults to
   450 GB/s, one direction of NVLink 4 on an H100 SXM (18 links × 25 GB/s each way: 900 GB/s
   bidirectional per GPU, NVIDIA H100 Tensor Core GPU datasheet; NVSwitch gives every pair of the 8
   GPUs of an HGX H100 node that bandwidth); ``λ`` defaults to 10 µs (a small NCCL collective within a
   node, assumed, not measured here). ``--efficiency`` scales ``B`` (NCCL's all-to-all reaches about
   0.7–0.8 of it). The prediction is written beside the measured one-device step; where the machine
   has ``N`` accelerators the decomposed step is measured too (``measured_decomposed_s``);
4. **1024³**: the per-device memory of the step extrapolated from the largest size (bytes per cell).

Writes ``decomposed_<platform>_<n>_<time>.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _force_host_devices(argv) -> None:
    """Before JAX starts: ``N`` CPU host devices for the HLO of the decomposed step (harmless on GPU)."""
    n = 8
    for i, arg in enumerate(argv):
        if arg == "--devices" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif arg.startswith("--devices="):
            n = int(arg.split("=", 1)[1])
    flag = f"--xla_force_host_platform_device_count={n}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


_force_host_devices(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from _sizes import label, parse_size  # noqa: E402
from _timing import write_result  # noqa: E402

CONFIG = """
[model]
name = "voloshin2015"
[grid]
shape = {shape}
length = [8.0, 8.0, 8.0]
[time]
t_end = 1.0
dt = 0.01
save_every = 1.0
[dosing]
paclitaxel = [{{ time = 0.2, dose_mg_per_kg = 20.0, route = "ip" }}]
anakinra = []
[numerics]
max_substeps = 1
cell_diffusion = "{diffusion}"
"""
BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "s64": 8, "pred": 1, "c64": 8, "c128": 16}
OPS = ("all-to-all", "collective-permute", "all-gather", "all-reduce", "reduce-scatter")


def problem(shape, diffusion):
    from tumorfield.config import loads
    from tumorfield.problem import Problem

    return Problem.from_config(loads(CONFIG.format(shape=list(shape), diffusion=diffusion)))


def step_loop(p, mesh, steps):
    """The compiled loop of ``steps`` rollout steps of ``p`` on ``mesh`` and its arguments."""
    import tumorfield_kernels as tk

    start = tk.initial_frame(p.system, p.grid, p.y0, p.params, numerics=p.numerics, mesh=mesh)
    stepper = tk.make_stepper(p.system, p.grid, p.params, p.dt, p.numerics, mesh=mesh)

    def run(state, carried):
        def step(i, carry):
            new, carried, _ = stepper.step(*carry, i.astype(stepper.dt.dtype) * stepper.dt)
            return new, carried

        return jax.lax.fori_loop(0, steps, step, (state, carried))

    args = (start, stepper.prepare(start))
    return jax.jit(run).lower(*args).compile(), args


def best_step_seconds(compiled, args, steps, repeats) -> float:
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append((time.perf_counter() - t0) / steps)
    return min(times)


def loop_body(text: str) -> str:
    """The HLO of the step loop's body (one step)."""
    (name,) = re.findall(r"\bwhile\([^\n]*body=%?([\w.\-]+)", text)
    return re.search(rf"^%?{re.escape(name)} [^\n]*{{\n(.*?)^}}", text, re.S | re.M).group(1)


def collectives(text: str, n: int) -> dict:
    """Per kind of collective in ``text``: how many, their operand bytes per device and the bytes a
    device sends for them (see the module docstring)."""
    out = {}
    for op in OPS:
        count, operand = 0, 0
        for line in text.splitlines():
            if not re.search(rf"\s{op}(?:-start)?\(", line):
                continue
            count += 1
            result = line.split("=", 1)[1].split(op)[0]
            for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", result):
                operand += BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
        sent = {"all-to-all": (n - 1) / n, "collective-permute": 1.0, "all-reduce": 2 * (n - 1) / n}.get(op, 1.0)
        out[op] = {"count": count, "operand_bytes": operand, "sent_bytes": operand * sent}
    return out


def memory(compiled) -> dict:
    m = compiled.memory_analysis()
    return {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes, "temp": m.temp_size_in_bytes,
            "total": m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes}  # fmt: skip


def mesh_devices(n: int):
    """``n`` devices of the default backend if it has them (measured), else ``n`` CPU host devices."""
    devices = jax.devices()
    if len(devices) >= n:
        return devices[:n], True
    return jax.devices("cpu")[:n], False


def one_size(shape, args) -> dict:
    n = args.devices
    p = problem(shape, args.cell_diffusion)
    compiled, call = step_loop(p, None, args.steps)
    one = best_step_seconds(compiled, call, args.steps, args.repeats)
    devices, measurable = mesh_devices(n)
    mesh = Mesh(np.array(devices), ("x",))
    if not measurable:  # the one-device problem's arrays live on the default device: rebuild on the CPUs
        with jax.default_device(devices[0]):
            decomposed, dcall = step_loop(p, mesh, args.steps)
    else:
        decomposed, dcall = step_loop(p, mesh, args.steps)
    text = decomposed.as_text()
    per_step = collectives(loop_body(text), n)
    sent = sum(v["sent_bytes"] for v in per_step.values())
    launches = sum(v["count"] for v in per_step.values())
    bandwidth = args.link_gbs * 1e9 * args.efficiency
    communication = sent / bandwidth + launches * args.latency_us * 1e-6
    result = {
        "shape": list(shape),
        "cells": int(np.prod(shape)),
        "one_device_step_s": one,
        "one_device_memory": memory(compiled),
        "devices": n,
        "hlo_from": "measured devices" if measurable else f"{n} forced CPU host devices",
        "per_step": per_step,
        "sent_bytes_per_device_per_step": sent,
        "collectives_per_step": launches,
        "decomposed_memory_per_device": memory(decomposed),
        "predicted": {
            "compute_s": one / n,
            "communication_s": communication,
            "step_s": one / n + communication,
            "speedup": one / (one / n + communication),
            "link_bandwidth_gbs": args.link_gbs,
            "efficiency": args.efficiency,
            "latency_us": args.latency_us,
        },
    }
    if measurable:
        result["measured_decomposed_s"] = best_step_seconds(decomposed, dcall, args.steps, args.repeats)
    print(
        f"{label(shape):>9}: one device {1e3 * one:8.2f} ms/step; {n} devices: {launches} collectives, "
        f"{sent / 2**20:8.2f} MiB sent per device per step → predicted {1e3 * result['predicted']['step_s']:8.2f} "
        f"ms/step ({result['predicted']['speedup']:.2f}×)",
        flush=True,
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="directory of the JSON")
    parser.add_argument("--sizes", nargs="+", default=None, help="3D sizes, e.g. 128x3 256x3 (default; 16x3 --quick)")
    parser.add_argument("--devices", type=int, default=8, help="devices of the node (8)")
    parser.add_argument("--cell-diffusion", choices=("explicit", "implicit"), default="implicit")
    parser.add_argument("--link-gbs", type=float, default=450.0, help="GB/s one way per GPU (NVLink 4, H100 SXM)")
    parser.add_argument("--efficiency", type=float, default=1.0, help="fraction of --link-gbs reached (1)")
    parser.add_argument("--latency-us", type=float, default=10.0, help="µs per collective (10, assumed)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed call (20; 4 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls, best taken (5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="16³, few steps (CPU smoke test)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or (["16x3"] if args.quick else ["128x3", "256x3"])
    args.steps = args.steps or (4 if args.quick else 20)
    args.repeats = args.repeats or (2 if args.quick else 5)
    device = jax.devices()[0]
    print(f"device {device} ({getattr(device, 'device_kind', '')}), jax {jax.__version__}, float32, "
          f"{args.cell_diffusion} cell diffusion")  # fmt: skip
    sizes = [one_size(parse_size(s), args) for s in args.sizes]
    largest = max(sizes, key=lambda r: r["cells"])
    per_cell_one = largest["one_device_memory"]["total"] / largest["cells"]
    per_cell_mesh = largest["decomposed_memory_per_device"]["total"] / largest["cells"]
    result = {
        "benchmark": "bench_decomposed",
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "jax_version": jax.__version__,
        "model": "voloshin2015 (3D, ptx arm's model, max_substeps = 1)",
        "cell_diffusion": args.cell_diffusion,
        "sizes": sizes,
        "extrapolated_1024": {
            "from_shape": largest["shape"],
            "one_device_bytes": per_cell_one * 1024**3,
            "per_device_bytes": per_cell_mesh * 1024**3,
            "devices": args.devices,
        },
        "note": "predicted = one-device step / N + sent bytes / (link GB/s × efficiency) + collectives × latency",
    }
    write_result(args.out, "decomposed", len(args.sizes), result)


if __name__ == "__main__":
    main()
