"""``DIR/manifest.csv`` and ``DIR/manifest.journal``: a sweep's members and their statuses.

``manifest.csv`` has one row per member — ``member``, each swept key path, ``digest`` (the
SHA-256 of the member's resolved config), ``file``, ``status``. It is written whole (temporary
file, fsync, rename) before any compute, and again with the latest statuses when a sweep
process ends; read it with pandas or the ``csv`` module.

``manifest.journal`` is the sweep's identity and its status log. Its first line is a JSON header:
the format, the number of members, the swept key paths and ``rows_sha256``, the SHA-256 of the
manifest's rows without their status (:func:`rows_digest`). Every later line is ``MEMBER STATUS``,
appended (one write and one fsync per batch) when members change status; a member's last line wins.
So a status change costs the members it changes, not the whole manifest, and a killed sweep's latest
statuses are in the journal even where the CSV's ``status`` column is older. A rerun and ``collect``
read both, and refuse a ``manifest.csv`` whose rows do not match the header (edited, truncated) or a
journal of another sweep.

Processes of a distributed sweep share both under an exclusive ``flock`` of ``DIR/.manifest.lock``,
which the holder removes when it lets go (a waiter that then holds a removed file's lock tries again).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._schema import ConfigError
from ..io._lock import same_file
from ._spec import MAX_MEMBERS

FORMAT = "tumorfield-sweep-manifest/1"
MANIFEST, JOURNAL, LOCK = "manifest.csv", "manifest.journal", ".manifest.lock"
STATUSES = ("pending", "running", "complete", "interrupted", "failed")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LEGACY = re.compile(r"[0-9a-f]{16}")  # the first 16 hex digits: the digest of manifests before the journal
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)

Row = tuple[str, tuple[str, ...], str, str]
"""A manifest row without its status: ``(member, cells of the swept values, digest, file)``."""


def member_file(index: int) -> str:
    return f"member-{index:04d}.h5"


def rows_digest(rows: Iterable[Row]) -> str:
    """The SHA-256 of the rows (without status), one JSON list per row: the journal's ``rows_sha256``."""
    h = hashlib.sha256()
    for member, cells, digest, file in rows:
        h.update(json.dumps([member, *cells, digest, file]).encode() + b"\n")
    return h.hexdigest()


class ManifestError(ConfigError):
    """A manifest that is damaged, edited or another sweep's (exit code 2)."""


@contextlib.contextmanager
def locked(directory: Path):
    """Hold the exclusive lock of ``directory``'s manifest (blocking); the lock file is removed on release."""
    path = directory / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            break  # a file system without locks: one process per sweep directory
        if same_file(fd, path):  # not removed by the previous holder meanwhile
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            if same_file(fd, path):
                path.unlink()
        except OSError:
            pass
        os.close(fd)


@contextlib.contextmanager
def _naming(path: Path):
    """Let an ``OSError`` (a full disk) name ``path``: the CLI reports it as ``path: strerror``, exit 74."""
    try:
        yield
    except OSError as error:
        if error.filename:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None


def _damaged(path: Path, why: str, remedy: str = "") -> ManifestError:
    return ManifestError("-o", str(path.parent), f"its {path.name} is damaged ({why}){remedy}")


def read_header(directory: Path) -> dict | None:
    """The journal's header (None: no journal); :class:`ManifestError` if it is not one."""
    path = directory / JOURNAL
    try:
        with open(path, "rb") as f:
            line = f.readline(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _damaged(path, f"unreadable: {error.strerror}") from None
    try:
        header = json.loads(line)
        ok = (
            isinstance(header, dict)
            and header.get("format") == FORMAT
            and isinstance(header.get("members"), int)
            and header["members"] >= 0
            and isinstance(header.get("paths"), list)
            and all(isinstance(p, str) for p in header["paths"])
            and isinstance(header.get("rows_sha256"), str)
            and _HEX64.fullmatch(header["rows_sha256"])
        )
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok or not line.endswith(b"\n"):
        raise _damaged(path, f"its first line is not a {FORMAT} header")
    return header


def read_statuses(directory: Path, n: int, initial: list[str] | None = None) -> list[str]:
    """Every member's latest status: ``initial`` (default all ``pending``), then the journal's lines
    in order. A last line without its newline (a kill during the append) is ignored."""
    path = directory / JOURNAL
    statuses = list(initial) if initial is not None else ["pending"] * n
    with open(path, "rb") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            if not line.endswith(b"\n"):
                break
            parts = line.split()
            status = parts[1].decode(errors="replace") if len(parts) == 2 else ""
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) >= n or status not in STATUSES:
                raise _damaged(path, f"line {number} is not 'MEMBER STATUS' of a member below {n}",
                               "; it only logs statuses: delete it and rerun the sweep to rebuild it from "
                               "manifest.csv")  # fmt: skip
            statuses[int(parts[0])] = status
    return statuses


def read_rows(directory: Path, limit: int) -> tuple[tuple[str, ...], list[Row], list[str]]:
    """The swept key paths, rows and status column of ``manifest.csv``, checked for shape only: one
    header ``member, paths…, digest, file, status`` and at most ``limit`` rows of as many cells
    (:class:`ManifestError`; reading stops at the first row too many)."""
    path = directory / MANIFEST
    rows, statuses = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            names = next(reader, None)
            if not names or names[0] != "member" or names[-3:] != ["digest", "file", "status"]:
                raise _damaged(path, "its header is not 'member, <swept key paths>, digest, file, status'")
            width = len(names)
            for fields in reader:
                if len(fields) != width:
                    raise _damaged(path, f"row {reader.line_num} has {len(fields)} cells, the header {width}")
                if len(rows) == limit:
                    raise _damaged(path, f"more than the sweep's {limit} rows")
                rows.append((fields[0], tuple(fields[1:-3]), fields[-3], fields[-2]))
                statuses.append(fields[-1])
    except (csv.Error, UnicodeDecodeError) as error:
        raise _damaged(path, str(error)) from None
    return tuple(names[1:-3]), rows, statuses


@dataclass
class Manifest:
    """A sweep directory's manifest as this process sees it: ``n`` members of ``paths``, the rows'
    digest, every member's latest status, and what :meth:`ensure` has to write (``state``: ``ours``
    — nothing; ``new``; ``rewrite`` — the CSV is missing or damaged but the journal is this sweep's;
    ``upgrade`` — a CSV of this sweep without a journal)."""

    directory: Path
    paths: tuple[str, ...]
    n: int
    identity: str
    statuses: list[str]
    state: str

    # --- a sweep's view ------------------------------------------------------------------------

    @classmethod
    def check(cls, directory: Path, paths: tuple[str, ...], rows: Callable[[], Iterator[Row]], n: int) -> Manifest:
        """This sweep's manifest in ``directory`` (``rows``: the rows it must have), reading only:
        :class:`ManifestError` if the directory holds another sweep's manifest or a damaged one."""
        identity = rows_digest(rows())
        if not directory.is_dir():
            return cls(directory, paths, n, identity, ["pending"] * n, "new")
        header = read_header(directory)
        if header is not None:
            theirs = (header["members"], tuple(header["paths"]), header["rows_sha256"])
            if theirs != (n, paths, identity):
                why = _difference(directory, header, paths, rows, n)
                raise ManifestError("-o", str(directory), f"holds another sweep's manifest ({why}); use a new "
                                    f"directory")  # fmt: skip
            state = "ours" if _csv_is(directory, identity, n) else "rewrite"
            return cls(directory, paths, n, identity, read_statuses(directory, n), state)
        if not (directory / MANIFEST).exists():
            return cls(directory, paths, n, identity, ["pending"] * n, "new")
        return cls(directory, paths, n, identity, _legacy_statuses(directory, paths, rows, n), "upgrade")

    def ensure(self, rows: Callable[[], Iterator[Row]], log: Callable) -> None:
        """Write what :attr:`state` says is missing (under the lock, after checking again: another
        process of the sweep may have written it meanwhile)."""
        if self.state == "ours":
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with locked(self.directory):
            again = Manifest.check(self.directory, self.paths, rows, self.n)
            self.statuses, self.state = again.statuses, again.state
            if self.state in ("new", "upgrade"):
                self._write_header()
            if self.state != "ours":
                if self.state == "rewrite":
                    log(f"note: {self.directory / MANIFEST} was missing or did not match {JOURNAL}; rewritten")
                self._write_csv(rows)
            self.state = "ours"

    def record(self, changes: dict[int, str]) -> None:
        """Append the members' new statuses to the journal (one write, one fsync)."""
        changes = {i: s for i, s in changes.items() if self.statuses[i] != s}
        if not changes:
            return
        assert all(s in STATUSES for s in changes.values())
        data = "".join(f"{i} {s}\n" for i, s in changes.items()).encode()
        with locked(self.directory):
            try:
                fd = os.open(self.directory / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                why = f"its {JOURNAL} was removed while the sweep ran"
                raise ManifestError("-o", str(self.directory), why) from None
            try:
                with _naming(self.directory / JOURNAL):
                    done = 0
                    while done < len(data):
                        done += os.write(fd, data[done:])
                    os.fsync(fd)
            finally:
                os.close(fd)
        for i, s in changes.items():
            self.statuses[i] = s

    def publish(self, rows: Callable[[], Iterator[Row]]) -> None:
        """Rewrite ``manifest.csv`` with every member's latest status (other processes' included)."""
        if self.state != "ours":
            return
        with locked(self.directory):
            self.statuses = read_statuses(self.directory, self.n)
            self._write_csv(rows)

    def _write_header(self) -> None:
        header = {"format": FORMAT, "members": self.n, "paths": list(self.paths), "rows_sha256": self.identity}
        tmp = self.directory / f".{JOURNAL}.{os.getpid()}.tmp"
        lines = [json.dumps(header) + "\n"]
        if self.state == "upgrade":  # the old CSV's statuses, so that nothing is lost
            lines += [f"{i} {s}\n" for i, s in enumerate(self.statuses) if s != "pending"]
        self._replace(tmp, self.directory / JOURNAL, "".join(lines))

    def _write_csv(self, rows: Callable[[], Iterator[Row]]) -> None:
        for stale in self.directory.glob(f".{MANIFEST}.*.tmp"):  # left by a killed writer (the lock is held)
            stale.unlink(missing_ok=True)
        tmp = self.directory / f".{MANIFEST}.{os.getpid()}.tmp"
        try:
            with _naming(self.directory / MANIFEST), open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["member", *self.paths, "digest", "file", "status"])
                for (member, cells, digest, file), status in zip(rows(), self.statuses, strict=True):
                    writer.writerow([member, *cells, digest, file, status])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / MANIFEST)
        finally:
            tmp.unlink(missing_ok=True)

    def _replace(self, tmp: Path, final: Path, text: str) -> None:
        try:
            with _naming(final), open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    # --- collect's view -------------------------------------------------------------------------

    @classmethod
    def read(cls, directory: Path) -> tuple[Manifest, list[Row]]:
        """The manifest of the sweep directory ``directory`` and its rows, checked against the journal:
        as many rows as the sweep has members, row ``i`` is member ``i`` in ``member-NNNN.h5``, and the
        rows' SHA-256 is the header's (:class:`ManifestError` naming what is wrong, as ``DIR``)."""
        try:
            return cls._read(directory)
        except ManifestError as error:
            raise ManifestError("DIR", error.value, error.allowed) from None

    @classmethod
    def _read(cls, directory: Path) -> tuple[Manifest, list[Row]]:
        rerun = "; rerun the same `tumorfield sweep SWEEP -o DIR` to rewrite it"
        header = read_header(directory)
        if header is None:
            if (directory / MANIFEST).exists():
                raise ManifestError("DIR", str(directory), f"has a {MANIFEST} but no {JOURNAL} (written by an older "
                                    f"tumorfield, or the journal was deleted){rerun}")  # fmt: skip
            raise ManifestError("DIR", str(directory), f"has no {MANIFEST} and no {JOURNAL}: not a sweep directory")
        n, paths = header["members"], tuple(header["paths"])
        path = directory / MANIFEST
        if not path.exists():
            raise ManifestError("DIR", str(directory), f"has no {MANIFEST}{rerun}")
        names, rows, _ = read_rows(directory, n)
        if names != paths:
            raise _damaged(path, f"its swept key paths are {', '.join(names)}, the sweep's {', '.join(paths)}", rerun)
        if len(rows) != n:
            raise _damaged(path, f"{len(rows)} rows for the sweep's {n} members", rerun)
        for i, (member, _, digest, file) in enumerate(rows):
            if member != str(i) or file != member_file(i) or not _HEX64.fullmatch(digest):
                raise _damaged(path, f"row {i + 2} is member {member!r}, file {file!r}, digest {digest[:20]!r}; "
                               f"expected member {i} in {member_file(i)} with a 64-digit SHA-256", rerun)  # fmt: skip
        if rows_digest(rows) != header["rows_sha256"]:
            raise _damaged(path, f"its rows were edited since the sweep wrote them (their SHA-256 is not {JOURNAL}'s)",
                           rerun)  # fmt: skip
        return cls(directory, paths, n, header["rows_sha256"], read_statuses(directory, n), "ours"), rows


def _difference(directory: Path, header: dict, paths, rows: Callable[[], Iterator[Row]], n: int) -> str:
    """What differs between the journal's sweep and this one: members and key paths, else the first
    member whose values or config differ (when ``manifest.csv`` still says)."""
    if (header["members"], tuple(header["paths"])) != (n, paths):
        return (f"{header['members']} members of {', '.join(header['paths'])}; this sweep has {n} of "
                f"{', '.join(paths)}")  # fmt: skip
    try:
        _, found, _ = read_rows(directory, n)
    except (ManifestError, OSError):
        found = []
    for (member, cells, digest, _), (_, c, d, _) in zip(found, rows(), strict=False):
        if cells != c:
            return f"member {member} has values {', '.join(cells)} there, {', '.join(c)} in this sweep"
        if digest != d:
            return f"member {member}'s config differs: SHA-256 {digest[:12]}… there, {d[:12]}… in this sweep"
    return "other values or configs"


def _csv_is(directory: Path, identity: str, n: int) -> bool:
    """Whether ``manifest.csv`` exists, is well formed and its ``n`` rows have the digest ``identity``."""
    if not (directory / MANIFEST).exists():
        return False
    try:
        _, rows, _ = read_rows(directory, n)
    except ManifestError:
        return False
    return rows_digest(rows) == identity


def _legacy_statuses(directory: Path, paths, rows: Callable[[], Iterator[Row]], n: int) -> list[str]:
    """A ``manifest.csv`` without a journal (older tumorfield, whose digests are the first 16 hex digits,
    or a deleted journal): its statuses if it lists this sweep's members, else :class:`ManifestError`."""
    path = directory / MANIFEST
    names, found, statuses = read_rows(directory, MAX_MEMBERS)
    if names != paths or len(found) != n:
        raise ManifestError("-o", str(directory), f"holds the manifest of another sweep ({len(found)} members of "
                            f"{', '.join(names)}; this sweep has {n} of {', '.join(paths)}); use a new "
                            f"directory")  # fmt: skip
    for (member, cells, digest, file), (m, c, d, f), status in zip(found, rows(), statuses, strict=True):
        same_digest = digest == d or (_LEGACY.fullmatch(digest) and d.startswith(digest))
        if (member, cells, file) != (m, c, f) or not same_digest:
            raise ManifestError("-o", str(directory), f"holds another sweep's manifest (member {m}: {path.name} has "
                                f"values {', '.join(cells)}, digest {digest[:16]}…; this sweep {', '.join(c)}, "
                                f"{d[:16]}…); use a new directory")  # fmt: skip
        if status not in STATUSES:
            raise _damaged(path, f"member {m} has status {status!r}")
    return statuses
