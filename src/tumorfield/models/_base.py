"""What every tumorfield model provides to the config loader, the CLI and the writers."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from tumorfield_kernels import Grid, System

from .._schema import Key


class Model(abc.ABC):
    """A scenario family: its equations, parameters, initial state and diagnostics.

    ``schema`` lists the config sections the model owns (e.g. ``parameters``,
    ``host``, ``dosing``); ``config`` passed to ``__init__`` holds those sections
    already validated and filled with defaults.
    """

    name: ClassVar[str]
    schema: ClassVar[dict[str, dict[str, Key]]]

    def __init__(self, config: Mapping[str, Mapping[str, Any]]):
        self.config = config

    @property
    @abc.abstractmethod
    def system(self) -> System:
        """The PDE system (fields, transport, reaction); built once per model."""

    @abc.abstractmethod
    def params(self) -> Any:
        """Parameter pytree (leaves are arrays: traced, differentiable)."""

    @abc.abstractmethod
    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        """Initial value of every time-dependent field (and scalar variable)."""

    @abc.abstractmethod
    def observe(self, state, params, t, grid: Grid) -> dict[str, Any]:
        """Scalar diagnostics of a state (jittable): recorded every step under /scalars/."""

    field_units: ClassVar[dict[str, str]]
    field_long_names: ClassVar[dict[str, str]]
    scalar_units: ClassVar[dict[str, str]]
    """Units of the keys that ``observe`` returns (and of scalar variables)."""

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        """Cross-checks that need the grid and time stepping (e.g. doses on step boundaries).

        Raise :class:`tumorfield._schema.ConfigError` on bad input. The default has none.
        """
        return None
