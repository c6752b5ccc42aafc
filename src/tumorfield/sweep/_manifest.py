"""``DIR/manifest.csv``: one row per member — its swept values, config digest, file and status.

Written before any compute and rewritten atomically (temporary file + rename) whenever a
member's status changes, so a killed sweep leaves a manifest that names every member.
Processes of a distributed sweep share it: each change re-reads the file under an
exclusive ``flock`` on ``DIR/.manifest.lock`` and changes only its own row.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
from pathlib import Path

from .._inputs import open_text
from .._schema import ConfigError

MANIFEST = "manifest.csv"
STATUSES = ("pending", "running", "complete", "interrupted", "failed")


def member_file(index: int) -> str:
    return f"member-{index:04d}.h5"


def _cell(value) -> str:
    """A swept value as CSV text that reads back as the same TOML/JSON value (lists, strings, numbers)."""
    return json.dumps(value) if not isinstance(value, str) else value


class Manifest:
    """The rows of ``DIR/manifest.csv``, kept in memory and written through on every change."""

    def __init__(self, directory: Path, paths: tuple[str, ...], rows: list[dict[str, str]]):
        self.directory, self.paths, self.rows = directory, paths, rows

    @classmethod
    @contextlib.contextmanager
    def _locked(cls, directory: Path):
        with open(directory / ".manifest.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @classmethod
    def create_or_check(cls, directory: Path, paths, members, digests) -> Manifest:
        """A new manifest for ``members``; or the existing one, if it describes the same members
        (same digests) — a rerun of the same sweep continues it; anything else is refused."""
        rows = [
            {
                "member": str(i),
                **{p: _cell(m[p]) for p in paths},
                "digest": d,
                "file": member_file(i),
                "status": "pending",
            }
            for i, (m, d) in enumerate(zip(members, digests, strict=True))
        ]
        with cls._locked(directory):
            if (directory / MANIFEST).exists():
                old = cls.read(directory)
                if [r["digest"] for r in old.rows] != digests or old.paths != tuple(paths):
                    raise ConfigError("-o", str(directory), "holds another sweep's manifest; use a new directory")
                return old
            manifest = cls(directory, tuple(paths), rows)
            manifest.write()
            return manifest

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        with open_text(directory / MANIFEST, key="manifest") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames or []
        paths = tuple(name for name in fields if name not in ("member", "digest", "file", "status"))
        return cls(directory, paths, rows)

    def write(self) -> None:
        tmp = self.directory / f".{MANIFEST}.{os.getpid()}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["member", *self.paths, "digest", "file", "status"])
            writer.writeheader()
            writer.writerows(self.rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / MANIFEST)

    def set_status(self, index: int, status: str) -> None:
        """Record member ``index``'s status (re-reading the file first: other processes' rows stay)."""
        assert status in STATUSES
        with self._locked(self.directory):
            self.rows = Manifest.read(self.directory).rows
            self.rows[index]["status"] = status
            self.write()
