"""Declarative description of a reaction–diffusion–taxis system."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import equinox as eqx
import jax
import numpy as np

Method = Literal["local", "exponential"]


class StateDependent(eqx.Module):
    """A diffusion coefficient that depends on the state: ``fn(state, params)``.

    ``fn`` returns a scalar or a cell array (mm²/day, ≥ 0), evaluated at every
    stage after the quasi-steady solve; face values are the arithmetic mean of
    the two cells, ``∇·(D∇u)`` becomes ``Σ (D_{i+½}(u_{i+1} − u_i) − D_{i−½}(u_i − u_{i−1}))/Δx²``.
    Only for fields advanced with local stencils (a DCT cannot diagonalise a
    variable-coefficient operator); the positivity limit uses ``max D``.
    """

    fn: Callable = eqx.field(static=True)


Coefficient = float | Callable[[Any], Any] | StateDependent
"""A constant, a function of ``params``, or, for the diffusion of local fields, a cell array
(a map of ``grid.shape``) or :class:`StateDependent`. Non-zero constants are stored as array
leaves, so a changed value reuses the compiled rollout (:func:`coefficient_leaf`)."""


class WithGrid(eqx.Module):
    """A reaction that needs the :class:`Grid`: called ``fn(state, params, t, grid)`` (for integrals
    over the domain: ``grid.cell_volume``). A plain reaction is called ``fn(state, params, t)``."""

    fn: Callable = eqx.field(static=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"WithGrid({self.fn!r}): a function reaction(state, params, t, grid)")


class Taxis(eqx.Module):
    """Directed motion of ``field`` up the gradient of ``attractant``.

    Adds ``−∇·(χ u ∇c)`` to the equation of ``u = field``, ``c = attractant``.
    ``chi`` (mm²/day per unit of ``c``) is a number, or a function
    ``chi(state, params)`` returning a scalar or a cell array.
    """

    field: str = eqx.field(static=True)
    attractant: str = eqx.field(static=True)
    chi: Any = eqx.field(converter=lambda value: coefficient_leaf(value))


def coefficient_leaf(value):
    """A coefficient as stored in a :class:`System`: callables and :class:`StateDependent` as
    they are; an exact zero as the Python float ``0.0`` (static: it removes a term, so it is part
    of what a rollout is compiled for); any other number as a float64 array leaf (traced, so a new
    value reuses the compiled rollout); a cell array (a map of ``D`` or ``χ``) as a float64 array
    leaf; a traced array as it is."""
    if callable(value) or isinstance(value, (StateDependent, jax.core.Tracer)):
        return value
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer, np.ndarray)):
        return value  # refused with the key and value by System.__check_init__
    if isinstance(value, np.ndarray) and not np.issubdtype(value.dtype, np.number):
        return value  # idem
    if np.ndim(value) != 0:
        return np.asarray(value, np.float64)
    return 0.0 if float(value) == 0.0 else np.asarray(value, np.float64)


def is_cell_array(value) -> bool:
    """Whether a stored coefficient is a cell array (a map over the grid), not a number or a function."""
    return not callable(value) and not isinstance(value, StateDependent) and np.ndim(value) > 0


def is_zero(value) -> bool:
    """Whether a stored coefficient is the structural zero (an absent term)."""
    return isinstance(value, float) and value == 0.0


def _concrete_number(value):
    """``float(value)`` for a stored number, None for callables, traced values and cell arrays."""
    if isinstance(value, float):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number):
        return float(value)
    return None


def _mapping(mapping, what, leaf=False) -> dict:
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise TypeError(f"System.{what} must be a mapping from field name to value, got {type(mapping).__name__}")
    return {name: coefficient_leaf(value) if leaf else value for name, value in mapping.items()}


def _check_number(where: str, value, rule: str | None, state_ok: bool = False, map_ok: bool = False) -> None:
    """Refuse a stored coefficient that is neither a function nor a number (≥ 0 unless ``rule`` is None);
    ``map_ok``: a cell array of such numbers is accepted too (its shape is checked against the grid
    when the stepper is built)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    if is_cell_array(value) and isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
        if not map_ok:
            raise TypeError(
                f"{where}: a cell array of shape {value.shape}; this coefficient takes a number or a function of "
                "params (cell arrays: diffusion and taxis chi of fields advanced with local stencils)"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{where}: a cell array of shape {value.shape} with non-finite values")
        if rule is not None and float(np.min(value)) < 0:
            raise ValueError(
                f"{where}: a cell array of shape {value.shape} with minimum {float(np.min(value))}: {rule}"
            )
        return
    number = _concrete_number(value)
    if number is None or number != number:
        allowed = "a function of (state, params)" if state_ok else "a function of params"
        raise TypeError(f"{where}={value!r}: a number or {allowed}")
    if rule is not None and number < 0:
        raise ValueError(f"{where}={number}: {rule}")


class System(eqx.Module):
    r"""A system of scalar fields ``u_f`` on a grid, each obeying

    .. math::
        ∂_t u_f = ∇·(D_f ∇u_f) − Σ_{taxis on f} ∇·(χ u_f ∇c) − k_f u_f + R_f(u, p, t)

    with zero-flux boundaries. ``D_f`` (mm²/day) and ``k_f`` (1/day) are
    constants or functions of ``params``; ``D_f`` of a local field may also
    be a cell array of the grid's shape (a map: harmonic face means, ``docs/numerics.md`` §1b; a
    field with a map ``D`` is local by default) or depend on the state (:class:`StateDependent`).
    A ``D`` that varies in space — a map, or a function of ``params`` that returns one — is refused
    for fields solved by a DCT (exponential and quasi-steady fields: one ``D`` for the whole box),
    naming the field and ``methods={name: "local"}``. ``R`` is
    ``reaction(state, params, t)`` returning rates (field units per day) for
    any subset of fields; a reaction wrapped as :class:`WithGrid` is called
    ``reaction(state, params, t, grid)`` with the :class:`Grid` (for
    integrals: ``grid.cell_volume``).

    Coefficients that are numbers are array leaves of the system (an exact 0
    stays static: it removes the term), so a new value, in a new ``System``,
    reuses the compiled rollout; functions of ``params`` are traced too.

    Fields named in ``quasi_steady`` are not advanced in time: at every stage
    they solve ``0 = D∇²c − k c + R_c`` (``k > 0``), with ``R_c`` evaluated from
    the current state (a source must not depend on quasi-steady fields, or it
    sees their previous-step values).

    Names in ``scalars`` are spatially uniform ODE variables (shape ``()``):
    ``d s/dt = −k s + R_s`` with ``R_s`` typically an integral over the grid
    (e.g. cells shed into the circulation). They have no diffusion or taxis,
    are advanced like local fields and, when x64 is enabled, are held in
    float64 whatever the field dtype.

    Each time-dependent field is advanced by one of two methods:

    - ``"exponential"``: ``D∇² − k`` is integrated exactly (in DCT-II space when
      ``D ≠ 0``, pointwise otherwise) by the second-order exponential
      time-differencing scheme ETDRK2 (Cox & Matthews, J. Comput. Phys. 176,
      2002); its diffusion and decay never limit the time step. Default for
      fields with decay and no taxis (cytokines, drugs).
    - ``"local"``: everything is explicit with local stencils (limited upwind
      taxis fluxes) and SSP-RK2, positivity-preserving under a step limit.
      Empty tissue stays exactly empty, as no global transform spreads
      round-off. Default for every other field (cells).

    ``methods`` overrides the default per field.

    ``domain`` (a cell array, 1 inside and 0 outside, or a function of ``params`` returning one;
    None: the whole box) masks the box: no diffusive or taxis flux crosses a face with a cell
    outside, and no reaction acts outside, so a field that is zero outside stays zero there (a
    brain inside its skull). Spectral and quasi-steady fields assume the whole box (their DCT
    solves cannot honour a mask), so a System with a domain refuses them: advance such fields
    with ``methods={name: "local"}`` (``docs/numerics.md`` §1b).

    Walls are zero-flux, except for fields named in ``dirichlet``
    (``{field: g}``, ``g`` a number or a function of ``params``): their
    diffusion sees the fixed value ``u = g`` on every wall (cell-centred
    ghost cell ``2g − u_edge``; exponential and quasi-steady fields use the
    DST-II of ``u − g``). Taxis fluxes through walls stay zero.
    """

    fields: tuple[str, ...] = eqx.field(static=True)
    diffusion: dict[str, Coefficient]
    decay: dict[str, Coefficient]
    taxis: tuple[Taxis, ...]
    reaction: Callable | None = eqx.field(static=True)
    quasi_steady: tuple[str, ...] = eqx.field(static=True)
    method_items: tuple[tuple[str, str], ...] = eqx.field(static=True)
    scalars: tuple[str, ...] = eqx.field(static=True)
    dirichlet: dict[str, Coefficient]
    domain: Any = None

    def __init__(
        self,
        fields,
        diffusion=None,
        decay=None,
        taxis=(),
        reaction=None,
        quasi_steady=(),
        methods=None,
        scalars=(),
        dirichlet=None,
        domain=None,
    ):
        if isinstance(fields, str):
            raise TypeError(f"System.fields={fields!r}: give a tuple of names, e.g. ({fields!r},)")
        self.fields = tuple(fields)
        self.diffusion = _mapping(diffusion, "diffusion", leaf=True)
        self.decay = _mapping(decay, "decay", leaf=True)
        self.taxis = tuple(taxis)
        self.reaction = reaction
        self.quasi_steady = tuple(quasi_steady)
        self.method_items = tuple(_mapping(methods, "methods").items())
        self.scalars = tuple(scalars)
        self.dirichlet = _mapping(dirichlet, "dirichlet", leaf=True)
        self.domain = domain if domain is None or callable(domain) else np.asarray(domain, np.float64)

    def __check_init__(self):
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"System.fields={self.fields}: names must be unique")
        self._check_coefficients_and_taxis(set(self.fields))
        self._check_quasi_steady_and_methods(set(self.fields))
        self._check_scalars_and_walls(set(self.fields))
        self._check_domain()
        if self.reaction is not None and not (callable(self.reaction) or isinstance(self.reaction, WithGrid)):
            raise TypeError(
                "System.reaction must be a function reaction(state, params, t) -> dict of rates, "
                "or WithGrid(reaction(state, params, t, grid))"
            )

    def _check_coefficients_and_taxis(self, names):
        for what, items in (("diffusion", self.diffusion), ("decay", self.decay)):
            for name, value in items.items():
                if name not in names:
                    raise ValueError(f"System.{what}[{name!r}]: no such field; fields are {self.fields}")
                if isinstance(value, StateDependent):
                    self._check_state_dependent(what, name)
                else:
                    _check_number(f"System.{what}[{name!r}]", value, "must be ≥ 0", map_ok=what == "diffusion")
                    if is_cell_array(value):
                        self._check_diffusion_map(name)
        for term in self.taxis:
            if not isinstance(term, Taxis):
                raise TypeError(f"System.taxis entries must be Taxis, got {type(term).__name__}")
            _check_number(f"Taxis(field={term.field!r}).chi", term.chi, None, state_ok=True, map_ok=True)
            for role in ("field", "attractant"):
                if getattr(term, role) not in names:
                    raise ValueError(f"Taxis.{role}={getattr(term, role)!r}: no such field; fields are {self.fields}")

    def _check_quasi_steady_and_methods(self, names):
        for name in self.quasi_steady:
            if name not in names:
                raise ValueError(f"System.quasi_steady: {name!r} is not a field; fields are {self.fields}")
            if is_zero(self.decay.get(name, 0.0)):
                raise ValueError(
                    f"System.decay[{name!r}]=0.0: a quasi-steady field needs decay > 0 "
                    "(0 = D∇²c − k c + S is singular with zero-flux boundaries otherwise)"
                )
            if any(t.field == name for t in self.taxis):
                raise ValueError(f"System.quasi_steady: {name!r} is moved by taxis, so it cannot be quasi-steady")
        for name, method in self.method_items:
            if name not in names:
                raise ValueError(f"System.methods[{name!r}]: no such field; fields are {self.fields}")
            if method not in ("local", "exponential"):
                raise ValueError(f"System.methods[{name!r}]={method!r}: allowed are 'local', 'exponential'")
            if name in self.quasi_steady:
                raise ValueError(f"System.methods[{name!r}]: field is quasi-steady, it has no time-stepping method")

    def _check_scalars_and_walls(self, names):
        for name in self.scalars:
            if name not in names:
                raise ValueError(f"System.scalars: {name!r} is not a field; fields are {self.fields}")
            if not is_zero(self.diffusion.get(name, 0.0)):
                raise ValueError(f"System.diffusion[{name!r}]: {name!r} is a scalar (ODE) variable, it cannot diffuse")
            if any(name in (t.field, t.attractant) for t in self.taxis):
                raise ValueError(f"System.taxis: {name!r} is a scalar (ODE) variable, it takes no part in taxis")
            if name in self.quasi_steady:
                raise ValueError(f"System.quasi_steady: {name!r} is a scalar (ODE) variable")
        for name, value in self.dirichlet.items():
            if name not in names:
                raise ValueError(f"System.dirichlet[{name!r}]: no such field; fields are {self.fields}")
            if name in self.scalars:
                raise ValueError(f"System.dirichlet[{name!r}]: {name!r} is a scalar (ODE) variable, it has no walls")
            _check_number(f"System.dirichlet[{name!r}]", value, "a wall value must be ≥ 0")
            if is_zero(self.diffusion.get(name, 0.0)):
                raise ValueError(
                    f"System.dirichlet[{name!r}]: {name!r} does not diffuse (diffusion 0), "
                    "so a fixed wall value has no effect; give it a diffusion coefficient"
                )

    def _check_domain(self):
        if self.domain is None:
            return
        if not callable(self.domain) and not isinstance(self.domain, jax.core.Tracer):
            values = np.asarray(self.domain)
            if values.ndim == 0 or not np.all((values == 0) | (values == 1)):
                raise ValueError("System.domain: a cell array of 0 (outside) and 1 (inside), or a function of params")
        for name in self.dynamic_fields + self.quasi_steady:
            if name in self.scalars:
                continue
            if name in self.quasi_steady or (self.method(name) == "exponential" and not is_zero(
                    self.diffusion.get(name, 0.0))):  # fmt: skip
                raise ValueError(
                    f"System.domain: field {name!r} is solved spectrally (DCT over the whole box), which cannot honour "
                    f"a domain mask; advance it with methods={{{name!r}: 'local'}} (a quasi-steady field cannot be "
                    "masked: give it a time derivative)"
                )
        if self.dirichlet:
            raise ValueError(
                f"System.dirichlet={list(self.dirichlet)}: fixed wall values and a domain mask do not combine"
            )

    def _check_diffusion_map(self, name):
        """A cell-array ``D`` (a map) is for fields advanced with local (finite-volume) stencils only."""
        where = f"System.diffusion[{name!r}] (a cell array)"
        if name in self.quasi_steady:
            raise ValueError(
                f"{where}: {name!r} is quasi-steady, solved by a DCT over the whole box, which needs one D; give a "
                f"number, or give {name!r} a time derivative (not quasi-steady) with methods={{{name!r}: 'local'}}"
            )
        if dict(self.method_items).get(name) == "exponential":
            raise ValueError(
                f"{where}: the 'exponential' method (a DCT) needs one D for the whole box; use "
                f"methods={{{name!r}: 'local'}} (finite volumes take a cell-array D)"
            )

    def _check_state_dependent(self, what, name):
        where = f"System.{what}[{name!r}]=StateDependent(...)"
        if what != "diffusion":
            raise TypeError(f"{where}: only diffusion may depend on the state; give a number or a function of params")
        if name in self.quasi_steady or name in self.scalars:
            raise ValueError(f"{where}: {name!r} is quasi-steady or a scalar; only local fields take it")
        if dict(self.method_items).get(name) == "exponential":
            raise ValueError(f"{where}: the 'exponential' method needs a constant D (DCT); use 'local'")
        if name in self.dirichlet:
            raise ValueError(f"{where}: fixed wall values need a constant D; drop System.dirichlet[{name!r}]")

    @property
    def dynamic_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f not in self.quasi_steady)

    def taxis_on(self, name: str) -> tuple[Taxis, ...]:
        return tuple(t for t in self.taxis if t.field == name)

    def method(self, name: str) -> Method:
        """How ``name`` is advanced: ``"local"`` or ``"exponential"``."""
        if name in self.scalars:
            return "local"
        overrides = dict(self.method_items)
        if name in overrides:
            return overrides[name]
        has_decay = not is_zero(self.decay.get(name, 0.0))
        variable_d = isinstance(self.diffusion.get(name), StateDependent) or is_cell_array(self.diffusion.get(name))
        return "exponential" if has_decay and not self.taxis_on(name) and not variable_d else "local"
