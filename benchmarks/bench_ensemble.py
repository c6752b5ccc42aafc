"""Ensemble throughput: a vmapped sweep in one process against one process per member.

Usage::

    python benchmarks/bench_ensemble.py --out benchmarks/results [--sizes 32 64] [--members 64]
        [--t-end 2.0] [--save-every DAYS] [--chunk-frames N] [--at-once N] [--per-process 8] [--single-repeats 2]

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
3. the same single member advanced alone in this process (compiled, traced, warm), timed
   ``--single-repeats`` times before and as many after (1), so that a shared machine's
   load falls on both alike: the median gives the per-member throughput of a batch
   relative to a single run (goal ≥ 80 % once a batch holds ≥ 4 M cells).

With ``--compute-repeats`` (default 1) the first chunk's batched rollout is also timed alone
(compiled ahead, no files): all members against member 0 alone, the per-member throughput of the
compute itself.

The batched sweep's per-member throughput is given without compile (``batch_member_throughput_vs_single``)
and also without the tracing and lowering of its chunk (``…_warm``: both one-time costs of a process, which
the warm single run has paid already). The 1-minute load average (``os.getloadavg``) is recorded around
each measurement, and the cores other processes used during the batched sweep.

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
                chunk_frames: int | None = None, at_once: int = 0) -> Path:  # fmt: skip
    save_every = save_every or min(1.0, t_end)  # a whole number of frames for a short --t-end too
    settings = [f"grid.shape=[{size},{size}]", f"time.t_end={t_end}", f"time.save_every={save_every}",
                'run.progress="none"', f'run.compilation_cache="{cache}"']  # fmt: skip
    if chunk_frames:
        settings.append(f"run.chunk_frames={chunk_frames}")
    values = ", ".join(f"{0.5 + 1.5 * i / max(1, members - 1):.6f}" for i in range(members))
    path = directory / f"sweep_{size}.toml"
    array = "[" + ", ".join(json.dumps(s) for s in settings) + "]"
    path.write_text(f'[sweep]\nbase = "{BASE}"\ndesign = "list"\nat_once = {at_once}\nset = {array}\n'
                    f'[sweep.parameters]\n"parameters.k_i" = [{values}]\n')  # fmt: skip
    return path


_TRACING = {"s": 0.0}
_TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")


def _on_duration(event: str, duration: float, **_) -> None:
    if event in _TRACE_EVENTS:
        _TRACING["s"] += duration


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def batched(sweep: Path, directory: Path) -> dict:
    """The batched sweep: wall time; XLA compile (and persistent-cache loads) and the tracing and lowering
    of the batched chunk (``jax.monitoring``), one-time costs that the warm single run does not pay; this
    process's CPU seconds and the cores other processes used meanwhile (``/proc/stat``)."""
    from tumorfield import _compile_log
    from tumorfield.sweep import SweepRunner

    _compile_log.install()
    compile_before, traced_before = _compile_log.seconds(), _TRACING["s"]
    runner = SweepRunner(sweep, directory, log=lambda message: None)
    load, busy, cpu = os.getloadavg()[0], _busy_seconds(), time.process_time()
    start = time.perf_counter()
    results = runner.run()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    others = None if busy is None else (_busy_seconds() - busy - cpu) / wall
    compiled, traced = _compile_log.seconds() - compile_before, _TRACING["s"] - traced_before
    assert all(r.status == "complete" for r in results.values()), results
    n = len(results)
    return {"members": n, "wall_s": wall, "compile_s": compiled, "trace_s": traced, "members_per_s": n / wall,
            "members_per_s_without_compile": n / max(wall - compiled, 1e-9),
            "members_per_s_warm": n / max(wall - compiled - traced, 1e-9), "cpu_s": cpu,
            "other_processes_cores": others, "load_1min": [load, os.getloadavg()[0]]}  # fmt: skip


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


def compute_only(sweep: Path, members: int, repeats: int) -> dict:
    """The first chunk's batched rollout alone, compiled ahead (no files, no host work): every member in
    one batch (the best of ``repeats``) and member 0 as a batch of one (the best of ``5 · repeats``).
    Their ratio is the batch's per-member throughput of compute alone."""
    import jax.numpy as jnp
    import numpy as np

    from tumorfield.sweep import load_sweep
    from tumorfield.sweep._batch import batch_problem, batched_rollout, members_at_once

    spec = load_sweep(sweep)
    configs = [spec.member_config(i) for i in range(members)]
    problems = [batch_problem(config) for config in configs]
    config = configs[0]
    n_saves = min(config.run.chunk_frames, config.n_frames - 1)
    at_once = members_at_once(config, spec.section.at_once, jax.devices()[0].platform)

    def best(batch: list, repeats: int) -> float:
        def stacked(trees):
            return jax.device_put(jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees))

        args = stacked([p.arrays() for p in batch]), stacked([p.initial_frame() for p in batch]), jnp.int32(0)
        compiled = batched_rollout(batch[0], n_saves, config.steps_per_save, at_once=at_once).lower(*args).compile()
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            walls.append(time.perf_counter() - start)
        return min(walls)

    single, batch = best(problems[:1], 5 * repeats), best(problems, repeats)  # the single one: short, noisy
    return {"frames": n_saves, "steps": n_saves * config.steps_per_save, "at_once": at_once, "batch_s": batch,
            "single_s": single,
            "batch_member_throughput_vs_single": single * members / batch}  # fmt: skip


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
    parser.add_argument(
        "--at-once",
        type=int,
        default=0,
        help="[sweep] at_once: members computed at once (0: the sweep's automatic choice)",
    )
    parser.add_argument("--label", default="", help="stored in the results (e.g. the code measured)")
    parser.add_argument("--compute-repeats", type=int, default=1, help="timings of the rollout alone; 0: not measured")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    device = jax.devices()[0]
    report = {"label": args.label, "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
              "devices": jax.device_count(), "jax": jax.__version__, "members": args.members, "t_end_day": args.t_end,
              "save_every_day": args.save_every, "chunk_frames": args.chunk_frames, "at_once": args.at_once,
              "cpus": os.cpu_count(), "sizes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = str(tmp / "cache")
        for size in args.sizes:
            sweep = _sweep_file(tmp, size, args.members, args.t_end, cache, args.save_every, args.chunk_frames,
                                args.at_once)  # fmt: skip
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
            row["batch_member_throughput_vs_single_warm"] = b["members_per_s_warm"] * row["single_in_process"]["wall_s"]
            if args.compute_repeats:
                row["compute_only"] = compute_only(sweep, args.members, args.compute_repeats)
            report["sizes"][str(size)] = row
            print(json.dumps({size: row}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench_ensemble_{device.platform}_{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(path)


if __name__ == "__main__":
    main()
