"""Declarative description of a reaction–diffusion–taxis system."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import equinox as eqx

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
"""A constant, a function of ``params`` (traced, so it can be fitted), or, for the
diffusion of local fields, :class:`StateDependent`."""


class Taxis(eqx.Module):
    """Directed motion of ``field`` up the gradient of ``attractant``.

    Adds ``−∇·(χ u ∇c)`` to the equation of ``u = field``, ``c = attractant``.
    ``chi`` (mm²/day per unit of ``c``) is a number, or a function
    ``chi(state, params)`` returning a scalar or a cell array.
    """

    field: str = eqx.field(static=True)
    attractant: str = eqx.field(static=True)
    chi: float | Callable = eqx.field(static=True)


def _frozen(mapping, what):
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise TypeError(f"System.{what} must be a mapping from field name to value, got {type(mapping).__name__}")
    return tuple(mapping.items())


class System(eqx.Module):
    r"""A system of scalar fields ``u_f`` on a grid, each obeying

    .. math::
        ∂_t u_f = ∇·(D_f ∇u_f) − Σ_{taxis on f} ∇·(χ u_f ∇c) − k_f u_f + R_f(u, p, t)

    with zero-flux boundaries. ``D_f`` (mm²/day) and ``k_f`` (1/day) are
    constants or functions of ``params``; ``D_f`` of a local field may also
    depend on the state (:class:`StateDependent`). ``R`` is
    ``reaction(state, params, t)`` returning rates (field units per day) for
    any subset of fields.

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

    Walls are zero-flux, except for fields named in ``dirichlet``
    (``{field: g}``, ``g`` a number or a function of ``params``): their
    diffusion sees the fixed value ``u = g`` on every wall (cell-centred
    ghost cell ``2g − u_edge``; exponential and quasi-steady fields use the
    DST-II of ``u − g``). Taxis fluxes through walls stay zero.
    """

    fields: tuple[str, ...] = eqx.field(static=True)
    diffusion_items: tuple[tuple[str, Coefficient], ...] = eqx.field(static=True)
    decay_items: tuple[tuple[str, Coefficient], ...] = eqx.field(static=True)
    taxis: tuple[Taxis, ...] = eqx.field(static=True)
    reaction: Callable | None = eqx.field(static=True)
    quasi_steady: tuple[str, ...] = eqx.field(static=True)
    method_items: tuple[tuple[str, str], ...] = eqx.field(static=True)
    scalars: tuple[str, ...] = eqx.field(static=True)
    dirichlet_items: tuple[tuple[str, Coefficient], ...] = eqx.field(static=True)

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
    ):
        if isinstance(fields, str):
            raise TypeError(f"System.fields={fields!r}: give a tuple of names, e.g. ({fields!r},)")
        self.fields = tuple(fields)
        self.diffusion_items = _frozen(diffusion, "diffusion")
        self.decay_items = _frozen(decay, "decay")
        self.taxis = tuple(taxis)
        self.reaction = reaction
        self.quasi_steady = tuple(quasi_steady)
        self.method_items = _frozen(methods, "methods")
        self.scalars = tuple(scalars)
        self.dirichlet_items = _frozen(dirichlet, "dirichlet")

    def __check_init__(self):
        names = set(self.fields)
        if len(names) != len(self.fields):
            raise ValueError(f"System.fields={self.fields}: names must be unique")
        for what, items in (("diffusion", self.diffusion_items), ("decay", self.decay_items)):
            for name, value in items:
                if name not in names:
                    raise ValueError(f"System.{what}[{name!r}]: no such field; fields are {self.fields}")
                if isinstance(value, StateDependent):
                    self._check_state_dependent(what, name)
                elif not callable(value):
                    if not isinstance(value, (int, float)) or value != value:
                        raise TypeError(f"System.{what}[{name!r}]={value!r}: a number or a function of params")
                    if value < 0:
                        raise ValueError(f"System.{what}[{name!r}]={value}: must be ≥ 0")
        for term in self.taxis:
            if not isinstance(term, Taxis):
                raise TypeError(f"System.taxis entries must be Taxis, got {type(term).__name__}")
            for role in ("field", "attractant"):
                if getattr(term, role) not in names:
                    raise ValueError(f"Taxis.{role}={getattr(term, role)!r}: no such field; fields are {self.fields}")
        for name in self.quasi_steady:
            if name not in names:
                raise ValueError(f"System.quasi_steady: {name!r} is not a field; fields are {self.fields}")
            k = self.decay.get(name, 0.0)
            if not callable(k) and not k > 0:
                raise ValueError(
                    f"System.decay[{name!r}]={k}: a quasi-steady field needs decay > 0 "
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
        for name in self.scalars:
            if name not in names:
                raise ValueError(f"System.scalars: {name!r} is not a field; fields are {self.fields}")
            if name in self.diffusion and self.diffusion[name] != 0:
                raise ValueError(f"System.diffusion[{name!r}]: {name!r} is a scalar (ODE) variable, it cannot diffuse")
            if any(name in (t.field, t.attractant) for t in self.taxis):
                raise ValueError(f"System.taxis: {name!r} is a scalar (ODE) variable, it takes no part in taxis")
            if name in self.quasi_steady:
                raise ValueError(f"System.quasi_steady: {name!r} is a scalar (ODE) variable")
        for name, value in self.dirichlet_items:
            if name not in names:
                raise ValueError(f"System.dirichlet[{name!r}]: no such field; fields are {self.fields}")
            if name in self.scalars:
                raise ValueError(f"System.dirichlet[{name!r}]: {name!r} is a scalar (ODE) variable, it has no walls")
            if not callable(value):
                if not isinstance(value, (int, float)) or value != value:
                    raise TypeError(f"System.dirichlet[{name!r}]={value!r}: a number or a function of params")
                if value < 0:
                    raise ValueError(f"System.dirichlet[{name!r}]={value}: a wall value must be ≥ 0")
            d = self.diffusion.get(name, 0.0)
            if not callable(d) and not isinstance(d, StateDependent) and d == 0:
                raise ValueError(
                    f"System.dirichlet[{name!r}]: {name!r} does not diffuse (diffusion 0), "
                    "so a fixed wall value has no effect; give it a diffusion coefficient"
                )
        if self.reaction is not None and not callable(self.reaction):
            raise TypeError("System.reaction must be a function reaction(state, params, t) -> dict of rates")

    def _check_state_dependent(self, what, name):
        where = f"System.{what}[{name!r}]=StateDependent(...)"
        if what != "diffusion":
            raise TypeError(f"{where}: only diffusion may depend on the state; give a number or a function of params")
        if name in self.quasi_steady or name in self.scalars:
            raise ValueError(f"{where}: {name!r} is quasi-steady or a scalar; only local fields take it")
        if dict(self.method_items).get(name) == "exponential":
            raise ValueError(f"{where}: the 'exponential' method needs a constant D (DCT); use 'local'")
        if name in dict(self.dirichlet_items):
            raise ValueError(f"{where}: fixed wall values need a constant D; drop System.dirichlet[{name!r}]")

    @property
    def diffusion(self) -> dict[str, Coefficient]:
        return dict(self.diffusion_items)

    @property
    def decay(self) -> dict[str, Coefficient]:
        return dict(self.decay_items)

    @property
    def dirichlet(self) -> dict[str, Coefficient]:
        return dict(self.dirichlet_items)

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
        k = self.decay.get(name, 0.0)
        has_decay = callable(k) or k > 0
        variable_d = isinstance(self.diffusion.get(name), StateDependent)
        return "exponential" if has_decay and not self.taxis_on(name) and not variable_d else "local"
