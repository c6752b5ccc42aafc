"""The fit's forward model: arms grouped into shared rollouts, predictions at the data, residuals.

Arms whose runs differ only in sections that enter traced leaves (``Model.batchable_sections``:
parameters, doses, genotype, vessels) and whose parameter and state pytrees have one shape form
a :class:`Group`: one ``jax.vmap``-ed rollout (one compile) serves them all. Each arm is simulated
only as far as its group's last observation, with the fields saved at the end only and
``F`` check frames (``F`` = the number of distinct data times): the per-step scalars of
``observe`` (only the observed ones) give the predictions. Reverse-mode memory is that of the
two-level checkpointed steps, about ``√(F · steps)`` states (``F ≤`` :data:`MAX_FRAMES`), whatever
the run's save interval; the rollout checks positivity and finiteness at the end of every frame.

Residuals (dimensionless) of observation ``i`` with prediction ``ŷ_i``:

.. math::  r_i = (ŷ_i − y_i)/σ_i \\ (\\text{normal}),\\qquad r_i = (\\log ŷ_i − \\log y_i)/σ_i \\ (\\text{lognormal}),

and the loss is the negative log-likelihood up to a constant, ``L = ½ Σ r_i²``. A run that fails
(``traj.result`` not successful: positivity limit or a non-finite state) makes ``ok`` false,
never an exception: ``simulate(..., throw=False)`` throughout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import RESULTS, Grid, System, cast_floats, simulate
from tumorfield_kernels._rollout import block_size

from ..run._loop import numerics_options
from ._data import Observations
from ._transform import with_values


@dataclass(frozen=True)
class Group:
    """Arms sharing one compiled rollout: the static parts (system, grid, steps, observables).

    ``rows[a]`` are the observation rows of arm ``a``; the traced parts (stacked parameters,
    initial states, data) are built by :func:`group_arrays`.
    """

    arms: tuple[str, ...]
    system: System
    grid: Grid
    observe: Callable
    observables: tuple[str, ...]
    dt: float
    dtype: str
    frames: int
    steps_per_frame: int
    rows: tuple[np.ndarray, ...]
    cell_diffusion: str = "explicit"  # the arm's numerics.cell_diffusion, as `tumorfield run` advances it

    @property
    def n_steps(self) -> int:
        return self.frames * self.steps_per_frame

    @property
    def mask(self) -> np.ndarray:
        """``(arms, rows)``: which padded data slots hold an observation."""
        width = max(len(r) for r in self.rows)
        return np.array([[j < len(r) for j in range(width)] for r in self.rows])

    def series(self, names, theta, params, initial):
        """Every observable after every step 0…n of one arm at ``theta`` (``(obs, n + 1)``, float64 with x64),
        and whether the run succeeded."""
        params = with_values(params, names, theta)
        traj = simulate(
            self.system,
            self.grid,
            initial,
            t_end=self.n_steps * self.dt,
            dt=self.dt,
            save_every=self.steps_per_frame * self.dt,
            params=params,
            observe=self.observe,
            throw=False,
            dtype=self.dtype,
            cell_diffusion=self.cell_diffusion,
        )  # no sub-cycling: its loop is reverse-mode only, and the Gauss–Newton Jacobian is forward-mode
        first = self.observe({k: v[0] for k, v in traj.fields.items()}, params, traj.t[0])
        rows = [jnp.concatenate([jnp.asarray(first[k])[None], traj.observed[k]]) for k in self.observables]
        return jnp.stack([r.astype(jnp.result_type(float)) for r in rows]), traj.result == RESULTS.successful


def _signature(config) -> str:
    """What arms of one group share: the model, grid, dt, precision and every non-batchable section."""
    batchable = getattr(config.model, "batchable_sections", ())
    fixed = {
        name: values
        for name, values in config.sections.items()
        if name not in batchable and name not in ("time", "output", "run")
    }
    return json.dumps([fixed, config.time.dt, config.output.precision], sort_keys=True, default=repr)


def _structure(params, state):
    leaves, treedef = jax.tree_util.tree_flatten((params, state))
    return treedef, tuple((np.shape(x), np.asarray(x).dtype) for x in leaves)


def _observer(model, grid: Grid, names: tuple[str, ...]) -> Callable:
    """``observe`` returning only ``names`` (XLA then computes nothing else per step)."""

    def observe(state, params, t):
        values = model.observe(state, params, t, grid)
        return {k: values[k] for k in names}

    return observe


MAX_FRAMES = 16
"""At most this many check frames per rollout, so that dense data keep memory at ``O(√(16 n))``."""


MAX_EXTRA_STEPS = 3
"""Steps per frame added at most to reach equal checkpoint blocks (most lengths need 0–2)."""


def _frames(steps: np.ndarray) -> tuple[int, int]:
    """``(F, steps per frame)``: ``F`` = distinct positive data steps (1 … :data:`MAX_FRAMES`), and
    enough steps per frame to reach the last one. A few more steps may follow it: at most
    ``F − 1`` to fill the last frame, and the steps per frame may be raised (by at most
    :data:`MAX_EXTRA_STEPS`) to a number the checkpointed scan splits into equal blocks
    (``block_size``), which keeps a second copy of the gradient's step code out of the compiled
    program."""
    last = max(1, int(steps.max()))
    frames = max(1, min(last, MAX_FRAMES, len(np.unique(steps[steps > 0]))))
    need = math.ceil(last / frames)
    even = [n for n in range(need, need + MAX_EXTRA_STEPS + 1) if n % block_size(n) == 0]
    return frames, even[0] if even else need


def _start(config, names, theta0):
    """One arm's parameters (run precision, fitted leaves at ``theta0``) and initial state."""
    params = cast_floats(config.model.params(config.grid), config.output.precision)
    return with_values(params, names, theta0), config.model.initial_state(config.grid)


def make_groups(arms: Mapping, data: Observations, names, theta0) -> tuple[list[Group], list[dict]]:
    """Groups of ``arms`` (name → RunConfig) and their traced arrays (see :func:`group_arrays`)."""
    keyed: dict[tuple, list[str]] = {}
    starts = {name: _start(config, names, theta0) for name, config in arms.items()}
    for name, config in arms.items():
        if len(data.rows(name)):
            key = (_signature(config), _structure(*starts[name]))
            keyed.setdefault(key, []).append(name)
    groups, arrays = [], []
    for members in keyed.values():
        config = arms[members[0]]
        rows = tuple(data.rows(m) for m in members)
        picked = np.concatenate(rows)
        observables = tuple(sorted(set(data.observable[picked])))
        frames, per_frame = _frames(data.step[picked])
        group = Group(
            tuple(members),
            config.model.system,
            config.grid,
            _observer(config.model, config.grid, observables),
            observables,
            config.time.dt,
            config.output.precision,
            frames,
            per_frame,
            rows,
            numerics_options(config)[0],
        )
        groups.append(group)
        arrays.append(group_arrays(group, data, [starts[m] for m in members]))
    return groups, arrays


def _padded(values: list[np.ndarray], width: int, fill) -> np.ndarray:
    return np.stack([np.concatenate([v, np.full(width - len(v), fill, dtype=v.dtype)]) for v in values])


def group_arrays(group: Group, data: Observations, starts) -> dict:
    """The traced inputs of a group: stacked parameters and initial states, padded data ``(arms, rows)``."""
    width = max(len(r) for r in group.rows)
    index = [np.searchsorted(group.observables, data.observable[r]).astype(np.int32) for r in group.rows]

    def stack(*xs):  # on the host: an eager jnp op is one more program for a warm start to look up
        return np.stack([np.asarray(x) for x in xs])

    return {
        "params": jax.tree_util.tree_map(stack, *[s[0] for s in starts]),
        "initial": jax.tree_util.tree_map(stack, *[s[1] for s in starts]),
        "index": _padded(index, width, 0),
        "step": _padded([data.step[r].astype(np.int32) for r in group.rows], width, 0),
        "value": _padded([data.value[r] for r in group.rows], width, 1.0),
        "sigma": _padded([data.sigma[r] for r in group.rows], width, 1.0),
    }


def with_values_observed(groups, arrays, values: np.ndarray) -> list[dict]:
    """The groups' traced inputs with other observed ``values`` (one per observation row)."""
    out = []
    for group, arr in zip(groups, arrays, strict=True):
        width = arr["value"].shape[1]
        out.append({**arr, "value": _padded([values[r] for r in group.rows], width, 1.0)})
    return out


def residual(prediction, value, sigma, lognormal: bool):
    """``(ŷ − y)/σ``, or ``(log ŷ − log y)/σ`` for the lognormal likelihood (dimensionless)."""
    if lognormal:
        return (jnp.log(prediction) - jnp.log(value)) / sigma
    return (prediction - value) / sigma


def _each_arm(fn, params, initial):
    """``jax.vmap(fn)(params, initial)`` over a group's arms; a group of one arm is not vmapped
    (the same values, but tracing and lowering the fit's iteration under ``vmap`` took ~35 % longer:
    11–14 s against 8–10 s for the PTX arm at 32² on a 2-core CPU)."""
    if jax.tree_util.tree_leaves(initial)[0].shape[0] > 1:
        return jax.vmap(fn)(params, initial)
    out = fn(*jax.tree_util.tree_map(lambda x: x[0], (params, initial)))
    return jax.tree_util.tree_map(lambda x: x[None], out)


def evaluate(groups, arrays, names, theta, lognormal: bool):
    """``(r, good, series)`` at natural parameters ``theta``: residuals of every observation (in the
    order of :func:`order`), whether each arm's run succeeded (in the order of the groups' arms), and
    each group's ``(arms, obs, n + 1)`` series."""
    out, good, series = [], [], []
    for group, arr in zip(groups, arrays, strict=True):
        values, ok = _each_arm(lambda p, s, g=group: g.series(names, theta, p, s), arr["params"], arr["initial"])
        arm = jnp.arange(len(group.arms))[:, None]
        prediction = values[arm, arr["index"], arr["step"]]
        r = residual(prediction, arr["value"], arr["sigma"], lognormal)
        out.append(r[group.mask])
        good.append(ok)
        series.append(values)
    return jnp.concatenate(out), jnp.concatenate(good), series


def order(groups) -> np.ndarray:
    """Observation row of each entry of the residual vector of :func:`evaluate`."""
    return np.concatenate([np.concatenate(g.rows) for g in groups])
