"""Members of a sweep advanced together: one ``jax.vmap``-ed rollout per batch, one file per member.

Members batch together when their :class:`~tumorfield.problem.Problem` s have one rollout key
(``Problem.rollout_key``: the same static part and array shapes) and the same time stepping and
chunking; one compile then serves the whole batch (and, through the persistent cache, every batch of
that shape). With several devices (:func:`batch_devices`: every local GPU/TPU, one device on a CPU
unless ``[sweep] devices`` asks for more) the member axis is sharded over them (``shard_map``, no
communication: each device decides its own members' sub-cycling). Each member's file is an
ordinary run file; a member that fails is marked ``failed`` and the others go on (the chunk loop is
``run``'s, :func:`tumorfield.run._loop.chunk_loop`); whatever stops a batch (a full disk, an
error), every member's file is closed, ``interrupted`` where that can still be written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._schema import ConfigError
from ..config._memory import estimate_bytes
from ..problem import Problem, batched_advance
from ..run import Outcome, Run, StorageError
from ..run._loop import chunk_loop
from ..run._signals import StopFlag
from ._spec import MAX_BATCH

BATCH_AXIS = "batch"  # the vmap axis: members decide together whether a step is sub-cycled (Subcycle.axis_name)


def batch_problem(config) -> Problem:
    """A member's problem as a batch runs it: its sub-cycling decided together with the batch."""
    return Problem.from_config(config, numerics=config.numerics.vmapped(BATCH_AXIS))


def batch_key(config, problem: Problem) -> tuple:
    """What members of one batch share: the problem's rollout key and the run's steps and chunks."""
    return problem.rollout_key(), config.n_steps, config.steps_per_save, config.run.chunk_frames


def batch_devices(requested: int) -> list:
    """The devices a batch is split over: ``requested`` of the local devices (0: every local GPU/TPU,
    but one device on a CPU — host devices share the same cores, so splitting a batch over them only
    adds work; measured 10× slower with two)."""
    local = jax.local_devices()
    if requested > len(local):
        raise ConfigError("sweep.devices", requested, f"this process has {len(local)} local device(s) "
                          f"({local[0].platform})")  # fmt: skip
    if requested:
        return local[:requested]
    return local[:1] if local[0].platform == "cpu" else local


def batch_size(config, cap: int, devices: int, free_bytes: int | None, members: int) -> int:
    """Members per batch: ``cap`` (0: as many as fit ``free_bytes`` at the run's per-member estimate, at
    most :data:`MAX_BATCH`), never more than ``members`` (the group's), rounded up to a multiple of the
    device count when more than one."""
    per_member = estimate_bytes(config.grid, len(config.model.system.fields), config.output.precision,
                                config.run.chunk_frames)  # fmt: skip
    fit = max(1, int(0.5 * free_bytes) // per_member) if free_bytes else 64
    size = max(1, min(cap or min(fit, MAX_BATCH), members))
    return -(-size // devices) * devices


@dataclass
class Member:
    """A member of a running batch: its index in the sweep and its run."""

    index: int
    run: Run


def _shard(tree, devices: list, mesh: Mesh | None):
    """The stacked tree on the device(s): the member axis split over ``mesh`` when there is one."""
    if mesh is None:
        return jax.device_put(tree, devices[0])
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
    sweep with the same key); ``size`` is the padded batch size (a batch is padded by repeating
    its last member, so every batch of a group has one shape); ``devices`` those it runs on.
    """

    def __init__(self, members: list[Member], rollout: Callable, size: int, devices: list, log: Callable):
        self.members, self.rollout, self.size, self.devices, self.log = members, rollout, size, devices, log
        self.mesh = Mesh(np.array(devices), ("members",)) if len(devices) > 1 else None

    def _padded(self, trees):
        trees = list(trees) + [trees[-1]] * (self.size - len(trees))
        stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)
        return _shard(stacked, self.devices, self.mesh)

    def execute(self) -> dict[int, Outcome]:
        """Advance every member to ``t_end`` (or a signal); returns each member's outcome. Whatever
        stops the batch (a full disk: :class:`StorageError`, an error), every member's file is closed
        and unlocked, ``interrupted`` where that can still be written, before it propagates."""
        outcomes: dict[int, Outcome] = {}
        try:
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
                    status, message = "failed", failure
                elif stop:
                    status, message = "interrupted", f"interrupted by {stop.signal_name}"
                else:
                    status, message = "complete", None
                # should end() raise (a full disk), it has closed the file: the member stays interrupted
                outcomes[member.index] = Outcome("interrupted", member.run.target.current, "stopped while ending")
                outcomes[member.index] = member.run.end(status, message)
        except StorageError as error:
            end_all(self.members, outcomes, f"stopped: {error.strerror}")
            raise StorageError(error.errno, f"{error.strerror}; every member of the batch is closed; once there is "
                               f"room, run the same `tumorfield sweep` again: it resumes them") from None  # fmt: skip
        except BaseException as error:
            end_all(self.members, outcomes, f"stopped by {type(error).__name__}: {error}")
            raise
        return outcomes


def end_all(members: list[Member], outcomes: dict[int, Outcome], message: str) -> None:
    """End each member not in ``outcomes`` as ``interrupted`` (resumable); a member whose status cannot be
    written (its disk is full) is closed and unlocked without it. Adds their outcomes."""
    for member in members:
        if member.index in outcomes:
            continue
        run = member.run
        try:
            outcomes[member.index] = run.end("interrupted", message)
        except Exception:  # the status write failed: Run.end has closed the file and released the lock
            outcomes[member.index] = Outcome("interrupted", run.target.current, message)
