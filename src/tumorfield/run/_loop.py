"""The chunk loop of ``run`` and ``sweep``: compiled ``advance`` calls, frames committed between them.

One compiled call advances ``run.chunk_frames`` frames of one run, or of a vmapped batch of runs,
with failures as values (``throw=False``): a non-finite value or a step beyond what the numerics
allow comes back as the trajectory's ``result``, with ``n_valid`` frames to keep. Each run's valid
frames, their per-step scalars and its last valid state are committed to its file outside jit
before the next call, so an interrupted or failed run always ends on a committed checkpoint; a run
of a batch that fails stops alone. Progress and the sub-cycling log are the same for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from tumorfield_kernels import ExplicitDiffusion, failure_message, step_limits

from .. import _compile_log
from .._progress import Progress
from ..io._writer import TrajectoryFile

LIMIT_NAME = "numerics.max_substeps"


def _commit(out: TrajectoryFile, traj, step: int, dt: float, steps_per_save: int, n: int) -> int:
    """Commit the first ``n`` frames of ``traj`` (host arrays), their steps' scalars (with every step's
    explicit sub-step count as ``substeps`` where the file has that series) and ``traj.final_state`` as
    the checkpoint at ``step + n·steps_per_save``; returns that step number."""
    sps = steps_per_save
    t = (step + sps * np.arange(1, n + 1)) * dt
    scalars_t = (step + np.arange(1, n * sps + 1)) * dt
    scalars = {name: np.asarray(v[: n * sps]) for name, v in (traj.observed or {}).items()}
    if "substeps" in out.h5["scalars"]:  # files written before issue 14 lack it
        scalars["substeps"] = np.asarray(traj.stats.step_substeps[: n * sps], np.float64)
    out.commit(
        {name: np.asarray(traj.fields[name][:n]) for name in out.frame_names},
        t,
        scalars_t,
        scalars,
        {name: np.asarray(v) for name, v in traj.final_state.items()},
        step + n * sps,
    )
    return step + n * sps


def implicit_hint(config, state, params, t: float) -> str | None:
    """Where the cells' explicit diffusion is what forces sub-cycling at ``state``: a line saying so,
    with the dt that ``numerics.cell_diffusion = "implicit"`` would take without it (else None)."""
    system, grid, dt = config.model.system, config.grid, config.time.dt
    try:
        limits = step_limits(system, grid, state, params, t=t, numerics=config.numerics)
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


class _SubcyclingLog:
    """Logs the most sub-steps a step has needed so far, when it grows (and, the first time, the
    implicit-diffusion hint)."""

    def __init__(self, run, log: Callable, label: str):
        self.run, self.log, self.label, self.most = run, log, label, 1

    def update(self, traj, n_valid: int) -> None:
        config = self.run.config
        cap = config.numerics.substeps.cap
        needed = int(np.max(traj.stats.substeps[:n_valid])) if n_valid > 0 else 1
        if not self.most < needed <= cap:
            return
        t = float(traj.t[n_valid - 1])
        self.log(f"{self.label}sub-cycling: by t = {t:.6g} day a step of dt = {config.time.dt} day needed "
                 f"{needed} explicit sub-steps ({LIMIT_NAME} = {cap}); see /scalars/substeps")  # fmt: skip
        if self.most == 1 and isinstance(config.numerics.cell_diffusion, ExplicitDiffusion):
            hint = implicit_hint(config, traj.final_state, self.run.problem.params, t)
            if hint:
                self.log(hint)
        self.most = needed


def chunk_loop(runs: Sequence, advance: Callable, state, step: int, stop, log: Callable, labels=None) -> list:
    """Advance ``runs`` (one, or a batch sharing a compiled rollout) from ``(state, step)`` to ``t_end``
    or a signal. ``advance(n_saves, state, step)`` returns the chunk's trajectory, with a leading member
    axis for a batch (``labels``: each member's name in the log, e.g. ``"member 3 "``; None: one run).
    Returns each run's failure message (None: no failure); a run's failure is reported after
    committing its valid frames, and the others go on."""
    config = runs[0].config
    dt, sps, n_frames = config.time.dt, config.steps_per_save, config.n_frames
    batched = labels is not None
    labels = labels or [""]
    sub_logs = [_SubcyclingLog(run, log, label) for run, label in zip(runs, labels, strict=True)]
    failures: list[str | None] = [None] * len(runs)
    progress = Progress(0.0, config.time.t_end, config.run.progress)
    progress.update(step * dt)
    first = True
    try:
        while step < config.n_steps and not stop and any(f is None for f in failures):
            n_saves = min(config.run.chunk_frames, n_frames - 1 - step // sps)
            compile_before, wall = _compile_log.seconds(), time.perf_counter()
            traj = jax.block_until_ready(advance(n_saves, state, step))
            if first:
                log(f"first chunk of {n_saves} frames{f' of a batch of {len(runs)}' if batched else ''} took "
                    f"{time.perf_counter() - wall:.2f} s, of which compilation "
                    f"{_compile_log.seconds() - compile_before:.2f} s (persistent cache: "
                    f"{_compile_log.cache_hits()} hits, {_compile_log.cache_misses()} misses so far)")  # fmt: skip
                first = False
            host = jax.tree_util.tree_map(np.asarray, traj)
            for i, run in enumerate(runs):
                if failures[i] is None:
                    mine = jax.tree_util.tree_map(lambda x, i=i: x[i], host) if batched else host
                    failures[i] = _commit_run(run, mine, step, sub_logs[i], log, labels[i])
            state, step = traj.final_state, step + n_saves * sps
            progress.update(step * dt)
        return failures
    finally:
        progress.close()


def _commit_run(run, traj, step: int, sub_log: _SubcyclingLog, log: Callable, label: str) -> str | None:
    """Commit one run's share of a chunk; its failure message, or None."""
    config = run.config
    n_valid = int(traj.n_valid)
    sub_log.update(traj, n_valid)
    if n_valid > 0:
        _commit(run.file, traj, step, config.time.dt, config.steps_per_save, n_valid)
        run.target.promote_if_free()
    if traj.successful:
        return None
    why = failure_message(traj, config.grid, config.time.dt, max_substeps=config.numerics.substeps.cap,
                          limit_name=LIMIT_NAME)  # fmt: skip
    message = f"{why}; {run.file.n_committed} earlier frames are kept"
    if label:
        log(f"{label}failed: {message}")
    return message
