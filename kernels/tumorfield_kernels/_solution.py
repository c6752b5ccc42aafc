"""What a rollout returns: saved frames, and how the run ended (:class:`RESULTS`)."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Int

from ._grid import Grid

POSITIVITY_TOLERANCE = 1e-6
"""Relative slack of the positivity test ``dt · bound ≤ 1 + tolerance`` (float32 round-off of the bound)."""


class RESULTS(eqx.Enumeration):
    """How a rollout ended; ``Trajectory.result`` holds one of these (an array inside jit)."""

    successful = ""
    positivity_limit_exceeded = (
        "the time step exceeds the positivity limit of the explicit part (taxis gradients steepened during "
        "the run); use a smaller dt, or check max_stable_dt on the last good frame"
    )
    nonfinite_state = "a field became NaN or infinite"
    substep_limit_exceeded = (
        "a step needed more explicit sub-steps than max_substeps allows (taxis gradients steepened during "
        "the run); use a smaller dt or a larger max_substeps"
    )


class SolverError(RuntimeError):
    """A rollout called with ``throw=True`` did not end successfully; the message says where and why."""


class Stats(eqx.Module):
    """Diagnostics of a rollout, apart from the solution (diffrax's ``Solution.stats``).

    ``rate_bound[name]`` (1/day, ``(T,)``) is the explicit outflow-rate bound of each explicitly
    limited field at each frame: the step was within the positivity limit while ``dt · bound ≤ 1``
    (``{}`` without the check). ``substeps`` (``int32``, ``(T,)``) is, per frame, the largest number
    of explicit sub-steps one of its steps needed (``⌈dt · bound⌉``; 1: no sub-cycling; 0 for frame 0
    and for frames not computed); above ``max_substeps`` in the frame that ended a run with
    ``substep_limit_exceeded``. ``step_substeps`` (``(S,)``, one per step after the start, aligned
    with ``Trajectory.t_observed``) is every step's count.
    """

    rate_bound: dict[str, Array]
    substeps: Int[Array, " T"]  # noqa: F722
    step_substeps: Int[Array, " S"]  # noqa: F722


class Trajectory(eqx.Module):
    """Saved frames of a simulation and how it ended.

    ``t`` (days) has shape ``(T,)``; ``fields[name]`` has shape ``(T, *grid.shape)``.
    ``observed[name]`` holds per-step observables, at times ``t_observed``.
    ``result`` is a :class:`RESULTS` item and ``n_valid`` the number of leading frames that are
    solutions: all ``T`` when ``result`` is ``successful``. After a positivity failure the frame
    whose state would break positivity on its next step is still valid; after a non-finite one the
    first bad frame is not. Frames past ``n_valid`` (and their times and observables) are NaN,
    except the non-finite frame itself, kept so that it can be inspected.
    ``stats`` holds the diagnostics (:class:`Stats`). ``final_state`` is the last valid state and
    ``final_step`` its step number: the start of the next :func:`advance` of a run in pieces.
    """

    t: Float[Array, " T"]  # noqa: F722
    fields: dict[str, Array]
    t_observed: Float[Array, " S"] | None  # noqa: F722
    observed: dict[str, Array] | None
    result: RESULTS
    n_valid: Int[Array, ""]  # noqa: F722
    stats: Stats | None = None
    final_state: dict[str, Array] | None = None
    final_step: Int[Array, ""] | None = None  # noqa: F722

    def __getitem__(self, name: str) -> Array:
        return self.fields[name]

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def successful(self) -> bool:
        """Whether the run ended successfully (concrete trajectories only)."""
        return bool(self.result == RESULTS.successful)


def _is_traced(traj: Trajectory) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(traj))


def _cell_description(data: np.ndarray, grid: Grid) -> str:
    index = np.unravel_index(int(np.argmax(~np.isfinite(data))), data.shape)
    coords = ", ".join(
        f"{axis}={grid.coordinates(a)[i]:.4g} mm"
        for a, (axis, i) in enumerate(zip(grid.axis_names, index, strict=True))
    )
    return f"at cell {tuple(int(i) for i in index)} ({coords}), value {data[index]}"


def nonfinite_message(traj: Trajectory, grid: Grid, frame: int) -> str:
    """``field 'u' is not finite at t = … day at cell (i, j) (y=… mm, x=… mm), value nan``."""
    t = float(traj.t[frame])
    for name, data in traj.fields.items():
        value = np.asarray(data[frame])
        if not np.all(np.isfinite(value)):
            where = f"(scalar variable, value {value})" if value.ndim == 0 else _cell_description(value, grid)
            return f"field {name!r} is not finite at t = {t:.6g} day {where}"
    return f"a field is not finite at t = {t:.6g} day"


def positivity_message(traj: Trajectory, dt: float, frame: int, where: str = "") -> str:
    """``field 'u': [where, ]at t = … day, dt = … day exceeds the positivity limit …`` for the state
    of ``frame`` (``frame = −1``: the state the call started from)."""
    advice = "use a smaller dt, or check max_stable_dt on the last good frame"
    if frame < 0:
        return f"at the start of this call, dt = {dt} day exceeds the positivity limit of the explicit part; {advice}"
    over = {
        name: 1.0 / float(bound[frame])
        for name, bound in traj.stats.rate_bound.items()
        if dt * float(bound[frame]) > 1.0 + POSITIVITY_TOLERANCE
    }
    detail = ", ".join(f"{name!r} {limit:.4g} day" for name, limit in over.items())
    return (
        f"field{'s' if len(over) > 1 else ''} {', '.join(map(repr, over))}: {where}at t = {float(traj.t[frame]):.6g} "
        f"day, dt = {dt} day exceeds the positivity limit of the explicit part ({detail}; taxis gradients "
        f"steepened during the run); {advice}"
    )


def substep_message(
    traj: Trajectory, dt: float, frame: int, max_substeps: int, where: str = "", limit_name: str = "max_substeps"
) -> str:
    """``[where, ]by t = … day, a step of dt = … day needed N explicit sub-steps, more than
    max_substeps = M …`` for the frame that ended a run with ``substep_limit_exceeded``
    (``frame = −1``: the state the call started from)."""
    advice = f"use a smaller dt or raise {limit_name}"
    if frame < 0 or traj.stats is None:
        return (
            f"at the start of this call, a step of dt = {dt} day needs more explicit sub-steps than "
            f"{limit_name} = {max_substeps} (taxis gradients too steep for dt / {max_substeps}); {advice}"
        )
    needed = int(traj.stats.substeps[frame])
    return (
        f"{where}by t = {float(traj.t[frame]):.6g} day, a step of dt = {dt} day needed {needed} explicit "
        f"sub-steps (dt / {needed} = {dt / needed:.4g} day to stay within the positivity limit; taxis gradients "
        f"steepened during the run), more than {limit_name} = {max_substeps}; {advice}"
    )


def failure_message(traj: Trajectory, grid: Grid, dt: float, where=lambda frame: "", max_substeps: int = 1,
                    limit_name: str = "max_substeps") -> str | None:  # fmt: skip
    """Why a concrete trajectory did not end successfully (None if it did), naming the field,
    the time and, for a non-finite value, the cell. ``where(frame)`` may name the frame;
    ``max_substeps`` is the cap the run had and ``limit_name`` what the message calls it."""
    if traj.successful:
        return None
    n_valid = int(traj.n_valid)
    if traj.result == RESULTS.nonfinite_state:
        return nonfinite_message(traj, grid, n_valid)
    if traj.result == RESULTS.substep_limit_exceeded:
        computed = traj.stats is not None and n_valid < len(traj) and int(traj.stats.substeps[n_valid]) > 0
        frame = n_valid if computed else -1  # not computed: refused at the start of the call
        return substep_message(traj, dt, frame, max_substeps, where(frame) if frame >= 0 else "", limit_name)
    return positivity_message(traj, dt, n_valid - 1, where(n_valid - 1))


def raise_if_failed(traj: Trajectory, describe) -> Trajectory:
    """``throw=True``: raise :class:`SolverError` with ``describe(traj)`` after the call; inside a
    trace (``jit``/``grad``/``vmap`` of the caller), an ``eqx`` runtime error with the result's message."""
    if _is_traced(traj):
        return traj.result.error_if(traj, traj.result != RESULTS.successful)
    if not traj.successful:
        raise SolverError(describe(traj))
    return traj
