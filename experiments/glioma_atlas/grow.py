"""Grow a glioma for a year on the MNI152 tissue maps with ``tumorfield run``, then export NIfTI.

Usage::

    python experiments/glioma_atlas/grow.py [-o out/glioma_atlas] [--quick] [--set SECTION.KEY=VALUE ...]

Writes ``<out>/atlas.toml`` (``atlas.toml`` of this folder with its ``mni152/`` paths made absolute: the
maps ship inside nilearn's wheel, ``nilearn/datasets/data/``), ``<out>/glioma.h5`` (monthly frames at
2 mm) and ``<out>/nifti/tumor_t<DAY>.nii.gz`` (every frame, on the MNI152 world affine: open them over
the template in FSLeyes or ``nilearn.plotting``). ``--quick``: 8 mm cells (25 × 30 × 24), 30 days, a
10 mm seed, explicit steps of 5 days — seconds instead of minutes. Prints the imaging observables.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = [
    "grid.resample=8",
    "time.t_end=30",
    "time.dt=5",
    "time.save_every=10",
    'numerics.cell_diffusion="explicit"',
    "initial.tumor={ centre = [25.0, 30.0, 20.0], radius = 10.0, amplitude = 0.8 }",
]
"""Overrides of ``--quick``: the 2 mm seed (radius 5 mm) would cover no 8 mm cell centre."""


def nilearn_data() -> Path:
    """nilearn's bundled data folder (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn is not installed: pip install nilearn (its wheel ships the MNI152 maps)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").is_file():
        raise SystemExit(f"{folder}: the MNI152 tissue maps are missing from this nilearn installation")
    return folder


def write_config(outdir: Path) -> Path:
    """``atlas.toml`` with ``"mni152/`` paths made absolute, in ``outdir``."""
    text = (HERE / "atlas.toml").read_text().replace('"mni152/', f'"{nilearn_data().as_posix()}/')
    path = outdir / "atlas.toml"
    path.write_text(text)
    return path


def tumorfield(*argv: str) -> str:
    """``python -m tumorfield.cli ARGV``; its stdout, or exit with its stderr."""
    result = subprocess.run([sys.executable, "-m", "tumorfield.cli", *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"tumorfield {argv[0]} failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/glioma_atlas", help="output directory")
    parser.add_argument("--quick", action="store_true", help="8 mm cells, 30 days (a smoke run)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    config, out = write_config(outdir), outdir / "glioma.h5"
    command = ["run", str(config), "-o", str(out), "--set", "run.progress=none"] + (
        ["--overwrite"] if out.exists() else []
    )
    for item in (QUICK if args.quick else []) + args.set:
        command += ["--set", item]
    started = time.perf_counter()
    tumorfield(*command)
    print(f"run: {time.perf_counter() - started:.1f} s → {out}")
    exported = tumorfield("export", str(out), "-o", str(outdir / "nifti"), "--frames", "all").split()
    print(f"export: {len(exported)} NIfTI files → {outdir / 'nifti'}")

    from tumorfield.io import open_trajectory  # after the runs: the summary reads only the file

    with open_trajectory(out) as stored:
        t, scalars = stored.t, {name: stored.scalars[name][:] for name in stored.scalars}
        steps = stored.scalars_t[:]
        print(f"grid {stored.grid.shape}, frames at day {', '.join(format(day, '.4g') for day in t)}")
    print(f"{'day':>7} {'T1Gd mm³':>10} {'FLAIR mm³':>10} {'r_FLAIR mm':>10} {'cells':>10}")
    for day in t:
        k = int(abs(steps - day).argmin())
        print(f"{day:7.1f} {scalars['volume_t1'][k]:10.0f} {scalars['volume_flair'][k]:10.0f} "
              f"{scalars['radius_flair'][k]:10.2f} {scalars['total_cells'][k]:10.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
