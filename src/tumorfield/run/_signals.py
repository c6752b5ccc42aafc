"""Signals as a flag: the run loop stops between chunks, on a committed checkpoint."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the loop stops after the chunk in flight."""

    signal_name: str | None = None
    _installed: list = field(default_factory=list)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
                self._installed.append((sig, signal.signal(sig, self._handle)))
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._installed:
            signal.signal(sig, old)
        self._installed.clear()

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None
