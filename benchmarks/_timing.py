"""Shared timing helper of the benchmark scripts."""

from __future__ import annotations

import time

import jax


def best_seconds(fn, *args, repeats: int = 10) -> float:
    """Best wall time of an AOT-compiled ``fn(*args)`` (compile excluded, after ``block_until_ready``)."""
    compiled = jax.jit(fn).lower(*args).compile()
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
