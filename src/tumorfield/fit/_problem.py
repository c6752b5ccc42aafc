"""The fit's forward model: arms grouped into shared rollouts, predictions at the data, residuals.

Arms whose :class:`~tumorfield.problem.Problem` s have one rollout key (``Problem.rollout_key``:
the same static part and array shapes; they may differ in any array — parameters, doses, genotype,
vessels, initial state) form a :class:`Group`: one ``jax.vmap``-ed rollout (one compile) serves them
all, and an arm's sub-cycling (``numerics.max_substeps``) is honoured: reverse mode through the
checkpointed sub-step loop, the Gauss–Newton Jacobian (forward mode) through ``Numerics.forward_mode``.
Each arm is simulated
only as far as its group's last observation, with the fields saved at the end only and
``F`` check frames (``F`` = the number of distinct data times): the per-step scalars of
``observe`` (only the observed ones) give the predictions. Reverse-mode memory is that of the
two-level checkpointed steps, about ``√(F · steps)`` states (``F ≤`` :data:`MAX_FRAMES`), whatever
the run's save interval; the rollout checks positivity and finiteness at the end of every frame.

A datum between steps ``k`` and ``k + 1`` (``t = (k + w)·dt``) is compared with the series interpolated
linearly in time, ``ŷ = ŷ_k + w·(ŷ_{k+1} − ŷ_k)`` (exactly ``ŷ_k`` on the step grid, ``w = 0``).

A fitted ``"initial.KEY"`` (an ``initial_keys`` entry of the model) rebuilds each arm's initial state in
the traced program from the closed form ``Model.initial_state_at`` of the arm's initial values (a traced
input, so arms with other seeds share the group), with the fitted value in place of the arm's own.

Residuals (dimensionless) of observation ``i`` with prediction ``ŷ_i``:

.. math::  r_i = (ŷ_i − y_i)/σ_i \\ (\\text{normal}),\\qquad r_i = (\\log ŷ_i − \\log y_i)/σ_i \\ (\\text{lognormal}),

and the loss is the negative log-likelihood up to a constant, ``L = ½ Σ r_i²``. A run that fails
(``traj.result`` not successful: positivity limit or a non-finite state) makes ``ok`` false,
never an exception: ``simulate(..., throw=False)`` throughout.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import RESULTS, SaveAt, SqrtCheckpointed, simulate

from ..problem import Observer, Problem
from ._data import Observations
from ._transform import with_values

INITIAL = "initial."
"""Prefix of a fitted name that is an ``[initial]`` key of the model (``"initial.radius"``)."""

ARM_AXIS = "arm"  # the vmap axis of a group's arms: they decide together whether a step is sub-cycled


@dataclass(frozen=True)
class Group:
    """Arms sharing one compiled rollout: ``problem`` (the first arm's, without its initial state: the
    static parts and the template the arms' arrays are combined with), the observed keys, the steps.
    An arm's arrays travel as the flat leaves of ``Problem.arrays()`` (rebuilt on ``problem``'s
    structure): the optimiser's tree utilities then see plain arrays only.

    ``rows[a]`` are the observation rows of arm ``a``; the traced parts (stacked problem arrays,
    initial states, data) are built by :func:`group_arrays`.
    """

    arms: tuple[str, ...]
    problem: Problem
    observables: tuple[str, ...]
    frames: int
    steps_per_frame: int
    rows: tuple[np.ndarray, ...]
    initial_at: Callable | None = None
    """``Model.initial_state_at`` of the arms' model where an initial key is fitted, else None."""

    @property
    def dt(self) -> float:
        return self.problem.dt

    @property
    def dtype(self) -> str:
        return self.problem.numerics.dtype

    @property
    def n_steps(self) -> int:
        return self.frames * self.steps_per_frame

    @property
    def mask(self) -> np.ndarray:
        """``(arms, rows)``: which padded data slots hold an observation."""
        width = max(len(r) for r in self.rows)
        return np.array([[j < len(r) for j in range(width)] for r in self.rows])

    def forward_mode(self) -> Group:
        """The same group, forward-mode differentiable (its sub-step loop a ``lax.while_loop``)."""
        numerics = self.problem.numerics.forward_mode()
        return dataclasses.replace(self, problem=eqx.tree_at(lambda p: p.numerics, self.problem, numerics))

    def series(self, names, theta, leaves, initial, seed):
        """Every observable after every step 0…n of one arm (the ``leaves`` of its problem's arrays) at
        ``theta`` (``(obs, n + 1)``, float64 with x64), and whether the run succeeded. ``seed``: the arm's
        initial values (``Model.initial_values``), from which fitted initial keys rebuild ``initial``."""
        dynamic, static = eqx.partition(self.problem, eqx.is_array)
        problem = eqx.combine(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(dynamic), leaves), static)
        own = [i for i, n in enumerate(names) if not n.startswith(INITIAL)]
        params = with_values(problem.params, [names[i] for i in own], [theta[i] for i in own])
        if self.initial_at is not None:
            fitted = {n[len(INITIAL) :]: theta[i] for i, n in enumerate(names) if n.startswith(INITIAL)}
            values = {k: jnp.asarray(fitted.get(k, v)).astype(jnp.result_type(float)) for k, v in seed.items()}
            initial, params = self.initial_at(values, params, problem.grid)
        traj = simulate(
            problem.system, problem.grid, initial, t_end=self.n_steps * self.dt, dt=self.dt, params=params,
            numerics=problem.numerics, saveat=SaveAt(every=self.steps_per_frame * self.dt, observe=problem.observe),
            throw=False,
        )  # fmt: skip
        first = problem.observe({k: v[0] for k, v in traj.fields.items()}, params, traj.t[0])
        rows = [jnp.concatenate([jnp.asarray(first[k])[None], traj.observed[k]]) for k in self.observables]
        return jnp.stack([r.astype(jnp.result_type(float)) for r in rows]), traj.result == RESULTS.successful


def _arm_problem(config, observables=None, axis_name: str | None = ARM_AXIS) -> Problem:
    """An arm's problem as a group runs it: sub-cycling decided together with the group's arms."""
    return Problem.from_config(config, observables=observables, numerics=config.numerics.vmapped(axis_name))


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
    even = [n for n in range(need, need + MAX_EXTRA_STEPS + 1) if n % SqrtCheckpointed.block_size(n) == 0]
    return frames, even[0] if even else need


def make_groups(arms: Mapping, data: Observations, names, theta0) -> tuple[list[Group], list[dict]]:
    """Groups of ``arms`` (name → RunConfig) and their traced arrays (see :func:`group_arrays`); the
    fitted leaves start at ``theta0``."""
    problems = {name: _arm_problem(config) for name, config in arms.items()}
    keyed: dict = {}
    for name in arms:
        if len(data.rows(name)):
            keyed.setdefault((problems[name].rollout_key(), arms[name].output.precision), []).append(name)
    groups, arrays = [], []
    for members in keyed.values():
        rows = tuple(data.rows(m) for m in members)
        picked = np.concatenate(rows)
        observables = tuple(sorted(str(name) for name in set(data.observable[picked])))
        frames, per_frame = _frames(data.last_step[picked])
        template = problems[members[0]].without_initial()
        if len(members) == 1:  # not vmapped (_each_arm): no axis to decide the sub-cycling over
            template = _arm_problem(arms[members[0]], None, axis_name=None).without_initial()
        template = eqx.tree_at(lambda p: p.observe, template, Observer(template.observe.fn, template.grid, observables))
        seeded = any(n.startswith(INITIAL) for n in names)
        initial_at = type(arms[members[0]].model).initial_state_at if seeded else None
        group = Group(tuple(members), template, observables, frames, per_frame, rows, initial_at)
        starts = []
        own = [i for i, n in enumerate(names) if not n.startswith(INITIAL)]
        for m in members:
            problem, config = problems[m], arms[m]
            params = with_values(problem.params, [names[i] for i in own], [theta0[i] for i in own])
            problem = eqx.tree_at(lambda p: p.params, problem, params)
            seed = config.model.initial_values(config.grid) if seeded else {}
            starts.append((jax.tree_util.tree_leaves(problem.arrays()), problem.y0, seed))
        groups.append(group)
        arrays.append(group_arrays(group, data, starts))
    return groups, arrays


def _padded(values: list[np.ndarray], width: int, fill) -> np.ndarray:
    return np.stack([np.concatenate([v, np.full(width - len(v), fill, dtype=v.dtype)]) for v in values])


def group_arrays(group: Group, data: Observations, starts) -> dict:
    """The traced inputs of a group: stacked problem arrays, initial states and initial values (``seed``), padded
    data ``(arms, rows)``: observable index, step ``k``, weight ``w`` of step ``k + 1``, value, sigma."""
    width = max(len(r) for r in group.rows)
    index = [np.searchsorted(group.observables, data.observable[r]).astype(np.int32) for r in group.rows]

    def stack(*xs):  # on the host: an eager jnp op is one more program for a warm start to look up
        return np.stack([np.asarray(x) for x in xs])

    return {
        "problem": jax.tree_util.tree_map(stack, *[s[0] for s in starts]),
        "initial": jax.tree_util.tree_map(stack, *[s[1] for s in starts]),
        "seed": jax.tree_util.tree_map(stack, *[s[2] for s in starts]),
        "index": _padded(index, width, 0),
        "step": _padded([data.step[r].astype(np.int32) for r in group.rows], width, 0),
        "weight": _padded([data.weight[r] for r in group.rows], width, 0.0),
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


def _each_arm(fn, arrays, initial, seed):
    """``jax.vmap(fn)(arrays, initial, seed)`` over a group's arms; a group of one arm is not vmapped
    (the same values, but tracing and lowering the fit's iteration under ``vmap`` took ~35 % longer:
    11–14 s against 8–10 s for the PTX arm at 32² on a 2-core CPU)."""
    if jax.tree_util.tree_leaves(initial)[0].shape[0] > 1:
        return jax.vmap(fn, axis_name=ARM_AXIS)(arrays, initial, seed)
    out = fn(*jax.tree_util.tree_map(lambda x: x[0], (arrays, initial, seed)))
    return jax.tree_util.tree_map(lambda x: x[None], out)


def interpolated(values, arm, index, step, weight):
    """``values[arm, index, step]``, or between steps ``ŷ_k + w·(ŷ_{k+1} − ŷ_k)`` where ``weight`` ``w > 0``
    (``values``: ``(arms, obs, n + 1)``; NumPy or JAX arrays)."""
    xp = jnp if isinstance(values, jax.Array) else np
    last = values.shape[-1] - 1
    lo, hi = values[arm, index, step], values[arm, index, xp.minimum(step + 1, last)]
    return xp.where(weight > 0, lo + weight * (hi - lo), lo)


def evaluate(groups, arrays, names, theta, lognormal: bool):
    """``(r, good, series)`` at natural parameters ``theta``: residuals of every observation (in the
    order of :func:`order`), whether each arm's run succeeded (in the order of the groups' arms), and
    each group's ``(arms, obs, n + 1)`` series."""
    out, good, series = [], [], []
    for group, arr in zip(groups, arrays, strict=True):
        values, ok = _each_arm(lambda a, s, d, g=group: g.series(names, theta, a, s, d), arr["problem"],
                               arr["initial"], arr["seed"])  # fmt: skip
        arm = jnp.arange(len(group.arms))[:, None]
        prediction = interpolated(values, arm, arr["index"], arr["step"], arr["weight"])
        r = residual(prediction, arr["value"], arr["sigma"], lognormal)
        out.append(r[group.mask])
        good.append(ok)
        series.append(values)
    return jnp.concatenate(out), jnp.concatenate(good), series


def order(groups) -> np.ndarray:
    """Observation row of each entry of the residual vector of :func:`evaluate`."""
    return np.concatenate([np.concatenate(g.rows) for g in groups])
