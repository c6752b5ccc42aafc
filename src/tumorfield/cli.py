"""Command-line interface: ``tumorfield run | resume | sweep | collect | fit | inspect | plot | …``.

Exit codes: 0 done, 1 unexpected error, 2 bad input (also a foreign or damaged file,
an output another process writes), 3 numerical failure (NaN/Inf or a step-size
violation; earlier frames are kept), 74 writing failed (disk full, quota, I/O error;
committed frames are kept), 75 interrupted by SIGTERM/SIGUSR1/SIGINT after
checkpointing (continue with ``tumorfield resume``), 141 stdout closed (``| head``).
This module parses arguments and maps outcomes to exit codes; runs themselves are
:class:`tumorfield.run.Run`. The parser is built without importing JAX or the solver (each
command imports what it needs), so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_NUMERICAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 75
EXIT_IOERR, EXIT_PIPE = 74, 141  # EX_IOERR of sysexits.h; 128 + SIGPIPE, as if killed by it
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)  # exit 74, one line


class InputError(Exception):
    """Bad command-line input that is not a config key (exit 2)."""


def _log(message: str) -> None:
    try:
        print(f"tumorfield: {message}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # stderr closed (``2>&1 | head``): the run goes on
        pass


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


def _config_path(argument: str) -> str:
    """A command's config argument as a path: an existing file, else a packaged scenario's file
    (``voloshin2015/ptx``); neither is bad input."""
    from . import scenarios

    path, scenario = scenarios.resolve(argument)
    if scenario is not None:
        _log(f"scenario {scenario.name}: {path}")
    elif not os.path.exists(path) and not argument.endswith(".toml"):
        raise InputError(scenarios.unknown(argument))
    return path


def _cmd_run(args, argv) -> int:
    from . import config as cfg
    from .run import Run

    config = cfg.load(args.config_path, args.set)
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


_PROVENANCE = ("schema", "writer", "model", "precision", "device", "tumorfield_version", "git_commit", "jax_version",
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


def _columns(rows: list[list[str]]) -> list[str]:
    """``inspect``'s table lines: every column padded to its longest entry plus two spaces (at least 16
    for the name), so that no name runs into the next column (``paclitaxel_bound  float32``)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    widths[:1] = [max(14, widths[0])] if widths else []
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _array_row(name: str, data, units: str, long_name: str) -> list[str]:
    """One ``inspect`` row: name, dtype, shape, units, range and description of an array."""
    import numpy as np

    rng = f"min {np.nanmin(data):.4g}, max {np.nanmax(data):.4g}" if data.size else "empty"
    return [name, str(data.dtype), str(data.shape), f"[{units}]", rng, long_name]


def _verified(path: Path):
    """``path`` opened (:func:`_open_stored`) and verified, every committed frame against its digest."""
    from .io import NotATrajectory

    run = _open_stored(path)
    try:
        run.verify()
    except NotATrajectory as error:
        run.close()
        raise InputError(str(error)) from None
    return run


def _stored_fit(path: Path):
    """The fit file at ``path`` read back (:func:`tumorfield.fit.open_fit`), or None if it is not one (schema
    ``tumorfield-fit/…``): inspect and plot read both kinds of file."""
    from .fit._reader import NotAFitFile, is_fit_file, open_fit

    if not is_fit_file(path):
        return None
    try:
        return open_fit(path)
    except NotAFitFile as error:
        raise InputError(str(error)) from None


def _cmd_inspect(args, argv) -> int:
    stored = _stored_fit(Path(args.file))
    if stored is not None:
        print(stored.summary())
        return EXIT_OK
    with _verified(Path(args.file)) as run:
        meta = run.metadata
        print(f"file:        {run.path}")
        print(f"status:      {run.status}" + (f" ({run.message})" if run.message is not None else ""))
        for line in run.warnings:
            print(f"warning:     {line}")
        for key in _PROVENANCE:
            if key in meta:
                print(f"{key + ':':<12} {meta[key]}")  # a space also after the longer keys
        t = run.t
        print(f"frames:      {run.n_committed} committed" + (f", t = {t[0]:.6g} … {t[-1]:.6g} day" if len(t) else ""))
        print("grid:        " + ", ".join(f"{a}: {len(c)} cells" for a, c in run.coordinates.items()))
        if run.input_images:
            print("input images:")
            for key, image in run.input_images.items():
                print(f"  {key:<16}{image.path}  sha256 {image.sha256[:12]}")
        fields = [_array_row(name, f[:], f.units, f.long_name) for name, f in {**run.fields, **run.variables}.items()]
        constants = [_array_row(name, run.constants[name], run.constants.units[name], run.constants.long_names[name])
                     for name in run.constants]  # fmt: skip
        lines = _columns(fields + constants)  # one layout for both tables
        print("fields:")
        print("\n".join(lines[: len(fields)]))
        if constants:
            print("constants:")
            print("\n".join(lines[len(fields) :]))
        print(f"scalars:     {run.n_scalars_committed} time points")
        names = list(run.scalars) if run.n_scalars_committed else []
        rows = [[name, f"[{run.scalars.units[name]}]", f"last {run.scalars[name][-1]:.6g}"] for name in names]
        if rows:
            print("\n".join(_columns(rows)))
        if run.config_text.strip():
            print("config:")
            print("  " + run.config_text.rstrip().replace("\n", "\n  "))
        else:
            writer = meta.get("writer", "")
            print("config:      none" + (f" (written by {writer} from an API run: no TOML config)" if writer else ""))
    return EXIT_OK


def _cmd_plot(args, argv) -> int:
    from .plot import PlotError, plot_file, write_movie

    path = Path(args.file)
    stored = _stored_fit(path)
    if stored is not None:
        from .fit._reader import plot_fit

        if args.movie is not None:
            raise InputError(f"{path} is a fit file ({stored.schema}): it has no fields to animate (--movie)")
        for p in plot_fit(stored, args.output):
            print(p)
        return EXIT_OK
    _verified(path).close()  # a missing, foreign or damaged file is bad input
    try:
        if args.movie is not None:  # checked before any figure is drawn
            from .plot._movie import check_fields

            with _open_stored(path) as run:
                check_fields(run, args.movie)
        written = plot_file(str(path), args.output, n_snapshots=args.snapshots)
        if args.movie is not None:
            written.append(write_movie(str(path), os.path.join(args.output, "movie"), args.movie))
    except PlotError as error:
        raise InputError(str(error)) from None
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot plot ({error})") from None
    for p in written:
        print(p)
    return EXIT_OK


def _cmd_compare(args, argv) -> int:
    from .plot import PlotError, compare_files

    for file in args.files:
        stored = _stored_fit(Path(file))
        if stored is not None:
            raise InputError(f"{file} is a fit file ({stored.schema}): compare takes trajectories; "
                             f"`tumorfield plot {file} -o DIR` draws its data against the prediction")  # fmt: skip
        _open_stored(Path(file)).close()  # a missing or foreign file is bad input
    try:
        written = compare_files(args.files, args.output, labels=args.labels, field=args.field, scalars=args.scalars)
    except PlotError as error:
        raise InputError(str(error)) from None
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"cannot compare {', '.join(args.files)} ({error})") from None
    for p in written:
        print(p)
    return EXIT_OK


def _cmd_sweep(args, argv) -> int:
    import jax

    from .sweep import SweepRunner, members_of_process

    members = None if args.member is None else [args.member]
    distributed = bool(args.coordinator or args.distributed)
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif distributed:
        jax.distributed.initialize()  # cluster auto-detection (SLURM, …)
    runner = SweepRunner(args.config_path, args.output, overrides=args.set, argv=argv, log=_log)
    if distributed:
        mine = members_of_process(runner.n_members, jax.process_index(), jax.process_count())
        members = [int(i) for i in mine if members is None or i in members]
    results = runner.run(members)
    statuses = [r if isinstance(r, str) else r.status for r in results.values()]
    counts = {s: statuses.count(s) for s in ("complete", "failed", "interrupted", "running", "pending")}
    names = {"pending": "not started"}
    summary = ", ".join(f"{n} {names.get(s, s)}" for s, n in counts.items() if n)
    if counts["interrupted"] or counts["running"] or counts["pending"]:
        _log(f"sweep {args.output}: {summary} of {len(results)}; run the same command again to continue")
        return EXIT_INTERRUPTED
    _log(f"sweep {args.output}: {summary} of {len(results)}")
    return EXIT_NUMERICAL if counts["failed"] else EXIT_OK


def _cmd_collect(args, argv) -> int:
    from .sweep import collect

    rows = collect(args.directory, args.output, overwrite=args.overwrite)
    _log(f"{rows} members → {args.output}")
    return EXIT_OK


def _cmd_export(args, argv) -> int:
    from .export import ExportError, export_calibration, export_nifti, is_calibration
    from .io import ImageError

    try:
        if is_calibration(args.file):  # a FIT.h5 of a calibration: predictions, origin, maps, forecasts
            written = export_calibration(args.file, args.output, args.field)
        else:
            with _verified(Path(args.file)) as run:
                written = export_nifti(run, args.output, args.field, args.frames)
    except (ExportError, ImageError) as error:
        raise InputError(str(error)) from None
    for p in written:
        print(p)
    return EXIT_OK


def _cmd_config_docs(args, argv) -> int:
    from .config import config_docs

    sys.stdout.write(config_docs())
    return EXIT_OK


def _cmd_fit(args, argv) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # the optimiser and the likelihood in float64, fields as configured
    from ._inputs import read_toml
    from .fit._fit import run_fit

    read_toml(args.config_path)  # a regular file of at most 1 MiB of UTF-8 TOML, not nested too deeply, else exit 2
    sets = args.set if args.config_path == args.config else _here_relative(args.set)
    result = run_fit(args.config_path, args.output, sets, overwrite=args.overwrite, argv=argv, log=_log,
                     profiles=args.profile, profile_points=args.profile_points)  # fmt: skip
    return EXIT_NUMERICAL if result.status == "failed" else EXIT_OK


def _here_relative(sets: list[str]) -> list[str]:
    """``--set fit.data=FILE`` of a packaged fit: a relative FILE is the user's, relative to the working
    directory (not to the fit file inside the installed package, as for a fit file of one's own)."""
    import json
    import tomllib

    out = []
    for item in sets:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "fit.data":
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                value = value.strip()  # a bare word is a string, as for every --set
            if isinstance(value, str) and value and not os.path.isabs(value):
                item = f"fit.data={json.dumps(os.path.abspath(value))}"
        out.append(item)
    return out


def _cmd_scenarios(args, argv) -> int:
    from . import scenarios

    found = scenarios.scenarios()
    if not found:
        raise InputError("no packaged scenarios found (an installation without tumorfield/scenarios/data)")
    width = max(len(s.name) for s in found)
    for scenario in found:
        print(f"{scenario.name:<{width}}  {scenario.kind:<5}  {scenario.description}")
    return EXIT_OK


def _cmd_scenario(args, argv) -> int:
    from . import scenarios

    if args.output == "-":
        scenario = scenarios.find(args.name)
        if scenario is None:
            raise InputError(scenarios.unknown(args.name))
        sys.stdout.write(scenarios.copy_text(scenario))
        return EXIT_OK
    try:
        path = scenarios.write_copy(args.name, args.output, overwrite=args.overwrite)
    except scenarios.ScenarioError as error:
        raise InputError(str(error)) from None
    _log(f"wrote {path}: edit it, then tumorfield {scenarios.find(args.name).kind} {path} …")
    return EXIT_OK


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (lists, examples); option help wrapped as usual."""


_DESCRIPTION = """Simulate tumour invasion (reaction–diffusion–taxis fields) on 2D/3D grids with JAX, write
HDF5 trajectories, run sweeps and fit parameters to data.

First steps:
  tumorfield scenarios                              list the scenarios that ship with tumorfield
  tumorfield run voloshin2015/ptx -o ptx.h5         run one (the paclitaxel arm of the study)
  tumorfield plot ptx.h5 -o figures --movie         figures and a movie of it
  tumorfield scenario voloshin2015/ptx -o my.toml   a copy to edit, then: tumorfield run my.toml -o my.h5
"""

_EXIT_CODES = """exit codes:
  0    done
  1    unexpected error (a traceback is printed)
  2    bad input: one line naming the file, key or value and what is allowed; nothing computed
  3    numerical failure (NaN/Inf, a step beyond the positivity limit); earlier frames kept
  74   writing failed (disk full, quota, I/O error); committed frames kept
  75   interrupted by SIGTERM/SIGUSR1/SIGINT after a checkpoint: continue with tumorfield resume
  141  stdout closed by its reader (| head)

Every command and key: docs/cli.md and docs/config.md (tumorfield config-docs).
"""

_CONFIG_HELP = "TOML file, or the name of a packaged scenario (tumorfield scenarios lists them)"


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set SECTION.KEY=VALUE`` override of run, sweep and fit."""
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def _add_parser(sub, name: str, help: str, example: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its one-line ``help``, ``description`` and an example."""
    text = help[0].upper() + help[1:] + "." + (f"\n\n{description}" if description else "")
    return sub.add_parser(name, help=help, description=text, epilog=f"example:\n  {example}\n\n"
                          "exit codes and details: docs/cli.md", formatter_class=_Formatter)  # fmt: skip


def _add_cache(parser: argparse.ArgumentParser) -> None:
    """``--compilation-cache DIR`` of the commands that compile (run, resume, sweep, fit)."""
    parser.add_argument("--compilation-cache", default=None, metavar="DIR",
                        help="persistent JAX compilation cache (or 'off'); before $TUMORFIELD_COMPILATION_CACHE and "
                        "run.compilation_cache; resume never takes it from the file (see docs/cli.md)")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    """The whole command line; imports nothing beyond the standard library (no JAX)."""
    parser = argparse.ArgumentParser(prog="tumorfield", description=_DESCRIPTION, epilog=_EXIT_CODES,
                                     formatter_class=_Formatter)  # fmt: skip
    parser.add_argument("--version", action=_Version, nargs=0, help="print versions and the default device, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _add_parser(sub, "run", "run a simulation from a TOML config or a packaged scenario",
                      "tumorfield run voloshin2015/ptx -o ptx.h5 --set grid.shape=[32,32]",
                      "CONFIG: a TOML file, or, where no such file exists, a packaged scenario's name.")  # fmt: skip
    run.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP + "; keys: docs/config.md")
    run.add_argument("-o", "--output", required=True, help="output HDF5 file")
    _add_set(run, "override a config key (value in TOML syntax); repeatable")
    run.add_argument("--overwrite", action="store_true", help="replace OUTPUT once the new run has succeeded")
    _add_cache(run)

    resume = _add_parser(sub, "resume", "continue an interrupted or killed run from its last checkpoint",
                         "tumorfield resume ptx.h5")  # fmt: skip
    resume.add_argument("file", metavar="FILE", help="the run's HDF5 file (or its .NAME.PID.partial); verified first")
    _add_cache(resume)

    sweep = _add_parser(sub, "sweep", "run the members of a sweep file in vmapped batches",
                        "tumorfield sweep sweep.toml -o runs/ --set grid.shape=[32,32]",
                        "Re-running the same command continues the sweep. File format: docs/sweeps.md.")  # fmt: skip
    sweep.add_argument("sweep", metavar="SWEEP", help="sweep TOML file ([sweep] base, design, parameters) or scenario")
    sweep.add_argument("-o", "--output", required=True, help="directory for manifest.csv and member-NNNN.h5")
    sweep.add_argument("--member", type=int, default=None, help="run only this member (e.g. $SLURM_ARRAY_TASK_ID)")
    _add_set(sweep, "override a key of every member's config (after [sweep] set); repeatable")
    sweep.add_argument("--distributed", action="store_true", help="jax.distributed with cluster auto-detection")
    sweep.add_argument("--coordinator", help="HOST:PORT of process 0 (with --num-processes, --process-id)")
    sweep.add_argument("--num-processes", type=int, default=None, help="number of processes (with --coordinator)")
    sweep.add_argument("--process-id", type=int, default=None, help="this process's number, 0 … N-1")
    _add_cache(sweep)

    collect = _add_parser(sub, "collect", "one CSV row per sweep member: swept values, status, final scalars",
                          "tumorfield collect runs/ -o runs/table.csv")  # fmt: skip
    collect.add_argument("directory", metavar="DIR", help="a sweep directory (with manifest.csv)")
    collect.add_argument("-o", "--output", required=True, help="CSV table to write (not a file of the sweep directory)")
    collect.add_argument("--overwrite", action="store_true", help="replace an existing table")

    fit = _add_parser(sub, "fit", "fit model parameters to observations of one or more arms",
                      "tumorfield fit voloshin2015/fit/fit -o FIT.h5 --set fit.data=obs.csv",
                      "File format: docs/fitting.md (scalars) and docs/calibration.md (scans).")  # fmt: skip
    fit.add_argument("config", metavar="FIT",
                     help="fit file, FIT.toml ([fit] arms, data, likelihood, [fit.parameters]), or a packaged "
                     "scenario's name")  # fmt: skip
    fit.add_argument("-o", "--output", required=True, help="output HDF5 file (FIT.h5)")
    _add_set(fit, "override a key of every arm's run config (fit.KEY: of the fit file); repeatable")
    fit.add_argument("--overwrite", action="store_true", help="replace OUTPUT")
    _add_cache(fit)
    fit.add_argument("--profile", action="append", default=[], metavar="NAME",
                     help="also compute the profile likelihood of this fitted parameter; repeatable")  # fmt: skip
    fit.add_argument("--profile-points", type=int, default=9, metavar="N",
                     help="profile values scanned over estimate·exp(±3 SE/estimate) (default 9)")  # fmt: skip

    inspect = _add_parser(sub, "inspect", "summarise a trajectory file or a fit's FIT.h5",
                          "tumorfield inspect ptx.h5 | less")  # fmt: skip
    inspect.add_argument("file", metavar="FILE", help="a trajectory (HDF5 written by run, resume or sweep) or a FIT.h5")

    plot = _add_parser(sub, "plot", "PNG snapshots of every field, each time series once, a movie",
                       "tumorfield plot ptx.h5 -o figures --movie tumor m2")  # fmt: skip
    plot.add_argument(
        "file",
        metavar="FILE",
        help="a trajectory (HDF5 written by run, resume or sweep), or a FIT.h5: "
        "data against prediction per arm and observable, residuals, the loss, a calibration's scans",
    )
    plot.add_argument("-o", "--output", required=True, help="directory for the figures")
    plot.add_argument("--snapshots", type=int, default=4, help="frames shown per field (default 4)")
    plot.add_argument("--movie", nargs="*", metavar="FIELD", default=None,
                      help="also write DIR/movie.mp4 (GIF without ffmpeg) of these fields (default: all)")  # fmt: skip

    compare = _add_parser(sub, "compare", "the arms of a study on shared axes (time series, last frames)",
                          "tumorfield compare vehicle.h5 ptx.h5 -o compare/ --labels vehicle PTX")  # fmt: skip
    compare.add_argument("files", nargs="+", metavar="FILE", help="trajectory files, one per arm")
    compare.add_argument("-o", "--output", required=True, help="directory for the figures")
    compare.add_argument("--labels", nargs="+", default=None, help="one legend label per file (default: file stems)")
    compare.add_argument("--field", default=None, help="field whose last frames are compared (default: tumor)")
    compare.add_argument("--scalars", nargs="+", default=None, metavar="NAME",
                         help="time series to compare (default: the model's study set, else all shared)")  # fmt: skip

    export = _add_parser(sub, "export", "frames of a trajectory (or a calibration's FIT.h5) as NIfTI images",
                         "tumorfield export ptx.h5 -o nifti/ --field tumor --frames all")  # fmt: skip
    export.add_argument("file", metavar="FILE", help="a trajectory, or the FIT.h5 of a calibration (scans)")
    export.add_argument("-o", "--output", required=True, help="directory for the images (created if missing)")
    export.add_argument(
        "--field", nargs="+", action="extend", default=None, metavar="NAME", help="fields to export (default: all)"
    )
    export.add_argument("--frames", default="last", help="all, last (default) or frame numbers such as 0,5,-1")
    export.add_argument("--format", choices=["nifti"], default="nifti", help="image format (default nifti)")

    _add_parser(sub, "scenarios", "list the scenarios that ship with tumorfield (name, kind, description)",
                "tumorfield scenarios")  # fmt: skip
    scenario = _add_parser(sub, "scenario", "write a copy of a packaged scenario to edit",
                           "tumorfield scenario voloshin2015/ptx -o my_ptx.toml",
                           "Paths to other packaged files (a fit's arms, a sweep's base) are made absolute in the "
                           "copy.")  # fmt: skip
    scenario.add_argument("name", metavar="NAME", help="a name from tumorfield scenarios, e.g. voloshin2015/ptx")
    scenario.add_argument("-o", "--output", required=True, help="TOML file to write ('-': standard output)")
    scenario.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")

    _add_parser(sub, "config-docs", "print the configuration reference (Markdown) to stdout",
                "tumorfield config-docs > docs/config.md")  # fmt: skip
    return parser


COMMANDS = {
    "run": _cmd_run,
    "resume": _cmd_resume,
    "inspect": _cmd_inspect,
    "plot": _cmd_plot,
    "compare": _cmd_compare,
    "config-docs": _cmd_config_docs,
    "fit": _cmd_fit,
    "sweep": _cmd_sweep,
    "collect": _cmd_collect,
    "export": _cmd_export,
    "scenarios": _cmd_scenarios,
    "scenario": _cmd_scenario,
}


class _Version(argparse.Action):
    """``--version``: package version, git commit, JAX version and default device."""

    def __call__(self, parser, namespace, values, option_string=None):
        import jax

        from . import __version__
        from .run._job import device_name, git_commit

        print(f"tumorfield {__version__} (git {git_commit()}), jax {jax.__version__}, default device {device_name()}")
        parser.exit()


def _run_command(args, argv) -> int:
    """Run the command; every expected failure is one line on stderr and an exit code."""
    from ._schema import ConfigError
    from .io import NotATrajectory
    from .run import Interrupted, OutputError, StorageError

    try:
        code = COMMANDS[args.command](args, ["tumorfield", *argv])
        sys.stdout.flush()
        return code
    except (ConfigError, InputError, OutputError, NotATrajectory) as error:
        print(f"tumorfield: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as error:
        print(f"tumorfield: error: {error.strerror}", file=sys.stderr)
        return EXIT_IOERR
    except Interrupted as error:
        print(f"tumorfield: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed by the reader (``inspect | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("tumorfield: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in _WRITE_ERRORS:
            raise
        print(f"tumorfield: error: {error.filename or ''}{': ' if error.filename else ''}{error.strerror}",
              file=sys.stderr)  # fmt: skip
        return EXIT_IOERR


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command in ("run", "sweep", "fit"):  # a name that is neither a file nor a scenario: said at once
        try:
            args.config_path = _config_path(args.sweep if args.command == "sweep" else args.config)
        except InputError as error:
            print(f"tumorfield: error: {error}", file=sys.stderr)
            return EXIT_INPUT
    restore = lambda: None  # noqa: E731
    if args.command in ("run", "resume", "sweep"):
        from .run._signals import catch_early

        restore = catch_early()  # a signal during JAX start-up or compilation is not lost
        # The one global setting: float64 available, so scalar ODE variables integrate in
        # float64 while fields run in the configured precision (``dtype=``).
        import jax

        jax.config.update("jax_enable_x64", True)
    cache = getattr(args, "compilation_cache", None)
    try:
        if cache is not None:
            from . import _compile_log

            _compile_log.request(cache)  # before the environment and any config (never a file's contents)
        return _run_command(args, argv)
    except Exception:
        traceback.print_exc()
        print("tumorfield: unexpected error (exit 1); the traceback above says where", file=sys.stderr)
        return EXIT_ERROR
    finally:
        restore()
        if cache is not None:
            _compile_log.request(None)


if __name__ == "__main__":
    sys.exit(main())
