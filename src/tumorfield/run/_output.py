"""Where a run's trajectory file lives, from its first byte to its final name.

A new run writes ``.NAME.PID.partial`` next to ``NAME``. With no older ``NAME`` the
partial is moved onto it as soon as frame 0 is committed (so ``inspect`` and
``resume`` find it under its name while it runs). With an older ``NAME``
(``--overwrite``) the older file is kept until the new run completes or is
interrupted cleanly; a failed run is moved to ``NAME.failed.h5`` instead, so a
failed run never destroys earlier output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be used (exit code 2, before any compute)."""


def _failed_path(final: Path) -> Path:
    return final.with_name(final.stem + ".failed" + (final.suffix or ".h5"))


def partial_target(path: Path, recorded: str | None) -> Path | None:
    """The final name of a killed run's partial file, if ``path`` is one and ``recorded`` (its
    ``target`` attribute) names the file it belongs to: the same directory and the name that
    :class:`OutputTarget` gives its partials. Anything else is not trusted."""
    match = re.fullmatch(r"\.(.+)\.\d+\.partial", path.name)
    if not recorded or match is None:
        return None
    target = Path(recorded)
    if target.name != match.group(1) or target.parent.resolve() != path.parent.resolve():
        return None
    return target


@dataclass
class OutputTarget:
    """The final path of a run's output, and the path it is being written at (:attr:`current`)."""

    final: Path
    current: Path
    had_old: bool

    @classmethod
    def new(cls, final: str | os.PathLike, *, overwrite: bool) -> OutputTarget:
        """Check ``final`` before any compute: refused if it exists (without ``overwrite``), is not a
        regular file, or its directory cannot be created or written."""
        final = Path(final)
        if final.exists() and not overwrite:
            raise OutputError(f"{final} exists; pass --overwrite to replace it (it is kept until the new run succeeds)")
        if final.exists() and not final.is_file():
            raise OutputError(f"{final} exists and is not a regular file; give a file path for the output")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{final}: cannot create directory {final.parent} ({error.strerror})") from None
        if not os.access(final.parent, os.W_OK):
            raise OutputError(f"{final}: directory {final.parent} is not writable")
        partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
        return cls(final, partial, final.exists())

    @classmethod
    def existing(cls, path: str | os.PathLike, recorded_target: str | None) -> OutputTarget:
        """The target of a file being resumed: itself, or the final name of a killed run's partial."""
        path = Path(path)
        final = partial_target(path, recorded_target) or path
        return cls(final, path, final != path)

    @property
    def is_partial(self) -> bool:
        return self.current != self.final

    def promote_if_free(self) -> None:
        """Move the partial onto the final name if that destroys nothing."""
        if self.is_partial and not self.had_old and not self.final.exists():
            os.replace(self.current, self.final)
            self.current = self.final

    def finish(self, status: str) -> Path:
        """Put the file where it belongs once the run has ended with ``status``; returns that path.

        ``complete`` / ``interrupted``: onto the final name. ``failed``: onto the final name only
        if no older file is there, else next to it as ``NAME.failed.h5``.
        """
        if self.is_partial:
            keep_old = status == "failed" and (self.had_old or self.final.exists())
            destination = _failed_path(self.final) if keep_old else self.final
            os.replace(self.current, destination)
            self.current = destination
        return self.current

    def discard(self) -> None:
        """Remove a partial file that holds nothing committed (a failure while creating it)."""
        if self.is_partial and self.current.exists():
            self.current.unlink()
