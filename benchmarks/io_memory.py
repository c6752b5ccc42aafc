"""Resident memory of a long ``tumorfield run`` over time: it must stay flat.

Frames are streamed to HDF5 chunk by chunk, so memory should not grow with the
number of frames. Runs the CLI in a subprocess and samples its RSS
(``/proc/<pid>/status``, Linux) together with the committed frame count.

    .venv/bin/python benchmarks/io_memory.py [--shape 128 128] [--frames 1000] [--chunk 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tumorfield.io import NotATrajectory, open_trajectory

CONFIG = """
[model]
name = "fisher_kpp"
[grid]
shape = {shape}
length = [4.0, 4.0]
[time]
t_end = {t_end}
dt = 0.02
save_every = 0.02
[parameters]
D = 2e-3
r = 1.0
chi = 0.01
[run]
chunk_frames = {chunk}
progress = "none"
"""


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def committed(path: Path) -> int:
    try:
        with open_trajectory(path) as run:
            return run.n_committed
    except (OSError, NotATrajectory):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "long.toml"
        config.write_text(CONFIG.format(shape=args.shape, t_end=round(args.frames * 0.02, 10), chunk=args.chunk))
        out = tmp / "long.h5"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tumorfield.cli", "run", str(config), "-o", str(out)],
            env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
        )
        samples = []
        start = time.perf_counter()
        while proc.poll() is None:
            rss = rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - start, committed(out), rss))
            time.sleep(0.25)
        assert proc.returncode == 0, proc.returncode
        size = out.stat().st_size / 2**20
    streaming = [s for s in samples if s[1] > 1]
    print(f"grid {args.shape}, {args.frames + 1} frames, chunk {args.chunk}: output {size:.1f} MiB")
    print("  wall s   frames   RSS MiB")
    step = max(1, len(streaming) // 12)
    for wall, n, rss in streaming[::step] + streaming[-1:]:
        print(f"  {wall:6.1f}  {n:7d}  {rss:8.1f}")
    first_tenth = [s[2] for s in streaming if s[1] <= args.frames / 10] or [streaming[0][2]]
    growth = streaming[-1][2] - max(first_tenth)
    print(f"RSS after 10 % of the frames: {max(first_tenth):.1f} MiB; at the end: {streaming[-1][2]:.1f} MiB; "
          f"peak {max(s[2] for s in streaming):.1f} MiB; growth over the last 90 %: {growth:+.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
