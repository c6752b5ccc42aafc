"""``tumorfield collect``: one table row per sweep member — swept values, status, final scalars.

Nothing in the table is taken on trust: the manifest must match its journal (as many rows as the
sweep has members, row ``i`` is ``member-NNNN.h5``, the rows' SHA-256 the journal's), and every
member file must be a regular file in the directory whose stored config has the row's SHA-256 and
whose checksums verify; its swept values are read from its own stored config. A member file whose
status says ``running`` is ``running`` while its writer holds the output lock and ``interrupted``
otherwise (its writer was killed). ``t_final`` and ``n_committed`` say at which time the final
scalars were taken and how many frames the file holds.

The table is written whole (``.NAME.PID.tmp`` next to it, then renamed) to a path that follows
``run``'s rules (:func:`tumorfield.run._output.check_file_output`): not an existing file without
``--overwrite``, never a directory, a device or a symbolic link, never a file of the sweep
directory (members, manifest, journal) nor an HDF5 file.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tomllib
from pathlib import Path

from .._schema import ConfigError
from ..io import NotATrajectory, open_trajectory
from ..io._lock import is_locked
from ..run._output import OutputError, check_file_output, write_atomically
from ._manifest import JOURNAL, LOCK, MANIFEST, Manifest
from ._spec import cell, get_path, text_digest

FIXED_COLUMNS = ("status", "t_final", "n_committed")
_SWEEP_FILES = re.compile(r"\.?member-\d+\..*|\.?manifest\..*")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` holds an HDF5 superblock at 0 or at a userblock offset (512, 1024, … bytes)."""
    try:
        with open(path, "rb") as f:
            size, offset = os.fstat(f.fileno()).st_size, 0
            while offset + len(_HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _check_output(output: Path, directory: Path, overwrite: bool) -> Path:
    """``output`` checked against run's rules, and never one of the sweep directory's files nor HDF5."""
    output = check_file_output(output, overwrite=overwrite, what="table")
    if os.path.samefile(output.parent, directory) and (_SWEEP_FILES.fullmatch(output.name) or output.name == LOCK):
        raise OutputError(f"{output} is a file of the sweep directory {directory} (members, {MANIFEST}, {JOURNAL}); "
                          f"write the table elsewhere or under another name")  # fmt: skip
    for name in (MANIFEST, JOURNAL):
        if output.exists() and (directory / name).exists() and os.path.samefile(output, directory / name):
            raise OutputError(f"{output} is the sweep's {name}; write the table elsewhere")
    if output.exists() and _is_hdf5(output):
        raise OutputError(f"{output} is an HDF5 file (a trajectory?), not a table; collect does not replace it")
    return output


def _member(path: Path, index: int, cells: tuple[str, ...], digest: str, paths: tuple[str, ...]) -> dict:
    """Member ``index``'s row from its file, after checking it is this member's run and verifies."""
    refuse = lambda why: ConfigError("DIR", str(path), f"member {index}'s file {why}")  # noqa: E731
    if path.is_symlink() or not path.is_file():
        raise refuse("is not a regular file; a member file is written by the sweep itself")
    try:
        with open_trajectory(path) as stored:
            stored.verify()
            try:
                document = tomllib.loads(stored.config_text)
                values = {p: cell(get_path(document, p)) for p in paths}
            except (tomllib.TOMLDecodeError, KeyError) as error:
                raise refuse(f"has no swept key {error} in its stored config") from None
            if text_digest(stored.config_text) != digest:
                pairs = zip(values.items(), cells, strict=True)
                differ = "; ".join(f"{p} = {v} there, {c} in the manifest" for (p, v), c in pairs if v != c)
                raise refuse(f"holds another run ({differ or 'its config differs from the manifest row'})")
            status = stored.status
            if status == "running":
                status = "running" if is_locked(path) else "interrupted"
            n_samples = stored.n_scalars_committed
            t_final = float(stored.scalars_t[-1]) if n_samples else math.nan
            finals = {name: float(stored.scalars[name][-1]) if n_samples else math.nan for name in stored.scalars}
            return {**values, "status": status, "t_final": t_final, "n_committed": stored.n_committed, **finals}
    except NotATrajectory as error:
        raise refuse(f"does not verify ({error})") from None


def _without_file(status: str) -> str:
    """The table's status of a member without a file, from the manifest's: a member that failed before
    its first step has none; one said complete or interrupted lost its file (``missing``)."""
    return {"failed": "failed", "complete": "missing", "interrupted": "missing"}.get(status, "pending")


def collect(directory: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Write ``output`` (CSV): per member, its swept values, ``status``, ``t_final``, ``n_committed`` and
    final scalars; returns the number of rows. Members without a file have empty values there."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError("DIR", str(directory), "is not a directory (a sweep's -o)")
    manifest, rows = Manifest.read(directory)
    output = _check_output(Path(output), directory, overwrite)
    table, columns = [], []
    for (member, cells, digest, file), status in zip(rows, manifest.statuses, strict=True):
        path = directory / file
        row = {"member": member, **dict(zip(manifest.paths, cells, strict=True))}
        if os.path.lexists(path):
            found = _member(path, int(member), cells, digest, manifest.paths)
            row.update(found)
            columns += [name for name in found if name not in columns and name not in (*manifest.paths, *FIXED_COLUMNS)]
        else:
            row["status"] = _without_file(status)
        table.append(row)

    def write(f) -> None:
        writer = csv.DictWriter(f, ["member", *manifest.paths, *FIXED_COLUMNS, *columns], restval="")
        writer.writeheader()
        writer.writerows(table)

    write_atomically(output, write)
    return len(table)
