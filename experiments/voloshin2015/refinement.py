"""Target 9: do the study's ratios hold under grid and time-step refinement?

Usage::

    python experiments/voloshin2015/refinement.py [-o out/voloshin2015/refinement]
        [--levels 32:0.02 64:0.02 64:0.01 128:0.02]

Runs every arm (``reproduce.py`` → ``tumorfield run``) at each ``cells:dt`` level
(2D, the configs' 8×8 mm box), and writes ``refinement.json``: the ratios of each
level, and the relative change of each ratio between the finest grid and the
finest time step and their parents (target 9 asks for < 5 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import ARMS, summary  # noqa: E402
from reproduce import run_arm  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/voloshin2015/refinement")
    parser.add_argument("--levels", nargs="+", default=["32:0.02", "64:0.02", "64:0.01", "128:0.02"])
    args = parser.parse_args(argv)
    root = Path(args.output)
    results = {}
    for level in args.levels:
        cells, dt = level.split(":")
        outdir = root / f"n{cells}_dt{dt}"
        outdir.mkdir(parents=True, exist_ok=True)
        overrides = [f"grid.shape=[{cells},{cells}]", f"time.dt={dt}", "time.save_every=1.0"]
        paths = {arm: run_arm(arm, outdir, overrides) for arm in ARMS}
        results[level] = summary(paths)["ratios"]
        (root / "refinement.json").write_text(json.dumps({"levels": results}, indent=2))

    def change(fine, coarse):
        return {
            key: abs(results[fine][key] - results[coarse][key]) / max(abs(results[coarse][key]), 1e-12)
            for key in results[fine]
        }

    comparisons = {}
    levels = list(results)
    for fine in levels:
        n_f, dt_f = fine.split(":")
        for coarse in levels:
            n_c, dt_c = coarse.split(":")
            same_dt_coarser_grid = dt_f == dt_c and int(n_c) * 2 == int(n_f)
            same_grid_coarser_dt = n_f == n_c and abs(float(dt_c) - 2 * float(dt_f)) < 1e-12
            if same_dt_coarser_grid or same_grid_coarser_dt:
                comparisons[f"{fine} vs {coarse}"] = change(fine, coarse)
    out = {"levels": results, "relative_change": comparisons}
    out["max_relative_change"] = {name: max(c.values()) for name, c in comparisons.items()}
    (root / "refinement.json").write_text(json.dumps(out, indent=2))
    for name, c in comparisons.items():
        worst = max(c, key=c.get)
        print(f"{name}: largest relative change {c[worst]:.2%} ({worst})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
