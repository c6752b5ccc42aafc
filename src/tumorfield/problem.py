"""A run's problem, built once from its config: what ``Run``, sweep batches and fit groups advance.

A :class:`Problem` holds everything the core needs — the system, the grid, the parameters in the
compute precision, the initial state, the observables and the numerics — as one ``eqx.Module``.
Whether runs can share one compiled rollout is decided here, once, from the static part of
``eqx.partition(problem, eqx.is_array)`` and the shapes of the arrays (:meth:`Problem.rollout_key`):
equal keys mean one compile serves them all, and a vmapped batch of them is exact, because every
array that differs between them (parameters, initial state, the system's numeric coefficients) is
batched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh
from tumorfield_kernels import (
    Grid,
    Numerics,
    SaveAt,
    System,
    Trajectory,
    advance,
    cast_floats,
    check_split,
    initial_frame,
)


class Observer(eqx.Module):
    """The per-step observables of a model on a grid: ``fn(state, params, t, grid)``, restricted to
    ``names`` (None: all; XLA then computes nothing else per step). Static: equal observers (the same
    model function, grid and names) share a compiled rollout."""

    fn: Callable = eqx.field(static=True)
    grid: Grid = eqx.field(static=True)
    names: tuple[str, ...] | None = eqx.field(static=True, default=None)

    def __call__(self, state, params, t) -> dict[str, Any]:
        values = self.fn(state, params, t, self.grid)
        return values if self.names is None else {k: values[k] for k in self.names}


class Problem(eqx.Module):
    """What one run solves and how: ``system`` on ``grid`` from ``y0`` with ``params`` (in the compute
    precision), observed by ``observe``, advanced with ``numerics`` in steps of ``dt`` days; ``mesh``:
    the devices that share the grid (``[run] devices``, :func:`run_mesh`; None: one device)."""

    system: System
    params: Any
    y0: dict[str, Any]
    numerics: Numerics
    observe: Observer
    grid: Grid = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    mesh: Mesh | None = eqx.field(static=True, default=None)

    @classmethod
    def from_config(
        cls, config, *, observables: tuple[str, ...] | None = None, numerics: Numerics | None = None,
        mesh: Mesh | None = None,
    ):  # fmt: skip
        """The problem of a run config (``observables``: only these keys of the model's observe;
        ``numerics``: instead of the config's, e.g. with a vmap axis name for its sub-cycling; ``mesh``:
        the devices that share its grid, :func:`run_mesh`)."""
        model, grid = config.model, config.grid
        if not isinstance(inspect.getattr_static(type(model), "observe", None), staticmethod):
            raise TypeError(
                f"{type(model).__name__}.observe must be a @staticmethod observe(state, params, t, grid): a function "
                "of its arguments alone (put what else it needs into params(grid)), so that runs of the model "
                "share one observer and one compiled rollout (docs/models.md)"
            )
        numerics = config.numerics if numerics is None else numerics
        params = cast_floats(model.params(grid), numerics.dtype)
        y0 = {name: np.asarray(value) for name, value in model.initial_state(grid).items()}
        observe = Observer(model.observe, grid, observables)
        return cls(model.system, params, y0, numerics, observe, grid, float(config.time.dt), mesh)

    def rollout_key(self) -> Hashable:
        """Equal for problems that one compiled rollout serves, batched over their arrays: the static
        part of ``eqx.partition(self, eqx.is_array)`` (system structure and functions, grid, observer,
        numerics, dt) and the shapes and dtypes of the arrays."""
        dynamic, static = eqx.partition(self, eqx.is_array)
        static_leaves, static_def = jax.tree_util.tree_flatten(static)
        shapes = tuple((np.shape(x), np.dtype(x.dtype).str) for x in jax.tree_util.tree_leaves(dynamic))
        return static_def, tuple(static_leaves), shapes

    def initial_frame(self) -> dict[str, Any]:
        """Frame 0: ``y0`` in the compute precision with the quasi-steady fields solved at t = 0."""
        return initial_frame(self.system, self.grid, self.y0, self.params, numerics=self.numerics, mesh=self.mesh)

    def without_initial(self) -> Problem:
        """The problem without ``y0`` (a batch advances its members' current states, not their starts)."""
        return eqx.tree_at(lambda p: p.y0, self, {})

    def arrays(self):
        """What a batch stacks of this member: the array part of :meth:`without_initial`."""
        return eqx.partition(self.without_initial(), eqx.is_array)[0]

    def advance(self, state, step, n_saves: int, steps_per_save: int) -> Trajectory:
        """``n_saves`` frames of ``steps_per_save`` steps from ``state`` at step number ``step``, failures
        as values (``throw=False``); jittable and vmappable over the problem's arrays."""
        return advance(
            self.system, self.grid, state, dt=self.dt, n_saves=n_saves, steps_per_save=steps_per_save,
            params=self.params, numerics=self.numerics, saveat=SaveAt(observe=self.observe), throw=False, step=step,
            mesh=self.mesh,
        )  # fmt: skip


def run_mesh(config) -> Mesh | None:
    """The mesh of ``[run] devices`` (None for one device): the first ``devices`` local devices (all of
    them for ``"all"``), one slab of the grid each; :class:`~tumorfield.config.ConfigError` if there are
    fewer or the count does not split the grid."""
    from .config import ConfigError

    devices = config.run.devices
    available = jax.local_devices()
    n = len(available) if devices == "all" else devices
    if n > len(available):
        raise ConfigError("run.devices", devices, f"this machine has {len(available)} {available[0].platform} "
                          f"device(s)", config.source)  # fmt: skip
    if n == 1:
        return None
    try:
        check_split(config.grid.shape, n)
    except ValueError as error:
        raise ConfigError("run.devices", devices, str(error), config.source) from None
    return Mesh(np.array(available[:n]), ("x",))


def batched_advance(template: Problem, n_saves: int, steps_per_save: int, axis_name: str) -> Callable:
    """``(arrays, state, step) → Trajectory`` of a batch of problems with ``template``'s rollout key:
    ``jax.vmap`` over the stacked :meth:`Problem.arrays` of the problems and their states, under
    ``axis_name`` (the numerics' :class:`Subcycle` decides for the batch together when it names it)."""
    static = eqx.partition(template.without_initial(), eqx.is_array)[1]

    def one(arrays, state, step):
        return eqx.combine(arrays, static).advance(state, step, n_saves, steps_per_save)

    return jax.vmap(one, in_axes=(0, 0, None), axis_name=axis_name)
