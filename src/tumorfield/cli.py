"""Command-line interface: ``tumorfield run | resume | inspect | plot | config-docs``.

Exit codes: 0 done, 1 unexpected error, 2 bad input, 3 numerical failure
(NaN/Inf or a step-size violation; earlier frames are kept), 75 interrupted by
SIGTERM/SIGUSR1/SIGINT after checkpointing (continue with ``tumorfield resume``).
This module parses arguments and maps outcomes to exit codes; runs themselves are
:class:`tumorfield.run.Run`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_NUMERICAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 75


class InputError(Exception):
    """Bad command-line input that is not a config key (exit 2)."""


def _log(message: str) -> None:
    print(f"tumorfield: {message}", file=sys.stderr, flush=True)


def _exit_code(outcome) -> int:
    """Log how a run ended and return its exit code."""
    if outcome.status == "complete":
        _log(f"done: {outcome.path}")
        return EXIT_OK
    if outcome.status == "interrupted":
        _log(f"{outcome.message}; checkpoint saved. Continue with: tumorfield resume {outcome.path}")
        return EXIT_INTERRUPTED
    _log(f"numerical failure: {outcome.message}; partial output in {outcome.path}")
    return EXIT_NUMERICAL


def _cmd_run(args, argv) -> int:
    from . import config as cfg
    from .run import Run

    config = cfg.load(args.config, args.set)
    return _exit_code(Run.start(config, args.output, overwrite=args.overwrite, argv=argv, log=_log).execute())


def _cmd_resume(args, argv) -> int:
    from .run import Run

    path = Path(args.file)
    _open_stored(path).close()  # a missing or foreign file is bad input
    run = Run.resume(path, argv=argv, log=_log)
    if run is None:
        _log(f"{path} is already complete; nothing to resume")
        return EXIT_OK
    return _exit_code(run.execute())


_PROVENANCE = ("schema", "model", "precision", "device", "tumorfield_version", "git_commit", "jax_version",
               "created", "command_line", "seed")  # fmt: skip


def _open_stored(path: Path):
    """``path`` opened with :func:`tumorfield.io.open_trajectory`; a missing or foreign file is bad input."""
    from .io import NotATrajectory, open_trajectory

    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        return open_trajectory(path)
    except NotATrajectory as error:
        raise InputError(str(error)) from None


def _array_line(name: str, data: np.ndarray, units: str, long_name: str) -> str:
    """One ``inspect`` line: name, dtype, shape, units, range and description of an array."""
    rng = f"min {np.nanmin(data):.4g}, max {np.nanmax(data):.4g}" if data.size else "empty"
    return f"  {name:<16}{data.dtype} {data.shape} [{units}] {rng}  {long_name}"


def _cmd_inspect(args, argv) -> int:
    with _open_stored(Path(args.file)) as run:
        meta = run.metadata
        print(f"file:        {run.path}")
        print(f"status:      {run.status}" + (f" ({run.message})" if run.message is not None else ""))
        for key in _PROVENANCE:
            if key in meta:
                print(f"{key + ':':<12} {meta[key]}")  # a space also after the longer keys
        t = run.t
        print(f"frames:      {run.n_committed} committed" + (f", t = {t[0]:.6g} … {t[-1]:.6g} day" if len(t) else ""))
        print("grid:        " + ", ".join(f"{a}: {len(c)} cells" for a, c in run.coordinates.items()))
        print("fields:")
        for name, field in {**run.fields, **run.variables}.items():
            print(_array_line(name, field[:], field.units, field.long_name))
        if run.constants:
            print("constants:")
            for name in run.constants:
                print(_array_line(name, run.constants[name], run.constants.units[name], run.constants.long_names[name]))
        print(f"scalars:     {run.n_scalars_committed} time points")
        for name in run.scalars if run.n_scalars_committed else ():
            print(f"  {name:<16}[{run.scalars.units[name]}] last {run.scalars[name][-1]:.6g}")
        print("config:")
        print("  " + run.config_text.rstrip().replace("\n", "\n  "))
    return EXIT_OK


def _cmd_plot(args, argv) -> int:
    from .io import NotATrajectory
    from .plotting import plot_file

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        written = plot_file(str(path), args.output, n_snapshots=args.snapshots)
    except NotATrajectory as error:
        raise InputError(str(error)) from None
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
    from ._schema import ConfigError
    from .run import OutputError

    try:
        return COMMANDS[args.command](args, ["tumorfield", *argv])
    except (ConfigError, InputError, OutputError) as error:
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
