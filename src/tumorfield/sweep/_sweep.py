"""``tumorfield sweep``: expand a sweep file, run its members in vmapped batches, keep a manifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from .._schema import ConfigError
from ..config._memory import available_memory
from ..io import NotATrajectory, open_trajectory
from ..run import Outcome, Run
from ._batch import Batch, Member, batch_key, batch_problem, batch_size, batched_rollout, chunks
from ._manifest import Manifest, member_file
from ._spec import config_digest, load_sweep


def _stored_status(path: Path) -> str | None:
    """The status of an existing member file (None: no file); a foreign file is bad input."""
    if not path.exists():
        return None
    try:
        with open_trajectory(path) as stored:
            return stored.status
    except NotATrajectory as error:
        raise ConfigError("-o", str(path), f"is not a member file of this sweep ({error})") from None


class SweepRunner:
    """The members of one sweep directory: which to run, in what batches, and their manifest."""

    def __init__(self, sweep_path, directory, *, overrides=(), argv=(), log: Callable = print):
        self.sweep = load_sweep(sweep_path)
        self.configs = [self.sweep.member_config(i, overrides) for i in range(len(self.sweep.members))]
        self.directory, self.argv, self.log = Path(directory), list(argv), log
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError("-o", str(directory), f"cannot create the directory ({error.strerror})") from None
        digests = [config_digest(c) for c in self.configs]
        self.manifest = Manifest.create_or_check(self.directory, self.sweep.paths, self.sweep.members, digests)
        self._rollouts: dict = {}

    def path(self, index: int) -> Path:
        return self.directory / member_file(index)

    def run(self, members: list[int] | None = None) -> dict[int, Outcome | str]:
        """Run ``members`` (default all): complete ones are skipped, interrupted ones resumed, the
        rest run in batches. Returns each member's outcome (or its status when skipped)."""
        indices = list(range(len(self.configs))) if members is None else members
        for i in indices:
            if not 0 <= i < len(self.configs):
                raise ConfigError("--member", i, f"must be a member index in [0, {len(self.configs) - 1}]")
        results: dict[int, Outcome | str] = {}
        fresh = []
        for i in indices:
            status = _stored_status(self.path(i))
            if status in ("complete", "failed"):
                self.manifest.set_status(i, status)
                results[i] = status
            elif status is not None:
                results[i] = self._resume(i)
            else:
                fresh.append(i)
        groups: dict = {}
        problems = {i: batch_problem(self.configs[i]) for i in fresh}
        for i in fresh:
            groups.setdefault(batch_key(self.configs[i], problems[i]), []).append(i)
        for key, group in groups.items():
            self._run_group(key, group, problems, results)
        return results

    def _resume(self, index: int) -> Outcome:
        self.manifest.set_status(index, "running")
        run = Run.resume(self.path(index), argv=self.argv, log=self.log)
        outcome = run.execute() if run is not None else Outcome("complete", self.path(index))
        self.manifest.set_status(index, outcome.status)
        return outcome

    def _run_group(self, key, indices: list[int], problems: dict, results: dict) -> None:
        config = self.configs[indices[0]]
        devices = len(jax.local_devices())
        size = batch_size(config, self.sweep.section.batch, devices, available_memory())
        size = min(size, len(indices)) if devices == 1 else size
        for batch in chunks(indices, size):
            members = [m for m in (self._start(i, problems[i], results) for i in batch) if m is not None]
            if not members:
                continue
            template = members[0].run.problem

            def rollout(n_saves, mesh, key=key, template=template):
                if (key, n_saves) not in self._rollouts:
                    self._rollouts[key, n_saves] = batched_rollout(template, n_saves, config.steps_per_save, mesh)
                return self._rollouts[key, n_saves]

            Batch(members, rollout, size, self.log).execute(lambda i, outcome: self._ended(i, outcome, results))

    def _start(self, index: int, problem, results: dict) -> Member | None:
        """Create member ``index``'s file with frame 0; a dt beyond the limit at t = 0 fails this member alone."""
        try:
            run = Run.start(self.configs[index], self.path(index), overwrite=False, argv=self.argv, log=self.log,
                            problem=problem)  # fmt: skip
        except ConfigError as error:
            self.log(f"member {index} failed before its first step: {error}")
            self.manifest.set_status(index, "failed")
            results[index] = "failed"
            return None
        self.manifest.set_status(index, "running")
        return Member(index, run)

    def _ended(self, index: int, outcome: Outcome, results: dict) -> None:
        self.manifest.set_status(index, outcome.status)
        results[index] = outcome


def members_of_process(n_members: int, process: int, processes: int) -> list[int]:
    """The members process ``process`` of ``processes`` runs: every ``processes``-th, from ``process``."""
    return list(np.arange(process, n_members, processes))
