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
4. **without a GPU** (this script on a CPU) the one-device GPU step is *estimated*: the bytes XLA's
   cost analysis says one step accesses (``cost_analysis()["bytes accessed"]`` of the one-device step,
   as XLA:CPU fuses it) at the HBM bandwidth ``--hbm-gbs`` (3350 GB/s: H100 SXM, HBM3, datasheet),
   and the prediction is made from that estimate too (``predicted_from_estimate``);
5. **1024³**: the bytes sent per device per step scaled from the largest size (all-to-alls move
   slabs: × cells; halo exchanges move faces: × n₁n₂), the one-device step scaled with the cells,
   and the per-device memory of the step (bytes per cell of the largest size).

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


def bytes_accessed(p) -> float:
    """XLA's estimate of the bytes one one-device step reads and writes (cost analysis)."""
    import tumorfield_kernels as tk

    start = tk.initial_frame(p.system, p.grid, p.y0, p.params, numerics=p.numerics)
    stepper = tk.make_stepper(p.system, p.grid, p.params, p.dt, p.numerics)

    def step(state, carried):
        return stepper.step(state, carried, stepper.dt * 0)[:2]

    cost = jax.jit(step).lower(start, stepper.prepare(start)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("bytes accessed", 0.0))


def prediction(one: float, n: int, sent: float, launches: int, args) -> dict:
    """``one / n + sent / B + launches × λ`` (module docstring)."""
    compute = one / n
    communication = sent / (args.link_gbs * 1e9 * args.efficiency) + launches * args.latency_us * 1e-6
    return {"one_device_s": one, "compute_s": compute, "communication_s": communication,
            "step_s": compute + communication, "speedup": one / (compute + communication)}  # fmt: skip


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
    per_step = collectives(loop_body(decomposed.as_text()), n)
    sent = sum(v["sent_bytes"] for v in per_step.values())
    launches = sum(v["count"] for v in per_step.values())
    accessed = bytes_accessed(p)
    estimate = accessed / (args.hbm_gbs * 1e9)
    on_gpu = jax.devices()[0].platform == "gpu"
    result = {
        "shape": list(shape),
        "cells": int(np.prod(shape)),
        "one_device_step_s": one,
        "one_device_memory": memory(compiled),
        "one_device_bytes_accessed": accessed,
        "estimated_gpu_step_s": estimate,
        "devices": n,
        "hlo_from": f"{n} {devices[0].platform} devices",
        "per_step": per_step,
        "sent_bytes_per_device_per_step": sent,
        "halo_bytes_per_device_per_step": per_step["collective-permute"]["sent_bytes"],
        "transpose_bytes_per_device_per_step": per_step["all-to-all"]["sent_bytes"],
        "collectives_per_step": launches,
        "decomposed_memory_per_device": memory(decomposed),
        "predicted": prediction(one, n, sent, launches, args),
    }
    if not on_gpu:
        result["predicted_from_estimate"] = prediction(estimate, n, sent, launches, args)
    if measurable:
        result["measured_decomposed_s"] = best_step_seconds(decomposed, dcall, args.steps, args.repeats)
    shown = result["predicted"] if on_gpu else result["predicted_from_estimate"]
    print(
        f"{label(shape):>9}: one device {1e3 * one:8.2f} ms/step measured ({devices[0].platform})"
        + ("" if on_gpu else f", {1e3 * estimate:7.3f} ms/step estimated on the GPU")
        + f"; {n} devices: {launches} collectives, {sent / 2**20:8.3f} MiB sent per device per step → "
        f"predicted {1e3 * shown['step_s']:8.3f} ms/step ({shown['speedup']:.2f}×)",
        flush=True,
    )
    return result


def extrapolate(largest: dict, args, size: int = 1024) -> dict:
    """The largest size's figures scaled to ``size``³ (module docstring)."""
    _, n1, n2 = largest["shape"]
    volume = size**3 / largest["cells"]
    area = size * size / (n1 * n2)
    transpose = largest["transpose_bytes_per_device_per_step"] * volume
    halo = largest["halo_bytes_per_device_per_step"] * area
    rest = largest["sent_bytes_per_device_per_step"] - largest["transpose_bytes_per_device_per_step"]
    rest -= largest["halo_bytes_per_device_per_step"]  # all-reduces of a few numbers: as they are
    on_gpu = jax.devices()[0].platform == "gpu"
    one = (largest["one_device_step_s"] if on_gpu else largest["estimated_gpu_step_s"]) * volume
    sent = transpose + halo + rest
    return {
        "shape": [size] * 3,
        "from_shape": largest["shape"],
        "devices": args.devices,
        "transpose_bytes_per_device_per_step": transpose,
        "halo_bytes_per_device_per_step": halo,
        "sent_bytes_per_device_per_step": sent,
        "one_device_step_s": one,
        "one_device_step_from": "measured" if on_gpu else "estimated (bytes accessed / HBM bandwidth)",
        "predicted": prediction(one, args.devices, sent, largest["collectives_per_step"], args),
        "one_device_memory_bytes": largest["one_device_memory"]["total"] / largest["cells"] * size**3,
        "per_device_memory_bytes": largest["decomposed_memory_per_device"]["total"] / largest["cells"] * size**3,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="directory of the JSON")
    parser.add_argument("--sizes", nargs="+", default=None, help="3D sizes, e.g. 128x3 256x3 (default; 16x3 --quick)")
    parser.add_argument("--devices", type=int, default=8, help="devices of the node (8)")
    parser.add_argument("--cell-diffusion", choices=("explicit", "implicit"), default="implicit")
    parser.add_argument("--link-gbs", type=float, default=450.0, help="GB/s one way per GPU (NVLink 4, H100 SXM)")
    parser.add_argument("--efficiency", type=float, default=1.0, help="fraction of --link-gbs reached (1)")
    parser.add_argument("--latency-us", type=float, default=10.0, help="µs per collective (10, assumed)")
    parser.add_argument("--hbm-gbs", type=float, default=3350.0, help="GB/s of GPU memory (H100 SXM HBM3)")
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
    result = {
        "benchmark": "bench_decomposed",
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "jax_version": jax.__version__,
        "model": "voloshin2015 (3D, the ptx arm's model, max_substeps = 1)",
        "cell_diffusion": args.cell_diffusion,
        "link": {"gbs_one_way": args.link_gbs, "efficiency": args.efficiency, "latency_us": args.latency_us,
                 "source": "NVLink 4, H100 SXM: 18 links, 900 GB/s bidirectional per GPU (NVIDIA datasheet)"},
        "hbm_gbs": args.hbm_gbs,
        "sizes": sizes,
        "extrapolated_1024": extrapolate(largest, args),
        "note": "predicted = one-device step / N + sent bytes / (link GB/s × efficiency) + collectives × latency; "
        "without a GPU the one-device GPU step is estimated from XLA's bytes accessed at the HBM bandwidth",
    }  # fmt: skip
    x = result["extrapolated_1024"]
    print(f"1024³ on {args.devices}: {x['sent_bytes_per_device_per_step'] / 2**30:.2f} GiB sent per device per step, "
          f"predicted {1e3 * x['predicted']['step_s']:.1f} ms/step against {1e3 * x['one_device_step_s']:.1f} on one "
          f"device; memory {x['per_device_memory_bytes'] / 2**30:.1f} GiB per device "
          f"({x['one_device_memory_bytes'] / 2**30:.1f} GiB on one)")  # fmt: skip
    write_result(args.out, "decomposed", len(args.sizes), result)


if __name__ == "__main__":
    main()
