"""The L-BFGS iteration program, kept across processes as a ``jax.export`` artefact.

The persistent compilation cache keeps XLA's executable, but every process still had to trace
and lower the iteration (the checkpointed gradient of a whole simulation inside optax's line
search: ~15 s at 64² on a 2-core CPU, more than the rest of a warm start together). With a cache
directory (``run.compilation_cache`` of the first arm, as for the compiled programs), the first
process also serialises the lowered program (``jax.export``, StableHLO) to
``<cache>/tumorfield-fit/<key>.jaxexport``; later processes deserialise it (milliseconds) and
compile it — a persistent-cache hit, since the cold process compiled that same exported module.

The key is a SHA-256 over everything that can change the program: the fit's static options (the
fitted names, likelihood, line-search length), each group's static parts (arms, time step,
precision, frames, observed names, observation rows) and each arm's resolved run config, the
structure, shapes and dtypes of the traced arguments, the versions of jax, jaxlib, optax and
equinox, the jax options that change tracing (x64, dtype promotion, matmul precision), the
platform, and the code version: a hash of every source file of ``tumorfield`` and
``tumorfield_kernels`` (so an edited, uncommitted file is a new key too). The file holds the key
in its header and is used only when that header matches and its argument shapes equal the call's;
anything else (a missing, foreign, truncated or unreadable file) is traced anew and overwritten,
and :attr:`CachedStep.source` says which happened. The program is exported as a function of the
flattened arguments, so no pytree node needs registering for serialisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

FORMAT = b"tumorfield-fit-export/1"
"""First line of an export file (then the key, then jax.export's serialisation)."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 over the path and content of every ``.py`` file of ``tumorfield`` and ``tumorfield_kernels``."""
    import tumorfield_kernels

    import tumorfield

    digest = hashlib.sha256()
    for package in (tumorfield, tumorfield_kernels):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for name in ("jax", "jaxlib", "optax", "equinox"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - an unusual install
            out[name] = "?"
    return out


def _environment() -> dict:
    device = jax.devices()[0]
    config = jax.config
    return {
        "versions": _versions(),
        "code": code_version(),
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", ""),
        "x64": bool(config.jax_enable_x64),
        "dtype_promotion": str(config.jax_numpy_dtype_promotion),
        "matmul_precision": str(config.jax_default_matmul_precision),
    }


def _signature(leaves) -> list:
    """``[shape, dtype]`` of each leaf (arrays, Python numbers or abstract values)."""
    return [[list(np.shape(x)), str(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)] for x in leaves]


def export_key(static: dict, args) -> str:
    """The key of the program for ``static`` (JSON-able description of the fit's static parts)
    called with ``args``."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    document = {"static": static, "tree": str(treedef), "avals": _signature(leaves), "environment": _environment()}
    text = json.dumps(document, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path, key: str):
    """The deserialised export at ``path`` if its header holds ``key``; None otherwise."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header, _, rest = data.partition(b"\n")
    found, _, payload = rest.partition(b"\n")
    if header != FORMAT or found != key.encode() or not payload:
        return None
    try:
        return jax.export.deserialize(bytearray(payload))
    except Exception:  # noqa: BLE001 - a damaged file is only a cache miss
        return None


def _write(path: Path, key: str, exported) -> bool:
    """Write atomically (a temporary file, then a rename); False where the directory is not writable
    or serialisation is unavailable (``flatbuffers`` missing): the program is then used uncached."""
    try:
        payload = bytes(exported.serialize())
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as file:
            file.write(FORMAT + b"\n" + key.encode() + b"\n" + payload)
        os.replace(file.name, path)
        return True
    except (OSError, ImportError):
        return False


class CachedStep:
    """The jitted iteration ``step`` (:func:`._optimise.make_step`), compiled once per object
    through a ``jax.export`` artefact in the persistent cache directory (none: plain ``jax.jit``).

    ``static`` describes everything static the program depends on besides the code and the
    arguments (see the module docstring). Call it like ``step``; :meth:`compile` does the work of
    the first call and records ``source`` (``"export loaded"``, ``"traced, exported"``,
    ``"traced"``) and ``timings`` (``trace_lower_s``: trace + lower, or load the export and lower
    its call; ``compile_s``: XLA compile or persistent-cache load).
    """

    def __init__(self, step, static: dict):
        self.step, self.static = step, static
        self.source, self.timings, self.key = None, {}, None
        self._compiled, self._treedef = None, None

    def __call__(self, *args):
        if self._compiled is None:
            self.compile(*args)
        leaves, treedef = jax.tree_util.tree_flatten(args)
        if treedef != self._treedef:
            raise TypeError("the fit's iteration was compiled for arguments of another structure")
        return self._compiled(*leaves)

    def compile(self, *args):
        """Trace (or load the export), lower and compile for ``args``; returns ``self``."""
        start = time.perf_counter()
        leaves, treedef = jax.tree_util.tree_flatten(args)
        z, state = args[0], args[1]
        out_treedef = jax.tree_util.tree_structure((z, state, 0, 0, 0))
        directory = jax.config.jax_compilation_cache_dir
        exported, path = None, None
        if directory:
            self.key = export_key(self.static, args)
            path = Path(directory) / "tumorfield-fit" / f"{self.key}.jaxexport"
            exported = _read(path, self.key)
            if exported is not None and _signature(exported.in_avals) != _signature(leaves):
                exported = None
            self.source = "export loaded" if exported is not None else None
        if exported is None and directory:
            exported = self._export(leaves, treedef, out_treedef)
            if exported is not None:
                self.source = "traced, exported" if _write(path, self.key, exported) else "traced"
        if exported is not None:
            lowered = jax.jit(exported.call).lower(*leaves)
            traced = time.perf_counter()
            compiled = lowered.compile()

            def run(*flat):
                return jax.tree_util.tree_unflatten(out_treedef, compiled(*flat))

        else:
            self.source = "traced"
            lowered = self.step.lower(*args)
            traced = time.perf_counter()
            compiled_tree = lowered.compile()

            def run(*flat):
                return compiled_tree(*jax.tree_util.tree_unflatten(treedef, flat))

        done = time.perf_counter()
        self._compiled, self._treedef = run, treedef
        self.timings = {"trace_lower_s": traced - start, "compile_s": done - traced}
        return self

    def _export(self, leaves, treedef, out_treedef):
        """``jax.export`` of ``step`` as a function of the flat arguments, or None where its output's
        structure is not ``out_treedef`` (then it is not cached)."""
        found = {}

        def flat(*xs):
            out = self.step(*jax.tree_util.tree_unflatten(treedef, xs))
            out_leaves, found["tree"] = jax.tree_util.tree_flatten(out)
            return out_leaves

        exported = jax.export.export(jax.jit(flat))(*leaves)
        return exported if found["tree"] == out_treedef else None
