"""Sweep overheads: host devices, and the cost of checking members and keeping the manifest.

Usage::

    python benchmarks/bench_sweep.py --out benchmarks/results [--members 1000 10000 100000] [--skip-devices]

1. **Devices** (issue 25, finding 11): the 6-member voloshin2015 PTX + anakinra sweep at 32²
   (``parameters.k_i`` swept, 2 days) as ``tumorfield sweep`` processes, each variant once cold and
   once with a warm persistent cache (compared: the cache key holds the device count): on one host
   device; with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the batch stays on one
   device: host devices share the cores); and with two devices asked
   (``[sweep] devices = 2``: the batch split over them). Goal: two host devices within 3× of one.
   Before the fix the two-device sweep padded its batch to what fits half the free memory
   (~10⁶ members) and did not finish in 1200 s.
2. **Scaling** (finding 9): for each ``--members`` N, an ``lhs`` sweep of ``fisher_kpp`` (8×8) over
   ``parameters.D``: the member checks (every config built and validated, ``SweepRunner(...)``),
   writing the manifest, N status changes in batches of 64 (``running`` then ``complete``, as a
   sweep appends them) and the final CSV. Goal: every part linear in N (µs per member flat).

Results go to ``OUT/bench_sweep_<platform>_<largest N>_<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
BASE = ROOT / "experiments" / "voloshin2015" / "ptx_anakinra.toml"


def _devices_sweep(directory: Path, cache: Path, devices: int) -> Path:
    settings = ["grid.shape=[32,32]", "time.t_end=2.0", "time.save_every=1.0", 'run.progress="none"',
                f'run.compilation_cache="{cache}"']  # fmt: skip
    array = "[" + ", ".join(json.dumps(s) for s in settings) + "]"
    path = directory / f"sweep_devices{devices}.toml"
    path.write_text(f'[sweep]\nbase = "{BASE}"\ndesign = "list"\nset = {array}\ndevices = {devices}\n'
                    f'[sweep.parameters]\n"parameters.k_i" = [0.5, 0.8, 1.1, 1.4, 1.7, 2.0]\n')  # fmt: skip
    return path


def _timed_sweep(sweep: Path, out: Path, host_devices: int) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    if host_devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
    command = [sys.executable, "-m", "tumorfield.cli", "sweep", str(sweep), "-o", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    placed = [line for line in result.stderr.splitlines() if "batches of" in line]
    return {"wall_s": round(wall, 3), "placement": placed[0].split("tumorfield: ")[-1] if placed else ""}


def bench_devices(work: Path) -> dict:
    """Each variant twice, into new directories: cold (its first process compiles: the persistent
    cache's key holds the device count) and warm (loaded from the cache; the number compared)."""
    cache = work / "cache"
    one, split = _devices_sweep(work, cache, 0), _devices_sweep(work, cache, 2)
    variants = {"1 host device": (one, 1), "2 host devices (batch on one)": (one, 2),
                "2 host devices, devices = 2 (split)": (split, 2)}  # fmt: skip
    runs = {}
    for k, (name, (sweep, host)) in enumerate(variants.items()):
        cold = _timed_sweep(sweep, work / f"cold{k}", host)
        runs[name] = {**_timed_sweep(sweep, work / f"warm{k}", host), "cold_wall_s": cold["wall_s"]}
    base = runs["1 host device"]["wall_s"]
    for run in runs.values():
        run["ratio_to_one_device"] = round(run["wall_s"] / base, 2)
    return runs


def bench_scaling(work: Path, n: int) -> dict:
    from tumorfield.sweep import SweepRunner

    base = work / "fisher.toml"
    base.write_text('[model]\nname = "fisher_kpp"\n[grid]\nshape = [8, 8]\nlength = [1.0, 1.0]\n[time]\n'
                    't_end = 0.1\ndt = 0.01\nsave_every = 0.1\n[run]\nprogress = "none"\n')  # fmt: skip
    sweep = work / f"scaling_{n}.toml"
    sweep.write_text(f'[sweep]\nbase = "{base}"\ndesign = "lhs"\nsamples = {n}\n[sweep.parameters]\n'
                     f'"parameters.D" = {{ lower = 1e-4, upper = 1e-2, scale = "log" }}\n')  # fmt: skip
    started = time.perf_counter()
    runner = SweepRunner(sweep, work / f"scaling_{n}", log=lambda m: None)
    checks = time.perf_counter() - started
    started = time.perf_counter()
    runner.manifest.ensure(runner.rows, lambda m: None)
    create = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(0, n, 64):
        batch = range(first, min(n, first + 64))
        runner.manifest.record({i: "running" for i in batch})
        runner.manifest.record({i: "complete" for i in batch})
    statuses = time.perf_counter() - started
    started = time.perf_counter()
    runner.manifest.publish(runner.rows)
    publish = time.perf_counter() - started
    manifest = work / f"scaling_{n}" / "manifest.csv"
    per = lambda seconds: round(seconds / n * 1e6, 1)  # noqa: E731
    return {
        "members": n,
        "checks_s": round(checks, 3),
        "manifest_create_s": round(create, 3),
        "status_changes_s": round(statuses, 3),
        "manifest_publish_s": round(publish, 3),
        "us_per_member": {
            name: per(seconds)
            for name, seconds in (("checks", checks), ("create", create), ("statuses", statuses), ("publish", publish))
        },
        "manifest_bytes": manifest.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--skip-devices", action="store_true")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    from _timing import write_result

    result: dict = {"python": sys.version.split()[0], "jax": jax.__version__, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        if not args.skip_devices:
            result["devices"] = bench_devices(work)
            for name, run in result["devices"].items():
                print(f"{name:38s} {run['wall_s']:8.2f} s  ×{run['ratio_to_one_device']}  {run['placement']}")
        result["scaling"] = [bench_scaling(work, n) for n in args.members]
        for row in result["scaling"]:
            print(f"N = {row['members']:>7}: µs per member {row['us_per_member']}")
    write_result(args.out, "bench_sweep", max(args.members), result)


if __name__ == "__main__":
    main()
