"""A small built-in model: Fisher–KPP tumour invasion, optionally with a chemoattractant.

.. math::
    ∂_t u = D ∇²u − ∇·(χ u ∇c) + r u (1 − u)        (tumour cell density, fraction of capacity)
    ∂_t c = D_c ∇²c − k_c c + s_c u                   (chemoattractant, only when ``chi > 0``)

Used by the CLI tests and ``experiments/examples/fisher_kpp.toml``. The front
travels at ``2 √(D r)`` mm/day once established.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import Grid, System, Taxis

from .._schema import ConfigError, key, non_negative, positive, section
from ._base import Model
from ._quantities import Field, Observable, Observables


def _cap(value) -> str | None:
    return None if 0 <= value <= 1 else "must lie in [0, 1] (fraction of carrying capacity)"


def _centre(value) -> str | None:
    if value == []:
        return None
    if len(value) not in (1, 2, 3) or not all(isinstance(v, (int, float)) for v in value):
        return "must be a list of 1–3 numbers (mm), one per grid axis in (z, y, x) order, or [] for the box centre"
    return None


@section
class FisherParameters:
    """``[parameters]`` of ``fisher_kpp``."""

    D: float = key(1e-3, "mm²/day", "Diffusivity of tumour cells.", non_negative)
    r: float = key(1.0, "1/day", "Proliferation rate of tumour cells.", non_negative)
    chi: float = key(
        0.0, "mm²/day per unit c", "Chemotactic sensitivity; 0 disables the chemoattractant.", non_negative
    )
    D_c: float = key(0.1, "mm²/day", "Diffusivity of the chemoattractant.", non_negative)
    k_c: float = key(1.0, "1/day", "Decay rate of the chemoattractant.", positive)
    s_c: float = key(1.0, "c-units/day per unit u", "Chemoattractant secretion by tumour cells.", non_negative)


@section
class FisherInitial:
    """``[initial]`` of ``fisher_kpp``: a Gaussian seed."""

    amplitude: float = key(1.0, "1 (fraction of capacity)", "Peak tumour density of the seed.", _cap)
    radius: float = key(0.2, "mm", "Gaussian radius of the seed.", positive)
    centre: list[float] = key([], "mm", "Seed centre, one coordinate per axis ((z,) y, x); [] = box centre.", _centre)


def _logistic(state, params, t):
    return {"u": params["r"] * state["u"] * (1 - state["u"])}


def _logistic_and_secretion(state, params, t):
    return {**_logistic(state, params, t), "c": params["s_c"] * state["u"]}


def _param(name):
    def coefficient(params):
        return params[name]

    coefficient.__name__ = coefficient.__qualname__ = f"param_{name}"
    return coefficient


def _chi(state, params):
    return params["chi"]


FIELDS = {
    "u": Field("1", "tumour cell density (fraction of carrying capacity)"),
    "c": Field("1", "chemoattractant concentration"),
}
"""Both systems' fields (``c`` only with ``chi > 0``)."""

GROWTH = System(fields=("u",), diffusion={"u": _param("D")}, reaction=_logistic)
"""``chi = 0``: the tumour field alone; ``D`` and ``r`` from the parameter pytree."""

CHEMOTAXIS = System(
    fields=("u", "c"),
    diffusion={"u": _param("D"), "c": _param("D_c")},
    decay={"c": _param("k_c")},
    taxis=(Taxis(field="u", attractant="c", chi=_chi),),
    reaction=_logistic_and_secretion,
)
"""``chi > 0``: tumour and chemoattractant; every coefficient from the parameter pytree."""


OBSERVABLES = Observables()


@OBSERVABLES.declare(
    tumour_burden=Observable("mm^d, density × volume", "tumour burden ∫ u"),
    max_u=Observable("1", "maximum tumour cell density"),
)
def _observe(u, dv: float):
    return {"tumour_burden": jnp.sum(u) * dv, "max_u": jnp.max(u)}


class FisherKPP(Model):
    """Logistic growth plus diffusion (and optional chemotaxis) of tumour cells."""

    name = "fisher_kpp"
    section_types: ClassVar[dict[str, type]] = {"parameters": FisherParameters, "initial": FisherInitial}
    fields: ClassVar[dict[str, Field]] = FIELDS
    observables: ClassVar[Observables] = OBSERVABLES
    confined: ClassVar[tuple[str, ...]] = ("u",)

    def __init__(self, sections):
        super().__init__(sections)
        self.parameters: FisherParameters = self.config["parameters"]
        self.initial: FisherInitial = self.config["initial"]
        self._chemotaxis = self.parameters.chi > 0
        self._system = CHEMOTAXIS if self._chemotaxis else GROWTH

    @property
    def system(self) -> System:
        return self._system

    def params(self, grid: Grid):
        """Every ``[parameters]`` key as an array leaf: each is traced (one compile serves any values,
        a sweep batches them, a fit can fit them); only ``chi > 0`` against ``chi = 0`` is structural."""
        p = self.parameters
        names = ("D", "r", "chi", "D_c", "k_c", "s_c") if self._chemotaxis else ("D", "r")
        return {name: jnp.asarray(getattr(p, name)) for name in names}

    def initial_state(self, grid: Grid) -> dict[str, np.ndarray]:
        init = self.initial
        centre = init.centre or [side / 2 for side in grid.length]
        mesh = grid.mesh()
        r2 = sum((m - c) ** 2 for m, c in zip(mesh, centre, strict=True))
        state = {"u": init.amplitude * np.exp(-r2 / init.radius**2)}
        if self._chemotaxis:
            state["c"] = np.zeros(grid.shape)
        return state

    initial_keys = ("amplitude", "radius")

    def initial_values(self, grid: Grid) -> dict[str, np.ndarray]:
        init = self.initial
        centre = init.centre or [side / 2 for side in grid.length]
        return {"amplitude": np.asarray(init.amplitude, np.float64), "radius": np.asarray(init.radius, np.float64),
                "centre": np.asarray(centre, np.float64)}  # fmt: skip

    @staticmethod
    def initial_state_at(values, params, grid: Grid):
        """The seed ``amplitude · exp(−|x − centre|²/radius²)`` of :meth:`initial_state`, in JAX."""
        r2 = sum((jnp.asarray(m) - values["centre"][i]) ** 2 for i, m in enumerate(grid.mesh()))
        state = {"u": values["amplitude"] * jnp.exp(-r2 / values["radius"] ** 2)}
        if "chi" in params:  # the chemotaxis system (chi > 0): the attractant c starts at 0
            state["c"] = jnp.zeros(grid.shape, r2.dtype)
        return state, params

    @staticmethod
    def observe(state, params, t, grid: Grid):
        return _observe(state["u"], grid.cell_volume)

    def validate(self, grid: Grid, t_end: float, dt: float) -> None:
        centre = self.initial.centre
        if centre and len(centre) != grid.ndim:
            raise ConfigError(
                "initial.centre", centre, f"needs {grid.ndim} coordinates (mm), one per grid axis {grid.axis_names}"
            )
        for value, side, axis in zip(centre, grid.length, grid.axis_names, strict=True) if centre else ():
            if not 0 <= value <= side:
                raise ConfigError("initial.centre", centre, f"the {axis} coordinate must lie in [0, {side}] mm")
