"""A run: one configuration, one trajectory file, from frame 0 (or a checkpoint) to an outcome."""

from __future__ import annotations

import datetime
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import POSITIVITY_TOLERANCE, cast_floats, initial_frame, max_stable_dt

from .. import _compile_log
from ..io import open_trajectory, write_xdmf
from ..io._writer import FORMAT, FileBusy, TrajectoryFile
from ._loop import NumericalFailure, run_loop
from ._output import OutputError, OutputTarget
from ._signals import StopFlag


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` is ``complete``, ``interrupted`` or ``failed``; ``path`` holds its frames."""

    status: str
    path: Path
    message: str | None = None


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _metadata(config, argv) -> dict:
    """Root attributes of a new file: provenance, enough to rerun, and the run's time stepping."""
    from .. import __version__

    device = jax.devices()[0]
    return {
        "schema": FORMAT,
        "config": config.text,
        "model": config.model.name,
        "tumorfield_version": __version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "precision": config.output.precision,
        "seed": config.run.seed,
        "command_line": shlex.join(argv),
        "created": _now(),
        "dt": config.time.dt,
        "steps_per_save": config.steps_per_save,
    }


def _params_and_observe(config) -> tuple:
    """The parameter pytree in the run's precision, and the per-step observable: one function
    object per run (``advance`` compiles per function object)."""
    grid, model = config.grid, config.model

    def observe(state, params, t):
        return model.observe(state, params, t, grid)

    return cast_floats(model.params(grid), config.output.precision), observe


def _setup_jax(config) -> None:
    _compile_log.install()
    _compile_log.enable_persistent_cache(config.compilation_cache)


class Run:
    """A configured simulation attached to its open trajectory file and output target.

    Build one with :meth:`start` (a new file) or :meth:`resume` (a file's last checkpoint),
    then :meth:`execute` it. The run owns the file's lifecycle: signals stop it between
    chunks on a committed checkpoint; a numerical failure commits every valid frame, marks
    the file ``failed`` and keeps any older output; every ending writes the XDMF sidecar.
    """

    def __init__(self, config, file: TrajectoryFile, target: OutputTarget, state, step: int, log: Callable):
        self.config, self.file, self.target, self.state, self.step, self.log = config, file, target, state, step, log
        self.params, self.observe = _params_and_observe(config)

    @classmethod
    def start(cls, config, output, *, overwrite: bool, argv, log: Callable) -> Run:
        """Check the output path and ``time.dt`` at t = 0, create the file and commit frame 0."""
        from ..config import ConfigError

        target = OutputTarget.new(output, overwrite=overwrite)
        _setup_jax(config)
        system, grid, dt, dtype = config.model.system, config.grid, config.time.dt, config.output.precision
        params, observe = _params_and_observe(config)
        frame = initial_frame(system, grid, config.model.initial_state(grid), params, dtype=dtype)
        limits = max_stable_dt(system, grid, frame, params, dtype=dtype)
        too_large = {name: limit for name, limit in limits.items() if dt > limit * (1 + POSITIVITY_TOLERANCE)}
        if too_large:
            detail = ", ".join(f"{name!r} {limit:.4g} day" for name, limit in too_large.items())
            why = f"dt = {dt} day exceeds the positivity limit of the explicit part ({detail}) at t = 0"
            raise ConfigError("time.dt", dt, why, config.source)
        scalars0 = {name: np.asarray(v) for name, v in jax.jit(observe)(frame, params, jnp.zeros((), dtype)).items()}
        state0 = {name: np.asarray(v) for name, v in frame.items()}
        try:
            file = TrajectoryFile.create(
                str(target.current), grid=grid, system=system, model=config.model, output=config.output,
                metadata=_metadata(config, argv), scalar_names=tuple(scalars0),
                state_dtypes={name: v.dtype for name, v in state0.items()},
                constant_fields=config.model.constant_fields(grid),
            )  # fmt: skip
            file.h5.attrs["target"] = str(target.final.resolve())
            file.commit({n: v[None] for n, v in state0.items()}, np.zeros(1), np.zeros(1),
                        {n: v[None] for n, v in scalars0.items()}, state0, 0)  # fmt: skip
        except BaseException:
            target.discard()
            raise
        target.promote_if_free()
        log(f"writing {target.current} ({config.n_frames} frames, grid {grid.shape}, {config.output.precision})")
        return cls(config, file, target, frame, 0, log)

    @classmethod
    def resume(cls, path, *, argv, log: Callable) -> Run | None:
        """Reopen ``path`` at its last checkpoint; None if it is already complete."""
        from .. import config as cfg

        path = Path(path)
        with open_trajectory(path) as stored:
            text, status, recorded = stored.config_text, stored.status, stored.metadata.get("target")
        if status == "complete":
            return None
        config = cfg.loads(text, f"{path}:/config")
        _setup_jax(config)
        try:
            file = TrajectoryFile.open_for_resume(str(path))
        except FileBusy as error:
            raise OutputError(str(error)) from None
        state, step = file.checkpoint()
        file.set_status("running")
        file.h5.attrs["resumed"] = f"{_now()}: {shlex.join(argv)}"
        log(f"resuming {path} at t = {step * config.time.dt:.6g} day ({file.n_committed}/{config.n_frames} frames)")
        return cls(config, file, OutputTarget.existing(path, recorded), state, step, log)

    def execute(self) -> Outcome:
        """Run to the end, a signal or a numerical failure; the file is closed and in place after."""
        with StopFlag() as stop:
            try:
                status = run_loop(self.config, self.file, self.state, self.step, self.params, self.observe, stop,
                                  self.log, self.target.promote_if_free)  # fmt: skip
            except NumericalFailure as error:
                return self._end("failed", str(error))
            except BaseException as error:
                self._end("failed", f"{type(error).__name__}: {error}", sidecar=False)
                raise
        self.log(
            f"compilation {_compile_log.seconds():.2f} s in all; persistent cache: "
            f"{_compile_log.cache_hits()} hits, {_compile_log.cache_misses()} misses"
        )
        message = None if status == "complete" else f"interrupted by {stop.signal_name}"
        return self._end(status, message)

    def _end(self, status: str, message: str | None, sidecar: bool = True) -> Outcome:
        self.file.set_status(status, message)
        self.file.close()
        path = self.target.finish(status)
        if sidecar:
            write_xdmf(str(path))
        return Outcome(status, path, message)
