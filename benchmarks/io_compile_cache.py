"""Compile time of ``tumorfield run`` in a fresh process with a cold vs a warm JAX cache.

Runs the same config three times, each in a new process: cache off, cold (empty
cache directory), warm (the directory the cold run filled). Reports the
compilation seconds the CLI logs for its first chunk (XLA compile, or loading
from the persistent cache, from ``jax.monitoring``) and the process wall time.

    .venv/bin/python benchmarks/io_compile_cache.py [CONFIG] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, sets: list[str], out: Path, cache: str) -> tuple[float, float, float, str]:
    command = [sys.executable, "-m", "tumorfield.cli", "run", config, "-o", str(out), "--overwrite"]
    for item in [*sets, f'run.compilation_cache="{cache}"', 'run.progress="none"']:
        command += ["--set", item]
    start = time.perf_counter()
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(result.stderr)
    match = re.search(r"first chunk of \d+ frames took ([\d.]+) s, of which compilation ([\d.]+) s", result.stderr)
    hits = re.search(r"persistent cache: (\d+) hits", result.stderr)
    return float(match.group(1)), float(match.group(2)), wall, hits.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "experiments" / "examples" / "fisher_kpp.toml"))
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        out = Path(tmp) / "out.h5"
        print(f"config {args.config} {' '.join('--set ' + s for s in args.set)}")
        print(f"{'cache':<6} {'first chunk s':>14} {'compile s':>10} {'process wall s':>15} {'cache hits':>11}")
        for label, directory in (("off", "off"), ("cold", cache), ("warm", cache)):
            first, compile_s, wall, hits = run(args.config, args.set, out, directory)
            print(f"{label:<6} {first:14.2f} {compile_s:10.2f} {wall:15.2f} {hits:>11}")


if __name__ == "__main__":
    main()
