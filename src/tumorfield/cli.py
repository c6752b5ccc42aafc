"""Command-line interface: ``tumorfield run | resume | inspect | plot | config-docs``.

Exit codes: 0 done, 1 unexpected error, 2 bad input, 3 numerical failure
(NaN/Inf or a step-size violation; earlier frames are kept), 75 interrupted by
SIGTERM/SIGUSR1/SIGINT after checkpointing (continue with ``tumorfield resume``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_NUMERICAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 75


class InputError(Exception):
    """Bad command-line input that is not a config key (exit 2)."""


def _log(message: str) -> None:
    print(f"tumorfield: {message}", file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _metadata(config, argv) -> dict:
    import jax

    from . import __version__
    from ._hdf5 import SCHEMA

    device = jax.devices()[0]
    return {
        "schema": SCHEMA,
        "config": config.text,
        "model": config.sections["model"]["name"],
        "tumorfield_version": __version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "precision": config.output["precision"],
        "seed": config.run["seed"],
        "command_line": shlex.join(argv),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dt": config.time["dt"],
        "steps_per_save": config.steps_per_save,
    }


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def _failed_path(out: Path) -> Path:
    return out.with_name(out.stem + ".failed" + (out.suffix or ".h5"))


def _setup_jax(config) -> None:
    from . import _compile_log

    _compile_log.install()
    _compile_log.enable_persistent_cache(config.compilation_cache)


def _cmd_run(args, argv) -> int:
    from . import config as cfg
    from ._hdf5 import TrajectoryFile
    from ._runner import (
        NumericalFailure,
        StopFlag,
        initial_frame,
        make_observe,
        prepare_params,
        run_dtype,
        run_loop,
        stability_violation,
    )
    from ._schema import ConfigError
    from ._xdmf import write_xdmf

    config = cfg.load(args.config, args.set)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it (it is kept until the new run succeeds)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create directory {out.parent} ({error.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"{out}: directory {out.parent} is not writable")
    had_old = out.exists()
    _setup_jax(config)
    stop = StopFlag()
    stop.install()

    # Written under a temporary name; moved onto ``out`` as soon as nothing older would be
    # lost (no old file), else only once the run completes or is interrupted cleanly.
    partial = _partial_path(out)
    where = {"path": partial}

    def promote_if_free() -> None:
        if where["path"] == partial and not out.exists():
            os.replace(partial, out)
            where["path"] = out

    traj = None
    status = "failed"
    try:
        params = prepare_params(config)
        observe = make_observe(config)
        frame, scalars0 = initial_frame(config, params, observe, _log)
        why = stability_violation(config.model.system, config.grid, frame, params, 0.0, config.time["dt"],
                                  run_dtype(config))  # fmt: skip
        if why is not None:
            raise ConfigError("time.dt", config.time["dt"], why + " at t = 0", config.source)
        state_dtypes = {name: np.asarray(v).dtype for name, v in frame.items()}
        traj = TrajectoryFile.create(
            str(partial),
            grid=config.grid,
            system=config.model.system,
            model=config.model,
            output=config.output,
            metadata=_metadata(config, argv),
            scalar_names=tuple(scalars0),
            state_dtypes=state_dtypes,
        )
        traj.h5.attrs["target"] = str(out.resolve())
        state0 = {n: np.asarray(v) for n, v in frame.items()}
        traj.commit(
            {n: v[None] for n, v in state0.items()},
            np.zeros(1),
            np.zeros(1),
            {n: np.asarray(v)[None] for n, v in scalars0.items()},
            state0,
            0,
        )
        promote_if_free()
        _log(
            f"writing {where['path']} ({config.n_frames} frames, grid {config.grid.shape}, "
            f"{config.output['precision']})"
        )
        status = run_loop(config, traj, frame, 0, params, observe, stop, _log, promote_if_free)
    except NumericalFailure as error:
        message = str(error)
        code = EXIT_NUMERICAL
    except BaseException as error:
        if traj is not None:
            traj.set_status("failed", f"{type(error).__name__}: {error}")
            traj.close()
            _finish_failed(partial, out, where, had_old)
        elif partial.exists():  # failed while creating the file: nothing committed in it
            partial.unlink()
        raise
    else:
        code = EXIT_OK if status == "complete" else EXIT_INTERRUPTED
        message = None
    finally:
        stop.restore()

    if code == EXIT_NUMERICAL:
        traj.set_status("failed", message)
        traj.close()
        kept = _finish_failed(partial, out, where, had_old)
        write_xdmf(str(kept))
        _log(f"numerical failure: {message}; partial output in {kept}")
        return code
    traj.set_status(status, None if status == "complete" else f"interrupted by {stop.signal_name}")
    traj.close()
    if where["path"] == partial:
        os.replace(partial, out)
    write_xdmf(str(out))
    if status == "complete":
        _log(f"done: {out}")
        return EXIT_OK
    _log(f"interrupted by {stop.signal_name}; checkpoint saved. Continue with: tumorfield resume {out}")
    return EXIT_INTERRUPTED


def _finish_failed(partial: Path, out: Path, where: dict, had_old: bool) -> Path:
    """Keep a failed run's frames without touching an older ``out``."""
    if where["path"] != partial:
        return where["path"]
    if had_old or out.exists():
        target = _failed_path(out)
        os.replace(partial, target)
        return target
    os.replace(partial, out)
    return out


def _cmd_resume(args, argv) -> int:
    import h5py

    from . import config as cfg
    from ._hdf5 import FileBusy, TrajectoryFile, status
    from ._runner import NumericalFailure, StopFlag, make_observe, prepare_params, run_loop
    from ._xdmf import write_xdmf

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            text, st = h5.attrs["config"], status(h5)
    except (OSError, KeyError) as error:
        raise InputError(f"{path} is not a tumorfield trajectory ({error})") from None
    if st == "complete":
        _log(f"{path} is already complete; nothing to resume")
        return EXIT_OK
    config = cfg.loads(text, f"{path}:/config")
    _setup_jax(config)
    try:
        traj = TrajectoryFile.open_for_resume(str(path))
    except FileBusy as error:
        raise InputError(str(error)) from None
    stop = StopFlag()
    stop.install()
    try:
        state, step = traj.checkpoint()
        traj.set_status("running")
        traj.h5.attrs["resumed"] = (
            f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}: {shlex.join(argv)}"
        )
        _log(f"resuming {path} at t = {step * config.time['dt']:.6g} day ({traj.n_committed}/{config.n_frames} frames)")
        params = prepare_params(config)
        st = run_loop(config, traj, state, step, params, make_observe(config), stop, _log)
    except NumericalFailure as error:
        traj.set_status("failed", str(error))
        traj.close()
        write_xdmf(str(path))
        _log(f"numerical failure: {error}")
        return EXIT_NUMERICAL
    except BaseException as error:
        traj.set_status("failed", f"{type(error).__name__}: {error}")
        traj.close()
        raise
    finally:
        stop.restore()
    traj.set_status(st, None if st == "complete" else f"interrupted by {stop.signal_name}")
    target = traj.h5.attrs.get("target")
    traj.close()
    if target and path.name.startswith(".") and path.name.endswith(".partial"):
        # a killed ``run --overwrite`` left its frames in the temporary: it now replaces the old file
        os.replace(path, target)
        path = Path(target)
    write_xdmf(str(path))
    if st == "complete":
        _log(f"done: {path}")
        return EXIT_OK
    _log(f"interrupted by {stop.signal_name}; checkpoint saved. Continue with: tumorfield resume {path}")
    return EXIT_INTERRUPTED


def _cmd_inspect(args, argv) -> int:
    import h5py

    from ._hdf5 import status

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path} cannot be opened as HDF5 ({error})") from None
    with h5:
        if "n_committed" not in h5.attrs or "t" not in h5:
            raise InputError(f"{path} is not a tumorfield trajectory (no n_committed attribute or /t dataset)")
        n = int(h5.attrs["n_committed"])
        print(f"file:        {path}")
        print(f"status:      {status(h5)}" + (f" ({h5.attrs['message']})" if "message" in h5.attrs else ""))
        for key in (
            "schema",
            "model",
            "precision",
            "device",
            "tumorfield_version",
            "git_commit",
            "jax_version",
            "created",
            "command_line",
            "seed",
        ):
            if key in h5.attrs:
                print(f"{key + ':':<13}{h5.attrs[key]}")
        t = h5["t"][:n]
        print(f"frames:      {n} committed" + (f", t = {t[0]:.6g} … {t[-1]:.6g} day" if n > 0 else ""))
        axes = [a for a in ("z", "y", "x") if a in h5]
        print("grid:        " + ", ".join(f"{a}: {h5[a].shape[0]} cells" for a in axes))
        print("fields:")
        for name, ds in h5.items():
            if isinstance(ds, h5py.Dataset) and name not in ("t", *axes):
                data = ds[:n]
                rng = f"min {np.nanmin(data):.4g}, max {np.nanmax(data):.4g}" if data.size else "empty"
                print(
                    f"  {name:<16}{ds.dtype} {ds.shape} [{ds.attrs.get('units', '')}] {rng}  "
                    f"{ds.attrs.get('long_name', '')}"
                )
        if "scalars" in h5:
            s = int(h5.attrs.get("n_scalars_committed", h5["scalars/t"].shape[0]))
            print(f"scalars:     {s} time points")
            for name, ds in h5["scalars"].items():
                if name != "t" and s:
                    print(f"  {name:<16}[{ds.attrs.get('units', '')}] last {ds[s - 1]:.6g}")
        print("config:")
        print("  " + str(h5.attrs.get("config", "")).rstrip().replace("\n", "\n  "))
    return EXIT_OK


def _cmd_plot(args, argv) -> int:
    from .plotting import plot_file

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        written = plot_file(str(path), args.output, n_snapshots=args.snapshots)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot plot ({error})") from None
    for p in written:
        print(p)
    return EXIT_OK


def _cmd_config_docs(args, argv) -> int:
    from .config import config_docs

    sys.stdout.write(config_docs())
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tumorfield", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a simulation from a TOML config")
    run.add_argument("config", help="TOML configuration file (see docs/config.md)")
    run.add_argument("-o", "--output", required=True, help="output HDF5 file")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key (value in TOML syntax); repeatable",
    )
    run.add_argument("--overwrite", action="store_true", help="replace OUTPUT once the new run has succeeded")
    resume = sub.add_parser("resume", help="continue an interrupted or killed run from its last checkpoint")
    resume.add_argument("file")
    inspect = sub.add_parser("inspect", help="summarise a trajectory file")
    inspect.add_argument("file")
    plot = sub.add_parser("plot", help="PNG snapshots of every field and time series of every scalar")
    plot.add_argument("file")
    plot.add_argument("-o", "--output", required=True, help="directory for the figures")
    plot.add_argument("--snapshots", type=int, default=4, help="frames shown per field (default 4)")
    sub.add_parser("config-docs", help="print the configuration reference (Markdown) to stdout")
    return parser


COMMANDS = {
    "run": _cmd_run,
    "resume": _cmd_resume,
    "inspect": _cmd_inspect,
    "plot": _cmd_plot,
    "config-docs": _cmd_config_docs,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command in ("run", "resume"):
        # The one global setting: float64 available, so scalar ODE variables integrate in
        # float64 while fields run in the configured precision (``dtype=``).
        import jax

        jax.config.update("jax_enable_x64", True)
        # A step-size violation inside the rollout (``eqx.error_if``) is reported as exit 3 with
        # one line; keep JAX from also logging the host callback's traceback.
        logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)
    from ._schema import ConfigError

    try:
        return COMMANDS[args.command](args, ["tumorfield", *argv])
    except ConfigError as error:
        print(f"tumorfield: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except InputError as error:
        print(f"tumorfield: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("tumorfield: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("tumorfield: unexpected error (exit 1); the traceback above says where", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
