"""A run made through the API (``tumorfield.simulate``) as a trajectory file: :func:`write_trajectory`.

The file is the run file of ``tumorfield run`` (format ``tumorfield-trajectory/2``, written by the
same :class:`~tumorfield.io._writer.TrajectoryFile` through the same output target, one commit), so
``inspect``, ``plot``, ``compare``, ``export``, xarray and ParaView (its XDMF sidecar) read it as they
read a CLI run. What an API run does not have, the file does not pretend to have:

- no ``config`` (no TOML was read): ``inspect`` says so, and ``resume`` refuses the file (continue
  it with :func:`tumorfield.advance` from ``open_trajectory(path).checkpoint()``);
- no ``seed``; ``command_line`` is the Python process's ``sys.argv``;
- units and long names come from ``model`` (a :class:`tumorfield.models.Model`) or ``units=``;
  a field or series with neither is written with ``units = "unknown"`` (never a made-up unit);
- the per-step series (``/scalars``, from ``SaveAt(observe=...)``) start at the first step:
  ``simulate`` records no sample at ``t0``;
- ``writer = "tumorfield.io.write_trajectory"`` says where the file came from; ``parameters`` (JSON)
  holds the numbers of ``params`` where they are given;
- with a ``model``, the warnings of ``tumorfield run`` (its confined fields narrower than 4 cells in the
  first frame, or on the walls at the end) go into the ``warnings`` attribute and are issued as
  Python warnings (``UserWarning``).
"""

from __future__ import annotations

import datetime
import json
import math
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

UNKNOWN = "unknown"
"""The ``units`` of a dataset whose units neither the model nor ``units=`` gives."""
WRITER = "tumorfield.io.write_trajectory"


class _Quantity(SimpleNamespace):
    units: str
    long_name: str


class _Declared:
    """What :class:`~tumorfield.io._writer.TrajectoryFile` asks of a model: ``fields`` and ``observables``
    (name → units, long_name), and ``name``; never ``scalar_observables`` (every ODE variable of an API
    run is stored per frame: ``simulate`` records no sample at ``t0`` to read frame 0 from)."""

    def __init__(self, name: str, fields: dict, observables: dict):
        self.name, self.fields, self.observables = name, fields, observables


def _quantities(names, table: Mapping, units: Mapping[str, str], long_names: Mapping[str, str], kind: str) -> dict:
    out = {}
    for name in names:
        declared = table.get(name)
        unit = units.get(name, declared.units if declared is not None else UNKNOWN)
        long_name = long_names.get(name, declared.long_name if declared is not None else f"{kind} {name}")
        out[name] = _Quantity(units=str(unit), long_name=str(long_name))
    return out


def _parameters_json(params) -> str:
    """The numbers of a params pytree as JSON ``{path: value}`` (arrays as ``"array of shape (…)"``)."""
    import jax

    if params is None:
        return ""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
        key = ".".join(str(part) for part in parts) or "params"
        value = np.asarray(leaf) if hasattr(leaf, "shape") or isinstance(leaf, (int, float)) else None
        if value is None:
            continue
        out[key] = value.item() if value.ndim == 0 else f"array of shape {value.shape}"
    return json.dumps(out)


def _valid_rows(trajectory, n_valid: int) -> tuple[int, np.ndarray | None]:
    """Per-step samples up to the last valid frame: how many, and their times (None without any)."""
    t_observed = getattr(trajectory, "t_observed", None)
    if t_observed is None:
        return 0, None
    t_observed = np.asarray(t_observed, "f8")
    last = float(np.asarray(trajectory.t)[n_valid - 1])
    keep = np.isfinite(t_observed) & (t_observed <= last + 1e-9 * max(1.0, abs(last)))
    return int(np.sum(keep)), t_observed[keep]


def _on_steps(times, dt: float, t0: float):
    """``times`` as ``t0 + k·dt`` in float64 where they are that to float32 round-off (a float32 run's
    0.15000001 is step 3 of 0.05: written 0.15, as ``tumorfield run`` writes it), else as they are."""
    if times is None or not (math.isfinite(dt) and dt > 0):
        return times
    steps = np.round((times - t0) / dt)
    exact = t0 + steps * dt
    return np.where(np.abs(times - exact) <= 1e-5 * dt + 1e-6 * np.abs(exact), exact, times)


def _step_size(t_samples, t_frames, dt) -> float:
    if dt is not None:
        return float(dt)
    for times in (t_samples, t_frames):
        if times is not None and len(times) > 1:
            return float(times[1] - times[0])
    return math.nan


def write_trajectory(
    path, trajectory, grid, *, model=None, system=None, params=None, dt: float | None = None,
    units: Mapping[str, str] | None = None, long_names: Mapping[str, str] | None = None,
    constants: Mapping[str, tuple] | None = None, metadata: Mapping[str, Any] | None = None,
    compression: str = "gzip", overwrite: bool = False, xdmf: bool = True,
) -> Path:  # fmt: skip
    """Write a :class:`tumorfield.Trajectory` (``tumorfield.simulate``, ``advance``) on ``grid`` to ``path``
    as a trajectory file in the run-file format; returns the path (an XDMF sidecar is written next to
    it unless ``xdmf=False``, or the run has no field to show).

    ``model`` (a :class:`tumorfield.models.Model`): units and long names of its fields and observables,
    its name, its constant fields and its System; ``system``: the System solved (default: ``model.system``;
    without either, fields of shape ``(T,)`` are the scalar ODE variables); ``params``: its numbers are
    recorded (``parameters``, JSON); ``dt`` (day): recorded, and used in a failure message (default: the
    step of ``trajectory.t_observed``); ``units``/``long_names``: name → text, for names the model does
    not declare or to override it (a unit as in ``tumorfield.models``: ``"mm^d"`` is mm² in 2D, mm³ in
    3D); ``constants``: name → ``(array of grid.shape, units, long_name)``, written once under
    ``/constant``; ``metadata``: more root attributes (strings or numbers; the format's own keys are
    refused). Only the ``n_valid`` frames of a failed run are written, with status ``failed`` and
    the failure as ``message``; its per-step series up to the last valid frame.

    Refuses (``ValueError``, nothing written) an existing ``path`` without ``overwrite``, a traced
    trajectory, fields whose shape is not ``(T, *grid.shape)``, a trajectory with no valid frame.
    """
    from tumorfield_kernels import failure_message

    from ..run._output import OutputTarget
    from ._guard import StorageError
    from ._writer import FORMAT, TrajectoryFile
    from .xdmf import write_xdmf

    if compression not in ("gzip", "lzf", "none"):
        raise ValueError(f"write_trajectory: compression={compression!r}: allowed are 'gzip', 'lzf', 'none'")
    frames, t, state, step, n_valid, status, message = _contents(trajectory, grid)
    if system is None and model is not None:
        system = model.system
    names = tuple(frames)
    scalars = tuple(system.scalars) if system is not None else tuple(n for n in names if frames[n].ndim == 1)
    units, long_names = dict(units or {}), dict(long_names or {})
    model_fields = dict(getattr(model, "fields", None) or {})
    model_observables = dict(getattr(model, "observables", None) or {})
    n_samples, t_samples = _valid_rows(trajectory, n_valid)
    observed = {name: np.asarray(v, "f8")[:n_samples] for name, v in (trajectory.observed or {}).items()}
    stats = getattr(trajectory, "stats", None)
    if t_samples is not None and stats is not None and np.shape(stats.step_substeps)[0] >= n_samples:
        observed.setdefault("substeps", np.asarray(stats.step_substeps, "f8")[:n_samples])
    dt = _step_size(t_samples, t, dt)
    t, t_samples = _on_steps(t, dt, float(t[0])), _on_steps(t_samples, dt, float(t[0]))
    if status == "failed":
        message = failure_message(trajectory, grid, dt) or message
    declared = _Declared(
        str(getattr(model, "name", "") or ""),
        _quantities(names, model_fields, units, long_names, "field"),
        _quantities(observed, model_observables, units, long_names, "series"),
    )
    if "substeps" in declared.observables and "substeps" not in units and "substeps" not in model_observables:
        from ._writer import RUN_SCALARS

        declared.observables["substeps"] = _Quantity(units=RUN_SCALARS["substeps"][0],
                                                     long_name=RUN_SCALARS["substeps"][1])  # fmt: skip
    stored = SimpleNamespace(fields=names, scalars=scalars)
    precision = next((str(v.dtype) for n, v in frames.items() if n not in scalars), "float64")
    output = SimpleNamespace(compression=compression, gzip_level=6, precision=precision)
    constant_fields = dict(model.constant_fields(grid)) if model is not None else {}
    constant_fields.update(constants or {})
    attributes = _metadata(grid, declared.name, precision, dt, t, t_samples, params, metadata, FORMAT)
    notes = _warnings(model, grid, frames, state, float(t[-1]), status)
    target = OutputTarget.new(path, overwrite=overwrite)
    file = None
    try:
        file = TrajectoryFile.create(
            str(target.current), grid=grid, system=stored, model=declared, output=output, metadata=attributes,
            scalar_names=tuple(observed), state_dtypes={n: np.asarray(v).dtype for n, v in state.items()},
            constant_fields=constant_fields, lock=target.lock, fields=names, warnings=tuple(notes),
        )  # fmt: skip
        file.commit({n: frames[n] for n in file.frame_names}, t,
                    t_samples if t_samples is not None else np.zeros(0), observed, state, step)  # fmt: skip
        file.set_status(status, message)
        file.close()
        file = None
        final = target.finish(status)
    except BaseException:
        if file is not None:
            file.close()
        target.discard()
        target.release()
        raise
    target.release()
    if xdmf:
        try:
            write_xdmf(str(final))
        except (OSError, StorageError):
            Path(str(final.with_suffix(".xdmf")) + ".tmp").unlink(missing_ok=True)
    return final


def _warnings(model, grid, frames, state, t_last: float, status: str) -> list[str]:
    """The warnings ``tumorfield run`` gives (``tumorfield.run._warnings``: the model's confined fields, at
    the first frame and at the last state), each also as a Python ``UserWarning``."""
    import warnings

    from ..run._warnings import final_warnings, initial_warnings

    if model is None:
        return []
    first = {name: value[0] for name, value in frames.items()}
    notes = initial_warnings(model, grid, first)
    if status in ("complete", "failed"):
        notes += final_warnings(model, state, first, t_last)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return notes


def _contents(trajectory, grid):
    """``(frames, t, state, step, n_valid, status, message)`` of a concrete trajectory: the valid frames
    as host arrays, their times, the last valid state and its step number."""
    import jax

    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trajectory)):
        raise TypeError("write_trajectory: the trajectory is traced (inside jit, vmap or grad); write it outside")
    n_valid = int(np.asarray(trajectory.n_valid))
    if n_valid < 1:
        raise ValueError("write_trajectory: the trajectory has no valid frame (n_valid = 0); nothing to write")
    t = np.asarray(trajectory.t, "f8")[:n_valid]
    frames = {name: np.asarray(value)[:n_valid] for name, value in trajectory.fields.items()}
    for name, value in frames.items():
        if value.ndim != 1 and value.shape[1:] != tuple(grid.shape):
            raise ValueError(
                f"write_trajectory: field {name!r} has frames of shape {value.shape[1:]}; the grid's shape is "
                f"{tuple(grid.shape)}"
            )
    final = trajectory.final_state
    state = {n: np.asarray(v) for n, v in (final or {n: v[-1] for n, v in frames.items()}).items()}
    step = int(np.asarray(trajectory.final_step)) if trajectory.final_step is not None else 0
    status = "complete" if trajectory.successful else "failed"
    message = None if status == "complete" else "the run failed after its last frame"
    return frames, t, state, step, n_valid, status, message


def _metadata(grid, model: str, precision: str, dt, t, t_samples, params, extra, schema) -> dict:
    """The root attributes of an API run: what ``tumorfield run`` records, where an API run has it."""
    import jax

    from .. import __version__
    from ..run._job import device_name, git_commit

    frame_step = float(t[1] - t[0]) if len(t) > 1 else math.nan
    steps_per_save = round(frame_step / dt) if math.isfinite(frame_step) and dt and math.isfinite(dt) else 0
    attributes = {
        "schema": schema,
        "writer": WRITER,
        "model": model,
        "tumorfield_version": __version__,
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "device": device_name(),
        "precision": precision,
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dt": float(dt),
        "steps_per_save": int(steps_per_save),
        "grid_affine": np.asarray(grid.world_affine(), dtype=np.float64).ravel(),
        "input_images": "[]",
    }
    parameters = _parameters_json(params)
    if parameters:
        attributes["parameters"] = parameters
    for key, value in (extra or {}).items():
        if key in attributes or key in _RESERVED:
            raise ValueError(f"write_trajectory: metadata[{key!r}] is an attribute of the format; use another name")
        if not isinstance(value, (str, int, float, np.integer, np.floating)):
            raise ValueError(f"write_trajectory: metadata[{key!r}] = {value!r}: a string or a number")
        attributes[key] = value
    return attributes


_RESERVED = ("config", "seed", "n_committed", "n_scalars_committed", "status", "message", "resumed", "warnings",
             "Conventions", "title", "source", "target")  # fmt: skip
