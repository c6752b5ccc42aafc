"""Memory estimate of a run, checked against what the machine has before any compute."""

from __future__ import annotations

import os

from tumorfield_kernels import Grid

from .._schema import ConfigError


def available_memory() -> int | None:
    """Bytes available now (``MemAvailable`` of ``/proc/meminfo``, else ``sysconf``), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def estimate_bytes(grid: Grid, n_fields: int, precision: str, chunk_frames: int) -> int:
    """Rough peak memory (bytes) of a run: the chunk of frames on device and on host, plus
    about 24 state-sized work arrays (ETDRK2 stages, DCT transforms, checkpointed scan)."""
    itemsize = 4 if precision == "float32" else 8
    state = grid.n_cells * n_fields * itemsize
    return state * (2 * chunk_frames + 24)


def check_memory(grid: Grid, n_fields: int, precision: str, chunk_frames: int) -> None:
    """Refuse (``grid.shape``) a run whose estimate exceeds the available memory."""
    need = estimate_bytes(grid, n_fields, precision, chunk_frames)
    available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            "grid.shape",
            list(grid.shape),
            f"needs about {need / 2**30:.1f} GiB (with run.chunk_frames={chunk_frames}) but "
            f"{available / 2**30:.1f} GiB is available; use a smaller grid or fewer chunk_frames",
        )
