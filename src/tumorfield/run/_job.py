"""A run: one configuration, one trajectory file, from frame 0 (or a checkpoint) to an outcome."""

from __future__ import annotations

import datetime
import functools
import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import check_initial, positivity_violations

from .. import _compile_log
from ..config._loader import stored_fields
from ..io import InputImage, image_digest, open_trajectory, write_xdmf
from ..io._guard import GuardedFile
from ..io._writer import FORMAT, StorageError, TrajectoryFile
from ..problem import Problem, run_mesh
from ._loop import LIMIT_NAME, chunk_loop
from ._output import OutputError, OutputTarget
from ._signals import StopFlag, pending
from ._warnings import confined, final_warnings, initial_warnings


class Interrupted(Exception):
    """A signal arrived before frame 0 was committed: nothing was written (exit code 75)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` is ``complete``, ``interrupted`` or ``failed``; ``path`` holds its frames."""

    status: str
    path: Path
    message: str | None = None


@functools.cache
def git_commit() -> str:
    """The git commit of the source tree tumorfield runs from, or ``"unknown"`` (asked once per process: the
    code that runs is the code imported; a sweep creates a file per member)."""
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


def device_name() -> str:
    """The default JAX device as ``platform:kind`` (e.g. ``cpu:cpu``, ``gpu:NVIDIA H200``)."""
    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def _metadata(config, argv, target: OutputTarget) -> dict:
    """Root attributes of a new file: provenance, enough to rerun, and the run's time stepping."""
    from .. import __version__

    return {
        "schema": FORMAT,
        "config": config.text,
        "model": config.model.name,
        "tumorfield_version": __version__,
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "device": device_name(),
        "precision": config.output.precision,
        "seed": config.run.seed,
        "command_line": shlex.join(argv),
        "created": _now(),
        "dt": config.time.dt,
        "steps_per_save": config.steps_per_save,
        "cell_diffusion": config.cell_diffusion_choice[1],  # what numerics.cell_diffusion resolved to, and why
        "target": str(target.final.resolve()),  # informational: never read back
        # covered by meta_sha256; flat (16,), row-major: netCDF-C (xarray's netcdf4 engine) reads 1D attributes only
        "grid_affine": np.asarray(config.grid.world_affine(), dtype=np.float64).ravel(),
        "input_images": _input_images(config),  # idem; what ``resume`` checks before continuing
    }


def _input_images(config) -> str:
    """The ``input_images`` root attribute: JSON list of ``{key, path, sha256, affine}`` of every image
    ``config`` reads (``RunConfig.input_images``), hashed now."""
    records = []
    for key, path in config.input_images:
        image = InputImage.of(path)
        affine = [list(row) for row in image.affine]
        records.append({"key": key, "path": image.path, "sha256": image.sha256, "affine": affine})
    return json.dumps(records)


def _check_input_images(path: Path, images: dict) -> None:
    """Refuse (:class:`OutputError`, exit 2) to continue ``path`` if an image its run read is missing
    or its bytes changed since the run started (``images``: key → recorded :class:`InputImage`)."""
    for key, image in images.items():
        try:
            now = image_digest(image.path)
        except OSError as error:
            raise OutputError(f"cannot resume {path}: input image {image.path} ({key}) is unreadable or missing "
                              f"({error.strerror or error}); it had SHA-256 {image.sha256[:12]}… when the run "
                              f"started: restore it, or run the configuration again") from None  # fmt: skip
        if now != image.sha256:
            raise OutputError(f"cannot resume {path}: input image {image.path} ({key}) changed since the run "
                              f"started: SHA-256 {image.sha256[:12]}… now {now[:12]}…; restore it, or run the "
                              f"configuration again")  # fmt: skip


def output_bytes(config) -> int:
    """Estimated size (bytes, uncompressed) of a run's file: frames, times, per-step scalars,
    the two checkpoint slots, a constant field and about 1 MiB of HDF5 metadata."""
    system, cells, model = config.model.system, config.grid.n_cells, config.model
    itemsize = 4 if config.output.precision == "float32" else 8
    frame = sum(8 if name in system.scalars else cells * itemsize for name in system.fields) + 8
    scalars = (config.n_steps + 1) * (len(model.observables) + 1) * 8
    state = sum(8 if name in system.scalars else cells * 8 for name in system.fields)
    return config.n_frames * frame + scalars + 2 * state + cells * 8 + 2**20  # (one constant field)


def _setup_jax(config, *, stored: bool = False) -> None:
    """Compile-time logging and the persistent compilation cache; ``stored``: ``config`` was read from a
    file's contents (``resume``), whose ``run.compilation_cache`` is never used (see :mod:`.._compile_log`)."""
    _compile_log.install()
    _compile_log.enable_persistent_cache(_compile_log.cache_directory(None) if stored else config.compilation_cache)


class Run:
    """A configured simulation attached to its open trajectory file and output target.

    Build one with :meth:`start` (a new file) or :meth:`resume` (a file's last checkpoint),
    then :meth:`execute` it. The run owns the file's lifecycle: signals stop it between
    chunks on a committed checkpoint; a numerical failure commits every valid frame, marks
    the file ``failed`` and keeps any older output; every ending writes the XDMF sidecar.
    """

    def __init__(self, config, file: TrajectoryFile, target: OutputTarget, state, step: int, log: Callable,
                 problem: Problem | None = None):  # fmt: skip
        self.config, self.file, self.target, self.state, self.step, self.log = config, file, target, state, step, log
        self.problem = problem or Problem.from_config(config, mesh=run_mesh(config))
        target.on_move = file.moved
        file.moved(target.current)

    @classmethod
    def start(cls, config, output, *, overwrite: bool, argv, log: Callable, problem: Problem | None = None,
              frame0: tuple[dict, dict] | None = None) -> Run:  # fmt: skip
        """Lock and check the output path and its disk space, check ``time.dt`` at t = 0, create the
        file and commit frame 0. A signal caught before the file exists raises :class:`Interrupted`.
        ``problem``: the config's, when the caller has built it already (a sweep, to group members);
        ``frame0``: ``_frame_zero(config, problem)``, when the caller has computed and checked it (a
        sweep computes its batch's first chunk while the members' files are written)."""
        target = OutputTarget.new(output, overwrite=overwrite)
        problem = problem or Problem.from_config(config, mesh=run_mesh(config))
        file = None
        try:
            for note in [*target.notes, target.check_space(output_bytes(config), config.output.compression == "none")]:
                if note:
                    log(note)
            _setup_jax(config)
            frame, scalars0 = frame0 or _frame_zero(config, problem)
            _raise_if_signalled()
            state0 = {name: np.asarray(v) for name, v in frame.items()}
            warnings = initial_warnings(config.model, config.grid, state0)
            file = TrajectoryFile.create(
                str(target.current), grid=config.grid, system=config.model.system, model=config.model,
                output=config.output, metadata=_metadata(config, argv, target), scalar_names=tuple(scalars0),
                state_dtypes={name: v.dtype for name, v in state0.items()},
                constant_fields=config.model.constant_fields(config.grid), lock=target.lock,
                fields=stored_fields(config), warnings=tuple(warnings),
            )  # fmt: skip
            file.commit({n: state0[n][None] for n in file.frame_names}, np.zeros(1), np.zeros(1),
                        {n: v[None] for n, v in scalars0.items()}, state0, 0)  # fmt: skip
            target.promote_if_free()
        except BaseException:
            _give_up(file, target)
            raise
        log(f"writing {target.current} ({config.n_frames} frames, grid {config.grid.shape}, {config.output.precision})")
        log(f"cell diffusion {config.cell_diffusion_choice[1]}")
        for warning in warnings:
            log(f"warning: {warning}")
        return cls(config, file, target, frame, 0, log, problem)

    @classmethod
    def resume(cls, path, *, argv, log: Callable) -> Run | None:
        """Reopen ``path`` at its last checkpoint; None if it is already complete. Anything that does
        not verify (:meth:`TrajectoryFile.open_for_resume`) is refused before the file is modified."""
        from .. import config as cfg

        path = Path(path)
        target = OutputTarget.existing(path)
        try:
            status, text, streams, images = _verified(path)
            if status == "complete":
                _complete_the_move(target, log)
                return None
            _check_input_images(path, images)  # before the config reads them again, before any write
            config = cfg.loads(text, f"{path}:/config")
            _setup_jax(config, stored=True)  # the cache comes from the command line or environment, not the file
            file = TrajectoryFile.open_for_resume(str(path), lock=target.lock, verified=streams)
        except BaseException:
            target.release()
            raise
        try:
            state, step = file.checkpoint()
            chunk = min(config.run.chunk_frames, config.n_frames - file.n_committed)
            file.check_space(chunk, chunk * config.steps_per_save)  # a full disk: refused before any write
            # the message of the interruption is history now: the status says what the file is
            file.set_status("running", "", resumed=f"{_now()}: {shlex.join(argv)}")
        except BaseException:
            _give_up(file, target, keep=True)
            raise
        log(f"resuming {path} at t = {step * config.time.dt:.6g} day ({file.n_committed}/{config.n_frames} frames)")
        log(f"cell diffusion {config.cell_diffusion_choice[1]}")  # decided from the config alone: as at the start
        return cls(config, file, target, state, step, log)

    def execute(self) -> Outcome:
        """Run to the end, a signal or a numerical failure; the file is closed and in place after.
        Raises :class:`StorageError` (the file ends ``interrupted``, resumable) if writing fails."""
        with StopFlag() as stop:
            try:
                (failure,) = chunk_loop([self], self.advance, self.state, self.step, stop, self.log)
                if failure is not None:
                    return self._end("failed", failure)
            except StorageError as error:
                raise self._storage_failure(error) from None
            except BaseException as error:
                self._end("failed", f"{type(error).__name__}: {error}", sidecar=False)
                raise
        self.log(
            f"compilation {_compile_log.seconds():.2f} s in all; persistent cache: "
            f"{_compile_log.cache_hits()} hits, {_compile_log.cache_misses()} misses"
        )
        if stop:
            return self._end("interrupted", f"interrupted by {stop.signal_name}")
        return self._end("complete", None)

    def advance(self, n_saves: int, state, step: int):
        """One chunk of this run (``chunk_loop``'s ``advance``)."""
        return self.problem.advance(state, step, n_saves, self.config.steps_per_save)

    def end(self, status: str, message: str | None) -> Outcome:
        """End a run that was advanced from outside :meth:`execute` (a sweep's vmapped batch)."""
        return self._end(status, message)

    def _storage_failure(self, error: StorageError) -> StorageError:
        """End a run whose writes failed: status ``interrupted`` where that can still be written, the
        file closed and in place; returns the error to raise, naming where to resume."""
        try:
            self.file.set_status("interrupted", f"stopped: {error.strerror}")
        except StorageError:
            pass
        outcome = self._end("interrupted", None, sidecar=False, status_written=True)
        return StorageError(error.errno, f"{error.strerror}; once that is fixed: tumorfield resume {outcome.path}")

    def _end_warnings(self, status: str) -> list[str] | None:
        """The file's warnings with those of the last state added (a run that ended: ``complete`` or
        ``failed``), each new one logged; None where nothing is new. Never raises: a warning is not
        worth losing the run's ending over."""
        if status not in ("complete", "failed"):
            return None
        try:
            names = confined(self.config.model, self.config.model.system.fields)
            last = self.file.last_state(names)
            t_last = float(self.file.h5["t"][self.file.n_committed - 1]) if self.file.n_committed else 0.0
            found = final_warnings(self.config.model, last, self.file.first_frame(names), t_last)
            known = self.file.warnings
        except Exception as error:  # noqa: BLE001
            self.log(f"warning: the end-of-run checks failed ({type(error).__name__}: {error})")
            return None
        new = [w for w in found if w not in known]
        for warning in new:
            self.log(f"warning: {warning}")
        return known + new if new else None

    def _end(self, status: str, message: str | None, sidecar: bool = True, status_written: bool = False) -> Outcome:
        """Write the final status (and the warnings of the last state), close, move the file where it
        belongs, write the sidecar, unlock."""
        try:
            try:
                if not status_written:
                    self.file.set_status(status, message, warnings=self._end_warnings(status))
            finally:
                self.file.close()
            path = self.target.finish(status)
            if sidecar:
                self._sidecar(path)
        finally:
            self.target.release()
        return Outcome(status, path, message)

    def _sidecar(self, path: Path) -> None:
        _write_sidecar(path, self.log)


def _write_sidecar(path: Path, log: Callable) -> None:
    """The XDMF sidecar; a failure to write it is reported, not fatal (the trajectory is complete)."""
    try:
        write_xdmf(str(path))
    except OSError as error:
        log(f"warning: could not write the XDMF sidecar of {path} ({error.strerror or error})")
        Path(str(path.with_suffix(".xdmf")) + ".tmp").unlink(missing_ok=True)


def _complete_the_move(target: OutputTarget, log: Callable) -> None:
    """A complete file found by ``resume``: redo a journal its writer was killed applying, and move it
    onto its final name if it was killed before that (a partial that replaces an older output)."""
    try:
        GuardedFile(target.current, create=False).close()
        if target.is_partial:
            _write_sidecar(target.finish("complete"), log)
            log(f"moved the complete run to {target.final}")
    finally:
        target.release()


@eqx.filter_jit
def _observe_jit(observe, state, params, t):
    return observe(state, params, t)


def _frame_zero(config, problem: Problem) -> tuple[dict, dict]:
    """Frame 0 (quasi-steady fields solved) and the diagnostics at t = 0; refuses a
    ``time.dt`` beyond the positivity limit of the explicit part (times ``numerics.max_substeps``)
    (:class:`ConfigError`). The diagnostics include ``substeps`` (0 at t = 0: no step yet)."""
    from ..config import ConfigError

    try:  # a NaN or a negative density at t = 0: refused naming the field and the cell, nothing written
        check_initial(problem.system, problem.grid, problem.y0)
    except ValueError as error:
        raise ConfigError("initial state", config.model.name, str(error), config.source) from None
    frame = problem.initial_frame()
    dt, cap = config.time.dt, problem.numerics.substeps.cap
    too_large = positivity_violations(problem.system, problem.grid, frame, problem.params, dt=dt,
                                      numerics=problem.numerics, mesh=problem.mesh)  # fmt: skip
    if too_large:
        detail = ", ".join(f"{name!r} {limit / cap:.4g} day" for name, limit in too_large.items())
        sub = "" if cap == 1 else f" times {LIMIT_NAME} = {cap}"
        why = f"dt = {dt} day exceeds the positivity limit of the explicit part ({detail}){sub} at t = 0"
        raise ConfigError("time.dt", dt, why, config.source)
    zero = jnp.zeros((), problem.numerics.float_dtype)
    scalars0 = {name: np.asarray(v) for name, v in _observe_jit(problem.observe, frame, problem.params, zero).items()}
    scalars0["substeps"] = np.asarray(0.0)
    return frame, scalars0


def _verified(path: Path) -> tuple[str, str, object, dict]:
    """The status, stored config, stream digests and recorded input images of ``path`` after verifying
    it for ``resume`` (every committed frame, sample and the checkpoint); refuses files with nothing to verify."""
    with open_trajectory(path) as stored:
        if stored.n_committed == 0:
            raise OutputError(f"{path} holds no committed frame (its run was killed while creating it); "
                              f"run the configuration again")  # fmt: skip
        if not stored.config_text.strip():
            writer = stored.metadata.get("writer") or "a program without a config"
            raise OutputError(f"{path} was written by {writer} (an API run): it stores no config, so resume cannot "
                              f"continue it; continue it with tumorfield.advance from open_trajectory(path)"
                              f".checkpoint()")  # fmt: skip
        if not stored.verifiable:
            raise OutputError(f"{path} was written without checksums (by an older tumorfield), so it cannot "
                              f"be verified and is not continued; run its configuration again")  # fmt: skip
        return stored.status, stored.config_text, stored.verify(), stored.input_images


def _raise_if_signalled() -> None:
    if pending():
        raise Interrupted(f"interrupted by {pending()} before frame 0 was written; nothing was written")


def _give_up(file: TrajectoryFile | None, target: OutputTarget, keep: bool = False) -> None:
    """After a failure in :meth:`Run.start` (or ``resume``): close the file, remove a partial that
    holds nothing (unless ``keep``), release the output lock."""
    try:
        if file is not None:
            file.close()
        if not keep:
            target.discard()
    finally:
        target.release()
