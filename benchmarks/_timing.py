"""Shared helpers of the benchmark scripts: timing, and writing a JSON result."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import jax


def best_seconds(fn, *args, repeats: int = 10) -> float:
    """Best wall time of an AOT-compiled ``fn(*args)`` (compile excluded, after ``block_until_ready``)."""
    return best_of(jax.jit(fn).lower(*args).compile(), *args, repeats=repeats)


def best_of(compiled, *args, repeats: int) -> float:
    """Best wall time of ``compiled(*args)`` over ``repeats`` calls after one warm-up call."""
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(calls: dict, repeats: int, per: int = 1) -> dict:
    """Wall times of the zero-argument ``calls`` (compiled, warmed up by the caller), alternated
    ``repeats`` times so that a change of machine load hits every variant alike; each time is
    divided by ``per`` (steps per call). Returns ``{key: [seconds, ...]}``."""
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[key].append((time.perf_counter() - t0) / per)
    return times


def write_result(directory, name: str, n: int, result: dict) -> Path:
    """``result`` as ``<directory>/<name>_<platform>_<n>_<UTC time>.json``; prints and returns the path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{name}_{jax.default_backend()}_{n}_{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return path
