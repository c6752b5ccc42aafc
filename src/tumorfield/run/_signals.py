"""Signals as a flag: the run loop stops between chunks, on a committed checkpoint.

The CLI calls :func:`catch_early` first thing, so a SIGTERM/SIGUSR1/SIGINT that arrives
while JAX starts or compiles is remembered (:func:`pending`) instead of lost: before the
file exists :class:`~tumorfield.run.Run` stops with nothing written; after frame 0 is
committed the loop's :class:`StopFlag` sees it and stops on a checkpoint.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_early: dict = {"signal": None}


def _handlers(handle) -> list:
    """Install ``handle`` for :data:`SIGNALS` (main thread only); returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return []
    return [(sig, signal.signal(sig, handle)) for sig in SIGNALS]


def _restore(installed: list) -> None:
    for sig, old in installed:
        signal.signal(sig, old)
    installed.clear()


def _remember(signum, frame) -> None:
    _early["signal"] = signal.Signals(signum).name


def catch_early() -> Callable[[], None]:
    """Remember :data:`SIGNALS` from now on (see :func:`pending`); returns the function that
    restores the previous handlers and forgets."""
    installed = _handlers(_remember)

    def restore() -> None:
        _restore(installed)
        _early["signal"] = None

    return restore


def pending() -> str | None:
    """The name of a signal caught since :func:`catch_early`, if any."""
    return _early["signal"]


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT (or one caught early); the loop stops after the chunk in flight."""

    signal_name: str | None = None
    _installed: list = field(default_factory=list)

    def __enter__(self) -> StopFlag:
        self.signal_name = self.signal_name or pending()
        self._installed = _handlers(self._handle)
        return self

    def __exit__(self, *exc) -> None:
        _restore(self._installed)

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        _early["signal"] = self.signal_name

    def __bool__(self) -> bool:
        return self.signal_name is not None
