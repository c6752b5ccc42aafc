"""Wall time of ``tumorfield --help`` and of every subcommand's ``--help``, each in a new process.

The goal (issue 26): help and argument errors answer in at most ``GOAL_S`` seconds, because
``tumorfield.cli`` builds its parser without importing JAX or the solver. Each command is run
``--repeats`` times (interleaved, so a change of machine load hits every command alike); the
JSON has every time, the median per command and whether it meets the goal.

    .venv/bin/python benchmarks/bench_cli_help.py [--repeats 7] [--out benchmarks/results]
    .venv/bin/python benchmarks/bench_cli_help.py --command tumorfield   # the installed console script

It imports neither JAX nor tumorfield itself (the subcommands are read from ``tumorfield --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.5


def _command(args) -> list[str]:
    return [args.command] if args.command else [sys.executable, "-m", "tumorfield.cli"]


def _env() -> dict[str, str]:
    paths = [str(ROOT / "src"), str(ROOT / "kernels"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "PYTHONPATH": os.pathsep.join(paths)}


def subcommands(base: list[str]) -> list[str]:
    """The subcommands listed by ``tumorfield --help``: the ``{run,resume,…}`` of its usage, or the
    names indented under ``COMMAND`` (its help since issue 26)."""
    text = subprocess.run([*base, "--help"], capture_output=True, text=True, env=_env(), check=True).stdout
    braces = re.search(r"\{([a-z,-]+)\}", text)
    if braces:
        return braces.group(1).split(",")
    section = text.split("\n  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^ {4}([a-z][a-z-]*)", section, re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (default 7)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="directory for the JSON")
    parser.add_argument("--command", default=None, help="executable to time (default: python -m tumorfield.cli)")
    parser.add_argument("--label", default="", help="suffix of the JSON's name (e.g. before, after)")
    args = parser.parse_args()
    base = _command(args)
    commands = [[], *([name] for name in subcommands(base))]
    times: dict[str, list[float]] = {" ".join(c) or "(top level)": [] for c in commands}
    for _ in range(args.repeats):
        for command in commands:
            start = time.perf_counter()
            subprocess.run([*base, *command, "--help"], capture_output=True, env=_env(), check=True)
            times[" ".join(command) or "(top level)"].append(time.perf_counter() - start)
    medians = {key: statistics.median(values) for key, values in times.items()}
    result = {
        "benchmark": "bench_cli_help",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "command": " ".join(base) + " [SUBCOMMAND] --help",
        "repeats": args.repeats,
        "goal_s": GOAL_S,
        "median_s": medians,
        "max_median_s": max(medians.values()),
        "meets_goal": max(medians.values()) <= GOAL_S,
        "times_s": times,
    }
    for key, value in medians.items():
        print(f"{key:<14} median {value:6.3f} s")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_cli_help_{stamp}{'_' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
