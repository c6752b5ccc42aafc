"""Time stepping (ETDRK2 / SSP-RK2) and the jitted rollout."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from . import _operators as ops
from ._grid import Grid
from ._system import StateDependent, System

State = dict[str, Float[Array, "*grid"]]  # noqa: F722


class Trajectory(eqx.Module):
    """Saved frames of a simulation.

    ``t`` (days) has shape ``(T,)``; ``fields[name]`` has shape ``(T, *grid.shape)``.
    ``observed[name]`` holds per-step observables, at times ``t_observed``.
    """

    t: Float[Array, " T"]  # noqa: F722
    fields: dict[str, Array]
    t_observed: Float[Array, " S"] | None = None  # noqa: F722
    observed: dict[str, Array] | None = None

    def __getitem__(self, name: str) -> Array:
        return self.fields[name]

    def __len__(self) -> int:
        return self.t.shape[0]


def _coefficient(value, params, state=None):
    if isinstance(value, StateDependent):
        return value.fn(state, params)
    return value(params) if callable(value) else value


class _Operators(eqx.Module):
    """Per-field linear operators, built once per rollout from ``dt`` and ``params``.

    ``exponential[f] = (E, P1, P2)`` hold ``e^z, φ₁(z), φ₂(z)`` with
    ``z = Δt (D λ − k)``: arrays in DCT space where ``D ≠ 0``, scalars otherwise.
    ``inverse[f] = 1/(k − D λ)`` solves the quasi-steady fields.
    ``walls[f] = (g, k g)`` for fields with a fixed wall value ``g``: their
    spectral fields are transformed as ``u − g`` (DST-II), with ``−k g``
    added to the explicit part.
    """

    exponential: dict[str, tuple[Array, Array, Array]]
    inverse: dict[str, Array]
    walls: dict[str, tuple[Array, Array]]
    spectral: dict[str, bool] = eqx.field(static=True)


def _spectral(system: System, name: str) -> bool:
    d = system.diffusion.get(name, 0.0)
    return callable(d) or d != 0


def _build_operators(system: System, grid: Grid, params, dt, dtype) -> _Operators:
    symbols = {}  # by "has fixed wall values"
    exponential, inverse, walls, spectral = {}, {}, {}, {}
    for name, value in system.dirichlet.items():
        g = jnp.asarray(_coefficient(value, params), dtype)
        k = jnp.asarray(_coefficient(system.decay.get(name, 0.0), params), dtype)
        walls[name] = (g, k * g)
    for name in system.fields:
        is_qs = name in system.quasi_steady
        if not is_qs and system.method(name) != "exponential":
            continue
        d = _coefficient(system.diffusion.get(name, 0.0), params)
        k = _coefficient(system.decay.get(name, 0.0), params)
        spectral[name] = _spectral(system, name)
        if spectral[name]:
            dirichlet = name in walls
            if dirichlet not in symbols:
                symbols[dirichlet] = jnp.asarray(
                    ops.laplacian_symbol(grid.shape, grid.spacing, dirichlet=dirichlet), dtype
                )
            generator = d * symbols[dirichlet] - k
        else:
            generator = -jnp.asarray(k, dtype)
        generator = jnp.asarray(generator, dtype)
        if is_qs:
            inverse[name] = 1.0 / (-generator)
        else:
            exponential[name] = ops.phi_functions(dt * generator)
    return _Operators(exponential, inverse, walls, spectral)


def _taxis_terms(system: System, name: str, state: State, params):
    terms = []
    for term in system.taxis_on(name):
        chi = term.chi(state, params) if callable(term.chi) else term.chi
        terms.append((chi, state[term.attractant]))
    return terms


def _reaction(system: System, state: State, params, t) -> Mapping[str, Any]:
    if system.reaction is None:
        return {}
    rates = system.reaction(state, params, t)
    unknown = set(rates) - set(system.fields)
    if unknown:
        raise ValueError(f"reaction returned rates for unknown fields {sorted(unknown)}; fields are {system.fields}")
    return rates


def _solve_quasi_steady(system: System, operators: _Operators, state: State, params, t) -> State:
    if not system.quasi_steady:
        return state
    rates = _reaction(system, state, params, t)
    state = dict(state)
    for name in system.quasi_steady:
        like = state[name]
        source = jnp.broadcast_to(jnp.asarray(rates.get(name, 0.0), like.dtype), like.shape)
        if operators.spectral[name] and name in operators.walls:
            # c = g + w: 0 = DΔ₀w − k w + (R − k g), Δ₀ with zero wall values
            g, kg = operators.walls[name]
            w = ops.from_spectral(operators.inverse[name] * ops.to_spectral(source - kg, True), True)
            state[name] = g + w
        elif operators.spectral[name]:
            state[name] = ops.from_spectral(operators.inverse[name] * ops.to_spectral(source))
        else:
            state[name] = operators.inverse[name] * source
    return state


def _rates(system: System, grid: Grid, operators: _Operators, state: State, params, t):
    """Explicit part ``N(u, t)`` of every time-dependent field, after the quasi-steady solve."""
    state = _solve_quasi_steady(system, operators, state, params, t)
    reaction = _reaction(system, state, params, t)
    rates = {}
    for name in system.dynamic_fields:
        u = state[name]
        rate = jnp.broadcast_to(jnp.asarray(reaction.get(name, 0.0), u.dtype), u.shape)
        taxis = _taxis_terms(system, name, state, params)
        if system.method(name) == "local":
            d = _coefficient(system.diffusion.get(name, 0.0), params, state)
            k = _coefficient(system.decay.get(name, 0.0), params)
            if name not in system.scalars:
                wall = operators.walls[name][0] if name in operators.walls else None
                rate = rate + ops.transport(u, grid.spacing, d, taxis, wall_value=wall)
            if not ops._is_zero(k):
                rate = rate - jnp.asarray(k).astype(u.dtype) * u  # scalars may be float64 beside float32 params
        elif taxis:
            rate = rate + ops.transport(u, grid.spacing, 0.0, taxis)
        rates[name] = rate
    return rates, state


def _spectral_fields(system: System, operators: _Operators) -> tuple[str, ...]:
    """Time-dependent fields advanced by ETDRK2 in DCT space (their coefficients are carried between steps)."""
    return tuple(
        name
        for name in system.dynamic_fields
        if system.method(name) == "exponential" and operators.spectral[name]  # scalars are always "local"
    )


def _to_coefficients(operators: _Operators, name: str, u):
    """Spectral coefficients of ``u`` (of ``u − g`` in the DST basis where the wall value is ``g``)."""
    if name in operators.walls:
        return ops.to_spectral(u - operators.walls[name][0], True)
    return ops.to_spectral(u)


def _from_coefficients(operators: _Operators, name: str, u_hat):
    if name in operators.walls:
        return operators.walls[name][0] + ops.from_spectral(u_hat, True)
    return ops.from_spectral(u_hat)


def _rate_coefficients(operators: _Operators, name: str, rate):
    """Spectral coefficients of the explicit part (``N − k g`` where the wall value is ``g``)."""
    if name in operators.walls:
        return ops.to_spectral(rate - operators.walls[name][1], True)
    return ops.to_spectral(rate)


def _step(system: System, grid: Grid, operators: _Operators, params, state: State, coefficients, t, dt):
    """One ETDRK2 step (Cox & Matthews 2002, eq. 22); SSP-RK2 (Heun) where ``L = 0``.

    ``a = e^{hL}u + h φ₁(hL) N(u, t)``, ``u⁺ = a + h φ₂(hL) (N(a, t+h) − N(u, t))``.
    For DCT fields ``coefficients[f]`` holds ``û`` of ``state[f]`` and the
    step is done in coefficient space, so it costs four transforms
    (``N̂(u)``, ``a = IDCT â``, ``N̂(a)``, ``u⁺ = IDCT û⁺``). Returns the new
    state and coefficients.
    """
    n0, state = _rates(system, grid, operators, state, params, t)
    stage = dict(state)
    stage_hat, n0_hat = {}, {}
    for name in system.dynamic_fields:
        u = state[name]
        if system.method(name) == "local":
            stage[name] = u + dt.astype(u.dtype) * n0[name]
            continue
        e, p1, _ = operators.exponential[name]
        if name in coefficients:
            n0_hat[name] = _rate_coefficients(operators, name, n0[name])
            stage_hat[name] = e * coefficients[name] + dt * p1 * n0_hat[name]
            stage[name] = _from_coefficients(operators, name, stage_hat[name])
        else:
            stage[name] = e * u + dt * p1 * n0[name]
    n1, _ = _rates(system, grid, operators, stage, params, t + dt)
    new, new_coefficients = dict(state), {}
    for name in system.dynamic_fields:
        if name in coefficients:
            _, _, p2 = operators.exponential[name]
            delta_hat = _rate_coefficients(operators, name, n1[name]) - n0_hat[name]
            new_coefficients[name] = stage_hat[name] + dt * p2 * delta_hat
            new[name] = _from_coefficients(operators, name, new_coefficients[name])
            continue
        delta = n1[name] - n0[name]
        if system.method(name) == "local":
            new[name] = stage[name] + 0.5 * dt.astype(delta.dtype) * delta
        else:
            _, _, p2 = operators.exponential[name]
            new[name] = stage[name] + dt * p2 * delta
    return new, new_coefficients


def _explicit_rate_bounds(system: System, grid: Grid, operators: _Operators, state: State, params, t):
    """Per field, the forward-Euler outflow-rate bound of its explicit part (1/day)."""
    state = _solve_quasi_steady(system, operators, state, params, t)
    bounds = {}
    for name in system.dynamic_fields:
        if name in system.scalars:
            continue
        taxis = _taxis_terms(system, name, state, params)
        speeds = ops.max_face_speed(taxis, grid.spacing) if taxis else [0.0] * grid.ndim
        if system.method(name) == "local":
            d = _coefficient(system.diffusion.get(name, 0.0), params, state)
            d = jnp.max(d) if jnp.ndim(d) else d  # face means never exceed the largest cell value
            k = _coefficient(system.decay.get(name, 0.0), params)
        elif taxis:
            d, k = 0.0, 0.0
        else:
            continue
        dirichlet = system.method(name) == "local" and name in system.dirichlet
        bounds[name] = jnp.asarray(ops.explicit_rate_bound(grid.spacing, d, k, speeds, dirichlet))
    return bounds


def _sqrt_checkpointed_scan(step, carry, length):
    """``lax.scan(step, carry, None, length)`` whose reverse pass stores O(√length) carries.

    Two levels (Griewank & Walther, *Evaluating Derivatives*, 2008, ch. 12): ``length =
    blocks × size + rest``; the forward pass keeps only the carry entering each block, and
    the backward pass re-runs one block at a time, keeping the carry entering each of its
    steps and re-running each step for its VJP (``jax.checkpoint`` on both levels). Memory
    is ``blocks + size ≈ 2√length`` carries plus one step's residuals; the forward pass
    runs three times in all. Plain JAX AD, so the reverse pass traces the step only
    ``O(1)`` times (``equinox.internal.scan(kind="checkpointed")`` spent ~80 % of the
    tracing of a voloshin2015 gradient in its perturbation analysis).
    """
    size = max(1, math.isqrt(length))
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


_NAMED_FRAMES = 1000  # frames named one by one in the in-run positivity error; later ones share a message


def _cfl_messages(name: str, n_saves: int, steps_per_save: int) -> list[str]:
    """The in-run positivity error for each saved frame of a call (static strings, indexed at run time)."""
    advice = (
        "the time step exceeds the positivity limit of its explicit part (taxis gradients "
        "steepened during the run); use a smaller dt, or check max_stable_dt on the last good frame"
    )
    messages = [
        f"field {name!r}: at saved frame {k + 1} of {n_saves} of this call "
        f"(step {(k + 1) * steps_per_save} after its start), {advice}"
        for k in range(min(n_saves, _NAMED_FRAMES))
    ]
    if n_saves > _NAMED_FRAMES:
        messages.append(f"field {name!r}: at saved frame {_NAMED_FRAMES + 1} or later of this call, {advice}")
    return messages


@eqx.debug.assert_max_traces(max_traces=None)
def _advance_impl(
    system, grid, n_saves, steps_per_save, checkpoint, observe, check_cfl, state, params, dt, t_start, step
):
    dtype = dt.dtype
    operators = _build_operators(system, grid, params, dt, dtype)

    def time_of(n):
        return t_start + n.astype(dtype) * dt

    spectral_fields = _spectral_fields(system, operators)

    def one_step(carry, _):
        state, coefficients, n = carry
        state, coefficients = _step(system, grid, operators, params, state, coefficients, time_of(n), dt)
        n = n + 1
        observed = None if observe is None else observe(state, params, time_of(n))
        return (state, coefficients, n), observed

    def one_frame(carry, frame_index):
        state, n = carry
        # coefficients restart from the saved state each frame, so a run resumed
        # from any frame is bit-identical to an uninterrupted one
        coefficients = {name: _to_coefficients(operators, name, state[name]) for name in spectral_fields}
        carry = (state, coefficients, n)
        if checkpoint:
            carry, observed = _sqrt_checkpointed_scan(one_step, carry, steps_per_save)
        else:
            carry, observed = lax.scan(one_step, carry, None, length=steps_per_save)
        state, _, n = carry
        t = time_of(n)
        frame = _solve_quasi_steady(system, operators, state, params, t)
        if check_cfl:
            bounds = _explicit_rate_bounds(system, grid, operators, frame, params, t)
            for name, bound in bounds.items():
                frame = dict(frame)
                frame[name] = eqx.branched_error_if(
                    frame[name],
                    dt * bound > 1.0 + 1e-6,
                    jnp.minimum(frame_index, _NAMED_FRAMES),
                    _cfl_messages(name, n_saves, steps_per_save),
                )
        return (frame, n), (frame, t, observed)

    frame_indices = jnp.arange(n_saves, dtype=jnp.int32)
    (state, step), (frames, times, observed) = lax.scan(one_frame, (state, step), frame_indices)
    if observed is not None:
        observed = jax.tree_util.tree_map(lambda x: x.reshape((n_saves * steps_per_save,) + x.shape[2:]), observed)
    return state, step, frames, times, observed


_advance_jit = jax.jit(_advance_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6))


def _bounds_jit_impl(system, grid, state, params, t, dtype_probe):
    operators = _build_operators(system, grid, params, jnp.zeros((), dtype_probe.dtype), dtype_probe.dtype)
    return _explicit_rate_bounds(system, grid, operators, state, params, t)


_bounds_jit = jax.jit(_bounds_jit_impl, static_argnums=(0, 1))


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


def max_stable_dt(system: System, grid: Grid, initial: Mapping[str, Any], params=None, *, t: float = 0.0, dtype=None):
    """Largest ``Δt`` (days) for which each explicitly advanced field stays non-negative.

    Returns ``{field: Δt_max}`` for the fields with an explicit limit (local
    diffusion, decay and taxis; taxis speeds are taken from ``initial``).
    Fields advanced exponentially have no limit from their diffusion or decay.
    """
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    bounds = _bounds_jit(system, grid, state, params, jnp.asarray(t, dtype), jnp.zeros((), dtype))
    return {name: (1.0 / float(b) if float(b) > 0 else math.inf) for name, b in bounds.items()}


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
):
    """Largest ``Δt`` (days) that keeps each explicit field non-negative at every frame of a run to ``t_end``.

    :func:`max_stable_dt` looks at one state, but the taxis limit tightens as the
    attractant steepens. This runs a probe simulation from ``initial`` to ``t_end``
    (without the in-run check) at half the smallest limit found so far, saving
    ``frames`` frames, and takes each field's smallest limit over them; while that
    is below the probe's own step, it probes again at half of it (at most
    ``rounds`` probes). Returns ``{field: Δt_max}`` like :func:`max_stable_dt`.
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
    limits = max_stable_dt(system, grid, state0, params, t=t_start, dtype=dtype)
    if not limits or all(math.isinf(v) for v in limits.values()):
        return limits
    duration = t_end - t_start
    for _ in range(rounds):
        probe_dt = 0.5 * min(limits.values())
        steps_per_frame = max(1, math.ceil(duration / frames / probe_dt))
        dt = duration / (frames * steps_per_frame)
        traj = simulate(
            system, grid, state0, t_end=t_end, dt=dt, save_every=duration / frames, params=params,
            t_start=t_start, checkpoint=False, check_stability=False, dtype=dtype,
        )  # fmt: skip
        for k in range(1, len(traj)):
            frame = {name: traj[name][k] for name in system.fields}
            at_frame = max_stable_dt(system, grid, frame, params, t=float(traj.t[k]), dtype=dtype)
            limits = {name: min(limits[name], at_frame[name]) for name in limits}
        if min(limits.values()) >= dt:
            break
    return limits


def _check_dt(system, grid, state, params, dt, t, dtype):
    limits = max_stable_dt(system, grid, state, params, t=t, dtype=dtype)
    too_large = {name: limit for name, limit in limits.items() if dt > limit * (1 + 1e-9)}
    if too_large:
        worst = min(too_large.values())
        detail = ", ".join(f"{name!r}: {limit:.6g} day" for name, limit in too_large.items())
        raise ValueError(
            f"dt={dt} day exceeds the stability (positivity) limit of the explicit part ({detail}); "
            f"the largest stable dt is {worst:.6g} day"
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
    dtype=None,
):
    """Advance ``state`` by ``n_saves × steps_per_save`` steps of ``dt`` from step number ``step``.

    Step ``n`` runs at time ``t_start + n·dt``, so a run cut into pieces (and
    resumed from a saved state and step number) is bit-identical to one piece.
    Returns ``(state, step, trajectory)``; the trajectory holds the
    ``n_saves`` frames after the start, not the start itself.
    """
    dtype = _default_dtype(dtype)
    state = _prepare_state(system, grid, state, dtype)
    params = _prepare_params(params, dtype)
    if check_stability and _is_concrete((state, params, dt, t_start)):
        _check_dt(system, grid, state, params, float(dt), float(t_start) + int(step) * float(dt), dtype)
    state, step, frames, times, observed = _advance_jit(
        system,
        grid,
        int(n_saves),
        int(steps_per_save),
        bool(checkpoint),
        observe,
        bool(check_stability),
        state,
        params,
        jnp.asarray(dt, dtype),
        jnp.asarray(t_start, dtype),
        jnp.asarray(step, jnp.int32),
    )
    t_observed = None
    if observed is not None:
        # observable j is recorded after step number first + j
        first = step - (n_saves * steps_per_save - 1)
        index = first + jnp.arange(n_saves * steps_per_save, dtype=step.dtype)
        t_observed = jnp.asarray(t_start, dtype) + index.astype(dtype) * jnp.asarray(dt, dtype)
    return state, step, Trajectory(times, frames, t_observed, observed)


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
    dtype=None,
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
    A ``dt`` beyond the explicit stability limit is refused before compiling.
    """
    duration = t_end - t_start
    n_steps = _whole_steps(duration, dt, "t_end - t_start")
    steps_per_save = n_steps if save_every is None else _whole_steps(save_every, dt, "save_every")
    if n_steps % steps_per_save:
        raise ValueError(f"t_end - t_start={duration} is not a whole number of save_every={save_every}")
    dtype = _default_dtype(dtype)
    state0 = _prepare_state(system, grid, initial, dtype)
    params = _prepare_params(params, dtype)
    _, _, traj = advance(
        system,
        grid,
        state0,
        dt=dt,
        n_saves=n_steps // steps_per_save,
        steps_per_save=steps_per_save,
        params=params,
        t_start=t_start,
        observe=observe,
        checkpoint=checkpoint,
        check_stability=check_stability,
        dtype=dtype,
    )
    first = _first_frame(system, grid, state0, params, jnp.asarray(t_start, dtype), jnp.zeros((), dtype))
    t = jnp.concatenate([jnp.asarray([t_start], dtype), traj.t])
    fields = {name: jnp.concatenate([first[name][None], traj.fields[name]]) for name in system.fields}
    return Trajectory(t, fields, traj.t_observed, traj.observed)


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


def _first_frame_impl(system, grid, state, params, t, dtype_probe):
    operators = _build_operators(system, grid, params, jnp.zeros((), dtype_probe.dtype), dtype_probe.dtype)
    return _solve_quasi_steady(system, operators, state, params, t)


_first_frame = jax.jit(_first_frame_impl, static_argnums=(0, 1))
