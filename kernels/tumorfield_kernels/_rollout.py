"""The rollout: saved frames of repeated steps as nested ``lax.scan``, failures as results.

``rollout`` scans over frames and, within each, over steps with the numerics' adjoint
(:class:`Scan`, or :class:`SqrtCheckpointed` reverse mode). After each frame it
checks the frame: a non-finite value, or a state from which the next step would
break positivity (``dt · bound > 1``), ends the run as a :class:`RESULTS` value;
later frames are skipped (``lax.cond``) and returned as NaN. There are no host
callbacks, so compiled rollouts go into JAX's persistent cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._solution import POSITIVITY_TOLERANCE, RESULTS, Stats, Trajectory
from ._stepper import Stepper


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _within_limit(bounds, dt) -> jax.Array:
    ok = [dt * bound <= 1.0 + POSITIVITY_TOLERANCE for bound in bounds.values()]
    return jnp.all(jnp.stack(ok)) if ok else jnp.asarray(True)


def _nan_like(tree):
    """A tree of the structure of ``tree`` (arrays or ShapeDtypeStructs): NaN floats, zero integers."""

    def fill(x):
        return jnp.full(x.shape, jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else 0, x.dtype)

    return jax.tree_util.tree_map(fill, tree)


def rollout(stepper: Stepper, state, step, t_start, n_saves: int, steps_per_save: int, observe) -> Trajectory:
    """``n_saves`` frames of ``steps_per_save`` steps each from ``state`` at step number ``step``.

    Step ``n`` runs at ``t_start + n·dt``. Returns the :class:`Trajectory` of the frames after the
    start (not the start itself), with the last valid state and its step number
    (``final_state``, ``final_step``), the per-step observables (None without ``observe``) and the
    diagnostics in ``stats``: each frame's rate bounds (``{}`` when the numerics check nothing),
    each frame's largest number of explicit sub-steps needed by one of its steps and every step's
    (0 for steps not run).

    Without sub-cycling a frame from which the next step would break positivity ends the run
    (``positivity_limit_exceeded``; that frame is valid). With it, the steps sub-cycle instead,
    and a frame one of whose steps needed more than ``max_substeps`` ends it
    (``substep_limit_exceeded``; that frame is not valid).
    """
    dt, substeps = stepper.dt, stepper.numerics.substeps
    frame_step = _FrameFunction(stepper, t_start, steps_per_save, observe)
    check = _FrameCheck(dt, substeps.cap, substeps.checks_positivity)
    start = check.at_start(_all_finite(state), _bounds(stepper, state, t_start + step.astype(dt.dtype) * dt, False))

    def one_frame(carry, _):
        state, n, result, n_valid = carry
        running = result == RESULTS.successful
        frame, n_new, t, observed, bounds, step_substeps = lax.cond(
            running, frame_step.compute, frame_step.skip, state, n
        )
        substeps_needed = jnp.max(step_substeps)
        finite = _all_finite(frame)
        within, enough = check.after_frame(bounds, substeps_needed)
        advanced = running & finite & enough
        result = RESULTS.where(running, _ending(finite, within, enough), result)
        state = jax.tree_util.tree_map(lambda new, old: jnp.where(advanced, new, old), frame, state)
        n = jnp.where(advanced, n_new, n)
        return (state, n, result, n_valid + advanced.astype(n_valid.dtype)), (
            frame, t, observed, bounds, substeps_needed, step_substeps
        )  # fmt: skip

    carry = (state, step, start, jnp.zeros((), jnp.int32))
    (state, step, result, n_valid), (frames, times, observed, bounds, per_frame, per_step) = lax.scan(
        one_frame, carry, None, length=n_saves
    )
    per_step = per_step.reshape(n_saves * steps_per_save)
    t_observed = None
    if observed is not None:
        observed = jax.tree_util.tree_map(lambda x: x.reshape((n_saves * steps_per_save,) + x.shape[2:]), observed)
        # observable j is recorded after step number first + j (of the valid run, NaN after a failure)
        first = step - (n_valid * steps_per_save - 1)
        index = first + jnp.arange(n_saves * steps_per_save, dtype=step.dtype)
        t_observed = jnp.where(index <= step, t_start + index.astype(dt.dtype) * dt, jnp.nan)
    stats = Stats(bounds, per_frame, per_step)
    return Trajectory(times, frames, t_observed, observed, result, n_valid, stats, state, step)


def _bounds(stepper: Stepper, state, t, solved=True) -> dict:
    """The rate bounds at ``state`` where the numerics check the positivity limit, else ``{}``."""
    return stepper.rate_bounds(state, t, solved=solved) if stepper.numerics.substeps.checks_positivity else {}


class _FrameFunction:
    """One frame of steps (``compute``) and its stand-in after a failure (``skip``: no steps; NaN
    frame, time, observables and bounds; 0 sub-steps), for ``lax.cond``."""

    def __init__(self, stepper: Stepper, t_start, steps_per_save: int, observe):
        self.stepper, self.t_start, self.steps_per_save, self.observe = stepper, t_start, steps_per_save, observe

    def time_of(self, n):
        return self.t_start + n.astype(self.stepper.dt.dtype) * self.stepper.dt

    def one_step(self, carry, _):
        state, carried, n = carry
        state, carried, needed = self.stepper.step(state, carried, self.time_of(n))
        observed = None if self.observe is None else self.observe(state, self.stepper.params, self.time_of(n + 1))
        return (state, carried, n + 1), (observed, needed)

    def compute(self, state, n):
        scan = self.stepper.numerics.adjoint
        (state, _, n), (observed, needed) = scan(self.one_step, (state, self.stepper.prepare(state), n),
                                                 self.steps_per_save)  # fmt: skip
        t = self.time_of(n)
        frame = self.stepper.solve_quasi_steady(state, t)
        return frame, n, t, observed, _bounds(self.stepper, frame, t), needed

    def skip(self, state, n):
        t, params, sps = self.time_of(n), self.stepper.params, self.steps_per_save
        per_step = None if self.observe is None else jax.eval_shape(lambda s: self.observe(s, params, t), state)
        per_step = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((sps, *x.shape), x.dtype), per_step)
        bounds = jax.eval_shape(lambda s: _bounds(self.stepper, s, t), state)
        return (*_nan_like((state,)), n, *_nan_like((t, per_step, bounds)), jnp.zeros((sps,), jnp.int32))


class _FrameCheck:
    """The positivity test of the numerics: without sub-cycling ``dt · bound ≤ 1`` at every frame;
    with it, the steps' sub-step counts within the cap (and ``dt/cap · bound ≤ 1`` at the start)."""

    def __init__(self, dt, cap: int, checks: bool):
        self.dt, self.cap, self.checks = dt, cap, checks

    def at_start(self, finite, bounds):
        if self.cap == 1:
            return _ending(finite, _within_limit(bounds, self.dt), jnp.asarray(True))
        return _ending(finite, jnp.asarray(True), _within_limit(bounds, self.dt / self.cap))

    def after_frame(self, bounds, substeps_needed):
        if self.cap == 1:
            return _within_limit(bounds, self.dt), jnp.asarray(True)
        return jnp.asarray(True), (substeps_needed <= self.cap if self.checks else jnp.asarray(True))


def _ending(finite, within, enough) -> RESULTS:
    """The result after a frame: non-finite, else too many sub-steps, else beyond the positivity
    limit, else successful."""
    positivity = RESULTS.where(within, RESULTS.successful, RESULTS.positivity_limit_exceeded)
    substeps = RESULTS.where(enough, positivity, RESULTS.substep_limit_exceeded)
    return RESULTS.where(finite, substeps, RESULTS.nonfinite_state)
