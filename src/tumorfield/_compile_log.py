"""Compile time and persistent-cache hits, collected from ``jax.monitoring`` events."""

from __future__ import annotations

import jax

_state = {"seconds": 0.0, "hits": 0, "misses": 0, "installed": False}
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_retrieval_time_sec")


def _on_duration(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _state["seconds"] += duration


def _on_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _state["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        _state["misses"] += 1


def install() -> None:
    if not _state["installed"]:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _state["installed"] = True


def seconds() -> float:
    """Seconds spent in XLA compilation (or loading from the persistent cache) so far."""
    return _state["seconds"]


def cache_hits() -> int:
    """Programs loaded from the persistent compilation cache so far."""
    return _state["hits"]


def cache_misses() -> int:
    """Programs looked up in the persistent cache and compiled because they were not there."""
    return _state["misses"]


def enable_persistent_cache(directory: str | None) -> None:
    """Cache every compiled program in ``directory`` (None: off). Thresholds at zero so the
    chunked rollout, which compiles in seconds on CPU, is cached too."""
    if directory is None:
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
