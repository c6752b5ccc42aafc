"""``tumorfield sweep``: expand a sweep file, run its members in vmapped batches, keep a manifest.

Before anything is written: every member's config is built and checked (a signal stops this within
one member), the directory's manifest is checked against the sweep, the ``--member`` indices against
the design, and every existing member file against its manifest row — the SHA-256 of its stored
config must be the member's and its checksums must verify; a file of another config, a damaged one or
one that another process writes is refused naming the member and what differs. Only then is the
manifest written and are members run: complete and failed files are kept, interrupted ones resumed,
the others started in batches (streamed: members are built batch by batch, so memory does not grow
with the sweep).
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .. import models
from .._schema import ConfigError
from ..config._memory import available_memory
from ..io import NotATrajectory, open_trajectory
from ..io._lock import is_locked
from ..run import Outcome, Run, StorageError
from ..run._job import _frame_zero, _setup_jax
from ..run._signals import pending
from ._batch import (
    Batch,
    Prepared,
    batch_devices,
    batch_key,
    batch_problem,
    batch_size,
    batched_rollout,
    members_at_once,
)
from ._manifest import Manifest, Row, member_file
from ._spec import cell, config_digest, load_sweep, raise_if_signalled, text_digest

_PROGRESS_SECONDS = 10.0
_ANNOUNCE = 1000  # members from which the checks are announced (they take ~1-20 ms each)


class SweepRunner:
    """The members of one sweep directory: which to run, in what batches, and their manifest."""

    def __init__(self, sweep_path, directory, *, overrides=(), argv=(), log: Callable = print):
        self.sweep = load_sweep(sweep_path)
        self.overrides, self.directory, self.argv, self.log = tuple(overrides), Path(directory), list(argv), log
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError("-o", str(directory), "exists and is not a directory")
        self.digests = self._checked_digests()
        self.manifest = Manifest.check(self.directory, self.sweep.paths, lambda: self.rows(poll=True), self.n_members)
        self._rollouts: dict = {}

    @property
    def n_members(self) -> int:
        return len(self.sweep.members)

    def config(self, index: int):
        """Member ``index``'s checked run config (built anew: configs are not kept, see :meth:`run`)."""
        return self.sweep.member_config(index, self.overrides)

    def rows(self, poll: bool = False) -> Iterator[Row]:
        """The manifest's rows (without status), in member order; ``poll``: stop on a signal (while checking)."""
        for i, digest in enumerate(self.digests):
            if poll and i % 65536 == 0:
                raise_if_signalled(f"while checking the manifest (member {i} of {len(self.digests)})")
            yield str(i), tuple(cell(v) for v in self.sweep.members[i].values()), digest, member_file(i)

    def _checked_digests(self) -> list[str]:
        """Every member's config built and checked (errors name the member), in one pass; its digest."""
        n, digests, last = self.n_members, [], time.monotonic()
        if n >= _ANNOUNCE:
            self.log(f"checking {n} member configs (each is built and validated before any compute)")
        with models.scanned_once():
            for i in range(n):
                raise_if_signalled(f"while checking member {i} of {n}")
                digests.append(config_digest(self.config(i)))
                if time.monotonic() - last > _PROGRESS_SECONDS:
                    self.log(f"checked {i + 1} of {n} member configs")
                    last = time.monotonic()
        return digests

    def path(self, index: int) -> Path:
        return self.directory / member_file(index)

    # --- existing member files -------------------------------------------------------------------

    def _existing(self, index: int) -> str | None:
        """The status of member ``index``'s file (None: no file), after checking that it is this member's
        run: its stored config's SHA-256 is the member's, it verifies, no other process writes it.
        Anything else is refused (:class:`ConfigError`, exit 2) before any write."""
        path = self.path(index)
        if not os.path.lexists(path):
            return None
        refuse = lambda why: ConfigError("-o", str(path), f"member {index}'s file {why}")  # noqa: E731
        if path.is_symlink() or not path.is_file():
            raise refuse("is not a regular file; a member file is written by the sweep itself")
        if is_locked(path):
            raise refuse("is being written by another tumorfield process")
        try:
            with open_trajectory(path) as stored:
                if text_digest(stored.config_text) != self.digests[index]:
                    raise refuse(f"holds another run ({self._difference(index, stored.config_text)}); move it away "
                                 f"and the sweep runs the member anew")  # fmt: skip
                stored.verify()  # also an interrupted one: refused here, before any member is computed
                return stored.status
        except NotATrajectory as error:
            raise refuse(f"does not verify ({error}); move it away and the sweep runs the member anew") from None

    def _difference(self, index: int, stored_text: str) -> str:
        """The first keys whose values differ between a stored config and member ``index``'s."""
        try:
            theirs = _flat(tomllib.loads(stored_text))
        except tomllib.TOMLDecodeError:
            return "its stored config is not TOML"
        ours = _flat(tomllib.loads(self.config(index).text))
        keys = [k for k in sorted(theirs.keys() | ours.keys()) if theirs.get(k, "(none)") != ours.get(k, "(none)")]
        shown = [f"{k} = {theirs.get(k, '(none)')!r} there, {ours.get(k, '(none)')!r} in this sweep" for k in keys[:3]]
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return "; ".join(shown) + more if shown else "its config text differs"

    # --- running -----------------------------------------------------------------------------------

    def run(self, members: list[int] | None = None) -> dict[int, Outcome | str]:
        """Run ``members`` (default all): complete and failed ones are kept, interrupted ones resumed,
        the rest run in batches. Returns each member's outcome (or its status when it was not run:
        ``complete``, ``failed``, or ``pending`` when a signal stopped the sweep before it started)."""
        n = self.n_members
        indices = list(range(n)) if members is None else [int(i) for i in members]
        for i in indices:
            if not 0 <= i < n:
                raise ConfigError("--member", i, f"must be a member index in [0, {n - 1}]")
        existing = {}
        for i in indices:
            raise_if_signalled(f"while checking the member files ({i} of {n})")
            existing[i] = self._existing(i)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError("-o", str(self.directory), f"cannot create the directory ({error.strerror})") from None
        self.manifest.ensure(self.rows, self.log)
        results: dict[int, Outcome | str] = {}
        try:
            kept = {i: s for i, s in existing.items() if s in ("complete", "failed")}
            self.manifest.record(kept)
            results.update(kept)
            for i, status in existing.items():
                if status in ("interrupted", "running") and not pending():
                    results[i] = self._resume(i)
            self._run_fresh([i for i, s in existing.items() if s is None], results)
        except BaseException:
            self._quietly(self.manifest.publish, self.rows)
            raise
        self.manifest.publish(self.rows)
        return {i: results.get(i, "pending") for i in indices}

    def _resume(self, index: int) -> Outcome:
        self.manifest.record({index: "running"})
        try:
            run = Run.resume(self.path(index), argv=self.argv, log=self.log)
            outcome = run.execute() if run is not None else Outcome("complete", self.path(index))
        except BaseException:
            self._quietly(self.manifest.record, {index: "interrupted"})
            raise
        self.manifest.record({index: outcome.status})
        return outcome

    def _run_fresh(self, fresh: list[int], results: dict) -> None:
        """Start the members in ``fresh`` in batches, streamed: each member's config and problem are
        built in turn and join their group's open batch, which runs as soon as it is full; the groups'
        last batches run at the end. A signal stops it before the next batch."""
        devices = batch_devices(self.sweep.section.devices)
        open_batches: dict = {}  # rollout key → (size, [(index, config, problem)], whether a batch of it ran)
        for i in fresh:
            if pending():
                return
            config = self.config(i)
            problem = batch_problem(config)
            key = batch_key(config, problem)
            if key not in open_batches:
                size = batch_size(config, self.sweep.section.batch, len(devices), available_memory(), len(fresh))
                open_batches[key] = (size, [], [False])
            size, waiting, ran = open_batches[key]
            waiting.append((i, config, problem))
            if len(waiting) == size:
                self._run_batch(key, size, waiting, devices, results, first=not ran[0])
                waiting.clear()
                ran[0] = True
        for key, (size, waiting, ran) in open_batches.items():
            if waiting and not pending():
                # the group's only batch: as large as its members; else the group's shape (compiled already)
                size = size if ran[0] else -(-len(waiting) // len(devices)) * len(devices)
                self._run_batch(key, size, waiting, devices, results, first=not ran[0])

    def _run_batch(self, key, size: int, waiting: list, devices: list, results: dict, first: bool) -> None:
        """Run one batch: every member's frame 0 computed and checked first (a dt beyond the limit at t = 0
        fails that member alone, with no file), then :class:`Batch` creates the files while the first
        chunk computes. A signal before that starts nothing."""
        prepared: list[Prepared] = []
        for index, config, problem in waiting:
            if pending():
                return
            member = self._prepare(index, config, problem, results)
            if member is not None:
                prepared.append(member)
        if not prepared or pending():
            return
        config = prepared[0].config
        at_once = members_at_once(config, self.sweep.section.at_once, devices[0].platform)
        if first:
            names = ", ".join(str(d) for d in devices)
            turns = "" if at_once is None or at_once >= size else f", computed at most {at_once} at once"
            self.log(f"batches of {size} member{'s' if size > 1 else ''} (member {prepared[0].index}'s group) on "
                     f"{len(devices)} device{'s' if len(devices) > 1 else ''} ({names}){turns}")  # fmt: skip
            if config.run.devices != 1:
                self.log(
                    f"note: [run] devices = {config.run.devices!r} splits one run's grid over devices; a "
                    "sweep keeps each member on one device and spreads the members instead ([sweep] devices)"
                )
        template = prepared[0].problem

        def rollout(n_saves, mesh, key=key, template=template):
            if (key, n_saves) not in self._rollouts:
                self._rollouts[key, n_saves] = batched_rollout(template, n_saves, config.steps_per_save, mesh,
                                                               at_once)  # fmt: skip
            return self._rollouts[key, n_saves]

        def started(indices: list[int]) -> None:
            self.manifest.record({i: "running" for i in indices})

        batch = Batch(prepared, rollout, size, devices, self.log, self._start, started)
        try:
            batch.execute()
        except BaseException:  # Batch.execute has ended every member whose file it created
            results.update(batch.outcomes)
            self._quietly(self.manifest.record, {i: o.status for i, o in batch.outcomes.items()})
            raise
        results.update(batch.outcomes)
        self.manifest.record({i: o.status for i, o in batch.outcomes.items()})

    def _quietly(self, update: Callable, *args) -> None:
        """A manifest update while an error propagates: its own failure (the same full disk) is only
        logged, so that the error that stopped the sweep is the one reported."""
        try:
            update(*args)
        except (OSError, ConfigError) as error:
            self.log(f"note: the manifest could not be updated ({error}); the member files hold every status")

    def _prepare(self, index: int, config, problem, results: dict) -> Prepared | None:
        """Member ``index``'s frame 0, computed and checked (no file yet); a dt beyond the limit at t = 0
        fails this member alone."""
        try:
            _setup_jax(config)
            frame0 = _frame_zero(config, problem)
        except ConfigError as error:
            self.log(f"member {index} failed before its first step: {error}")
            self.manifest.record({index: "failed"})
            results[index] = "failed"
            return None
        return Prepared(index, config, problem, frame0)

    def _start(self, member: Prepared) -> Run:
        """Create the member's file and commit its frame 0 (computed already)."""
        try:
            return Run.start(member.config, self.path(member.index), overwrite=False, argv=self.argv, log=self.log,
                             problem=member.problem, frame0=member.frame0)  # fmt: skip
        except StorageError as error:  # the disk is full: the member's file holds nothing and is removed
            why = os.strerror(error.errno) if error.errno else error.strerror
            raise StorageError(error.errno, f"{self.path(member.index)}: member {member.index} could not be started "
                               f"({why}); nothing of it is kept; once there is room, run the same `tumorfield "
                               f"sweep` again") from None  # fmt: skip


def _flat(document, prefix: str = "") -> dict:
    """A TOML document as ``{"section.key[.index…]": value}`` (leaves only)."""
    items = document.items() if isinstance(document, dict) else enumerate(document)
    flat = {}
    for name, value in items:
        path = f"{prefix}{name}"
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            flat.update(_flat(value, path + "."))
        else:
            flat[path] = value
    return flat


def members_of_process(n_members: int, process: int, processes: int) -> list[int]:
    """The members process ``process`` of ``processes`` runs: every ``processes``-th, from ``process``."""
    return list(np.arange(process, n_members, processes))
