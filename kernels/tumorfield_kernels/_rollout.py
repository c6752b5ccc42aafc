"""The rollout: saved frames of repeated steps as nested ``lax.scan``, failures as results.

``rollout`` scans over frames and, within each, over steps with a :class:`Scan`
(plain, or with √n checkpointing of the reverse pass). After each frame it
checks the frame: a non-finite value, or a state from which the next step would
break positivity (``dt · bound > 1``), ends the run as a :class:`RESULTS` value;
later frames are skipped (``lax.cond``) and returned as NaN. There are no host
callbacks, so compiled rollouts go into JAX's persistent cache.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._solution import POSITIVITY_TOLERANCE, RESULTS
from ._stepper import Stepper


class Scan(eqx.Module):
    """``lax.scan`` over the steps of a frame; reverse mode stores every step's residuals."""

    def __call__(self, step, carry, length):
        return lax.scan(step, carry, None, length=length)


class SqrtCheckpointedScan(Scan):
    """``lax.scan(step, carry, None, length)`` whose reverse pass stores O(√length) carries.

    Two levels (Griewank & Walther, *Evaluating Derivatives*, 2008, ch. 12): ``length =
    blocks × size + rest`` (``size`` from :func:`block_size`: a divisor of ``length`` where
    one lies in ``[√length, 2√length]``, so that ``rest = 0``); the forward pass keeps only
    the carry entering each block, and the backward pass re-runs one block at a time, keeping
    the carry entering each of its steps and re-running each step for its VJP
    (``jax.checkpoint`` on both levels). Memory is ``blocks + size`` (``2√length`` to
    ``3√length``) carries plus one step's residuals (a rollout of ``F`` frames keeps every
    frame's block carries: ``F·blocks + size``, ``blocks ≤ √length``); the forward pass runs
    three times in all. Plain JAX AD, so the reverse pass traces the step only ``O(1)`` times
    (``equinox.internal.scan(kind="checkpointed")`` spent ~80 % of the tracing of a
    voloshin2015 gradient in its perturbation analysis). A remainder (``rest > 0``) is a
    second, shorter scan: a second copy of the step's forward and reverse code in the program,
    which :func:`block_size` avoids wherever it can.
    """

    def __call__(self, step, carry, length):
        size = block_size(length)
        blocks, rest = divmod(length, size)
        checkpointed_step = jax.checkpoint(step, prevent_cse=False)

        @functools.partial(jax.checkpoint, prevent_cse=False)
        def block(carry, _):
            return lax.scan(checkpointed_step, carry, None, length=size)

        carry, observed = lax.scan(block, carry, None, length=blocks)
        observed = jax.tree_util.tree_map(lambda x: x.reshape((blocks * size,) + x.shape[2:]), observed)
        if rest:
            carry, tail = jax.checkpoint(lambda c: lax.scan(checkpointed_step, c, None, length=rest))(carry)
            observed = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), observed, tail)
        return carry, observed


def block_size(length: int) -> int:
    """Steps per block of :class:`SqrtCheckpointedScan`: the smallest divisor of ``length`` in
    ``[√length, 2√length]`` (no remainder block, whose scan would copy the step's code into the
    program once more; at most ``√length`` blocks, whose entering carries a rollout of several
    frames keeps for every frame), else ``⌊√length⌋`` (with a remainder)."""
    root = max(1, math.isqrt(length))
    start = root if root * root == length else root + 1
    for size in range(start, 2 * root + 1):
        if length % size == 0:
            return size
    return root


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


def rollout(stepper: Stepper, scan: Scan, state, step, t_start, n_saves, steps_per_save, observe, check_positivity):
    """``n_saves`` frames of ``steps_per_save`` steps each from ``state`` at step number ``step``.

    Step ``n`` runs at ``t_start + n·dt``. Returns ``(state, step, frames, times, observed,
    bounds, (substeps, step_substeps), result, n_valid)``: the last valid state and its step
    number, the frames and their times, the per-step observables (``None`` without ``observe``),
    each frame's rate bounds (``{}`` without ``check_positivity``), each frame's largest number of
    explicit sub-steps needed by one of its steps (``int32``, ``(n_saves,)``) and every step's
    (``(n_saves · steps_per_save,)``, 0 for steps not run), and how the run ended
    (:class:`RESULTS`).

    Without sub-cycling (``stepper.max_substeps == 1``) a frame from which the next step would
    break positivity ends the run (``positivity_limit_exceeded``; that frame is valid). With it,
    the steps sub-cycle instead, and a frame one of whose steps needed more than
    ``max_substeps`` ends it (``substep_limit_exceeded``; that frame is not valid).
    """
    dt = stepper.dt
    cap = stepper.max_substeps

    def time_of(n):
        return t_start + n.astype(dt.dtype) * dt

    def bounds_at(frame, t, solved=True):
        return stepper.rate_bounds(frame, t, solved=solved) if check_positivity else {}

    def one_step(carry, _):
        state, carried, n = carry
        state, carried, needed = stepper.step(state, carried, time_of(n))
        observed = None if observe is None else observe(state, stepper.params, time_of(n + 1))
        return (state, carried, n + 1), (observed, needed)

    def compute_frame(state, n):
        (state, _, n), (observed, needed) = scan(one_step, (state, stepper.prepare(state), n), steps_per_save)
        t = time_of(n)
        frame = stepper.solve_quasi_steady(state, t)
        return frame, n, t, observed, bounds_at(frame, t), needed

    def skipped_frame(state, n):
        """After a failure: no steps; NaN frame, time, observables and bounds; 0 sub-steps."""
        t = time_of(n)
        per_step = None if observe is None else jax.eval_shape(lambda s: observe(s, stepper.params, t), state)
        per_step = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((steps_per_save, *x.shape), x.dtype), per_step)
        bounds = jax.eval_shape(lambda s: bounds_at(s, t), state)
        return (*_nan_like((state,)), n, *_nan_like((t, per_step, bounds)), jnp.zeros((steps_per_save,), jnp.int32))

    def one_frame(carry, _):
        state, n, result, n_valid = carry
        running = result == RESULTS.successful
        frame, n_new, t, observed, bounds, step_substeps = lax.cond(running, compute_frame, skipped_frame, state, n)
        substeps = jnp.max(step_substeps)
        finite = _all_finite(frame)
        if cap == 1:
            within, enough = _within_limit(bounds, dt), jnp.asarray(True)
        else:
            within = jnp.asarray(True)
            enough = substeps <= cap if check_positivity else jnp.asarray(True)
        advanced = running & finite & enough
        ended = _ending(finite, within, enough)
        result = RESULTS.where(running, ended, result)
        state = jax.tree_util.tree_map(lambda new, old: jnp.where(advanced, new, old), frame, state)
        n = jnp.where(advanced, n_new, n)
        outputs = (frame, t, observed, bounds, substeps, step_substeps)
        return (state, n, result, n_valid + advanced.astype(n_valid.dtype)), outputs

    start_bounds = bounds_at(state, time_of(step), solved=False)
    if cap == 1:
        start = _ending(_all_finite(state), _within_limit(start_bounds, dt), jnp.asarray(True))
    else:
        start = _ending(_all_finite(state), jnp.asarray(True), _within_limit(start_bounds, dt / cap))
    carry = (state, step, start, jnp.zeros((), jnp.int32))
    (state, step, result, n_valid), (frames, times, observed, bounds, substeps, step_substeps) = lax.scan(
        one_frame, carry, None, length=n_saves
    )
    step_substeps = step_substeps.reshape(n_saves * steps_per_save)
    if observed is not None:
        observed = jax.tree_util.tree_map(lambda x: x.reshape((n_saves * steps_per_save,) + x.shape[2:]), observed)
    return state, step, frames, times, observed, bounds, (substeps, step_substeps), result, n_valid


def _ending(finite, within, enough) -> RESULTS:
    """The result after a frame: non-finite, else too many sub-steps, else beyond the positivity
    limit, else successful."""
    positivity = RESULTS.where(within, RESULTS.successful, RESULTS.positivity_limit_exceeded)
    substeps = RESULTS.where(enough, positivity, RESULTS.substep_limit_exceeded)
    return RESULTS.where(finite, substeps, RESULTS.nonfinite_state)
