"""Members of a sweep advanced together: one ``jax.vmap``-ed rollout per batch, one file per member.

Members batch together when they differ only in sections whose values enter traced leaves
(``Model.batchable_sections``: parameters, doses, …) and their parameter and state pytrees
have the same structure and shapes; one compile then serves the whole batch (and, through
the persistent cache, every batch of that shape). With several local devices the member
axis is sharded over them (no collectives: members are independent). Each member's file is
an ordinary run file; a member that fails is marked ``failed`` and the others go on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tumorfield_kernels import advance, failure_message

from ..config._memory import estimate_bytes
from ..run import Run
from ..run._loop import _commit, numerics_options
from ..run._signals import StopFlag


def batch_signature(config) -> str:
    """What members of one batch must share: every section except the model's batchable ones."""
    fixed = {name: values for name, values in config.sections.items() if name not in config.model.batchable_sections}
    return json.dumps(fixed, sort_keys=True, default=repr)


def structure(params, state):
    """Tree structure, shapes and dtypes of a member's (params, state): equal within a batch."""
    leaves, treedef = jax.tree_util.tree_flatten((params, state))
    return treedef, tuple((np.shape(x), np.asarray(x).dtype) for x in leaves)


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
    """A member of a running batch: its index in the sweep, its run, and why it failed (if it did)."""

    index: int
    run: Run
    failed: str | None = None


def _stack(trees):
    """Member trees stacked on the host (numpy) along a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _shard(tree, mesh: Mesh | None):
    """The stacked tree on the device(s): the member axis split over ``mesh`` when there is one."""
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec("members")))


_BATCH_AXIS = "batch"  # the vmap axis: members decide together whether a step is sub-cycled (`advance`)


def batched_rollout(config, observe, n_saves: int, mesh: Mesh | None = None) -> Callable:
    """The batched chunk: ``vmap`` of ``advance`` over (state, params); dt and the step are shared.

    With a ``mesh``, ``shard_map`` runs each device's share of the members on that device:
    no communication at all (sharding propagation through the FFTs otherwise gathers every
    member's arrays on every device, measured 10× slower on 2 host devices).
    """
    system, grid = config.model.system, config.grid
    cell_diffusion, cap = numerics_options(config)

    def one(state, params, step):
        return advance(
            system, grid, state, dt=config.time.dt, n_saves=n_saves, steps_per_save=config.steps_per_save,
            params=params, step=step, observe=observe, dtype=config.output.precision, throw=False,
            cell_diffusion=cell_diffusion, max_substeps=cap, batch_axis=_BATCH_AXIS,
        )  # fmt: skip

    batched = jax.vmap(one, in_axes=(0, 0, None), axis_name=_BATCH_AXIS)
    if mesh is not None:
        members = PartitionSpec("members")
        batched = jax.shard_map(batched, mesh=mesh, in_specs=(members, members, PartitionSpec()), out_specs=members,
                                check_vma=False)  # fmt: skip
    return eqx.filter_jit(batched)


class Batch:
    """Runs that share one compiled, vmapped rollout; each commits to its own file.

    ``rollout(n_saves)`` returns the compiled batched chunk (shared by every batch of a
    sweep with the same signature); ``size`` is the padded batch size (the last batch of a
    group is padded by repeating its last member, so every batch has one shape).
    """

    def __init__(self, members: list[Member], rollout: Callable[[int], Callable], size: int, log: Callable):
        self.members, self.rollout, self.size, self.log = members, rollout, size, log
        devices = jax.local_devices()
        self.mesh = Mesh(np.array(devices), ("members",)) if len(devices) > 1 else None

    def _padded(self, trees):
        trees = list(trees) + [trees[-1]] * (self.size - len(trees))
        return _shard(_stack(trees), self.mesh)

    def execute(self, on_end: Callable) -> None:
        """Advance every member to ``t_end`` (or a signal); ``on_end(index, outcome)`` per member."""
        config = self.members[0].run.config
        dt, sps = config.time.dt, config.steps_per_save
        state = self._padded([m.run.state for m in self.members])
        params = self._padded([m.run.params for m in self.members])
        step = 0
        with StopFlag() as stop:
            while step < config.n_steps and not stop and any(m.failed is None for m in self.members):
                n_saves = min(config.run.chunk_frames, (config.n_steps - step) // sps)
                wall = time.perf_counter()
                state, _, traj = jax.block_until_ready(
                    self.rollout(n_saves)(state, params, jnp.asarray(step, jnp.int32))
                )
                self._commit_all(state, traj, step, dt, sps)
                step += n_saves * sps
                self.log(f"batch of {len(self.members)}: t = {step * dt:.6g}/{config.time.t_end:.6g} day "
                         f"({time.perf_counter() - wall:.2f} s)")  # fmt: skip
        for member in self.members:
            if member.failed is not None:
                outcome = member.run.end("failed", member.failed)
            elif stop:
                outcome = member.run.end("interrupted", f"interrupted by {stop.signal_name}")
            else:
                outcome = member.run.end("complete", None)
            on_end(member.index, outcome)

    def _commit_all(self, state, traj, step, dt, sps) -> None:
        host_traj = jax.tree_util.tree_map(np.asarray, traj)
        host_state = jax.tree_util.tree_map(np.asarray, state)
        for i, member in enumerate(self.members):
            if member.failed is not None:
                continue
            mine = jax.tree_util.tree_map(lambda x, i=i: x[i], host_traj)
            n_valid = int(mine.n_valid)
            if n_valid > 0:
                last = jax.tree_util.tree_map(lambda x, i=i: x[i], host_state)
                _commit(member.run.file, mine, last, step, dt, sps, n_valid)
                member.run.target.promote_if_free()
            if not mine.successful:
                _, cap = numerics_options(member.run.config)
                why = failure_message(mine, member.run.config.grid, dt, max_substeps=cap,
                                      limit_name="numerics.max_substeps")  # fmt: skip
                member.failed = f"{why}; {member.run.file.n_committed} earlier frames are kept"
                self.log(f"member {member.index} failed: {member.failed}")


def chunks(members: list, size: int) -> list[list]:
    return [members[i : i + size] for i in range(0, len(members), max(1, size))]
