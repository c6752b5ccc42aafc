"""One time step of a whole system, with its operators precomputed for one ``dt``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax.numpy as jnp

from . import _schemes as schemes
from ._grid import Grid
from ._system import System

State = dict[str, Any]


class Stepper(eqx.Module):
    """Advances every field of a :class:`System` by one step ``dt`` (days).

    Built once per rollout (:meth:`build`): each field's scheme
    (:mod:`._schemes`) with its operators for ``dt`` and ``params``. A step
    solves the quasi-steady fields, evaluates the reaction once per stage, and
    runs each scheme's two stages (ETDRK2 or SSP-RK2, second order).
    """

    schemes: dict[str, schemes.FieldScheme]
    solves: dict[str, schemes.QuasiSteadySolve]
    params: Any
    dt: Any
    grid: Grid = eqx.field(static=True)
    fields: tuple[str, ...] = eqx.field(static=True)
    reaction: Callable | None = eqx.field(static=True)
    reaction_takes_grid: bool = eqx.field(static=True)

    @classmethod
    def build(cls, system: System, grid: Grid, params, dt) -> Stepper:
        dt = jnp.asarray(dt)
        field_schemes, solves = schemes.plan(system, grid, params, dt, dt.dtype)
        return cls(field_schemes, solves, params, dt, grid, system.fields, system.reaction, system.reaction_takes_grid)

    def _reaction(self, state: State, t) -> Mapping[str, Any]:
        if self.reaction is None:
            return {}
        if self.reaction_takes_grid:
            rates = self.reaction(state, self.params, t, self.grid)
        else:
            rates = self.reaction(state, self.params, t)
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
        for name, solve in self.solves.items():
            like = state[name]
            state[name] = solve.solve(jnp.broadcast_to(jnp.asarray(rates.get(name, 0.0), like.dtype), like.shape))
        return state

    def rates(self, state: State, t) -> tuple[State, State]:
        """The explicit part ``N(u, t)`` of every time-dependent field, and the state with its
        quasi-steady fields solved."""
        state = self.solve_quasi_steady(state, t)
        reaction = self._reaction(state, t)
        spacing = self.grid.spacing
        out = {}
        for name, scheme in self.schemes.items():
            u = state[name]
            rate = jnp.broadcast_to(jnp.asarray(reaction.get(name, 0.0), u.dtype), u.shape)
            out[name] = scheme.explicit_rate(u, rate, state, self.params, spacing)
        return out, state

    def prepare(self, state: State) -> State:
        """What the schemes carry between stages, restarted from ``state`` (spectral coefficients)."""
        carried = {name: scheme.prepare(state[name]) for name, scheme in self.schemes.items()}
        return {name: c for name, c in carried.items() if c is not None}

    def step(self, state: State, carried: State, t) -> tuple[State, State]:
        """``(state, carried)`` at ``t`` → at ``t + dt``: ``a = A u + h B N(u, t)``,
        ``u⁺ = a + h C (N(a, t + h) − N(u, t))`` for every field (:mod:`._schemes`)."""
        dt = self.dt
        n0, state = self.rates(state, t)
        stage, stage_carried, memo = dict(state), {}, {}
        for name, scheme in self.schemes.items():
            stage[name], stage_carried[name], memo[name] = scheme.first_stage(
                state[name], carried.get(name), n0[name], dt
            )
        n1, _ = self.rates(stage, t + dt)
        new, new_carried = dict(state), {}
        for name, scheme in self.schemes.items():
            new[name], c = scheme.second_stage(stage[name], stage_carried[name], memo[name], n1[name], dt)
            if c is not None:
                new_carried[name] = c
        return new, new_carried

    def rate_bounds(self, state: State, t, *, solved: bool = False) -> dict[str, Any]:
        """Per explicitly limited field, its outflow-rate bound (1/day) at ``state``: a step
        ``dt`` keeps it non-negative while ``dt · bound ≤ 1``. ``solved``: the quasi-steady
        fields of ``state`` are already solved at ``t``."""
        if not solved:
            state = self.solve_quasi_steady(state, t)
        bounds = {}
        for name, scheme in self.schemes.items():
            bound = scheme.rate_bound(state, self.params, self.grid.spacing)
            if bound is not None:
                bounds[name] = jnp.asarray(bound, self.dt.dtype)
        return bounds
