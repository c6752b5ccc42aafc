"""The public entry points: ``simulate``, ``advance``, step-size limits and frame 0.

``advance`` is the one compiled rollout (``eqx.filter_jit``: arrays — state, params,
the System's numeric coefficients — are traced; grids, functions, step counts and
flags are static). ``simulate`` is ``advance`` plus frame 0. Run-time failure is a
result (:class:`RESULTS` in the returned :class:`Trajectory`); ``throw=True`` turns
it into a :class:`SolverError` after the call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._grid import Grid
from ._rollout import Scan, SqrtCheckpointedScan, rollout
from ._schemes import CELL_DIFFUSION
from ._solution import POSITIVITY_TOLERANCE, Trajectory, failure_message, raise_if_failed
from ._stepper import Stepper
from ._system import System

State = dict[str, Any]


@eqx.debug.assert_max_traces(max_traces=None)
def _advance_impl(
    system, grid, state, params, dt, t_start, step, n_saves, steps_per_save, scan, observe, check,
    cell_diffusion="explicit", max_substeps=1, batch_axis=None,
):  # fmt: skip
    stepper = Stepper.build(
        system, grid, params, dt, cell_diffusion, max_substeps, "checkpointed", batch_axis=batch_axis
    )
    return rollout(stepper, scan, state, step, t_start, n_saves, steps_per_save, observe, check)


_advance_jit = eqx.filter_jit(_advance_impl)


@eqx.filter_jit
def _bounds_jit(system, grid, state, params, t, dt, cell_diffusion="explicit"):
    return Stepper.build(system, grid, params, dt, cell_diffusion).rate_bounds(state, t)


@eqx.filter_jit
def _diffusion_rates_jit(system, grid, state, params, t, dt):
    return Stepper.build(system, grid, params, dt, "implicit").diffusion_rates(state, t)


def _check_numerics(cell_diffusion, max_substeps):
    """Refuse a bad ``cell_diffusion`` or ``max_substeps`` with the value and the rule."""
    if cell_diffusion not in CELL_DIFFUSION:
        raise ValueError(f"cell_diffusion={cell_diffusion!r}: allowed are 'explicit', 'implicit'")
    if isinstance(max_substeps, bool) or not isinstance(max_substeps, int) or max_substeps < 1:
        raise ValueError(f"max_substeps={max_substeps!r}: must be an integer ≥ 1 (1: no sub-cycling)")


@eqx.filter_jit
def _first_frame(system, grid, state, params, t, dt):
    return Stepper.build(system, grid, params, dt).solve_quasi_steady(state, t)


def _is_concrete(tree) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def _default_dtype(dtype):
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)


def _scalar_dtype(dtype):
    return jnp.result_type(jnp.float64) if jax.config.jax_enable_x64 else dtype


def _prepare_state(system: System, grid: Grid, initial: Mapping[str, Any], dtype) -> State:
    if not isinstance(initial, Mapping):
        raise TypeError(f"initial must be a mapping from field name to array, got {type(initial).__name__}")
    unknown = set(initial) - set(system.fields)
    if unknown:
        raise ValueError(f"initial has unknown fields {sorted(unknown)}; fields are {system.fields}")
    state = {}
    for name in system.fields:
        if name not in initial:
            if name in system.quasi_steady:
                state[name] = jnp.zeros(grid.shape, dtype)
                continue
            raise ValueError(f"initial[{name!r}] is missing; every time-dependent field needs initial data")
        if name in system.scalars:
            value = jnp.asarray(initial[name], _scalar_dtype(dtype))
            if value.shape != ():
                raise ValueError(f"initial[{name!r}] has shape {value.shape}; scalar variables take a single number")
            state[name] = value
            continue
        value = jnp.asarray(initial[name], dtype)
        if value.ndim == 0:
            value = jnp.full(grid.shape, value, dtype)
        if value.shape != grid.shape:
            raise ValueError(f"initial[{name!r}] has shape {value.shape}; the grid's shape is {grid.shape}")
        state[name] = value
    return state


def _prepare_params(params, dtype):
    def convert(leaf):
        if isinstance(leaf, float) or (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)):
            return jnp.asarray(leaf, dtype)
        return leaf

    return jax.tree_util.tree_map(convert, {} if params is None else params)


def _inverse(rate) -> float:
    return 1.0 / float(rate) if float(rate) > 0 else math.inf


def max_stable_dt(
    system: System, grid: Grid, initial: Mapping[str, Any], params=None, *, t: float = 0.0, dtype=None,
    cell_diffusion: str = "explicit",
):  # fmt: skip
    """Largest ``Δt`` (days) for which each explicitly advanced field stays non-negative.

    Returns ``{field: Δt_max}`` for the fields with an explicit limit (local
    diffusion, decay and taxis; taxis speeds are taken from ``initial``).
    Fields advanced exponentially have no limit from their diffusion or decay;
    with ``cell_diffusion="implicit"`` neither has the diffusion of the cell
    fields (the limit is that of taxis and decay). Sub-cycling
    (``max_substeps``) multiplies the accepted ``dt`` by up to ``max_substeps``.
    """
    _check_numerics(cell_diffusion, 1)
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    bounds = _bounds_jit(system, grid, state, params, jnp.asarray(t, dtype), jnp.zeros((), dtype), cell_diffusion)
    return {name: _inverse(b) for name, b in bounds.items()}


def step_limits(system: System, grid: Grid, initial: Mapping[str, Any], params=None, *, t: float = 0.0, dtype=None):
    """Which limit binds: per explicitly limited field, ``{"explicit": Δt, "split": Δt, "diffusion": Δt}`` (days).

    ``explicit`` is :func:`max_stable_dt` with the cell diffusion explicit; ``split`` the same
    with it implicit (``cell_diffusion="implicit"``: taxis and decay only); ``diffusion`` the
    limit ``1/Σ_axes 2 max D/Δx²`` that explicit diffusion alone imposes (``inf`` for fields
    whose diffusion is not split off).
    """
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    t_, zero = jnp.asarray(t, dtype), jnp.zeros((), dtype)
    explicit = _bounds_jit(system, grid, state, params, t_, zero, "explicit")
    split = _bounds_jit(system, grid, state, params, t_, zero, "implicit")
    diffusion = _diffusion_rates_jit(system, grid, state, params, t_, zero)
    return {
        name: {
            "explicit": _inverse(explicit[name]),
            "split": _inverse(split[name]) if name in split else math.inf,
            "diffusion": _inverse(diffusion[name]) if name in diffusion else math.inf,
        }
        for name in explicit
    }


def max_stable_dt_over_run(
    system: System,
    grid: Grid,
    initial: Mapping[str, Any],
    params=None,
    *,
    t_end: float,
    t_start: float = 0.0,
    frames: int = 8,
    rounds: int = 4,
    dtype=None,
    cell_diffusion: str = "explicit",
):
    """Largest ``Δt`` (days) that keeps each explicit field non-negative at every frame of a run to ``t_end``.

    :func:`max_stable_dt` looks at one state, but the taxis limit tightens as the
    attractant steepens. This runs a probe simulation from ``initial`` to ``t_end``
    (without the in-run check) at half the smallest limit found so far, saving
    ``frames`` frames, and takes each field's smallest limit over them; while that
    is below the probe's own step, it probes again at half of it (at most
    ``rounds`` probes). Returns ``{field: Δt_max}`` like :func:`max_stable_dt`
    (``cell_diffusion`` as there).
    The limits are those of the probe's trajectory: a run at a larger ``dt``
    follows it to the solver's accuracy, so leave a margin near a steep front.
    """
    if not (t_end > t_start):
        raise ValueError(f"t_end={t_end} must be after t_start={t_start}")
    if frames < 1 or rounds < 1:
        raise ValueError(f"frames={frames} and rounds={rounds} must be ≥ 1")
    dtype = _default_dtype(dtype)
    state0 = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    limits = max_stable_dt(system, grid, state0, params, t=t_start, dtype=dtype, cell_diffusion=cell_diffusion)
    if not limits or all(math.isinf(v) for v in limits.values()):
        return limits
    duration = t_end - t_start
    for _ in range(rounds):
        probe_dt = 0.5 * min(limits.values())
        steps_per_frame = max(1, math.ceil(duration / frames / probe_dt))
        dt = duration / (frames * steps_per_frame)
        traj = simulate(
            system, grid, state0, t_end=t_end, dt=dt, save_every=duration / frames, params=params,
            t_start=t_start, checkpoint=False, check_stability=False, dtype=dtype, cell_diffusion=cell_diffusion,
        )  # fmt: skip
        for k in range(1, len(traj)):
            frame = {name: traj[name][k] for name in system.fields}
            at_frame = max_stable_dt(
                system, grid, frame, params, t=float(traj.t[k]), dtype=dtype, cell_diffusion=cell_diffusion
            )
            limits = {name: min(limits[name], at_frame[name]) for name in limits}
        if min(limits.values()) >= dt:
            break
    return limits


def _check_dt(system, grid, state, params, dt, t, dtype, cell_diffusion="explicit", max_substeps=1):
    limits = max_stable_dt(system, grid, state, params, t=t, dtype=dtype, cell_diffusion=cell_diffusion)
    cap = max_substeps * (1 + POSITIVITY_TOLERANCE)
    too_large = {name: limit for name, limit in limits.items() if dt > limit * cap}
    if too_large:
        worst = min(too_large.values())
        detail = ", ".join(f"{name!r}: {limit:.6g} day" for name, limit in too_large.items())
        sub = "" if max_substeps == 1 else f" times max_substeps = {max_substeps}"
        raise ValueError(
            f"dt={dt} day exceeds the stability (positivity) limit of the explicit part ({detail}){sub}; "
            f"the largest stable dt is {worst * max_substeps:.6g} day"
        )


def _whole_steps(value, dt, what):
    n = round(value / dt)
    if n < 1 or abs(n * dt - value) > 1e-9 * max(1.0, abs(value)):
        raise ValueError(f"{what}={value} is not a positive whole number of steps of dt={dt}")
    return n


def advance(
    system: System,
    grid: Grid,
    state: Mapping[str, Any],
    *,
    dt: float,
    n_saves: int,
    steps_per_save: int,
    params=None,
    t_start: float = 0.0,
    step: int = 0,
    observe: Callable | None = None,
    checkpoint: bool = True,
    check_stability: bool = True,
    throw: bool = True,
    dtype=None,
    cell_diffusion: str = "explicit",
    max_substeps: int = 1,
    batch_axis: str | None = None,
) -> tuple[State, jax.Array, Trajectory]:
    """Advance ``state`` by ``n_saves × steps_per_save`` steps of ``dt`` (days) from step number ``step``.

    Step ``n`` runs at time ``t_start + n·dt``, so a run cut into pieces (and
    resumed from a saved state and step number) is bit-identical to one piece.
    Returns ``(state, step, trajectory)``: the last valid state and its step
    number, and the ``n_saves`` frames after the start (not the start itself).

    Every frame is checked inside the compiled rollout: a non-finite value, or
    (``check_stability``) a state from which the next step would break
    positivity, ends the run; ``trajectory.result`` says which and
    ``trajectory.n_valid`` how many frames are solutions. With ``throw=True``
    such an ending raises :class:`SolverError` after the call, and a ``dt``
    beyond the limit at the start is refused (``ValueError``) before compiling;
    with ``throw=False`` nothing raises (for fitting and sweeps).

    ``cell_diffusion``: ``"explicit"`` (in the SSP-RK2 step of the cell fields, ``dt ∝ Δx²``) or
    ``"implicit"`` (split off and advanced by MPRK22, unconditionally non-negative and
    conservative: ``dt`` is limited by taxis and decay only; ``docs/numerics.md``).
    ``max_substeps``: where the positivity limit of the explicit part falls below ``dt`` during
    the run, a step is cut into up to this many equal sub-steps (1: never; the run ends at the
    frame instead, ``positivity_limit_exceeded``); a step that needs more ends the run with
    ``substep_limit_exceeded``. ``trajectory.substeps`` holds each frame's largest count.
    Both are static (a new value compiles anew).

    ``batch_axis``: the ``axis_name`` of a ``jax.vmap`` this call runs under (sweeps). The members
    then decide together whether a step is sub-cycled (a member that needs no sub-cycling takes one
    sub-step of ``dt`` when another needs several), so the branch stays a real branch: without it,
    ``vmap`` turns the choice into a select and every member pays for both branches.
    """
    _check_numerics(cell_diffusion, max_substeps)
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, state, dtype)
    params = _prepare_params(params, dtype)
    if throw and check_stability and _is_concrete((state, params, dt, t_start)):
        t_now = float(t_start) + int(step) * float(dt)
        _check_dt(system, grid, state, params, float(dt), t_now, dtype, cell_diffusion, max_substeps)
    dt_array, t0 = jnp.asarray(dt, dtype), jnp.asarray(t_start, dtype)
    scan = SqrtCheckpointedScan() if checkpoint else Scan()
    state, step, frames, times, observed, bounds, (substeps, step_substeps), result, n_valid = _advance_jit(
        system, grid, state, params, dt_array, t0, jnp.asarray(step, jnp.int32),
        int(n_saves), int(steps_per_save), scan, observe, bool(check_stability), cell_diffusion, max_substeps,
        batch_axis,
    )  # fmt: skip
    t_observed = None
    if observed is not None:
        # observable j is recorded after step number first + j (of the valid run, NaN after a failure)
        first = step - (n_valid * steps_per_save - 1)
        index = first + jnp.arange(n_saves * steps_per_save, dtype=step.dtype)
        t_observed = t0 + index.astype(dtype) * dt_array
        t_observed = jnp.where(index <= step, t_observed, jnp.nan)
    traj = Trajectory(times, frames, t_observed, observed, result, n_valid, bounds, substeps, step_substeps)
    if throw:
        traj = raise_if_failed(traj, lambda tr: _describe(tr, grid, float(dt), n_saves, steps_per_save, max_substeps))
    return state, step, traj


def _describe(traj: Trajectory, grid: Grid, dt: float, n_saves: int, steps_per_save: int, max_substeps=1) -> str:
    def where(frame):
        step = (frame + 1) * steps_per_save
        return f"at saved frame {frame + 1} of {n_saves} of this call (step {step} after its start), "

    return failure_message(traj, grid, dt, where, max_substeps)


def simulate(
    system: System,
    grid: Grid,
    initial: Mapping[str, Any],
    *,
    t_end: float,
    dt: float,
    save_every: float | None = None,
    params=None,
    t_start: float = 0.0,
    observe: Callable | None = None,
    checkpoint: bool = True,
    check_stability: bool = True,
    throw: bool = True,
    dtype=None,
    cell_diffusion: str = "explicit",
    max_substeps: int = 1,
    batch_axis: str | None = None,
) -> Trajectory:
    """Solve ``system`` on ``grid`` from ``initial`` at ``t_start`` to ``t_end`` (days).

    Frames are saved every ``save_every`` days (default: only the end), the
    initial state included. ``t_end − t_start`` and ``save_every`` must be whole
    multiples of ``dt``. ``params`` is any pytree passed to the reaction, to
    ``chi`` and to coefficient functions; ``observe(state, params, t)``, if
    given, returns a pytree of scalars recorded after every step.

    Jittable, ``vmap``-able over ``initial`` and ``params`` and reverse-mode
    differentiable; with ``checkpoint=True`` the backward pass stores
    about ``2√steps_per_save`` states per frame (two-level checkpointing).
    ``throw`` and ``check_stability`` as in :func:`advance`: with
    ``throw=False`` a failed run is a value (``result``, ``n_valid``);
    ``cell_diffusion``, ``max_substeps`` and ``batch_axis`` as in :func:`advance`.
    """
    duration = t_end - t_start
    n_steps = _whole_steps(duration, dt, "t_end - t_start")
    steps_per_save = n_steps if save_every is None else _whole_steps(save_every, dt, "save_every")
    if n_steps % steps_per_save:
        raise ValueError(f"t_end - t_start={duration} is not a whole number of save_every={save_every}")
    dtype = _default_dtype(dtype)
    state0 = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    t0 = jnp.asarray(t_start, dtype)
    _, _, traj = advance(
        system, grid, state0, dt=dt, n_saves=n_steps // steps_per_save, steps_per_save=steps_per_save,
        params=params, t_start=t_start, observe=observe, checkpoint=checkpoint,
        check_stability=check_stability, throw=throw, dtype=dtype, cell_diffusion=cell_diffusion,
        max_substeps=max_substeps, batch_axis=batch_axis,
    )  # fmt: skip
    first = _first_frame(system, grid, state0, params, t0, jnp.zeros((), dtype))
    zero = jnp.zeros((), dtype)
    start_bound = _bounds_jit(system, grid, first, params, t0, zero, cell_diffusion) if check_stability else {}
    return Trajectory(
        jnp.concatenate([t0[None], traj.t]),
        {name: jnp.concatenate([first[name][None], traj.fields[name]]) for name in system.fields},
        traj.t_observed,
        traj.observed,
        traj.result,
        traj.n_valid + 1,
        {name: jnp.concatenate([start_bound[name][None], bound]) for name, bound in traj.rate_bound.items()},
        jnp.concatenate([jnp.zeros((1,), traj.substeps.dtype), traj.substeps]),
        traj.step_substeps,
    )


def cast_floats(tree, dtype):
    """``tree`` with every floating leaf (Python float or array) cast to ``dtype``; other leaves kept.

    What ``simulate`` and ``advance`` do to ``params``; do it once yourself to
    pass the same arrays to several calls (and to ``observe``).
    """
    return _prepare_params(tree, _default_dtype(dtype))


def initial_frame(system: System, grid: Grid, initial: Mapping[str, Any], params=None, *, t: float = 0.0, dtype=None):
    """The state ``simulate`` saves as its first frame: ``initial`` cast to ``dtype``,
    uniform numbers broadcast to the grid, and the quasi-steady fields solved at time ``t``
    (days). Use it as the start of :func:`advance` and to record frame 0 of a run.
    """
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    return _first_frame(system, grid, state, params, jnp.asarray(t, dtype), jnp.zeros((), dtype))
