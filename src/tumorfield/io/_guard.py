"""The trajectory writer's file: every byte HDF5 writes passes through :class:`GuardedFile`.

HDF5 writes a trajectory through h5py's ``fileobj`` driver on a file descriptor we own,
so that (1) the file is opened without following symlinks, (2) every HDF5 flush ends
in ``os.fsync`` (the commit protocol needs the data durable before its label), (3) an
I/O error (``ENOSPC``, ``EDQUOT``, ``EIO``) never reaches HDF5: the first failed write is
recorded and every later write is dropped, so HDF5's caches stay consistent (a failed
flush inside HDF5 leaves its metadata cache half-flushed, and a later flush or close
crashes the process) and the file on disk stays exactly as it was at the failure,
which the commit protocol treats like a kill; the writer then raises
:class:`StorageError` (exit 74). (4) Space for a commit is reserved before it starts
(:meth:`GuardedFile.reserve`), so a full disk is normally found before anything is written.

Test hook (fault injection at write granularity, documented in ``docs/cli.md``):
every write point of the writer — each write, truncate and fsync HDF5 asks for, and each
file creation, rename and removal of the run — calls :func:`fault_point`.
``TUMORFIELD_FAULT_AFTER_WRITES=N`` kills the process with SIGKILL on entering the
N-th point (so points 1…N−1 happened); ``TUMORFIELD_FAULT_SNAPSHOTS=DIR`` instead copies
the output directory to ``DIR/<N>/`` at every point, which is what a kill there would
have left on disk; ``TUMORFIELD_FAULT_TRACE=FILE`` appends one line ``N kind detail``
per point.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import signal
import struct
from pathlib import Path

_SPACE_MARGIN = 256 * 1024
"""Bytes reserved on top of every estimate (HDF5 metadata: chunk index nodes, object headers)."""


class StorageError(OSError):
    """Writing the trajectory failed (disk full, quota, I/O error): exit code 74, committed frames intact."""


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else 0


_points = {"n": 0}


def fault_point(kind: str, path: str | os.PathLike) -> None:
    """One write point of the writer (``kind``: write, fsync, truncate, create, rename, unlink)
    on the file or directory ``path``; the fault-injection test hook (see the module docstring)."""
    kill_at, snapshots, trace = (
        _env_int("TUMORFIELD_FAULT_AFTER_WRITES"),
        os.environ.get("TUMORFIELD_FAULT_SNAPSHOTS"),
        os.environ.get("TUMORFIELD_FAULT_TRACE"),
    )
    if not (kill_at or snapshots or trace):
        return
    _points["n"] += 1
    n = _points["n"]
    if trace:
        with open(trace, "a") as f:
            f.write(f"{n} {kind} {os.path.basename(path)}\n")
    if snapshots:
        directory = Path(path) if os.path.isdir(path) else Path(path).parent
        copy_directory(directory, Path(snapshots) / str(n))
    if n == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


_libc: dict = {}


def _fallocate(fd: int, offset: int, length: int) -> int:
    """Linux ``fallocate(fd, 0, offset, length)`` (no emulation by writing zeros): 0, an errno, or -1
    where there is no such call."""
    if "fallocate" not in _libc:
        try:
            function = ctypes.CDLL(None, use_errno=True).fallocate
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = None
        _libc["fallocate"] = function
    function = _libc["fallocate"]
    if function is None:
        return -1
    return 0 if function(fd, 0, offset, length) == 0 else ctypes.get_errno()


def copy_directory(source: Path, destination: Path) -> None:
    """Copy the files of ``source`` into the new directory ``destination``, hard links kept as links
    (a kill between linking a partial onto its final name and removing the partial leaves two)."""
    destination.mkdir(parents=True)
    seen: dict[tuple[int, int], Path] = {}
    for entry in sorted(source.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            continue
        st = entry.stat()
        copy = destination / entry.name
        if (st.st_dev, st.st_ino) in seen:
            os.link(seen[st.st_dev, st.st_ino], copy)
        else:
            shutil.copy2(entry, copy)
            seen[st.st_dev, st.st_ino] = copy


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system of ``directory`` (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


USERBLOCK = 65536
"""Bytes before the HDF5 superblock that HDF5 never touches: the journal pointer (at 0) and room for
small journals (from 512), so that a commit's label or a status can be written on a full disk."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_PAGE = 4096
_JOURNAL_AREA = 512
_POINTER = struct.Struct("<8sQQQQ32s")  # magic, sequence, state, journal offset, journal length, SHA-256
_MAGIC, _PENDING, _APPLIED = b"TFJRNL01", 1, 2
_ENTRY = struct.Struct("<QQ")  # offset, length


def _read_pointer(fd: int) -> tuple:
    return _POINTER.unpack(os.pread(fd, _POINTER.size, 0).ljust(_POINTER.size, b"\0"))


def _journal(fd: int) -> list[tuple[int, bytes]] | None:
    """The writes (page-aligned runs) of a journal the pointer marks pending and whose checksum holds (None: nothing
    to redo; a pending pointer to a journal that no longer verifies was applied before it was overwritten)."""
    magic, _, state, offset, length, digest = _read_pointer(fd)
    if magic != _MAGIC or state != _PENDING:
        return None
    payload = os.pread(fd, length, offset)
    if len(payload) != length or hashlib.sha256(payload).digest() != digest:
        return None
    entries, at = [], 0
    while at < length:
        where, size = _ENTRY.unpack_from(payload, at)
        entries.append((where, payload[at + _ENTRY.size : at + _ENTRY.size + size]))
        at += _ENTRY.size + size
    return entries


def has_pending_journal(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a journal that a killed writer did not finish applying."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        return _journal(fd) is not None
    except (OSError, struct.error):
        return False
    finally:
        os.close(fd)


class GuardedFile:
    """A binary file for h5py's ``fileobj`` driver: positioned I/O on our own descriptor, each HDF5
    flush made atomic by a redo journal, fsync, fail-stop on the first I/O error (see :attr:`error`).

    Writes at or past :attr:`base` (the file's size at the last completed flush) land in space
    that nothing on disk references yet and go straight to the file. Writes below it would
    change what the last flush left (chunk indexes, object headers, the superblock, rewritten
    chunks): they are kept in memory, page by page, and at the end of the flush written as a
    journal (in the userblock if it fits, else past the end of the file), fsynced, marked pending
    in the userblock's pointer, fsynced, applied in place, fsynced and marked applied. A kill
    anywhere leaves the last flush's state, or that state and a pending journal which every later
    open redoes (:func:`_journal`), so HDF5 never sees half a flush. ``read_only`` opens apply a
    pending journal in memory only.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool, read_only: bool = False):
        self.path = os.fspath(path)
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        if create:
            fault_point("create", self.path)
            flags |= os.O_CREAT | os.O_EXCL
        self.fd = os.open(self.path, flags, 0o666)
        self.read_only, self.error = read_only, None
        self._pos, self._truncate_to, self._pages = 0, None, {}
        self.base = self._written_to = os.fstat(self.fd).st_size
        if not (create or read_only) and os.pread(self.fd, len(HDF5_SIGNATURE), 0) == HDF5_SIGNATURE:
            os.close(self.fd)
            self.fd = -1
            raise ValueError(f"{self.path} has no userblock for the journal (written by an older tumorfield?)")
        runs = None if create else _journal(self.fd)
        for where, data in runs or ():  # page-aligned runs, split into the pages reads look up
            pieces = range(0, len(data), _PAGE)
            self._pages.update({(where + k) // _PAGE: bytearray(data[k : k + _PAGE]) for k in pieces})
        if runs and not read_only:
            self._apply(runs)
            self._mark_applied()

    # --- the file-object protocol the h5py fileobj driver uses --------------------------------

    def __repr__(self) -> str:
        return self.path

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: None}[whence]
        self._pos = offset + (os.fstat(self.fd).st_size if base is None else base)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def readinto(self, buffer) -> int:
        """Read at the position, through the pages kept in memory; bytes past the end of the file
        read as zeros (as HDF5's sec2 driver does)."""
        view = memoryview(buffer).cast("B")
        n = os.preadv(self.fd, [view], self._pos)
        view[n:] = bytes(len(view) - n)
        if self._pages and self._pos < self.base:
            for page in range(self._pos // _PAGE, (min(self._pos + len(view), self.base) - 1) // _PAGE + 1):
                if page in self._pages:
                    self._overlay(view, page)
        self._pos += len(view)
        return len(view)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None and not self.read_only:
            cut = max(0, min(len(view), self.base - self._pos))
            self._buffer(self._pos, view[:cut])
            if cut < len(view):
                fault_point("write", self.path)
                self._guarded(self._write_at, view[cut:], self._pos + cut)
                self._written_to = max(self._written_to, self._pos + len(view))
        self._pos += len(view)
        return len(view)

    def truncate(self, size: int) -> int:
        self._truncate_to = size  # after the journal is applied (see :meth:`flush`)
        return size

    def flush(self) -> None:
        """Called by HDF5 at the end of every flush: journal the kept pages and mark the journal pending
        (one fsync: a pointer that reaches the disk before its journal fails the checksum, and nothing
        has been applied yet), apply them and truncate (fsync), mark the journal applied."""
        if self.error is not None or self.read_only:
            return
        self._drop_unchanged_pages()
        runs = self._runs()
        if runs:
            self._guarded(self._journal, runs)
        if self.error is None:
            self._guarded(self._apply, runs)
        if self.error is None and runs:
            self._guarded(self._mark_applied)
        if self.error is None:
            self.base = self._written_to = os.fstat(self.fd).st_size

    # --- the journal ----------------------------------------------------------------------

    def _buffer(self, where: int, data: memoryview) -> None:
        """Keep ``data`` (to be written at ``where``, below :attr:`base`) in memory pages."""
        if len(data) and where < USERBLOCK:
            raise ValueError(f"{self.path}: HDF5 wrote into the userblock (offset {where})")
        done = 0
        while done < len(data):
            page = (where + done) // _PAGE
            at = page * _PAGE
            if page not in self._pages:
                size = max(0, min((page + 1) * _PAGE, self.base) - at)
                self._pages[page] = bytearray(os.pread(self.fd, size, at).ljust(size, b"\0"))
            content, start = self._pages[page], where + done - at
            n = min(len(data) - done, len(content) - start)
            content[start : start + n] = data[done : done + n]
            done += n

    def _drop_unchanged_pages(self) -> None:
        """Forget kept pages that equal what is on disk (HDF5 rewrites unchanged metadata at close)."""
        for page, content in list(self._pages.items()):
            if os.pread(self.fd, len(content), page * _PAGE) == content:
                del self._pages[page]

    def _overlay(self, view: memoryview, page: int) -> None:
        """Copy the kept page ``page`` over the part of ``view`` (read at the position) it covers."""
        content, at = self._pages[page], page * _PAGE
        lo, hi = max(at, self._pos), min(at + len(content), self._pos + len(view))
        if lo < hi:
            view[lo - self._pos : hi - self._pos] = content[lo - at : hi - at]

    def _runs(self) -> list[tuple[int, bytes]]:
        """The kept pages as ``(offset, bytes)`` runs of consecutive pages, in file order."""
        runs: list[tuple[int, list]] = []
        for page, content in sorted(self._pages.items()):
            if runs and runs[-1][0] + sum(map(len, runs[-1][1])) == page * _PAGE:
                runs[-1][1].append(content)
            else:
                runs.append((page * _PAGE, [content]))
        return [(offset, b"".join(parts)) for offset, parts in runs]

    def _journal(self, runs: list[tuple[int, bytes]]) -> None:
        """Write the journal of ``runs`` and the pointer that marks it pending, then fsync."""
        payload = b"".join(_ENTRY.pack(offset, len(data)) + data for offset, data in runs)
        where = _JOURNAL_AREA  # in the userblock if it fits, else past the end of the file
        if _JOURNAL_AREA + len(payload) > USERBLOCK:
            where = -(-max(self._written_to, self._truncate_to or 0) // _PAGE) * _PAGE  # not past a reservation
        fault_point("write", self.path)
        self._write_at(memoryview(payload), where)
        magic, sequence, *_ = _read_pointer(self.fd)
        sequence = sequence + 1 if magic == _MAGIC else 1
        record = _POINTER.pack(_MAGIC, sequence, _PENDING, where, len(payload), hashlib.sha256(payload).digest())
        fault_point("write", self.path)
        self._write_at(memoryview(record), 0)
        self._fsync()

    def _apply(self, runs: list[tuple[int, bytes]]) -> None:
        """Write ``runs`` in place, then a truncate HDF5 asked for, then fsync."""
        for offset, data in runs:
            fault_point("write", self.path)
            self._write_at(memoryview(data), offset)
        if self._truncate_to is not None:
            fault_point("truncate", self.path)
            os.ftruncate(self.fd, self._truncate_to)
            self._truncate_to = None
        self._fsync()
        self._pages.clear()

    def _mark_applied(self) -> None:
        magic, sequence, _, where, length, digest = _read_pointer(self.fd)
        fault_point("write", self.path)
        self._write_at(memoryview(_POINTER.pack(magic, sequence, _APPLIED, where, length, digest)), 0)

    # --- ours -------------------------------------------------------------------------------

    def _write_at(self, view: memoryview, where: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], where + done)

    def _fsync(self) -> None:
        fault_point("fsync", self.path)
        os.fsync(self.fd)

    def _guarded(self, function, *args) -> None:
        try:
            function(*args)
        except OSError as error:
            self.error = error

    def check(self) -> None:
        """Raise :class:`StorageError` if any write, truncate or fsync has failed."""
        if self.error is not None:
            why = self.error.strerror or str(self.error)
            raise StorageError(self.error.errno, f"{self.path}: writing failed ({why}); the last commit is intact")

    def reserve(self, nbytes: int) -> None:
        """Make sure ``nbytes`` (plus a margin) can be appended: allocate them past the end of the file
        (HDF5's truncate at the next flush gives back what the commit did not use), or, where the
        file system cannot preallocate, compare with its free space. Raises :class:`StorageError`
        before anything is written."""
        self.check()
        nbytes += _SPACE_MARGIN
        size = os.fstat(self.fd).st_size
        code = _fallocate(self.fd, size, nbytes)
        if code == 0:
            return
        if code not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, -1):
            os.ftruncate(self.fd, size)  # nothing of a failed preallocation stays
            raise StorageError(code, f"{self.path}: cannot reserve {nbytes} bytes for the next commit "
                               f"({os.strerror(code)}); the last commit is intact")  # fmt: skip
        self.require_free(nbytes - _SPACE_MARGIN)

    def require_free(self, nbytes: int) -> None:
        """Raise :class:`StorageError` if the file system has less than ``nbytes`` (plus a margin) free."""
        nbytes += _SPACE_MARGIN
        free = free_bytes(os.path.dirname(self.path) or ".")
        if free is not None and free < nbytes:
            raise StorageError(errno.ENOSPC, f"{self.path}: the next commit needs about {nbytes} bytes, "
                               f"{free} are free (No space left on device); the last commit is intact")  # fmt: skip

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)

    def close(self) -> None:
        """Close the descriptor, after a last :meth:`flush` if HDF5 left pages or a truncate pending."""
        if self.fd >= 0 and (self._pages or self._truncate_to is not None):
            self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
