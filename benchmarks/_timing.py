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
