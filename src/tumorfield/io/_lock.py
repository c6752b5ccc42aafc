"""Exclusive ownership of an output path: one writer per ``NAME``, its partials and ``--overwrite``.

A writer holds an exclusive ``flock`` (which Linux's NFS client forwards to the server as a
record lock) on the sidecar ``.NAME.lock`` next to ``NAME`` from before it checks the path
until its file is in place; a second lock of the same output in the same process conflicts
too. The kernel releases the lock when the process dies, however it dies, so a stale lock
cannot exist; the sidecar's content (``PID@host``) only names the holder in the
refusal. Readers never take it. Partials (``.NAME.PID.partial``) lock their ``NAME``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from pathlib import Path

_PARTIAL = re.compile(r"\.(.+)\.\d+\.partial")
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class FileBusy(OSError):
    """Another process is writing this trajectory (exit code 2)."""


def partial_name(final: Path, pid: int) -> Path:
    """The temporary name of a run's file while it is written: ``.NAME.PID.partial`` next to ``NAME``."""
    return final.with_name(f".{final.name}.{pid}.partial")


def final_path(path: str | os.PathLike) -> Path:
    """The output a file belongs to: ``NAME`` for ``.NAME.PID.partial`` (same directory), else itself.
    Taken from the file's own name only, never from its contents."""
    path = Path(path)
    match = _PARTIAL.fullmatch(path.name)
    return path.with_name(match.group(1)) if match else path


def lock_path(path: str | os.PathLike) -> Path:
    """The lock sidecar of the output ``path`` belongs to (see :func:`final_path`)."""
    final = final_path(path)
    return final.with_name(f".{final.name}.lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, host = text.partition("@")
    if not pid.isdigit():
        return "another tumorfield process"
    where = "" if host == socket.gethostname() else f" on {host}"
    return f"another tumorfield process (PID {pid}{where})"


class OutputLock:
    """The exclusive lock on one output; :meth:`acquire` it, :meth:`release` it (idempotent)."""

    def __init__(self, path: Path, fd: int, note: str | None = None):
        self.path, self._fd, self.note = path, fd, note

    @classmethod
    def acquire(cls, output: str | os.PathLike) -> OutputLock:
        """Lock the output ``output`` belongs to, or raise :class:`FileBusy` naming the holder."""
        path, target = lock_path(output), final_path(output)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in _UNSUPPORTED:
                    return cls(path, fd, f"cannot lock {path} ({error.strerror}); concurrent writers are not detected")
                holder = _holder(fd)
                os.close(fd)
                raise FileBusy(errno.EBUSY, f"{target} is being written by {holder}") from None
            if same_file(fd, path):  # not unlinked by a releasing holder in the meantime
                try:  # the holder's name, for a refusal only: a full disk does not stop the lock
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
                except OSError:
                    pass
                return cls(path, fd)
            os.close(fd)

    def release(self) -> None:
        """Remove the sidecar and drop the lock (the unlink comes first, see :meth:`acquire`)."""
        if self._fd < 0:
            return
        try:
            if same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0


def is_locked(output: str | os.PathLike) -> bool:
    """Whether a live process holds the output lock of ``output`` (:class:`OutputLock`), asked without
    creating anything: a sidecar left by a killed writer is not locked. (The probe holds a shared lock
    for a moment; a writer acquiring the lock in that moment is refused as busy.)"""
    path = lock_path(output)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        return error.errno not in _UNSUPPORTED
    finally:
        os.close(fd)
    return False


def same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path`` (not unlinked or replaced meanwhile)."""
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
