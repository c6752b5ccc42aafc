"""Ensemble throughput: a vmapped sweep in one process against one process per member.

Usage::

    python benchmarks/bench_ensemble.py --out benchmarks/results [--sizes 32 64] [--members 64]
        [--t-end 2.0] [--save-every DAYS] [--chunk-frames N] [--per-process 8] [--single-repeats 2]

For each grid size (voloshin2015, PTX + anakinra arm, ``k_i`` swept over ``--members``
values, ``--t-end`` days, a frame every ``--save-every`` days — default ``min(1, t_end)`` —
and ``--chunk-frames`` frames per compiled chunk — default the base's 6) it measures, in the
same run:

1. the batched sweep (``tumorfield.sweep.SweepRunner`` in this process): wall time to
   run every member, with XLA compilation (from ``jax.monitoring``) reported apart;
   members per second with and without the compile;
2. one process per member (``tumorfield run`` in a fresh process, warm persistent
   cache): the mean wall time of ``--per-process`` such processes, so members per
   second of a job array; the ratio to (1) is the speed-up of batching (0: not measured);
3. the same single member advanced alone in this process (compiled, warm), timed
   ``--single-repeats`` times before and as many after (1), so that a shared machine's
   load falls on both alike: the median gives the per-member throughput of a batch
   relative to a single run (goal ≥ 80 % once a batch holds ≥ 4 M cells).

The 1-minute load average (``os.getloadavg``) is recorded around each measurement.

Results go to ``OUT/bench_ensemble_<device>_<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "voloshin2015" / "ptx_anakinra.toml"


def _sweep_file(directory: Path, size: int, members: int, t_end: float, cache: str, save_every: float | None = None,
                chunk_frames: int | None = None) -> Path:  # fmt: skip
    save_every = save_every or min(1.0, t_end)  # a whole number of frames for a short --t-end too
    settings = [f"grid.shape=[{size},{size}]", f"time.t_end={t_end}", f"time.save_every={save_every}",
                'run.progress="none"', f'run.compilation_cache="{cache}"']  # fmt: skip
    if chunk_frames:
        settings.append(f"run.chunk_frames={chunk_frames}")
    values = ", ".join(f"{0.5 + 1.5 * i / max(1, members - 1):.6f}" for i in range(members))
    path = directory / f"sweep_{size}.toml"
    array = "[" + ", ".join(json.dumps(s) for s in settings) + "]"
    path.write_text(f'[sweep]\nbase = "{BASE}"\ndesign = "list"\nset = {array}\n'
                    f'[sweep.parameters]\n"parameters.k_i" = [{values}]\n')  # fmt: skip
    return path


def batched(sweep: Path, directory: Path) -> dict:
    from tumorfield import _compile_log
    from tumorfield.sweep import SweepRunner

    _compile_log.install()
    compile_before = _compile_log.seconds()
    runner = SweepRunner(sweep, directory, log=lambda message: None)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    results = runner.run()
    wall = time.perf_counter() - start
    compiled = _compile_log.seconds() - compile_before
    assert all(r.status == "complete" for r in results.values()), results
    n = len(results)
    return {"members": n, "wall_s": wall, "compile_s": compiled, "members_per_s": n / wall,
            "members_per_s_without_compile": n / max(wall - compiled, 1e-9),
            "load_1min": [load, os.getloadavg()[0]]}  # fmt: skip


def per_process(sweep: Path, directory: Path, count: int) -> dict:
    from tumorfield.sweep import load_sweep

    spec = load_sweep(sweep)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    walls = []
    for i in range(count + 1):  # the first primes the persistent cache and is not counted
        member = [f"parameters.k_i={spec.members[i]['parameters.k_i']}"]
        command = [sys.executable, "-m", "tumorfield.cli", "run", str(BASE), "-o", str(directory / f"p{i}.h5"),
                   *(f"--set={item}" for item in [*spec.section.set, *member])]  # fmt: skip
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.exit(result.stderr)
        if i:
            walls.append(time.perf_counter() - start)
    mean = sum(walls) / len(walls)
    return {"processes": len(walls), "mean_wall_s": mean, "members_per_s": 1.0 / mean}


class Single:
    """One member as a batch of one in this process, compiled and warm (the first run compiles)."""

    def __init__(self, sweep: Path, directory: Path):
        from tumorfield.sweep import SweepRunner

        self.directory = directory
        self.runner = SweepRunner(sweep, directory, log=lambda message: None)
        self.runner.run([0])  # compile (and run once)
        self.walls: list[float] = []
        self.loads: list[float] = []

    def time(self, repeats: int) -> None:
        for _ in range(repeats):
            (self.directory / "member-0000.h5").unlink()
            (self.directory / "member-0000.xdmf").unlink(missing_ok=True)
            self.runner.manifest.record({0: "pending"})
            self.loads.append(os.getloadavg()[0])
            start = time.perf_counter()
            (outcome,) = self.runner.run([0]).values()
            self.walls.append(time.perf_counter() - start)
            assert outcome.status == "complete", outcome

    def report(self) -> dict:
        return {"wall_s": statistics.median(self.walls), "walls_s": self.walls, "load_1min": self.loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--t-end", type=float, default=2.0)
    parser.add_argument("--save-every", type=float, default=None, help="days between frames (default min(1, t_end))")
    parser.add_argument("--chunk-frames", type=int, default=None, help="frames per compiled chunk (default the base's)")
    parser.add_argument("--per-process", type=int, default=8, help="processes timed after a warm-up; 0: none")
    parser.add_argument("--single-repeats", type=int, default=2, help="single runs timed before the batch, and after")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    device = jax.devices()[0]
    report = {"device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "devices": jax.device_count(),
              "jax": jax.__version__, "members": args.members, "t_end_day": args.t_end,
              "save_every_day": args.save_every, "chunk_frames": args.chunk_frames, "cpus": os.cpu_count(),
              "sizes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = str(tmp / "cache")
        for size in args.sizes:
            sweep = _sweep_file(tmp, size, args.members, args.t_end, cache, args.save_every, args.chunk_frames)
            single = Single(sweep, tmp / f"s{size}")
            single.time(args.single_repeats)
            row = {"batched": batched(sweep, tmp / f"b{size}")}
            single.time(args.single_repeats)
            row["single_in_process"] = single.report()
            if args.per_process:
                row["per_process"] = per_process(sweep, tmp / f"p{size}", args.per_process)
            b = row["batched"]
            if args.per_process:
                row["speedup_batched_vs_process_per_member"] = b["members_per_s"] / row["per_process"]["members_per_s"]
            row["batch_member_throughput_vs_single"] = (
                b["members_per_s_without_compile"] * row["single_in_process"]["wall_s"]
            )
            report["sizes"][str(size)] = row
            print(json.dumps({size: row}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench_ensemble_{device.platform}_{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(path)


if __name__ == "__main__":
    main()
