"""``tumorfield collect``: one table row per sweep member — swept values, status, final scalars."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .._schema import ConfigError
from ..io import NotATrajectory, open_trajectory
from ._manifest import MANIFEST, Manifest


def _final_scalars(path: Path) -> tuple[str, dict[str, float]]:
    """A member file's status and the last committed value of each ``/scalars`` series."""
    with open_trajectory(path) as stored:
        n = stored.n_scalars_committed
        return stored.status, {name: float(stored.scalars[name][-1]) if n else math.nan for name in stored.scalars}


def collect(directory: str | os.PathLike, output: str | os.PathLike) -> int:
    """Write ``output`` (CSV): per member, its swept values, ``status`` and final scalars; returns
    the number of rows. Members without a file keep the manifest's status and empty scalars."""
    directory = Path(directory)
    if not (directory / MANIFEST).exists():
        raise ConfigError("DIR", str(directory), f"has no {MANIFEST}: not a sweep directory")
    manifest = Manifest.read(directory)
    rows, columns = [], []
    for row in manifest.rows:
        path = directory / row["file"]
        out = {"member": row["member"], **{p: row[p] for p in manifest.paths}, "status": row["status"]}
        if path.exists():
            try:
                out["status"], finals = _final_scalars(path)
            except NotATrajectory as error:
                raise ConfigError("DIR", str(path), str(error)) from None
            out.update(finals)
            columns += [name for name in finals if name not in columns]
        rows.append(out)
    tmp = Path(output).with_name(f".{Path(output).name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, ["member", *manifest.paths, "status", *columns], restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, output)
    return len(rows)
