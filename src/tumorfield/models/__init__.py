"""Model registry: config ``[model] name`` → :class:`Model` subclass.

Models are found through the ``tumorfield.models`` entry-point group: a package declares
``[project.entry-points."tumorfield.models"] mymodel = "mypackage:MyModel"`` and, once installed,
``[model] name = "mymodel"`` runs it (``docs/models.md``). The built-in models are declared the same
way in tumorfield's ``pyproject.toml``; :data:`BUILTIN` stands in for them when tumorfield runs from a
source tree without installed metadata. :func:`register` adds a class directly (tests).

What a model's author needs is exported here: :class:`Model`, :class:`Field`, :class:`Observable`,
:class:`Observables`, and the section tools ``section``, ``key``, ``REQUIRED``, ``positive``,
``non_negative`` and :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
from importlib.metadata import EntryPoint, entry_points

from .._schema import REQUIRED as REQUIRED
from .._schema import ConfigError as ConfigError
from .._schema import key as key
from .._schema import non_negative as non_negative
from .._schema import positive as positive
from .._schema import section as section
from ._base import Model as Model
from ._quantities import Field as Field
from ._quantities import Observable as Observable
from ._quantities import Observables as Observables

GROUP = "tumorfield.models"
BUILTIN = {
    "fisher_kpp": "tumorfield.models.fisher_kpp:FisherKPP",
    "glioma": "tumorfield.models.glioma:Glioma",
    "voloshin2015": "tumorfield.models.voloshin2015:Voloshin2015",
}
"""The built-in models' entry points (the same as in ``pyproject.toml``)."""

REGISTRY: dict[str, type[Model]] = {}
"""Classes registered directly or loaded from their entry point already."""


def register(cls: type[Model]) -> type[Model]:
    REGISTRY[cls.name] = cls
    return cls


_SCANNED: dict = {}
"""The entry points found by :func:`available` while :func:`scanned_once` is active."""


@contextlib.contextmanager
def scanned_once():
    """Within the block, :func:`available` scans the installed packages once (a sweep checks 10⁵ member
    configs; each check asked twice, ~9 ms a scan); outside it, every call scans anew."""
    outer = dict(_SCANNED)
    _SCANNED["active"] = True
    try:
        yield
    finally:
        _SCANNED.clear()
        _SCANNED.update(outer)


def available() -> dict[str, EntryPoint]:
    """Model name → its entry point: the built-in ones, then every installed package's."""
    if "points" in _SCANNED:
        return dict(_SCANNED["points"])
    found = _scan()
    if "active" in _SCANNED:
        _SCANNED["points"] = dict(found)
    return found


def _scan() -> dict[str, EntryPoint]:
    found = {name: EntryPoint(name, value, GROUP) for name, value in BUILTIN.items()}
    for point in entry_points(group=GROUP):
        if point.name in found and found[point.name].value != point.value:
            raise ConfigError(
                "model.name",
                point.name,
                f"two entry points of group {GROUP!r} declare this model: {found[point.name].value!r} and "
                f"{point.value!r}; uninstall one of the packages",
            )
        found[point.name] = point
    return found


def names() -> tuple[str, ...]:
    """Every model a config can name (without importing any)."""
    return tuple(sorted(REGISTRY.keys() | available().keys()))


def get(name: str) -> type[Model]:
    """The class of model ``name``, imported from its entry point on first use; :class:`ConfigError`
    for an unknown name (listing the available ones) or an entry point that does not load."""
    if name in REGISTRY:
        return REGISTRY[name]
    point = available().get(name)
    if point is None:
        raise ConfigError("model.name", name, f"no such model; available models are {', '.join(names())}")
    where = f"entry point {point.name} = {point.value!r} (group {GROUP!r})"
    try:
        cls = point.load()
    except Exception as error:  # any failure inside a third-party import
        raise ConfigError("model.name", name, f"loading {where} failed: {type(error).__name__}: {error}") from error
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ConfigError("model.name", name, f"{where} is {cls!r}, not a subclass of tumorfield.models.Model")
    if getattr(cls, "name", None) != name:
        raise ConfigError("model.name", name, f"{where} loads a model whose name is {getattr(cls, 'name', None)!r}")
    REGISTRY[name] = cls
    return cls
