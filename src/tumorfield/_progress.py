"""Progress in simulated days: a tqdm bar on a terminal, plain lines every ~5 % otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report progress from ``t_start`` to ``t_end`` (days).

    ``mode`` is ``"bar"``, ``"lines"``, ``"none"`` or ``"auto"`` (bar when ``stream`` is a TTY).
    """

    def __init__(self, t_start: float, t_end: float, mode: str = "auto", stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode, self.t_start, self.t_end = mode, t_start, t_end
        self.t = t_start
        self._wall0 = time.perf_counter()
        self._next_line = 0.05
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=t_end,
                initial=t_start,
                unit="day",
                file=self.stream,
                bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} day [{elapsed}<{remaining}, {rate_fmt}]",
            )

    def update(self, t: float) -> None:
        """The simulation has reached ``t`` days."""
        if self._bar is not None:
            self._bar.update(t - self.t)
        elif self.mode == "lines":
            span = self.t_end - self.t_start
            fraction = (t - self.t_start) / span if span > 0 else 1.0
            if fraction >= self._next_line - 1e-12 or t >= self.t_end:
                wall = time.perf_counter() - self._wall0
                rate = (t - self.t_start) / wall if wall > 0 else float("inf")
                eta = (self.t_end - t) / rate if rate > 0 else float("inf")
                print(
                    f"tumorfield: t = {t:.6g}/{self.t_end:.6g} day ({100 * t / self.t_end:.0f} %), "
                    f"{rate:.3g} day/s, ETA {eta:.0f} s",
                    file=self.stream,
                    flush=True,
                )
                while self._next_line <= fraction + 1e-12:
                    self._next_line += 0.05
        self.t = t

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
