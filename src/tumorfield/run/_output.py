"""Where a run's trajectory file lives, from its first byte to its final name, and who owns it.

A run holds the output lock of ``NAME`` (:mod:`tumorfield.io._lock`) from before it looks
at the path until its file is in place, so a second writer (``run``, ``resume``, with or
without ``--overwrite``) is refused naming the first. It writes ``.NAME.PID.partial`` next
to ``NAME``. With no older ``NAME`` the partial is moved onto it as soon as frame 0 is
committed (so ``inspect`` and ``resume`` find it under its name while it runs). With an
older ``NAME`` (``--overwrite``) the older file is kept until the new run completes; an
interrupted run stays in its partial (resumable), a failed one is moved to
``NAME.failed.h5``, so nothing but a complete run replaces earlier output. The final name
of a partial comes from the partial's own name, never from its contents. Outputs must be
regular files or not exist.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..io import NotATrajectory, open_trajectory
from ..io._guard import StorageError, fault_point, free_bytes
from ..io._lock import FileBusy, OutputLock, final_path, partial_name


class OutputError(ValueError):
    """An output path that cannot be used (exit code 2, before any compute)."""


_DERIVED_EXTRA = 22
"""Bytes the longest derived name adds to ``NAME``: ``.NAME.PID.partial`` (a PID of up to 10 digits)."""


def _failed_path(final: Path) -> Path:
    return final.with_name(final.stem + ".failed" + (final.suffix or ".h5"))


def _sidecars(final: Path) -> list[Path]:
    """Files a run may write next to ``final``: the failed copy and the XDMF sidecar."""
    return [_failed_path(final), final.with_suffix(".xdmf")]


def _check_name(final: Path) -> None:
    """Refuse names the file system cannot hold with the partial's prefix and suffix added."""
    try:
        name_max = os.pathconf(final.parent, "PC_NAME_MAX")
        path_max = os.pathconf(final.parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    size = len(os.fsencode(final.name))
    if size + _DERIVED_EXTRA > name_max:
        raise OutputError(f"{final.name[:40]}…: the output name is {size} bytes long; at most "
                          f"{name_max - _DERIVED_EXTRA} are allowed (its temporary .NAME.PID.partial needs "
                          f"{_DERIVED_EXTRA} more)")  # fmt: skip
    if len(os.fsencode(os.path.abspath(final))) + _DERIVED_EXTRA > path_max:
        raise OutputError(f"{final}: the output path is longer than {path_max - _DERIVED_EXTRA} bytes")


def _check_kind(path: Path, what: str) -> None:
    """Refuse an existing ``path`` that is not a regular file (directories, devices, links to them)."""
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise OutputError(f"{path} exists and is {kind}; give a regular file path for the {what}")


def _lock(path: Path) -> OutputLock:
    try:
        return OutputLock.acquire(path)
    except FileBusy as error:
        raise OutputError(str(error)) from None
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is exit 74, as when writing
            raise StorageError(error.errno, f"{path}: cannot create the output's lock in {path.parent} "
                               f"({error.strerror})") from None  # fmt: skip
        raise OutputError(f"{path}: cannot lock the output in {path.parent} ({error.strerror})") from None


def _stale_partials(final: Path, keep: Path | None = None) -> list[str]:
    """Remove second names of ``final`` (a run killed between linking its partial there and removing
    the partial) and, unless ``keep`` is given (a resume), ``.NAME.*.partial`` files that hold no
    committed frame (a run killed while creating its file); the output lock is held, so their
    writers are dead. Returns notes on the others."""
    notes = []
    pattern = re.compile(rf"\.{re.escape(final.name)}\.\d+\.partial")
    for path in sorted(final.parent.glob(f".{glob.escape(final.name)}.*.partial")):
        if not pattern.fullmatch(path.name) or not path.is_file():
            continue
        if final.is_file() and os.path.samefile(path, final):  # killed between link and unlink
            fault_point("unlink", path)
            path.unlink()
            continue
        if keep is not None:
            continue
        try:
            with open_trajectory(path) as stored:
                n = stored.n_committed
        except (NotATrajectory, OSError):
            n = 0
        if n == 0:
            fault_point("unlink", path)
            path.unlink()
            continue
        notes.append(f"note: {path} holds an interrupted run ({n} frames); continue it with "
                     f"`tumorfield resume {path}` or delete it")  # fmt: skip
    return notes


def _free_partial(final: Path) -> Path:
    """A partial name for this process that no file uses yet."""
    candidates = (partial_name(final, int(f"{os.getpid()}{k or ''}")) for k in range(1000))
    return next(p for p in candidates if not os.path.lexists(p))


@dataclass
class OutputTarget:
    """The final path of a run's output, the path it is being written at (:attr:`current`), and
    the output lock (held until :meth:`release`)."""

    final: Path
    current: Path
    had_old: bool
    lock: OutputLock
    notes: list[str] = field(default_factory=list)
    on_move: Callable[[Path], None] | None = None
    """Told the new path whenever the file is renamed (the open writer's error messages name it)."""

    def _moved(self, path: Path) -> None:
        self.current = path
        if self.on_move is not None:
            self.on_move(path)

    @classmethod
    def new(cls, final: str | os.PathLike, *, overwrite: bool) -> OutputTarget:
        """Check ``final`` before any compute and lock it: refused if it exists (without ``overwrite``),
        is not a regular file, its name is too long, its directory cannot be created or written,
        or another process writes it."""
        final = Path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{final}: cannot create directory {final.parent} ({error.strerror})") from None
        _check_name(final)
        if not os.access(final.parent, os.W_OK):
            raise OutputError(f"{final}: directory {final.parent} is not writable")
        lock = _lock(final)
        try:
            if final.exists() and not overwrite:
                raise OutputError(f"{final} exists; pass --overwrite to replace it "
                                  f"(it is kept until the new run succeeds)")  # fmt: skip
            for path in (final, *_sidecars(final)):
                _check_kind(path, "output")
            notes = ([lock.note] if lock.note else []) + _stale_partials(final)
            return cls(final, _free_partial(final), final.exists(), lock, notes)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def existing(cls, path: str | os.PathLike) -> OutputTarget:
        """The target of a file being resumed, locked: itself, or (for ``.NAME.PID.partial``) ``NAME``."""
        path = Path(path)
        final = final_path(path)
        _check_kind(path, "file to resume")
        lock = _lock(path)
        try:
            notes = ([lock.note] if lock.note else []) + (_stale_partials(final, keep=path) if final == path else [])
        except BaseException:
            lock.release()
            raise
        return cls(final, path, final != path and final.exists(), lock, notes)

    @property
    def is_partial(self) -> bool:
        return self.current != self.final

    def promote_if_free(self) -> None:
        """Move the partial onto the final name if that destroys nothing (``link``: never replaces)."""
        if not self.is_partial or self.had_old:
            return
        fault_point("rename", self.final.parent)
        try:
            os.link(self.current, self.final)
        except FileExistsError:
            self.had_old = True  # someone put a file there meanwhile: keep it
            return
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            if os.path.lexists(self.final):
                self.had_old = True
                return
            os.replace(self.current, self.final)
        else:
            fault_point("unlink", self.current)
            os.unlink(self.current)
        self._moved(self.final)

    def finish(self, status: str) -> Path:
        """Put the file where it belongs once the run has ended with ``status``; returns that path.

        ``complete``: onto the final name. ``interrupted``: onto the final name unless an older
        file is there (then it stays in its partial, resumable). ``failed``: onto the final name
        unless an older file is there, else next to it as ``NAME.failed.h5``.
        """
        if not self.is_partial:
            return self.current
        old = self.had_old or os.path.lexists(self.final)
        if status == "interrupted" and old:
            return self.current
        destination = _failed_path(self.final) if status == "failed" and old else self.final
        fault_point("rename", self.final.parent)
        os.replace(self.current, destination)
        self._moved(destination)
        return destination

    def check_space(self, nbytes: int, certain: bool) -> str | None:
        """Compare the output's estimated size with the free space of its file system: refuse
        (``certain``: uncompressed output) or return a warning (compressed output may fit)."""
        free = free_bytes(self.final.parent)
        if free is None or nbytes <= free:
            return None
        message = (f"{self.final}: the output needs about {nbytes / 2**20:.1f} MiB"
                   f"{'' if certain else ' before compression'} but {self.final.parent} has "
                   f"{free / 2**20:.1f} MiB free")  # fmt: skip
        if certain:
            raise OutputError(message + "; free space, use output.compression, or save fewer frames")
        return "warning: " + message

    def discard(self) -> None:
        """Remove a partial file that holds nothing committed (a failure while creating it)."""
        if self.is_partial and self.current.is_file():
            fault_point("unlink", self.current)
            self.current.unlink()

    def release(self) -> None:
        """Give up the output lock (idempotent)."""
        self.lock.release()


def check_file_output(final: str | os.PathLike, *, overwrite: bool, what: str) -> Path:
    """Check, before any work, the path a command writes one whole file to (``collect``'s table):
    refused (:class:`OutputError`) if its directory does not exist or is not writable, it is a
    symbolic link, it exists and is not a regular file (a directory, a device such as
    ``/dev/stdout``), it exists without ``overwrite``, or its name is too long. Write it with
    :func:`write_atomically`."""
    final = Path(final)
    if not final.parent.is_dir():
        raise OutputError(f"{final}: directory {final.parent} does not exist; create it first")
    _check_name(final)
    if final.is_symlink():
        raise OutputError(f"{final} is a symbolic link; give the path of a regular file for the {what}")
    _check_kind(final, what)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists; pass --overwrite to replace it")
    if not os.access(final.parent, os.W_OK):
        raise OutputError(f"{final}: directory {final.parent} is not writable")
    return final


def write_atomically(final: Path, write: Callable[[IO[str]], None]) -> None:
    """Write the text file ``final`` whole: ``write(f)`` into ``.NAME.PID.tmp`` next to it (created
    exclusively, not following links), fsync, rename onto ``final``; the temporary is removed whatever
    happens, so ``final`` is either untouched or the new file. A failed write names ``final``."""
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a process of this PID that was killed
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(final)) from None
    finally:
        tmp.unlink(missing_ok=True)
