"""The generic config sections, ``[model]``, ``[grid]``, ``[time]``, ``[output]`` and ``[run]``.

Each is a frozen dataclass whose fields are the keys (:func:`tumorfield._schema.key`);
models add their own sections the same way (``Model.section_types``).
"""

from __future__ import annotations

import math

from .. import models
from .._schema import REQUIRED, key, non_negative, one_of, positive, section


def _shape(value) -> str | None:
    if value == []:
        return None  # from grid.image (the loader requires one or the other)
    if not 1 <= len(value) <= 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return "must be a list of 1–3 integers (cells per axis, in (z, y, x) order)"
    if any(n < 2 for n in value):
        return "every axis needs at least 2 cells"
    return None


def _lengths(value) -> str | None:
    if value == []:
        return None
    if not 1 <= len(value) <= 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return "must be a list of 1–3 numbers (mm, in (z, y, x) order)"
    if not all(v > 0 and math.isfinite(v) for v in value):
        return "every side must be a finite length > 0 mm"
    return None


def _finite_positive(value) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be a finite number > 0"


def _gzip_level(value) -> str | None:
    return None if 0 <= value <= 9 else "must be an integer in [0, 9]"


def _model_name(value) -> str | None:
    names = models.names()
    return None if value in names else f"allowed models are {', '.join(map(repr, names))}"


@section
class ModelSection:
    """``[model]``: which registered model runs."""

    name: str = key(REQUIRED, "", "Registered model to run (e.g. `fisher_kpp`, `voloshin2015`).", _model_name)


@section
class GridSection:
    """``[grid]``: the cell-centred box (``RunConfig.grid`` is the :class:`~tumorfield_kernels.Grid` built from it)."""

    shape: list[int] = key([], "cells", "Cells per axis, `[ny, nx]` or `[nz, ny, nx]` (not with `image`).", _shape)
    length: list[float] = key([], "mm", "Box side per axis, same order as `shape` (not with `image`).", _lengths)
    image: str = key(
        "",
        "path",
        "A NIfTI image (`.nii`/`.nii.gz`) whose shape, voxel size (mm) and affine give the grid, instead of "
        "`shape`/`length`; a 2D image (one slice) gives a 2D grid. Relative to the config file. docs/images.md.",
    )
    resample: float = key(
        1.0,
        "",
        "With `image`: voxel size × this factor (2 = half the cells per axis; maps are block-averaged onto it).",
        _finite_positive,
    )


@section
class TimeSection:
    """``[time]``: end time, step and save interval (day)."""

    t_end: float = key(REQUIRED, "day", "End time; a whole number of `dt` and of `save_every`.", _finite_positive)
    dt: float = key(REQUIRED, "day", "Time step.", _finite_positive)
    save_every: float = key(REQUIRED, "day", "Interval between saved frames; a whole number of `dt`.", _finite_positive)


def _stored_fields(value) -> str | None:
    if isinstance(value, str):
        return None if value in ("all", "none") else 'must be "all", "none" or a list of field names'
    if not all(isinstance(name, str) for name in value) or len(set(value)) != len(value):
        return "must be a list of distinct field names"
    return None


@section
class OutputSection:
    """``[output]``: how fields are stored."""

    compression: str = key(
        "gzip",
        "",
        "HDF5 filter of the field datasets: `gzip` (deflate, with the shuffle filter; every HDF5 reader has it), "
        "`lzf` (h5py only: ParaView/VTK, netCDF-C, MATLAB and h5dump cannot read it) or `none`.",
        one_of("none", "lzf", "gzip"),
    )
    gzip_level: int = key(
        6, "", 'gzip level (only with `compression = "gzip"`; chosen in benchmarks/README.md).', _gzip_level
    )
    precision: str = key(
        "float32",
        "",
        "Floating type of the fields, in memory and on disk (scalar ODE variables are always float64).",
        one_of("float32", "float64"),
    )
    fields: str | list = key(
        "all",
        "",
        'Grid fields stored at every saved frame: `"all"`, `"none"` (per-step scalars, scalar ODE variables '
        'and the checkpoint — the final state — only) or a list of field names. Sweeps default to `"none"`.',
        _stored_fields,
    )


def _devices(value) -> str | None:
    if value == "all" or (isinstance(value, int) and value >= 1):
        return None
    return 'must be an integer ≥ 1 or "all"'


@section
class RunSection:
    """``[run]``: chunking, caching, seed and progress display of a run."""

    chunk_frames: int = key(
        10, "frames", "Frames computed per compiled call, written and checkpointed together.", positive
    )
    compilation_cache: str = key(
        "",
        "",
        'Directory of the persistent JAX compilation cache; `""` = '
        '`~/.cache/tumorfield/jax` (or `$XDG_CACHE_HOME`), `"off"` disables it. `--compilation-cache` and '
        "`$TUMORFIELD_COMPILATION_CACHE` come first; `resume` never uses the value stored in a file "
        "(docs/cli.md).",
    )
    seed: int = key(0, "", "Random seed, recorded in the output (for models with random initial data).", non_negative)
    progress: str = key(
        "auto",
        "",
        "`bar` (tqdm), `lines` (a line every ~5 %), `none`, or `auto` (bar on a terminal, lines otherwise).",
        one_of("auto", "bar", "lines", "none"),
    )
    devices: int | str = key(
        1,
        "",
        "Devices that share the grid, one slab each along its slowest axis (the count must divide the first two "
        'axes), or `"all"` (every local device); the file is that of one device. Sweeps and fits do not use it (a '
        "sweep spreads its members over `[sweep] devices`, a fit runs each arm on one device; both say so in "
        "the log). docs/numerics.md §11.",
        _devices,
    )


def _substep_cap(value) -> str | None:
    return None if value >= 1 else "must be an integer ≥ 1 (1 = no sub-cycling: a run ends where dt outgrows the limit)"


@section
class NumericsSection:
    """``[numerics]``: how the core advances cell fields (``simulate(cell_diffusion=, max_substeps=)``)."""

    cell_diffusion: str = key(
        "auto",
        "",
        'Diffusion of the cell fields: `"explicit"` (in their SSP-RK2 step; dt ∝ Δx²), `"implicit"` '
        "(split off, MPRK22 with tridiagonal solves per axis: non-negative, conservative, second order; "
        'dt then limited by taxis and decay only) or `"auto"`: implicit where, at t = 0, the explicit '
        "diffusion would limit the step below dt, explicit otherwise (the run log says which and why). "
        "See docs/numerics.md.",
        one_of("auto", "explicit", "implicit"),
    )
    max_substeps: int = key(
        64,
        "",
        "Largest number of equal sub-steps a step's explicit part is cut into when its positivity limit "
        "falls below dt during a run (taxis steepening); a step needing more ends the run. 1 = never.",
        _substep_cap,
    )


GENERIC_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "grid": GridSection,
    "time": TimeSection,
    "output": OutputSection,
    "run": RunSection,
    "numerics": NumericsSection,
}
"""Section name → section class, in the order of ``docs/config.md`` and of the resolved TOML."""
