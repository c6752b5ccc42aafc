"""Compile time and persistent-cache hits, collected from ``jax.monitoring`` events; where the
persistent compilation cache lives (:func:`cache_directory`).

JAX's persistent cache loads native executables without integrity checks, so its directory is
never taken from a file's contents (a trajectory's stored config on ``resume``): it comes from the
command line (``--compilation-cache DIR``), the environment (``TUMORFIELD_COMPILATION_CACHE``, then
JAX's own ``JAX_COMPILATION_CACHE_DIR``), ``run.compilation_cache`` of the user's own config file
(``run``, ``sweep``, ``fit``), or the user's cache folder, in that order; a directory that every user
may write is refused (docs/cli.md, "Persistent compilation cache").
"""

from __future__ import annotations

import os
import stat

import jax

from ._schema import ConfigError

ENVIRONMENT = "TUMORFIELD_COMPILATION_CACHE"
"""The environment variable naming the compilation cache (or ``off``)."""
_requested: dict = {"directory": None}

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


def request(directory: str | None) -> None:
    """The ``--compilation-cache DIR`` of the command line (None: not given); it comes first."""
    _requested["directory"] = directory


def default_directory() -> str:
    """The user's cache folder: ``$XDG_CACHE_HOME/tumorfield/jax``, else ``~/.cache/tumorfield/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tumorfield", "jax")


def cache_directory(configured: str | None = None) -> str | None:
    """The compilation cache's directory (None: off): ``--compilation-cache``, else
    ``$TUMORFIELD_COMPILATION_CACHE``, else ``$JAX_COMPILATION_CACHE_DIR``, else ``configured``
    (``run.compilation_cache`` of the user's own config file; None where the config was read from a
    file's contents), else :func:`default_directory`. The value ``"off"`` disables the cache."""
    sources = (_requested["directory"], os.environ.get(ENVIRONMENT), os.environ.get("JAX_COMPILATION_CACHE_DIR"),
               configured)  # fmt: skip
    value = next((v for v in sources if v), None)
    if value == "off":
        return None
    return value or default_directory()


def enable_persistent_cache(directory: str | None) -> None:
    """Cache every compiled program in ``directory`` (None: off). Thresholds at zero so the
    chunked rollout, which compiles in seconds on CPU, is cached too. A directory that every user
    may write is refused (:class:`ConfigError`): anyone could plant the native code it loads."""
    if directory is None:
        return
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        mode = 0  # created by JAX, with the user's umask
    if mode & stat.S_IWOTH:
        raise ConfigError("compilation cache", directory, "is writable by every user, and JAX loads the native code "
                          "in it without checks: use a directory only your user or group can write (chmod o-w), "
                          "or --compilation-cache off")  # fmt: skip
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
