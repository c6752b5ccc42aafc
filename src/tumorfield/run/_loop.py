"""The run loop: chunked ``advance`` calls, frames committed to HDF5 between them.

One compiled call advances ``run.chunk_frames`` frames with the in-run checks on
and ``throw=False``: a non-finite value or a state beyond the positivity limit
comes back as the trajectory's ``result``, with ``n_valid`` frames to keep. The
valid frames, their per-step scalars and the last valid state are committed
outside jit before the next call, so an interrupted or failed run always ends on
a committed checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from tumorfield_kernels import advance, failure_message, step_limits

from .. import _compile_log
from .._progress import Progress
from ..io._writer import TrajectoryFile


class NumericalFailure(Exception):
    """A non-finite value, or a step beyond the positivity limit; the frames before it are committed."""


def _log_first_chunk(log, n_saves: int, wall: float, compiled: float) -> None:
    log(
        f"first chunk of {n_saves} frames took {wall:.2f} s, of which compilation {compiled:.2f} s "
        f"(persistent cache: {_compile_log.cache_hits()} hits, {_compile_log.cache_misses()} misses so far)"
    )


def _commit(out: TrajectoryFile, traj, state, step: int, dt: float, steps_per_save: int, n: int) -> int:
    """Commit the first ``n`` frames of ``traj`` (and their steps' scalars, with every step's
    explicit sub-step count as ``substeps`` where the file has that series), ``state`` as the
    checkpoint at ``step + n·steps_per_save``; returns that step number."""
    sps = steps_per_save
    t = (step + sps * np.arange(1, n + 1)) * dt
    scalars_t = (step + np.arange(1, n * sps + 1)) * dt
    scalars = {name: np.asarray(v[: n * sps]) for name, v in (traj.observed or {}).items()}
    if "substeps" in out.h5["scalars"]:  # files written before issue 14 lack it
        counts = traj.step_substeps if traj.step_substeps is not None else np.ones(n * sps)
        scalars["substeps"] = np.asarray(counts[: n * sps], np.float64)
    out.commit(
        {name: np.asarray(traj.fields[name][:n]) for name in out.frame_names},
        t,
        scalars_t,
        scalars,
        {name: np.asarray(v) for name, v in state.items()},
        step + n * sps,
    )
    return step + n * sps


def numerics_options(config) -> tuple[str, int]:
    """``(numerics.cell_diffusion, numerics.max_substeps)`` of a run config (a stored config of an
    older file has no ``[numerics]``: the scheme it was run with, explicit with no sub-cycling)."""
    numerics = config.sections.get("numerics", {})
    return numerics.get("cell_diffusion", "explicit"), numerics.get("max_substeps", 1)


def implicit_hint(config, state, params, t: float) -> str | None:
    """Where the cells' explicit diffusion is what forces sub-cycling at ``state``: a line saying so,
    with the dt that ``numerics.cell_diffusion = "implicit"`` would take without it (else None)."""
    system, grid, dt = config.model.system, config.grid, config.time.dt
    try:
        limits = step_limits(system, grid, state, params, t=t, dtype=config.output.precision)
    except ValueError:  # e.g. a cell field with fixed wall values: the implicit diffusion does not apply
        return None
    bound = {name: lim for name, lim in limits.items() if lim["explicit"] < dt <= lim["split"]}
    if not bound:
        return None
    split = min(lim["split"] for lim in limits.values())
    fields = ", ".join(f"{name} (limit {lim['explicit']:.3g} day, its diffusion alone {lim['diffusion']:.3g} day)"
                       for name, lim in bound.items())  # fmt: skip
    return (
        f"hint: the cells' explicit diffusion binds the step of {fields} at t = {t:.6g} day; "
        f'numerics.cell_diffusion = "implicit" takes its diffusion out of the limit (dt up to {split:.3g} day '
        "there, without sub-cycling; docs/numerics.md section 4b)"
    )


def run_loop(config, out: TrajectoryFile, state, step: int, params, observe: Callable, stop, log, on_commit) -> str:
    """Advance from ``(state, step)`` to ``t_end``; returns ``"complete"`` or ``"interrupted"``.

    Raises :class:`NumericalFailure` after committing every valid frame.
    """
    system, grid, dt, sps = config.model.system, config.grid, config.time.dt, config.steps_per_save
    cell_diffusion, cap = numerics_options(config)
    most = 1  # the most sub-steps a step has needed so far (logged when it grows)
    progress = Progress(0.0, config.time.t_end, config.run.progress)
    progress.update(step * dt)
    first = True
    try:
        while out.n_committed < config.n_frames:
            if stop:
                return "interrupted"
            n_saves = min(config.run.chunk_frames, config.n_frames - out.n_committed)
            compile_before, wall = _compile_log.seconds(), time.perf_counter()
            new_state, _, traj = jax.block_until_ready(
                advance(
                    system, grid, state, dt=dt, n_saves=n_saves, steps_per_save=sps, params=params, step=step,
                    observe=observe, dtype=config.output.precision, throw=False,
                    cell_diffusion=cell_diffusion, max_substeps=cap,
                )
            )  # fmt: skip
            if first:
                _log_first_chunk(log, n_saves, time.perf_counter() - wall, _compile_log.seconds() - compile_before)
                first = False
            n_valid = int(traj.n_valid)
            needed = int(np.max(np.asarray(traj.substeps)[:n_valid])) if n_valid > 0 else 1
            if most < needed <= cap:
                log(f"sub-cycling: by t = {float(traj.t[n_valid - 1]):.6g} day a step of dt = {dt} day needed "
                    f"{needed} explicit sub-steps (numerics.max_substeps = {cap}); see /scalars/substeps")  # fmt: skip
                if most == 1 and cell_diffusion == "explicit":
                    hint = implicit_hint(config, new_state, params, float(traj.t[n_valid - 1]))
                    if hint:
                        log(hint)
                most = needed
            if n_valid > 0:
                state = new_state
                step = _commit(out, traj, state, step, dt, sps, n_valid)
                on_commit()
                progress.update(step * dt)
            if not traj.successful:
                why = failure_message(traj, grid, dt, max_substeps=cap, limit_name="numerics.max_substeps")
                raise NumericalFailure(f"{why}; {out.n_committed} earlier frames are kept")
        return "complete"
    finally:
        progress.close()
