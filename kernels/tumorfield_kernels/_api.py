"""The public entry points: ``simulate``, ``advance``, step-size limits and frame 0.

``advance`` is the one compiled rollout (``eqx.filter_jit``: arrays — state, params,
the System's numeric coefficients — are traced; the grid, functions, step counts and
the numerics' strategies are static). ``simulate`` is ``advance`` plus frame 0. What is
solved (``System``, ``Grid``, ``params``, the initial state) is apart from how
(:class:`Numerics`) and what is recorded (:class:`SaveAt`). Run-time failure is a result
(:class:`RESULTS` in the returned :class:`Trajectory`); ``throw=True`` turns it into a
:class:`SolverError` after the call. ``mesh=`` (a one-axis ``jax.sharding.Mesh``) splits the grid
into slabs over its devices (:mod:`._decomposition`): the same results, the fields' memory shared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._decomposition import Slabs
from ._grid import Grid
from ._numerics import ExplicitDiffusion, ImplicitDiffusion, Numerics, SaveAt, Unchecked
from ._rollout import rollout
from ._solution import POSITIVITY_TOLERANCE, Stats, Trajectory, failure_message, raise_if_failed
from ._stepper import Stepper
from ._system import System

State = dict[str, Any]


@eqx.debug.assert_max_traces(max_traces=None)
def _advance_impl(system, grid, state, params, dt, t0, step, n_saves, steps_per_save, numerics, observe, slabs=None):
    stepper = Stepper.build(system, grid, params, dt, numerics, slabs)
    return rollout(stepper, state, step, t0, n_saves, steps_per_save, observe)


_advance_jit = eqx.filter_jit(_advance_impl)


@eqx.filter_jit
def _bounds_jit(system, grid, state, params, t, numerics, slabs=None):
    stepper = Stepper.build(system, grid, params, jnp.zeros((), numerics.float_dtype), numerics, slabs)
    return stepper.rate_bounds(state, t)


@eqx.filter_jit
def _diffusion_rates_jit(system, grid, state, params, t, numerics, slabs=None):
    numerics = eqx.tree_at(lambda n: n.cell_diffusion, numerics, ImplicitDiffusion())
    stepper = Stepper.build(system, grid, params, jnp.zeros((), numerics.float_dtype), numerics, slabs)
    return stepper.diffusion_rates(state, t)


@eqx.filter_jit
def _first_frame(system, grid, state, params, t, numerics, slabs=None):
    stepper = Stepper.build(system, grid, params, jnp.zeros((), numerics.float_dtype), numerics, slabs)
    return stepper.solve_quasi_steady(state, t)


def _is_concrete(tree) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def _option(value, cls, name: str):
    """``value`` (an instance of ``cls``), or ``cls()`` for None; anything else is refused."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(f"{name}={value!r}: must be a tumorfield {cls.__name__}(...)")
    return value


def _numerics(numerics) -> Numerics:
    return _option(numerics, Numerics, "numerics")


def _saveat(saveat) -> SaveAt:
    return _option(saveat, SaveAt, "saveat")


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


def signed_fields(system: System) -> tuple[str, ...]:
    """The fields whose values may be negative: attractants that only steer taxis (a potential, e.g.
    ``c`` of ``Taxis(field="u", attractant="c")`` that no taxis moves). Every other field is a density or
    a concentration, ``≥ 0`` (the positivity limits and the schemes assume it)."""
    moved = {term.field for term in system.taxis}
    return tuple(term.attractant for term in system.taxis if term.attractant not in moved)


def check_initial(system: System, grid: Grid, state: Mapping[str, Any], *, t: float = 0.0,
                  negative: bool = True) -> None:  # fmt: skip
    """Refuse (``ValueError``, before any compute) a start state with a non-finite value in any field or,
    with ``negative``, a negative value in a field that must be ``≥ 0`` (all but :func:`signed_fields`);
    the message names the field, the cell and its value. Traced states are not checked."""
    if not _is_concrete(state):
        return
    signed = set(signed_fields(system))
    for name in system.fields:
        if name in system.quasi_steady or name not in state:
            continue  # solved from the others at every stage; its start value is not used
        value = np.asarray(state[name])
        finite = np.isfinite(value)
        if not finite.all():
            bad = np.flatnonzero(~finite.ravel())[0]
            raise ValueError(
                f"initial[{name!r}] is not finite at t = {t:.6g} day {_where(value, bad, grid)}: every value of a "
                "start state must be a finite number"
            )
        if negative and name not in signed and value.size and float(value.min()) < 0:
            bad = int(np.argmin(value.ravel()))
            raise ValueError(
                f"initial[{name!r}] is negative at t = {t:.6g} day {_where(value, bad, grid)}: {name!r} is a density "
                f"or concentration (≥ 0; only an attractant that nothing moves by taxis may be signed); its "
                f"minimum is {float(value.min()):.6g} in {int(np.sum(value < 0))} of {value.size} cells"
            )


def _where(value: np.ndarray, flat: int, grid: Grid) -> str:
    """``at cell (i, j) (y=… mm, x=… mm), value …`` of a grid field's flat index (a scalar: its value)."""
    if value.ndim == 0:
        return f"(scalar variable, value {value.item()})"
    index = np.unravel_index(int(flat), value.shape)
    coords = ", ".join(f"{axis}={grid.coordinates(a)[i]:.4g} mm" for a, (axis, i) in
                       enumerate(zip(grid.axis_names, index, strict=True)))  # fmt: skip
    return f"at cell {tuple(int(i) for i in index)} ({coords}), value {value[index]}"


def cast_floats(tree, dtype):
    """``tree`` with every floating leaf (Python float or array) cast to ``dtype``; other leaves kept.

    What ``simulate`` and ``advance`` do to ``params``; do it once yourself to
    pass the same arrays to several calls (and to ``observe``).
    """
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)

    def convert(leaf):
        if isinstance(leaf, float) or (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)):
            return jnp.asarray(leaf, dtype)
        return leaf

    return jax.tree_util.tree_map(convert, {} if tree is None else tree)


def _inputs(system, grid, y0, params, numerics, slabs=None) -> tuple[State, Any, Numerics]:
    """The state and params as the rollout takes them, in the numerics' precision (on the mesh of
    ``slabs``: grid-shaped arrays split into slabs, the rest replicated)."""
    numerics = _numerics(numerics)
    dtype = numerics.float_dtype
    state, params = _prepare_state(system, grid, y0, dtype), cast_floats(params, dtype)
    if slabs is not None and _is_concrete((state, params)):
        state, params = slabs.place((state, params))
    return state, params, numerics


def _inverse(rate) -> float:
    return 1.0 / float(rate) if float(rate) > 0 else math.inf


def max_stable_dt(
    system: System, grid: Grid, y0: Mapping[str, Any], params=None, *, t: float = 0.0, numerics=None, mesh=None
):
    """Largest ``Δt`` (days) for which each explicitly advanced field stays non-negative.

    Returns ``{field: Δt_max}`` for the fields with an explicit limit (local
    diffusion, decay and taxis; taxis speeds are taken from ``y0``).
    Fields advanced exponentially have no limit from their diffusion or decay;
    with :class:`ImplicitDiffusion` neither has the diffusion of the cell
    fields (the limit is that of taxis and decay). :class:`Subcycle` multiplies
    the accepted ``dt`` by up to ``max_substeps``. ``mesh`` as in :func:`simulate`.
    """
    slabs = Slabs.of(mesh, grid)
    state, params, numerics = _inputs(system, grid, y0, params, numerics, slabs)
    bounds = _bounds_jit(system, grid, state, params, jnp.asarray(t, numerics.float_dtype), numerics, slabs)
    return {name: _inverse(b) for name, b in bounds.items()}


def step_limits(system: System, grid: Grid, y0: Mapping[str, Any], params=None, *, t: float = 0.0, numerics=None):
    """Which limit binds: per explicitly limited field, ``{"explicit": Δt, "split": Δt, "diffusion": Δt}`` (days).

    ``explicit`` is :func:`max_stable_dt` with :class:`ExplicitDiffusion`; ``split`` the same with
    :class:`ImplicitDiffusion` (taxis and decay only); ``diffusion`` the limit ``1/Σ_axes 2 max D/Δx²``
    that explicit diffusion alone imposes (``inf`` for fields whose diffusion is not split off).
    """
    state, params, numerics = _inputs(system, grid, y0, params, numerics)
    t_ = jnp.asarray(t, numerics.float_dtype)

    def with_diffusion(kind):
        return eqx.tree_at(lambda n: n.cell_diffusion, numerics, kind)

    explicit = _bounds_jit(system, grid, state, params, t_, with_diffusion(ExplicitDiffusion()))
    split = _bounds_jit(system, grid, state, params, t_, with_diffusion(ImplicitDiffusion()))
    diffusion = _diffusion_rates_jit(system, grid, state, params, t_, numerics)
    return {
        name: {
            "explicit": _inverse(explicit[name]),
            "split": _inverse(split[name]) if name in split else math.inf,
            "diffusion": _inverse(diffusion[name]) if name in diffusion else math.inf,
        }
        for name in explicit
    }


def choose_cell_diffusion(
    system: System, grid: Grid, y0: Mapping[str, Any], params=None, *, dt: float, numerics=None
) -> tuple[ExplicitDiffusion | ImplicitDiffusion, str]:
    """The cell diffusion that serves a step of ``dt`` best at ``y0`` (t = 0), and why (one sentence).

    :class:`ImplicitDiffusion` where some field's explicit limit (:func:`step_limits`) is below ``dt``
    and its split limit is above the explicit one — the cells' explicit diffusion is what would make
    the step sub-cycle; :class:`ExplicitDiffusion` otherwise (every field stable at ``dt`` with it —
    cheaper per step —, taxis or decay binding anyway, or a field the implicit diffusion cannot take,
    e.g. one with fixed wall values). Decided once, from the start (a resumed run decides the same).
    """
    try:
        limits = step_limits(system, grid, y0, params, numerics=numerics)
    except ValueError as error:
        return ExplicitDiffusion(), f"explicit: the implicit cell diffusion does not apply ({error})"
    bound = {n: lim for n, lim in limits.items() if lim["explicit"] < dt and lim["split"] > lim["explicit"] * 1.001}
    if not bound:
        limit = min((lim["explicit"] for lim in limits.values()), default=math.inf)
        return ExplicitDiffusion(), (
            f"explicit: at t = 0 the step dt = {dt:g} day is within the explicit limit ({limit:.3g} day)"
            if limit >= dt else f"explicit: taxis or decay, not diffusion, bind the step (limit {limit:.3g} day)"
        )  # fmt: skip
    fields = ", ".join(f"{n} ({lim['explicit']:.3g} day)" for n, lim in bound.items())
    split = min(lim["split"] for lim in limits.values())
    return ImplicitDiffusion(), (
        f"implicit: at t = 0 the cells' explicit diffusion would limit the step of {fields} below dt = {dt:g} "
        f"day (sub-cycling); split off, the limit is {split:.3g} day"
    )


def max_stable_dt_over_run(
    system: System, grid: Grid, y0: Mapping[str, Any], params=None, *, t_end: float, t0: float = 0.0,
    frames: int = 8, rounds: int = 4, numerics=None,
):  # fmt: skip
    """Largest ``Δt`` (days) that keeps each explicit field non-negative at every frame of a run to ``t_end``.

    :func:`max_stable_dt` looks at one state, but the taxis limit tightens as the
    attractant steepens. This runs a probe simulation from ``y0`` to ``t_end``
    (:class:`Unchecked`) at half the smallest limit found so far, saving
    ``frames`` frames, and takes each field's smallest limit over them; while that
    is below the probe's own step, it probes again at half of it (at most
    ``rounds`` probes). Returns ``{field: Δt_max}`` like :func:`max_stable_dt`.
    The limits are those of the probe's trajectory: a run at a larger ``dt``
    follows it to the solver's accuracy, so leave a margin near a steep front.
    """
    if not (t_end > t0):
        raise ValueError(f"t_end={t_end} must be after t0={t0}")
    if frames < 1 or rounds < 1:
        raise ValueError(f"frames={frames} and rounds={rounds} must be ≥ 1")
    state0, params, numerics = _inputs(system, grid, y0, params, numerics)
    limits = max_stable_dt(system, grid, state0, params, t=t0, numerics=numerics)
    if not limits or all(math.isinf(v) for v in limits.values()):
        return limits
    probe = eqx.tree_at(lambda n: n.substeps, numerics, Unchecked())
    duration = t_end - t0
    for _ in range(rounds):
        steps_per_frame = max(1, math.ceil(duration / frames / (0.5 * min(limits.values()))))
        dt = duration / (frames * steps_per_frame)
        traj = simulate(system, grid, state0, t_end=t_end, dt=dt, params=params, t0=t0, numerics=probe,
                        saveat=SaveAt(every=duration / frames))  # fmt: skip
        for k in range(1, len(traj)):
            frame = {name: traj[name][k] for name in system.fields}
            at_frame = max_stable_dt(system, grid, frame, params, t=float(traj.t[k]), numerics=numerics)
            limits = {name: min(limits[name], at_frame[name]) for name in limits}
        if min(limits.values()) >= dt:
            break
    return limits


def positivity_violations(
    system: System, grid: Grid, y0, params=None, *, dt: float, t: float = 0.0, numerics=None, mesh=None
):
    """The fields whose positivity limit at ``y0`` (times the numerics' sub-step cap) ``dt`` exceeds:
    ``{field: largest stable Δt}`` (days; empty when ``dt`` is within every limit). What ``advance``
    refuses at its start with ``throw=True``, and the CLI refuses at t = 0 before writing anything."""
    numerics = _numerics(numerics)
    if not numerics.substeps.checks_positivity:
        return {}
    cap = numerics.substeps.cap
    limits = max_stable_dt(system, grid, y0, params, t=t, numerics=numerics, mesh=mesh)
    return {name: cap * limit for name, limit in limits.items() if dt > cap * limit * (1 + POSITIVITY_TOLERANCE)}


def _whole_steps(value, dt, what):
    n = round(value / dt)
    if n < 1 or abs(n * dt - value) > 1e-9 * max(1.0, abs(value)):
        raise ValueError(f"{what}={value} is not a positive whole number of steps of dt={dt}")
    return n


def advance(
    system: System, grid: Grid, y0: Mapping[str, Any], *, dt: float, n_saves: int, steps_per_save: int,
    params=None, numerics: Numerics | None = None, saveat: SaveAt | None = None, throw: bool = True,
    t0: float = 0.0, step: int = 0, mesh=None,
) -> Trajectory:  # fmt: skip
    """Advance ``y0`` by ``n_saves × steps_per_save`` steps of ``dt`` (days) from step number ``step``.

    Step ``n`` runs at time ``t0 + n·dt``, so a run cut into pieces (and resumed from a saved
    state and step number) is bit-identical to one piece. Returns the :class:`Trajectory` of the
    ``n_saves`` frames after the start (not the start itself); its ``final_state`` and
    ``final_step`` (the last valid state and its step number) start the next piece.
    ``saveat.observe`` as in :func:`simulate` (``saveat.every`` is :func:`simulate`'s: here frames
    are ``steps_per_save`` steps apart).

    Every frame is checked inside the compiled rollout: a non-finite value, or a state beyond the
    positivity limit of the explicit part (:class:`Subcycle` sub-cycles instead, up to its cap),
    ends the run; ``result`` says which and ``n_valid`` how many frames are solutions. With
    ``throw=True`` such an ending raises :class:`SolverError` after the call, and a ``dt`` beyond
    the limit at the start is refused (``ValueError``) before compiling; with ``throw=False``
    nothing raises (fits and sweeps). ``mesh`` as in :func:`simulate`.
    """
    slabs = Slabs.of(mesh, grid)
    state, params, numerics = _inputs(system, grid, y0, params, numerics, slabs)
    saveat = _saveat(saveat)
    if saveat.every is not None:
        raise ValueError(f"SaveAt(every={saveat.every}) is simulate's; advance saves every steps_per_save steps")
    dtype = numerics.float_dtype
    if throw and _is_concrete((state, dt, t0, step)):  # the start of a run (step 0) must also be ≥ 0
        check_initial(system, grid, state, t=float(t0) + int(step) * float(dt), negative=int(step) == 0)
    if throw and _is_concrete((state, params, dt, t0)):
        _refuse_large_dt(system, grid, state, params, float(dt), float(t0) + int(step) * float(dt), numerics, mesh)
    traj = _advance_jit(
        system, grid, state, params, jnp.asarray(dt, dtype), jnp.asarray(t0, dtype), jnp.asarray(step, jnp.int32),
        int(n_saves), int(steps_per_save), numerics, saveat.observe, slabs,
    )  # fmt: skip
    if throw:
        traj = raise_if_failed(traj, lambda tr: _describe(tr, grid, float(dt), n_saves, steps_per_save, numerics))
    return traj


def _refuse_large_dt(system, grid, state, params, dt, t, numerics, mesh=None) -> None:
    too_large = positivity_violations(system, grid, state, params, dt=dt, t=t, numerics=numerics, mesh=mesh)
    if too_large:
        cap = numerics.substeps.cap
        detail = ", ".join(f"{name!r}: {limit / cap:.6g} day" for name, limit in too_large.items())
        sub = "" if cap == 1 else f" times max_substeps = {cap}"
        raise ValueError(
            f"dt={dt} day exceeds the stability (positivity) limit of the explicit part ({detail}){sub}; "
            f"the largest stable dt is {min(too_large.values()):.6g} day"
        )


def _describe(traj: Trajectory, grid: Grid, dt: float, n_saves: int, steps_per_save: int, numerics) -> str:
    def where(frame):
        step = (frame + 1) * steps_per_save
        return f"at saved frame {frame + 1} of {n_saves} of this call (step {step} after its start), "

    return failure_message(traj, grid, dt, where, numerics.substeps.cap)


def simulate(
    system: System, grid: Grid, y0: Mapping[str, Any], *, t_end: float, dt: float, params=None,
    numerics: Numerics | None = None, saveat: SaveAt | None = None, throw: bool = True, t0: float = 0.0,
    mesh=None,
) -> Trajectory:  # fmt: skip
    """Solve ``system`` on ``grid`` from ``y0`` at ``t0`` to ``t_end`` (days) in steps of ``dt``.

    Frames are saved every ``saveat.every`` days (default: only the end), the initial state
    included; ``t_end − t0`` and ``saveat.every`` must be whole multiples of ``dt``. ``params`` is
    any pytree passed to the reaction, to ``chi`` and to coefficient functions;
    ``saveat.observe(state, params, t)``, if given, returns a pytree of scalars recorded after
    every step. ``numerics`` says how (:class:`Numerics`; its defaults are those of the CLI).

    Jittable, ``vmap``-able over ``y0`` and ``params`` and reverse-mode differentiable; with
    :class:`SqrtCheckpointed` (default) the backward pass stores about ``2√steps`` states per
    frame. ``throw`` as in :func:`advance`: with ``throw=False`` a failed run is a value
    (``result``, ``n_valid``).

    ``mesh``: a one-axis ``jax.sharding.Mesh`` (``Mesh(devices, ("x",))``) whose devices share the
    grid, split along its slowest axis into one slab per device (the device count must divide axes 0
    and 1); the results equal one device's to round-off, the returned arrays are sharded over the
    mesh. Halo exchanges, transposes and what crosses devices: ``docs/numerics.md`` §11.
    """
    saveat = _saveat(saveat)
    n_steps = _whole_steps(t_end - t0, dt, "t_end - t0")
    steps_per_save = n_steps if saveat.every is None else _whole_steps(saveat.every, dt, "SaveAt.every")
    if n_steps % steps_per_save:
        raise ValueError(f"t_end - t0={t_end - t0} is not a whole number of SaveAt.every={saveat.every}")
    slabs = Slabs.of(mesh, grid)
    state0, params, numerics = _inputs(system, grid, y0, params, numerics, slabs)
    traj = advance(
        system, grid, state0, dt=dt, n_saves=n_steps // steps_per_save, steps_per_save=steps_per_save,
        params=params, numerics=numerics, saveat=SaveAt(observe=saveat.observe), throw=throw, t0=t0, mesh=mesh,
    )  # fmt: skip
    t0_ = jnp.asarray(t0, numerics.float_dtype)
    first = _first_frame(system, grid, state0, params, t0_, numerics, slabs)
    start_bound = _bounds_jit(system, grid, first, params, t0_, numerics, slabs) if traj.stats.rate_bound else {}
    stats = Stats(
        {name: jnp.concatenate([start_bound[name][None], bound]) for name, bound in traj.stats.rate_bound.items()},
        jnp.concatenate([jnp.zeros((1,), traj.stats.substeps.dtype), traj.stats.substeps]),
        traj.stats.step_substeps,
    )
    return Trajectory(
        jnp.concatenate([t0_[None], traj.t]),
        {name: jnp.concatenate([first[name][None], traj.fields[name]]) for name in system.fields},
        traj.t_observed,
        traj.observed,
        traj.result,
        traj.n_valid + 1,
        stats,
        traj.final_state,
        traj.final_step,
    )


def initial_frame(
    system: System, grid: Grid, y0: Mapping[str, Any], params=None, *, t: float = 0.0, numerics=None, mesh=None
):
    """The state ``simulate`` saves as its first frame: ``y0`` cast to the numerics' precision,
    uniform numbers broadcast to the grid, and the quasi-steady fields solved at time ``t``
    (days). Use it as the start of :func:`advance` and to record frame 0 of a run. ``mesh`` as in
    :func:`simulate`.
    """
    slabs = Slabs.of(mesh, grid)
    state, params, numerics = _inputs(system, grid, y0, params, numerics, slabs)
    check_initial(system, grid, state, t=t)
    return _first_frame(system, grid, state, params, jnp.asarray(t, numerics.float_dtype), numerics, slabs)
