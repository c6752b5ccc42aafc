"""Memory estimate of a run, checked before any compute against what this job may use.

What a job may use is the smaller of the host's available memory (``MemAvailable``) and
what its memory cgroup still allows (the limit a batch system such as SLURM's ``--mem``
sets, cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, at every level up from the
process's cgroup), less the page cache the kernel would reclaim first.
"""

from __future__ import annotations

import os
from pathlib import Path

from tumorfield_kernels import Grid

from .._schema import ConfigError

PROCESS_FLOOR = 400 * 2**20
"""Bytes every tumorfield process needs besides its arrays (Python, JAX, XLA and compiled programs)."""

_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63
_CGROUP = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def _meminfo() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (else ``sysconf``), bytes."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _inactive_file(directory: Path, key: str) -> int:
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_dirs() -> list[tuple[Path, tuple[str, str, str]]]:
    """(directory, (limit, usage, inactive-file key)) of this process's memory cgroup and its
    ancestors, v2 and v1; the mount root itself when the recorded path is not visible (containers)."""
    found = []
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, files = _CGROUP, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            root, files = _CGROUP / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        directory = root / path.lstrip("/")
        directory = directory if directory.is_dir() else root
        while True:
            found.append((directory, files))
            if directory == root:
                break
            directory = directory.parent
    return found


def cgroup_available() -> int | None:
    """Bytes this process's memory cgroups still allow (limit − usage + reclaimable file cache),
    the smallest over every level that has a limit; None if none has one."""
    allowed = []
    for directory, (limit_file, usage_file, inactive_key) in _cgroup_dirs():
        limit, usage = _read_int(directory / limit_file), _read_int(directory / usage_file)
        if limit is None or limit >= _UNLIMITED or usage is None:
            continue
        allowed.append(max(0, limit - usage + _inactive_file(directory, inactive_key)))
    return min(allowed) if allowed else None


def available_memory() -> int | None:
    """Bytes this job may still allocate: the smaller of ``MemAvailable`` and what its memory
    cgroup allows (:func:`cgroup_available`); None if neither is known."""
    known = [value for value in (_meminfo(), cgroup_available()) if value is not None]
    return min(known) if known else None


def estimate_bytes(grid: Grid, n_fields: int, precision: str, chunk_frames: int) -> int:
    """Rough peak memory (bytes) of a run's arrays: the chunk of frames on device and on host, plus
    about 24 state-sized work arrays (ETDRK2 stages, DCT transforms, checkpointed scan)."""
    itemsize = 4 if precision == "float32" else 8
    state = grid.n_cells * n_fields * itemsize
    return state * (2 * chunk_frames + 24)


def check_memory(grid: Grid, n_fields: int, precision: str, chunk_frames: int) -> None:
    """Refuse (``grid.shape``) a run whose estimate plus :data:`PROCESS_FLOOR` exceeds what the job may use."""
    need = estimate_bytes(grid, n_fields, precision, chunk_frames) + PROCESS_FLOOR
    available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            "grid.shape",
            list(grid.shape),
            f"needs about {need / 2**30:.2f} GiB (with run.chunk_frames={chunk_frames}, and "
            f"{PROCESS_FLOOR / 2**30:.1f} GiB for the process) but this job may use "
            f"{available / 2**30:.2f} GiB (free memory, or its cgroup's limit); "
            f"use a smaller grid or fewer chunk_frames",
        )
