"""Progress in simulated days: a tqdm bar on a terminal, plain lines every ~5 % otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report progress from ``t_start`` to ``t_end`` (days).

    ``mode`` is ``"bar"``, ``"lines"``, ``"none"`` or ``"auto"`` (bar when ``stream`` is a TTY).
    The first :meth:`update` says where computing starts (a resumed run: its checkpoint, not
    ``t_start``): the rate (day/s) and the ETA count from there and from that moment, so the days a
    resumed run did before it are not divided by the seconds of this process.
    """

    def __init__(self, t_start: float, t_end: float, mode: str = "auto", stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode, self.t_start, self.t_end = mode, t_start, t_end
        self.t = t_start
        self._wall0 = time.perf_counter()
        self._started = False
        self._next_line = 0.05
        self._bar = None

    def _open_bar(self, t: float) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.t_end,
            initial=t,
            unit="day",
            file=self.stream,
            bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} day [{elapsed}<{remaining}, {rate_fmt}]",
        )

    def _fraction(self, t: float) -> float:
        span = self.t_end - self.t_start
        return (t - self.t_start) / span if span > 0 else 1.0

    def update(self, t: float) -> None:
        """The simulation has reached ``t`` days (the first call: where it starts from)."""
        if not self._started:
            self._started, self._rate_t0, self._wall0 = True, t, time.perf_counter()
            if self.mode == "bar":
                self._open_bar(t)
            while self._next_line <= self._fraction(t) + 1e-12:  # no line for what was done before
                self._next_line += 0.05
            self.t = t
            return
        if self._bar is not None:
            self._bar.update(t - self.t)
        elif self.mode == "lines":
            fraction = self._fraction(t)
            if fraction >= self._next_line - 1e-12 or t >= self.t_end:
                wall = time.perf_counter() - self._wall0
                rate = (t - self._rate_t0) / wall if wall > 0 else float("inf")
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
