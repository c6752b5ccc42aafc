"""Members of a sweep advanced together: one ``jax.vmap``-ed rollout per batch, one file per member.

Members batch together when their :class:`~tumorfield.problem.Problem` s have one rollout key
(``Problem.rollout_key``: the same static part and array shapes) and the same time stepping and
chunking; one compile then serves the whole batch (and, through the persistent cache, every batch of
that shape). With several devices (:func:`batch_devices`: every local GPU/TPU, one device on a CPU
unless ``[sweep] devices`` asks for more) the member axis is sharded over them (``shard_map``, no
communication: each device decides its own members' sub-cycling). Each member's file is an
ordinary run file; a member that fails is marked ``failed`` and the others go on; whatever stops a
batch (a full disk, an error), every member's file is closed, ``interrupted`` where that can still be
written.

The host's work per member overlaps the device's (:class:`Chunks`): the batched chunk is a ``jax.jit``
call, which returns as soon as it is dispatched, so the members' files are created and their frame 0
committed while the first chunk computes (each member's frame 0 is computed and checked before), and
chunk ``k``'s frames are committed to every member's file while chunk ``k + 1`` computes. The commits
are those of ``run``, one after the other on this thread, each durable before the next: a kill loses
nothing committed, and a failed write stops the batch at once, every member's file closed. At most one
chunk is in flight, and the process cannot exit before it is computed (XLA finishes it): after a full
disk the exit waits for it. A signal stops the batch once the chunk in flight is computed and committed
(at most the commits under way, a chunk and its commits after the signal).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tumorfield_kernels import RESULTS

from .. import _compile_log
from .._progress import Progress
from .._schema import ConfigError
from ..config._memory import estimate_bytes
from ..problem import Problem, batched_advance
from ..run import Interrupted, Outcome, Run, StorageError
from ..run._loop import _commit_run, _SubcyclingLog
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


def last_level_cache_bytes(caches: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of this machine's largest CPU cache (bytes; Linux ``/sys``), or None where unknown."""
    sizes = []
    for entry in caches.glob("index*"):
        try:
            size = (entry / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
            sizes.append(int(size.rstrip("KMG")) * scale)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else None


DEFAULT_CACHE_BYTES = 32 * 2**20
"""The last-level cache assumed where ``/sys`` does not tell (a server CPU's L3)."""


def members_at_once(config, requested: int, platform: str, cache_bytes: int | None = None) -> int | None:
    """How many members a device computes at once (``[sweep] at_once``; None: all of its share). 0 (auto):
    all on a GPU/TPU, which needs the whole batch to fill its cores; on a CPU as many as fit the
    last-level cache with their fields twice over (the step's stages), at least one. A CPU that runs a
    batch of 64 members at 256² all at once streams every stage of every member through memory, twice as
    slow per member as one run, whose fields stay in the cache (benchmarks/README.md, bench_ensemble)."""
    if requested:
        return requested
    if platform != "cpu":
        return None
    itemsize = jnp.dtype(config.numerics.float_dtype).itemsize
    state = config.grid.n_cells * len(config.model.system.fields) * itemsize
    cache = cache_bytes or last_level_cache_bytes() or DEFAULT_CACHE_BYTES
    return max(1, cache // (2 * state))


def in_turn(batched: Callable, at_once: int | None) -> Callable:
    """``batched`` (a ``vmap`` over the members' leading axis) applied to groups of members in turn
    (``lax.map``): groups of the largest divisor of the member count that is at most ``at_once``, so
    that no member is padded. Each member's values are those ``batched`` gives it (sub-cycling decided
    together within its group)."""
    if at_once is None:
        return batched

    def grouped(arrays, state, step):
        members = jax.tree_util.tree_leaves(state)[0].shape[0]
        size = max(d for d in range(1, min(at_once, members) + 1) if members % d == 0)
        if size == members:
            return batched(arrays, state, step)
        groups = jax.tree_util.tree_map(lambda x: x.reshape((members // size, size, *x.shape[1:])), (arrays, state))
        out = jax.lax.map(lambda group: batched(*group, step), groups)
        return jax.tree_util.tree_map(lambda x: x.reshape((members, *x.shape[2:])), out)

    return grouped


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
class Prepared:
    """A member ready to join a batch: its config, problem and frame 0 (``Run.start``'s ``frame0``:
    computed and checked, before any file of the batch is written)."""

    index: int
    config: object
    problem: Problem
    frame0: tuple[dict, dict]


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


def batched_rollout(template: Problem, n_saves: int, steps_per_save: int, mesh: Mesh | None = None,
                    at_once: int | None = None) -> Callable:  # fmt: skip
    """The batched chunk ``(arrays, state, step) → Trajectory``: ``vmap`` over the members' arrays and
    states; dt and the step are shared; ``at_once`` members at a time (:func:`in_turn`; None: all). With
    a ``mesh``, ``shard_map`` runs each device's share of the members on that device: no communication at
    all (sharding propagation through the FFTs otherwise gathers every member's arrays on every device,
    measured 10× slower on 2 host devices).

    ``jax.jit``, not ``eqx.filter_jit``, whose call waits for the result (for its runtime errors; the
    rollout has none: failures are values): the call returns once the chunk is dispatched, so the host
    writes the previous chunk meanwhile (:class:`Chunks`). Every input and output leaf is an array."""
    batched = in_turn(batched_advance(template, n_saves, steps_per_save, BATCH_AXIS), at_once)
    if mesh is not None:
        members = PartitionSpec("members")
        batched = jax.shard_map(batched, mesh=mesh, in_specs=(members, members, PartitionSpec()), out_specs=members,
                                check_vma=False)  # fmt: skip
    return jax.jit(batched)


@dataclass
class _InFlight:
    """A dispatched chunk: its trajectory (device arrays, maybe not computed yet), the step it starts
    from, its frames, and the compile seconds and wall clock when it was dispatched."""

    traj: object
    step: int
    n_saves: int
    compile_before: float
    wall: float


class Chunks:
    """The chunk loop of a batch (``run``'s :func:`~tumorfield.run._loop.chunk_loop`, pipelined): each
    chunk is dispatched before the previous one is written.

    ``advance(n_saves, state, step)`` dispatches a chunk and returns its trajectory (leading member
    axis) without waiting. :meth:`run` waits for a chunk, reads how each member's chunk ended (a few
    bytes), dispatches the next chunk unless every member has ended, a signal came or ``t_end`` is
    reached, then copies the chunk's frames to the host and commits each member's share to its file
    (``run``'s commit: valid frames, per-step scalars, the last valid state) while the next one
    computes. Copied are the stored fields only (``output.fields``: none in a sweep by default) and
    the final state; a member that fails gets its chunk's every field, for the failure's message.
    """

    def __init__(self, config, advance: Callable, log: Callable, size: int):
        self.config, self.advance, self.log, self.size = config, advance, log, size
        self.first = True

    def dispatch(self, state, step: int) -> _InFlight | None:
        """Dispatch the chunk from ``(state, step)`` (None: ``t_end`` reached); returns at once, but the
        first call of a shape compiles it first."""
        config = self.config
        if step >= config.n_steps:
            return None
        n_saves = min(config.run.chunk_frames, config.n_frames - 1 - step // config.steps_per_save)
        compile_before, wall = _compile_log.seconds(), time.perf_counter()
        return _InFlight(self.advance(n_saves, state, step), step, n_saves, compile_before, wall)

    def _ended(self, chunk: _InFlight) -> list[bool]:
        """Whether each member's run ended in ``chunk`` (waits for the chunk; reads its results only)."""
        result = jax.device_get(chunk.traj.result)
        if self.first:
            self.log(f"first chunk of {chunk.n_saves} frames of a batch of {self.size} took "
                     f"{time.perf_counter() - chunk.wall:.2f} s, of which compilation "
                     f"{_compile_log.seconds() - chunk.compile_before:.2f} s (persistent cache: "
                     f"{_compile_log.cache_hits()} hits, {_compile_log.cache_misses()} misses so far)")  # fmt: skip
            self.first = False
        return [not ok for ok in np.asarray(result == RESULTS.successful).tolist()]

    def run(self, chunk: _InFlight | None, runs: list, labels: list[str], stop) -> list[str | None]:
        """Advance ``runs`` (the batch's first members, in order) from the dispatched ``chunk`` to
        ``t_end``, a signal or the failure of every run; returns each run's failure message (None: none)."""
        config = self.config
        dt, sps = config.time.dt, config.steps_per_save
        sub_logs = [_SubcyclingLog(run, self.log, label) for run, label in zip(runs, labels, strict=True)]
        failures: list[str | None] = [None] * len(runs)
        names = sorted(set().union(*(run.file.frame_names for run in runs)))
        progress = Progress(0.0, config.time.t_end, config.run.progress)
        progress.update(0.0 if chunk is None else chunk.step * dt)
        try:
            while chunk is not None:
                ended = self._ended(chunk)
                step = chunk.step + chunk.n_saves * sps
                going = any(failures[i] is None and not ended[i] for i in range(len(runs)))
                # every field of a member that ends here, for its failure's message: sliced before the next chunk
                every = {i: {name: value[i] for name, value in chunk.traj.fields.items()}
                         for i in range(len(runs)) if failures[i] is None and ended[i]}  # fmt: skip
                following = self.dispatch(chunk.traj.final_state, step) if going and not stop else None
                host = jax.device_get(eqx.tree_at(lambda t: t.fields, chunk.traj,
                                                  {name: chunk.traj.fields[name] for name in names}))  # fmt: skip
                every = jax.device_get(every)
                for i, run in enumerate(runs):
                    if failures[i] is not None:
                        continue
                    mine = jax.tree_util.tree_map(lambda x, i=i: x[i], host)
                    if i in every:
                        mine = eqx.tree_at(lambda t: t.fields, mine, every[i])
                    failures[i] = _commit_run(run, mine, chunk.step, sub_logs[i], self.log, labels[i])
                progress.update(step * dt)
                chunk = following
            return failures
        finally:
            progress.close()


class Batch:
    """Runs that share one compiled, vmapped rollout; each commits to its own file.

    ``prepared``: the members (frame 0 computed); ``rollout(n_saves, mesh)`` returns the compiled
    batched chunk (shared by every batch of a sweep with the same key); ``size`` is the padded batch
    size (a batch is padded by repeating its last member, so every batch of a group has one shape);
    ``devices`` those it runs on. ``start(prepared)`` creates a member's file and commits its frame 0
    (``Run.start``), while the first chunk computes; ``started(indices)`` is told the members whose
    files exist, once all do. :attr:`members` are the started members, :attr:`outcomes` those that
    ended (also when :meth:`execute` raises).
    """

    def __init__(self, prepared: list[Prepared], rollout: Callable, size: int, devices: list, log: Callable,
                 start: Callable[[Prepared], Run], started: Callable[[list[int]], None]):  # fmt: skip
        self.prepared, self.rollout, self.size, self.devices, self.log = prepared, rollout, size, devices, log
        self.start, self.started = start, started
        self.mesh = Mesh(np.array(devices), ("members",)) if len(devices) > 1 else None
        self.members: list[Member] = []
        self.outcomes: dict[int, Outcome] = {}

    def _padded(self, trees):
        trees = list(trees) + [trees[-1]] * (self.size - len(trees))
        stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)
        return _shard(stacked, self.devices, self.mesh)

    def execute(self) -> dict[int, Outcome]:
        """Create every member's file and advance them to ``t_end`` (or a signal); returns each
        started member's outcome. A signal before every file exists ends those that do
        ``interrupted`` (frame 0 committed) and creates no other; an error while creating one ends
        those that exist and propagates as it is. Whatever stops the batch later (a full disk:
        :class:`StorageError`, an error), every member's file is closed and unlocked, ``interrupted``
        where that can still be written, before it propagates."""
        arrays = self._padded([p.problem.arrays() for p in self.prepared])
        state = self._padded([p.frame0[0] for p in self.prepared])

        def advance(n_saves, state, step):
            return self.rollout(n_saves, self.mesh)(arrays, state, jnp.asarray(step, jnp.int32))

        chunks = Chunks(self.prepared[0].config, advance, self.log, len(self.prepared))
        with StopFlag() as stop:
            if stop:
                return self.outcomes
            first = chunks.dispatch(state, 0)  # computes while the files are created
            if not self._start_members():
                return self.outcomes
            labels = [f"member {m.index} " for m in self.members]
            failures = self._closing(lambda: chunks.run(first, [m.run for m in self.members], labels, stop))
        self._closing(lambda: self._end(failures, stop))
        return self.outcomes

    def _end(self, failures: list[str | None], stop: StopFlag) -> None:
        for member, failure in zip(self.members, failures, strict=True):
            if failure is not None:
                status, message = "failed", failure
            elif stop:
                status, message = "interrupted", f"interrupted by {stop.signal_name}"
            else:
                status, message = "complete", None
            # should end() raise (a full disk), it has closed the file: the member stays interrupted
            self.outcomes[member.index] = Outcome("interrupted", member.run.target.current, "stopped while ending")
            self.outcomes[member.index] = member.run.end(status, message)

    def _closing(self, work: Callable):
        """``work()``; should it raise, every started member not ended yet is ended ``interrupted`` first."""
        try:
            return work()
        except StorageError as error:
            end_all(self.members, self.outcomes, f"stopped: {error.strerror}")
            raise StorageError(error.errno, f"{error.strerror}; every member of the batch is closed; once there is "
                               f"room, run the same `tumorfield sweep` again: it resumes them") from None  # fmt: skip
        except BaseException as error:
            end_all(self.members, self.outcomes, f"stopped by {type(error).__name__}: {error}")
            raise

    def _start_members(self) -> bool:
        """Start every member (their files, frame 0); False: a signal came first (the started ones are
        ended ``interrupted``). Any error ends the started ones and propagates."""
        try:
            for prepared in self.prepared:
                self.members.append(Member(prepared.index, self.start(prepared)))
            self.started([m.index for m in self.members])
        except Interrupted:
            end_all(self.members, self.outcomes, "interrupted before its batch started")
            return False
        except BaseException as error:
            end_all(self.members, self.outcomes, f"stopped: {getattr(error, 'strerror', None) or error}")
            raise
        return True


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
