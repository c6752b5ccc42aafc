"""One time step of a whole system, with its operators precomputed for one ``dt``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from . import _schemes as schemes
from ._decomposition import ONE_DEVICE, Slabs
from ._diffusion import SplitDiffusion
from ._grid import Grid
from ._numerics import Numerics
from ._solution import POSITIVITY_TOLERANCE
from ._system import System, WithGrid

State = dict[str, Any]


class Stepper(eqx.Module):
    """Advances every field of a :class:`System` by one step ``dt`` (days).

    Built once per rollout (:meth:`build`, or :func:`make_stepper` for a caller's own loop): each
    field's scheme (:mod:`._schemes`) with its operators for ``dt`` and ``params``. A step
    solves the quasi-steady fields, evaluates the reaction once per stage, and
    runs each scheme's two stages (ETDRK2 or SSP-RK2, second order).

    With :class:`ImplicitDiffusion` the diffusion of the cell fields is split off
    (:mod:`._diffusion`): a step is ``X Y [Z] E Y X [Z first]``, half steps of implicit MPRK22
    diffusion around the explicit step ``E`` of everything else (Strang splitting, second order).

    With :class:`Subcycle` the explicit step is sub-cycled where its positivity limit has
    fallen below ``dt``: from the state entering ``E``, ``n = ⌈dt · bound⌉`` equal steps of
    ``dt/n`` (``bound``: the largest outflow-rate bound, 1/day, of the explicitly limited fields;
    section 4 of ``docs/numerics.md``), with the ``dt``-dependent operators rebuilt for ``dt/n``.
    ``n`` is capped at ``max_substeps``; a step that needed more is reported by :meth:`step`
    (the rollout ends the run with ``RESULTS.substep_limit_exceeded``). The times of the step,
    the doses and the save grid do not change.

    Calling a stepper, ``stepper(state, t)``, takes one whole step from a state (the quasi-steady
    fields are solved at the new time); :meth:`step` is the rollout's form, which carries the
    spectral schemes' coefficients between steps.

    ``slabs`` (:class:`._decomposition.Slabs`; None: one device) decomposes the grid over the
    devices of a mesh: every array keeps its meaning (the whole grid), the local operators of a
    stage (all fields' transport together, all spectral transforms of a kind together, the
    implicit sweeps) run as one ``shard_map`` each with halo exchanges and transposes.
    """

    schemes: dict[str, schemes.FieldScheme]
    solves: tuple[schemes.QuasiSteadySolve, ...]
    diffusion: SplitDiffusion | None
    params: Any
    dt: Any
    system: System
    numerics: Numerics
    mask: Any
    grid: Grid = eqx.field(static=True)
    slabs: Slabs | None = eqx.field(static=True, default=None)

    @classmethod
    def build(cls, system: System, grid: Grid, params, dt, numerics: Numerics, slabs: Slabs | None = None) -> Stepper:
        dt = jnp.asarray(dt)
        field_schemes, solves, diffusion = schemes.plan(
            system, grid, params, dt, dt.dtype, numerics.cell_diffusion, slabs
        )
        mask = schemes.domain_mask(system, params, dt.dtype)
        return cls(field_schemes, solves, diffusion, params, dt, system, numerics, mask, grid, slabs)

    @property
    def ops(self):
        """The local operators: :data:`._decomposition.ONE_DEVICE`, or the slabs of a decomposed grid."""
        return ONE_DEVICE if self.slabs is None else self.slabs

    @property
    def fields(self) -> tuple[str, ...]:
        return self.system.fields

    def __call__(self, state: State, t) -> State:
        """One step from ``state`` at ``t`` (days): the state at ``t + dt``, quasi-steady fields solved."""
        state, _, _ = self.step(state, self.prepare(state), jnp.asarray(t, self.dt.dtype))
        return self.solve_quasi_steady(state, t + self.dt)

    def _reaction(self, state: State, t) -> Mapping[str, Any]:
        reaction = self.system.reaction
        if reaction is None:
            return {}
        if isinstance(reaction, WithGrid):
            rates = reaction.fn(state, self.params, t, self.grid)
        else:
            rates = reaction(state, self.params, t)
        unknown = set(rates) - set(self.fields)
        if unknown:
            raise ValueError(f"reaction returned rates for unknown fields {sorted(unknown)}; fields are {self.fields}")
        return rates

    def solve_quasi_steady(self, state: State, t) -> State:
        """``state`` with every quasi-steady field solved from the current sources."""
        if not self.solves:
            return state
        rates = self._reaction(state, t)
        state = dict(state)
        for solve in self.solves:
            like = state[solve.names[0]]
            sources = [jnp.broadcast_to(jnp.asarray(rates.get(n, 0.0), like.dtype), like.shape) for n in solve.names]
            state.update(zip(solve.names, solve.solve(jnp.stack(sources), self.slabs), strict=True))
        return state

    def rates(self, state: State, t, field_schemes=None) -> tuple[State, State]:
        """The explicit part ``N(u, t)`` of every time-dependent field, and the state with its
        quasi-steady fields solved."""
        field_schemes = self.schemes if field_schemes is None else field_schemes
        state = self.solve_quasi_steady(state, t)
        reaction = self._reaction(state, t)
        spacing = self.grid.spacing
        terms = {name: scheme.transport_term(state[name], state, self.params) for name, scheme in field_schemes.items()}
        transports = self.ops.transport_many({name: term for name, term in terms.items() if term is not None}, spacing)
        out = {}
        for name, scheme in field_schemes.items():
            u = state[name]
            rate = jnp.broadcast_to(jnp.asarray(reaction.get(name, 0.0), u.dtype), u.shape)
            if self.mask is not None and u.ndim:  # no reaction outside the domain (scalars are not fields)
                rate = rate * self.mask
            out[name] = scheme.explicit_rate(u, rate, state, self.params, spacing, transports.get(name))
        return out, state

    def prepare(self, state: State) -> State:
        """What the schemes carry between stages, restarted from ``state`` (spectral coefficients)."""
        inputs = {name: (s.spectral_input(state[name]), s.dirichlet) for name, s in _spectral(self.schemes).items()}
        return self.ops.forward_many(inputs)

    def _stages(self, field_schemes, state: State, carried: State, t, dt, first=None) -> tuple[State, State]:
        """The explicit step ``E`` of length ``dt``: ``a = A u + h B N(u, t)``,
        ``u⁺ = a + h C (N(a, t + h) − N(u, t))`` for every field; ``first``: ``rates(state, t)``."""
        n0, state = self.rates(state, t, field_schemes) if first is None else first
        spectral, ops = _spectral(field_schemes), self.ops
        hats = ops.forward_many({name: (s.source(n0[name]), s.dirichlet) for name, s in spectral.items()})
        stage, stage_carried, memo = dict(state), {}, {}
        for name, scheme in field_schemes.items():
            if name in spectral:
                stage_carried[name], memo[name] = scheme.first_coefficients(carried[name], hats[name], dt), hats[name]
            else:
                stage[name], stage_carried[name], memo[name] = scheme.first_stage(
                    state[name], carried.get(name), n0[name], dt
                )
        fields = ops.inverse_many({name: (stage_carried[name], s.dirichlet) for name, s in spectral.items()})
        stage.update({name: s.field(fields[name]) for name, s in spectral.items()})
        n1, _ = self.rates(stage, t + dt, field_schemes)
        hats = ops.forward_many({name: (s.source(n1[name]), s.dirichlet) for name, s in spectral.items()})
        new, new_carried = dict(state), {}
        for name, scheme in field_schemes.items():
            if name in spectral:
                new_carried[name] = scheme.second_coefficients(stage_carried[name], memo[name], hats[name], dt)
                continue
            new[name], c = scheme.second_stage(stage[name], stage_carried[name], memo[name], n1[name], dt)
            if c is not None:
                new_carried[name] = c
        fields = ops.inverse_many({name: (new_carried[name], s.dirichlet) for name, s in spectral.items()})
        new.update({name: s.field(fields[name]) for name, s in spectral.items()})
        return new, new_carried

    def _diffuse(self, state: State, reverse: bool) -> State:
        """Half a step of the split-off implicit diffusion of every cell field (``D`` from ``state``)."""
        if self.diffusion is None:
            return state
        return {**state, **self.diffusion.half_step(state, self.params, self.dt, reverse)}

    def needed_substeps(self, solved: State, t) -> jax.Array:
        """``⌈dt · max bound⌉`` (≥ 1) at a state whose quasi-steady fields are solved at ``t``."""
        bounds = self.rate_bounds(solved, t, solved=True)
        if not bounds:
            return jnp.ones((), jnp.int32)
        rate = jnp.max(jnp.stack(list(bounds.values())))
        n = jnp.ceil(self.dt * rate / (1.0 + POSITIVITY_TOLERANCE))
        n = jnp.where(jnp.isfinite(n), n, 2**30)  # a non-finite state: the rollout reports it
        return jnp.clip(n, 1, 2**30).astype(jnp.int32)

    def _subcycled(self, state: State, carried: State, t, n) -> tuple[State, State]:
        """``n`` explicit steps of ``dt/n`` (operators rebuilt for ``dt/n``)."""
        h = self.dt / n.astype(self.dt.dtype)
        sub_schemes = schemes.plan(
            self.system, self.grid, self.params, h, self.dt.dtype, self.numerics.cell_diffusion, self.slabs
        )[0]

        def body(carry):
            i, state, carried = carry
            state, carried = self._stages(sub_schemes, state, carried, t + i.astype(h.dtype) * h, h)
            return i + 1, state, carried

        init = (jnp.zeros((), jnp.int32), state, carried)
        substeps = self.numerics.substeps
        _, state, carried = substeps.while_loop(lambda c: c[0] < n, body, init, substeps.max_substeps)
        return state, carried

    def step(self, state: State, carried: State, t) -> tuple[State, State, jax.Array]:
        """``(state, carried)`` at ``t`` → at ``t + dt``, and the number of explicit sub-steps the
        step needed (1 without sub-cycling; more than ``max_substeps`` if it was capped)."""
        state = self._diffuse(state, reverse=False)
        first = self.rates(state, t)
        # the plain step outside the branch: XLA fuses its first stage into the rates (inside a
        # cond branch it cannot: 7 of 83 ms per step at 512²); a sub-cycled step discards it
        new, new_carried = self._stages(self.schemes, state, carried, t, self.dt, first)
        needed = jnp.ones((), jnp.int32)
        substeps = self.numerics.substeps
        if substeps.cap > 1 and any(s.limits_step for s in self.schemes.values()):  # else never sub-cycled
            needed = self.needed_substeps(first[1], t)
            n = jnp.minimum(needed, substeps.cap)
            # under vmap a per-member predicate makes the cond a select (both branches for every
            # member); deciding for the whole batch keeps it a branch
            together = n if substeps.axis_name is None else lax.pmax(n, substeps.axis_name)
            plain = (new, new_carried)
            new, new_carried = lax.cond(together == 1, lambda: plain, lambda: self._subcycled(first[1], carried, t, n))
        return self._diffuse(new, reverse=True), new_carried, needed

    def rate_bounds(self, state: State, t, *, solved: bool = False) -> dict[str, Any]:
        """Per explicitly limited field, its outflow-rate bound (1/day) at ``state``: a step
        ``dt`` keeps it non-negative while ``dt · bound ≤ 1``. ``solved``: the quasi-steady
        fields of ``state`` are already solved at ``t``. Split-off implicit diffusion is not part
        of the bound (:meth:`diffusion_rates` gives what it would add if explicit)."""
        if not solved:
            state = self.solve_quasi_steady(state, t)
        requests = {name: scheme.speed_request(state, self.params) for name, scheme in self.schemes.items()}
        spacing = self.grid.spacing
        speeds = self.ops.face_speeds_many({name: r for name, r in requests.items() if r is not None}, spacing)
        bounds = {}
        for name, scheme in self.schemes.items():
            bound = scheme.rate_bound(state, self.params, spacing, speeds.get(name))
            if bound is not None:
                bounds[name] = jnp.asarray(bound, self.dt.dtype)
        return bounds

    def diffusion_rates(self, state: State, t) -> dict[str, Any]:
        """Per split-off cell field, ``Σ_axes 2 max D/Δx²`` (1/day): the bound its diffusion alone
        would impose on an explicit step (``Δt ≤ 1/rate``)."""
        if self.diffusion is None:
            return {}
        state = self.solve_quasi_steady(state, t)
        rates = self.diffusion.explicit_limit_rates(state, self.params)
        return {name: jnp.asarray(rate, self.dt.dtype) for name, rate in rates.items()}


def _spectral(field_schemes) -> dict[str, schemes.SpectralETDRK2]:
    return {name: s for name, s in field_schemes.items() if isinstance(s, schemes.SpectralETDRK2)}


def make_stepper(system: System, grid: Grid, params, dt, numerics: Numerics | None = None, *, mesh=None) -> Stepper:
    """The step of ``system`` on ``grid`` for ``params`` and ``dt`` (days), built once: a callable
    ``stepper(state, t) → state`` (jittable, differentiable). ``params`` and the state as the rollout
    takes them (:func:`cast_floats`); ``numerics`` as in :func:`simulate`. ``mesh``: a one-axis
    ``jax.sharding.Mesh`` whose devices share the grid, split in slabs along its first axis (as in
    :func:`simulate`; call the stepper inside ``jax.jit``)."""
    numerics = Numerics() if numerics is None else numerics
    slabs = Slabs.of(mesh, grid)
    return Stepper.build(system, grid, params, jnp.asarray(dt, numerics.float_dtype), numerics, slabs)
