"""Run every arm of the Voloshin 2015 study with ``tumorfield run`` and summarise it from HDF5.

Usage::

    python experiments/voloshin2015/reproduce.py [-o out/voloshin2015] [--set grid.shape=[32,32,32] ...]

Writes ``<out>/<arm>.h5`` per arm, ``<out>/summary.json`` (endpoints, the ratios
and targets of brief §5) and ``<out>/figures/`` (``analysis.figures``: every arm over the PTX arm
on linear axes, with the 5–95 % bands of ``uncertainty.py``'s output where ``--uncertainty DIR``, by
default ``<out>/uncertainty``, holds it). ``--set`` overrides are passed to
every arm (e.g. the 3D variant: ``--set grid.shape=[32,32,32] --set grid.length=[8.0,8.0,8.0]``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import ARMS, figures, jsonable, summary  # noqa: E402


def run_arm(arm: str, outdir: Path, overrides: list[str], config_dir: Path = HERE) -> Path:
    """``tumorfield run <config_dir>/<arm>.toml -o <outdir>/<arm>.h5`` in a subprocess."""
    out = outdir / f"{arm}.h5"
    command = [sys.executable, "-m", "tumorfield.cli", "run", str(config_dir / f"{arm}.toml"), "-o", str(out)]
    command += ["--overwrite"] if out.exists() else []
    for item in ["run.progress=none", *overrides]:
        command += ["--set", item]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{arm}: tumorfield run failed (exit {result.returncode}):\n{result.stderr}")
    print(f"{arm}: {time.perf_counter() - started:.1f} s → {out}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override, all arms")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--uncertainty", metavar="DIR", help="uncertainty.py's output: 5–95 %% bands (default: OUT/uncertainty)"
    )
    args = parser.parse_args(argv)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {arm: run_arm(arm, outdir, args.set) for arm in args.arms}
    result = summary(paths)
    result["overrides"] = args.set
    (outdir / "summary.json").write_text(json.dumps(jsonable(result), indent=2))
    if not args.no_figures:
        bands = Path(args.uncertainty) if args.uncertainty else outdir / "uncertainty"
        figures(paths, outdir / "figures", uncertainty=bands if bands.is_dir() else None)
    for name, target in result.get("targets", {}).items():
        values = ", ".join(
            f"{k}={v:.3g}" if v == v else f"{k}=undefined" for k, v in target.items() if isinstance(v, float)
        )
        flags = ", ".join(f"{k}={v}" for k, v in target.items() if isinstance(v, bool) and k not in ("pass", "defined"))
        verdict = "PASS" if target["pass"] else ("FAIL (undefined)" if not target["defined"] else "FAIL")
        print(f"[{verdict}] {name}: {values}{'; ' + flags if flags else ''}")
    print(f"summary: {outdir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
