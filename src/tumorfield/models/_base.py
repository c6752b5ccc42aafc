"""What every tumorfield model provides to the config loader, the CLI and the writers."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from tumorfield_kernels import Grid, System

from .._schema import check_sections
from ._quantities import Field, Observable


class Model(abc.ABC):
    """A scenario family: its equations, parameters, initial state and diagnostics.

    ``section_types`` maps the config sections the model owns (e.g. ``parameters``,
    ``host``, ``dosing``) to their section classes (frozen dataclasses whose fields are
    the keys, see :mod:`tumorfield._schema`). ``__init__`` receives those sections
    already checked and typed, from the config loader or from :meth:`from_sections`.
    """

    name: ClassVar[str]
    section_types: ClassVar[dict[str, type]]

    def __init__(self, sections: Mapping[str, Any]):
        for name, cls in self.section_types.items():
            if not isinstance(sections.get(name), cls):
                raise TypeError(
                    f"{type(self).__name__}: section {name!r} must be a {cls.__name__} "
                    f"(got {type(sections.get(name)).__name__}); build from plain dicts with "
                    f"{type(self).__name__}.from_sections"
                )
        self.config: dict[str, Any] = {name: sections[name] for name in self.section_types}

    @classmethod
    def from_sections(cls, sections: Mapping[str, Mapping[str, Any]] | None = None) -> Self:
        """The model from plain ``{section: {key: value}}`` dicts, checked (and defaults filled)
        by the same code as a config file; raises :class:`ConfigError`. Cross-checks that need
        the grid and time step are :meth:`validate`'s."""
        checked = check_sections(sections or {}, cls.section_types)
        return cls({name: cls.section_types[name](**values) for name, values in checked.items()})

    @property
    @abc.abstractmethod
    def system(self) -> System:
        """The PDE system (fields, transport, reaction); built once per model."""

    @abc.abstractmethod
    def params(self, grid: Grid) -> Any:
        """Parameter pytree on ``grid`` (leaves are arrays: traced, differentiable)."""

    @abc.abstractmethod
    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        """Initial value of every time-dependent field (and scalar variable)."""

    initial_keys: ClassVar[tuple[str, ...]] = ()
    """``[initial]`` keys (``"radius"``; below a table ``"tumor.radius"``) whose number the initial state is a
    closed form of, computed by :meth:`initial_state_at` from traced values: a fit may fit them as
    ``"initial.KEY"``. The default has none."""

    def initial_values(self, grid: Grid) -> dict[str, np.ndarray]:
        """Every number the closed form of :meth:`initial_state_at` takes (``initial_keys`` among them), in this
        configuration: arms with other [initial] values share one compiled rollout. Raise
        :class:`~tumorfield._schema.ConfigError` naming the key where this configuration's initial state is
        not that closed form (e.g. an image)."""
        from .._schema import ConfigError

        raise ConfigError("initial", None, f"model {self.name!r} has no initial state in closed form to fit")

    @staticmethod
    def initial_state_at(values: Mapping[str, Any], params, grid: Grid) -> tuple[dict[str, Any], Any]:
        """``(initial state, params)`` from ``values`` (those of :meth:`initial_values`, any of them traced):
        :meth:`initial_state` in JAX, and ``params`` with whatever depends on the initial state. Differentiable
        in every entry of ``initial_keys``; a function of its arguments alone."""
        raise NotImplementedError

    @staticmethod
    @abc.abstractmethod
    def observe(state, params, t, grid: Grid) -> dict[str, Any]:
        """Scalar diagnostics of a state (jittable): recorded every step under /scalars/.

        A ``staticmethod``, a function of its arguments alone: whatever else it needs (e.g. an initial
        radius) belongs in ``params(grid)``. Runs of one model then share one observer, and so one
        compiled rollout (``tumorfield.problem.Problem.rollout_key``)."""

    def constant_fields(self, grid: Grid) -> dict[str, tuple[np.ndarray, str, str]]:
        """Prescribed, time-independent maps written once with the output:
        ``{name: (array of grid.shape, units, long_name)}``. The default has none."""
        return {}

    fields: ClassVar[Mapping[str, Field]]
    """``{name: Field(units, long_name)}`` of every field of ``system`` (time-dependent fields and scalar
    ODE variables); declared next to the System. May list more (fields of other configurations)."""
    observables: ClassVar[Mapping[str, Observable]]
    """``{key: Observable(units, long_name)}`` of every key that ``observe`` returns; declared where each is
    computed (:class:`~tumorfield.models.Observables`). The writer refuses a key missing here."""

    confined: ClassVar[tuple[str, ...]] = ()
    """Fields that start inside the box and should stay away from its walls (the tumour): a run warns,
    once, where one of them is narrower than 4 cells at t = 0 or ends on a wall of the box at 10 % of its
    maximum or more (``tumorfield.run._warnings``; the log and the file's ``warnings``)."""

    scalar_observables: ClassVar[dict[str, str]] = {}
    """Scalar ODE variable → the key of ``observe`` that returns it unchanged every step: the file
    stores that series once, as the observable (the checkpoint still holds the variable)."""

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        """Cross-checks that need the grid and time stepping (e.g. doses on step boundaries).

        Raise :class:`tumorfield._schema.ConfigError` on bad input. The default has none.
        """
        return None
