"""Members of a sweep advanced together: one ``jax.vmap``-ed rollout per batch, one file per member.

Members batch together when their :class:`~tumorfield.problem.Problem` s have one rollout key
(``Problem.rollout_key``: the same static part and array shapes) and the same time stepping and
chunking; one compile then serves the whole batch (and, through the persistent cache, every batch of
that shape). With several local devices the member axis is sharded over them (no collectives:
members are independent). Each member's file is an ordinary run file; a member that fails is marked
``failed`` and the others go on (the chunk loop is ``run``'s, :func:`tumorfield.run._loop.chunk_loop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..config._memory import estimate_bytes
from ..problem import Problem, batched_advance
from ..run import Run
from ..run._loop import chunk_loop
from ..run._signals import StopFlag

BATCH_AXIS = "batch"  # the vmap axis: members decide together whether a step is sub-cycled (Subcycle.axis_name)


def batch_problem(config) -> Problem:
    """A member's problem as a batch runs it: its sub-cycling decided together with the batch."""
    return Problem.from_config(config, numerics=config.numerics.vmapped(BATCH_AXIS))


def batch_key(config, problem: Problem) -> tuple:
    """What members of one batch share: the problem's rollout key and the run's steps and chunks."""
    return problem.rollout_key(), config.n_steps, config.steps_per_save, config.run.chunk_frames


def batch_size(config, cap: int, devices: int, free_bytes: int | None) -> int:
    """Members per batch: ``cap`` (0: no cap), else as many as fit ``free_bytes`` at the run's
    per-member estimate, a multiple of the device count when more than one."""
    per_member = estimate_bytes(config.grid, len(config.model.system.fields), config.output.precision,
                                config.run.chunk_frames)  # fmt: skip
    fit = max(1, int(0.5 * free_bytes) // per_member) if free_bytes else 64
    size = min(cap or fit, fit)
    return max(devices, size - size % devices) if devices > 1 else size


@dataclass
class Member:
    """A member of a running batch: its index in the sweep and its run."""

    index: int
    run: Run


def _shard(tree, mesh: Mesh | None):
    """The stacked tree on the device(s): the member axis split over ``mesh`` when there is one."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("members")))


def batched_rollout(template: Problem, n_saves: int, steps_per_save: int, mesh: Mesh | None = None) -> Callable:
    """The batched chunk ``(arrays, state, step) → Trajectory``: ``vmap`` over the members' arrays and
    states; dt and the step are shared. With a ``mesh``, ``shard_map`` runs each device's share of the
    members on that device: no communication at all (sharding propagation through the FFTs otherwise
    gathers every member's arrays on every device, measured 10× slower on 2 host devices)."""
    batched = batched_advance(template, n_saves, steps_per_save, BATCH_AXIS)
    if mesh is not None:
        members = PartitionSpec("members")
        batched = jax.shard_map(batched, mesh=mesh, in_specs=(members, members, PartitionSpec()), out_specs=members,
                                check_vma=False)  # fmt: skip
    return eqx.filter_jit(batched)


class Batch:
    """Runs that share one compiled, vmapped rollout; each commits to its own file.

    ``rollout(n_saves, mesh)`` returns the compiled batched chunk (shared by every batch of a
    sweep with the same key); ``size`` is the padded batch size (the last batch of a
    group is padded by repeating its last member, so every batch has one shape).
    """

    def __init__(self, members: list[Member], rollout: Callable, size: int, log: Callable):
        self.members, self.rollout, self.size, self.log = members, rollout, size, log
        devices = jax.local_devices()
        self.mesh = Mesh(np.array(devices), ("members",)) if len(devices) > 1 else None

    def _padded(self, trees):
        trees = list(trees) + [trees[-1]] * (self.size - len(trees))
        return _shard(jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees), self.mesh)

    def execute(self, on_end: Callable) -> None:
        """Advance every member to ``t_end`` (or a signal); ``on_end(index, outcome)`` per member."""
        runs = [m.run for m in self.members]
        arrays = self._padded([r.problem.arrays() for r in runs])
        state = self._padded([r.state for r in runs])

        def advance(n_saves, state, step):
            return self.rollout(n_saves, self.mesh)(arrays, state, jnp.asarray(step, jnp.int32))

        labels = [f"member {m.index} " for m in self.members]
        with StopFlag() as stop:
            failures = chunk_loop(runs, advance, state, 0, stop, self.log, labels)
        for member, failure in zip(self.members, failures, strict=True):
            if failure is not None:
                outcome = member.run.end("failed", failure)
            elif stop:
                outcome = member.run.end("interrupted", f"interrupted by {stop.signal_name}")
            else:
                outcome = member.run.end("complete", None)
            on_end(member.index, outcome)


def chunks(members: list, size: int) -> list[list]:
    return [members[i : i + size] for i in range(0, len(members), max(1, size))]
