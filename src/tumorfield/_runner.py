"""The run loop: chunked ``advance`` calls, frames streamed to HDF5 between them.

One compiled call advances ``run.chunk_frames`` frames; its frames, per-step
scalars and final state are written and committed outside jit before the next
call. Signals only set a flag, checked between chunks, so an interrupted run
always ends on a committed checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import advance, cast_floats, max_stable_dt
from tumorfield_kernels import initial_frame as solved_initial_frame

from . import _compile_log
from ._hdf5 import TrajectoryFile
from ._progress import Progress
from .config import RunConfig


class NumericalFailure(Exception):
    """NaN/Inf in a frame, or a positivity (step-size) violation raised inside the solver."""


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the loop stops after the chunk in flight."""

    signal_name: str | None = None
    _installed: list = field(default_factory=list)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            self._installed.append((sig, signal.signal(sig, self._handle)))

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._installed:
            signal.signal(sig, old)
        self._installed.clear()

    def __bool__(self) -> bool:
        return self.signal_name is not None


def run_dtype(config: RunConfig):
    return jnp.dtype(config.output["precision"])


def make_observe(config: RunConfig) -> Callable:
    """The per-step observable, created once per run: ``advance`` compiles per function object."""
    model, grid = config.model, config.grid

    def observe(state, params, t):
        return model.observe(state, params, t, grid)

    return observe


def initial_frame(config: RunConfig, params, observe, log: Callable[[str], None]):
    """State at t = 0 (quasi-steady fields solved) and the observables there."""
    dtype = run_dtype(config)
    system, grid = config.model.system, config.grid
    frame = solved_initial_frame(system, grid, config.model.initial_state(grid), params, dtype=dtype)
    t0 = jnp.zeros((), dtype)
    scalars = jax.jit(observe)(frame, params, t0)
    return frame, scalars


def _first_nonfinite(frames: dict[str, np.ndarray], grid, system) -> tuple[int, str] | None:
    """(frame index, message) of the earliest non-finite value, else None."""
    worst = None
    for name, data in frames.items():
        bad = ~np.isfinite(data.reshape(data.shape[0], -1)).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            if worst is None or k < worst[0]:
                if name in system.scalars:
                    where = f"(scalar variable, value {data[k]})"
                else:
                    index = np.unravel_index(int(np.argmax(~np.isfinite(data[k]))), data[k].shape)
                    coords = ", ".join(
                        f"{axis}={grid.coordinates(a)[i]:.4g} mm"
                        for a, (axis, i) in enumerate(zip(grid.axis_names, index, strict=True))
                    )
                    where = f"at cell {tuple(int(i) for i in index)} ({coords}), value {data[k][index]}"
                worst = (k, f"field {name!r} is not finite {{time}} {where}")
    return worst


def stability_violation(system, grid, state, params, t: float, dt: float, dtype) -> str | None:
    """Why ``dt`` is beyond the positivity limit of the explicit part at ``state``, else None.

    The same test as ``advance(check_stability=True)`` makes per frame, done here on the
    host: inside jit it is an ``eqx.error_if`` host callback, and a compiled program with
    a host callback is never stored in the persistent compilation cache.
    """
    limits = max_stable_dt(system, grid, state, params, t=t, dtype=dtype)
    too_large = {name: limit for name, limit in limits.items() if dt > limit * (1 + 1e-6)}
    if not too_large:
        return None
    detail = ", ".join(f"{name!r} {limit:.4g} day" for name, limit in too_large.items())
    return f"dt = {dt} day exceeds the positivity limit of the explicit part ({detail})"


def _solver_error(error: Exception) -> str | None:
    """The message of an ``eqx.error_if`` raised inside the compiled rollout, else None.

    Under ``jax.jit`` it arrives wrapped in a ``JaxRuntimeError`` from the host callback."""
    for line in str(error).splitlines():
        if "EquinoxRuntimeError:" in line:
            return line.split("EquinoxRuntimeError:", 1)[1].strip()
    if isinstance(error, eqx.EquinoxRuntimeError):
        lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith("-")]
        return lines[0] if lines else type(error).__name__
    return None


def run_loop(
    config: RunConfig,
    out: TrajectoryFile,
    state,
    step: int,
    params,
    observe: Callable,
    stop: StopFlag,
    log: Callable[[str], None],
    on_commit: Callable[[], None] = lambda: None,
) -> str:
    """Advance from ``(state, step)`` to ``t_end``; returns ``"complete"`` or ``"interrupted"``.

    Raises :class:`NumericalFailure` after committing every finite frame.
    """
    system, grid = config.model.system, config.grid
    dt, sps, dtype = config.time["dt"], config.steps_per_save, run_dtype(config)
    chunk = config.run["chunk_frames"]
    total = config.n_frames
    progress = Progress(0.0, config.time["t_end"], config.run["progress"])
    progress.update(step * dt)
    first = True
    try:
        while out.n_committed < total:
            if stop:
                return "interrupted"
            n_saves = min(chunk, total - out.n_committed)
            compile_before = _compile_log.seconds()
            wall = time.perf_counter()
            try:
                new_state, new_step, traj = jax.block_until_ready(
                    advance(
                        system, grid, state, dt=dt, n_saves=n_saves, steps_per_save=sps, params=params,
                        step=step, observe=observe, dtype=dtype, check_stability=False,
                    )
                )  # fmt: skip
            except (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError) as error:
                detail = _solver_error(error)
                if detail is None:
                    raise
                raise NumericalFailure(
                    f"solver stopped between t = {step * dt:.6g} and {(step + n_saves * sps) * dt:.6g} day: "
                    f"{detail}; {out.n_committed} earlier frames are kept"
                ) from None
            if first:
                wall = time.perf_counter() - wall
                compiled = _compile_log.seconds() - compile_before
                log(
                    f"first chunk of {n_saves} frames took {wall:.2f} s, of which compilation {compiled:.2f} s "
                    f"(persistent-cache hits so far: {_compile_log.cache_hits()})"
                )
                first = False
            frames = {name: np.asarray(v) for name, v in traj.fields.items()}
            scalars = {name: np.asarray(v) for name, v in (traj.observed or {}).items()}
            t = (step + sps * np.arange(1, n_saves + 1)) * dt
            scalars_t = (step + np.arange(1, n_saves * sps + 1)) * dt
            # commit up to the first bad frame: a NaN/Inf frame is dropped, a frame from which
            # the next step would break positivity is kept (it is itself still valid)
            failure = _first_nonfinite(frames, grid, system)
            keep = n_saves if failure is None else failure[0]
            for k in range(keep):
                why = stability_violation(
                    system, grid, {n: f[k] for n, f in frames.items()}, params, float(t[k]), dt, dtype
                )
                if why is not None:
                    keep, failure = k + 1, (k, why + " {time}; use a smaller time.dt")
                    break
            if keep > 0:
                step = step + keep * sps
                state = new_state if keep == n_saves else {n: f[keep - 1] for n, f in frames.items()}
                out.commit(
                    {n: f[:keep] for n, f in frames.items()},
                    t[:keep],
                    scalars_t[: keep * sps],
                    {n: v[: keep * sps] for n, v in scalars.items()},
                    {n: np.asarray(v) for n, v in state.items()},
                    step,
                )
                on_commit()
                progress.update(step * dt)
            if failure is not None:
                k, message = failure
                raise NumericalFailure(
                    message.format(time=f"at t = {t[k]:.6g} day") + f"; {out.n_committed} earlier frames are kept"
                )
            assert step == int(new_step)
        return "complete"
    finally:
        progress.close()


def prepare_params(config: RunConfig):
    return cast_floats(config.model.params(), run_dtype(config))
