"""HDF5 filters for the field datasets: file size and write time on real voloshin2015 trajectories.

Every per-frame field of a trajectory (read with :func:`tumorfield.io.open_trajectory`) is
rewritten into a fresh HDF5 file with the writer's chunking (one frame per chunk, resizable
on T, frames appended one commit at a time) and each candidate filter: none, lzf, gzip
levels 1, 4, 6, 9, each with and without the shuffle filter. Reported per filter: the file
size (bytes, and the ratio to no filter), the write wall time and CPU time (best of ``--repeats``, filters
interleaved, ending in ``flush`` + ``fsync``) and the time to read every frame back. No JAX computation is
timed here (the runs that make the input files are not part of the measurement).

The inputs are made with ``tumorfield run`` if they do not exist (``--make``):
``experiments/voloshin2015/ptx.toml`` as is (2D, 64², 43 frames) and in 3D
(``grid.shape = [32, 32, 32]``, ``t_end = 6`` day).

Usage::

    python benchmarks/bench_compression.py --out benchmarks/results [--inputs A.h5 B.h5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tumorfield.io import open_trajectory

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIO = ROOT / "experiments" / "voloshin2015" / "ptx.toml"
INPUTS = {
    "voloshin2015_2d_64x64": [],
    "voloshin2015_3d_32x32x32": ["--set", "grid.shape=[32,32,32]", "--set", "grid.length=[8.0,8.0,8.0]",
                                 "--set", "time.t_end=6.0"],
}  # fmt: skip
FILTERS = [("none", {})] + [
    (f"{name}{'+shuffle' if shuffle else ''}", {**options, "shuffle": shuffle} if shuffle else options)
    for name, options in [("lzf", {"compression": "lzf"})]
    + [(f"gzip{level}", {"compression": "gzip", "compression_opts": level}) for level in (1, 4, 6, 9)]
    for shuffle in (False, True)
]


def make_input(directory: Path, name: str) -> Path:
    """Run the voloshin2015 ``ptx`` arm (2D as configured, or the 3D variant) into ``directory``."""
    path = directory / f"{name}.h5"
    if not path.exists():
        command = [sys.executable, "-m", "tumorfield.cli", "run", str(SCENARIO), "-o", str(path),
                   "--set", 'run.progress="none"', "--set", 'output.compression="none"', *INPUTS[name]]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return path


def read_fields(path: Path) -> dict[str, np.ndarray]:
    """Every committed frame of every grid field of the trajectory ``path``."""
    with open_trajectory(path) as run:
        return {name: run.field(name)[:] for name in run.field_names}


def write_once(path: Path, fields: dict[str, np.ndarray], options: dict, frames_per_commit: int) -> tuple:
    """Write ``fields`` as the writer does (resizable, one frame per chunk, appended in commits of
    ``frames_per_commit`` frames), flush and fsync; returns (wall s, CPU s of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with h5py.File(path, "w") as h5:
        datasets = {
            name: h5.create_dataset(name, shape=(0, *a.shape[1:]), maxshape=(None, *a.shape[1:]), dtype=a.dtype,
                                    chunks=(1, *a.shape[1:]), **options)
            for name, a in fields.items()
        }  # fmt: skip
        n = next(iter(fields.values())).shape[0]
        for start in range(0, n, frames_per_commit):
            end = min(n, start + frames_per_commit)
            for name, ds in datasets.items():
                ds.resize(end, axis=0)
                ds[start:end] = fields[name][start:end]
            h5.flush()
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return time.perf_counter() - t0, time.process_time() - c0


def read_back(path: Path, fields: dict[str, np.ndarray]) -> float:
    """Seconds to read every dataset back; checks the values round-trip exactly."""
    t0 = time.perf_counter()
    with h5py.File(path, "r") as h5:
        data = {name: h5[name][()] for name in fields}
    seconds = time.perf_counter() - t0
    for name, a in fields.items():
        np.testing.assert_array_equal(data[name], a)
    return seconds


def measure(fields: dict[str, np.ndarray], repeats: int, frames_per_commit: int, scratch: Path) -> list[dict]:
    """Every filter ``repeats`` times, round-robin (so that the load of a shared machine falls on
    all alike); the CPU time of this process is reported besides the wall time, being much
    less sensitive to other processes."""
    raw = sum(a.nbytes for a in fields.values())
    times = {label: [] for label, _ in FILTERS}
    sizes, reads = {}, {}
    for _ in range(repeats):
        for label, options in FILTERS:
            path = scratch / f"{label}.h5"
            times[label].append(write_once(path, fields, options, frames_per_commit))
            sizes[label] = path.stat().st_size
            reads[label] = read_back(path, fields)
            path.unlink()
    return [
        {"filter": label, "h5py_options": options, "bytes": sizes[label], "ratio_to_raw": sizes[label] / raw,
         "write_s_best": min(w for w, _ in times[label]), "write_cpu_s_best": min(c for _, c in times[label]),
         "write_s_all": [w for w, _ in times[label]], "read_s": reads[label]}
        for label, options in FILTERS
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "results"), help="directory for the JSON result")
    parser.add_argument("--inputs", nargs="*", help="trajectory files to use instead of the two made here")
    parser.add_argument("--work", default=None, help="directory for the input runs (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames-per-commit", type=int, default=6, help="as run.chunk_frames of ptx.toml")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-compression-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = [Path(p) for p in args.inputs] if args.inputs else [make_input(work, name) for name in INPUTS]
    result = {
        "benchmark": "bench_compression",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        },  # fmt: skip
        "repeats": args.repeats,
        "frames_per_commit": args.frames_per_commit,
        "inputs": [],
    }
    for path in inputs:
        fields = read_fields(path)
        first = next(iter(fields.values()))
        entry = {"file": path.name, "fields": list(fields), "frames": first.shape[0], "grid": list(first.shape[1:]),
                 "dtype": str(first.dtype), "raw_bytes": sum(a.nbytes for a in fields.values())}  # fmt: skip
        entry["filters"] = measure(fields, args.repeats, args.frames_per_commit, work)
        result["inputs"].append(entry)
        print(f"\n{path.name}: {entry['frames']} frames of {entry['grid']} {entry['dtype']}, "
              f"{len(fields)} fields, {entry['raw_bytes'] / 2**20:.1f} MiB raw")  # fmt: skip
        print(f"{'filter':<16}{'MiB':>8}{'ratio':>8}{'write s':>10}{'write CPU s':>12}{'read s':>9}")
        for row in entry["filters"]:
            print(f"{row['filter']:<16}{row['bytes'] / 2**20:>8.2f}{row['ratio_to_raw']:>8.3f}"
                  f"{row['write_s_best']:>10.3f}{row['write_cpu_s_best']:>12.3f}{row['read_s']:>9.3f}")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = out / f"bench_compression_{stamp}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
