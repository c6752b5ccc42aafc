r"""One class per field scheme, and the plan that picks them.

Every time-dependent field ``u`` takes the same two-stage step of size ``h``,

.. math::
    a = A u + h B N(u, t), \qquad u^+ = a + h C \, (N(a, t + h) − N(u, t)),

where ``N`` is the part of the right-hand side the scheme treats explicitly:

- :class:`LocalSSPRK2` — SSP-RK2 (Heun; Shu & Osher, J. Comput. Phys. 77, 1988):
  ``A = B = 1``, ``C = ½``; ``N`` holds everything (diffusion, taxis, decay,
  reaction) on local stencils, so the step is positivity-preserving under
  :meth:`LocalSSPRK2.rate_bound`.
- :class:`PointwiseETDRK2` and :class:`SpectralETDRK2` — ETDRK2 (Cox &
  Matthews, J. Comput. Phys. 176, 2002, eq. 22) with the linear part
  ``L = −k`` pointwise, or ``L = D∇² − k`` diagonal in DCT-II space:
  ``A = e^{hL}``, ``B = φ₁(hL)``, ``C = φ₂(hL)``. The spectral scheme carries
  the field's coefficients between its stages (four transforms per step).
- :class:`ScalarETDRK2` — ETDRK2 with ``L = −k`` for spatially uniform ODE variables (their
  decay exact, so a clearance faster than the step needs no small ``h``).

:class:`QuasiSteadySolve` solves ``0 = D∇²c − k c + R`` for fields that are not
advanced in time. :func:`plan` chooses each field's class from the
:class:`System` and precomputes its operators for one ``h`` and ``params``.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp

from . import _spectral as spectral
from . import _stencils as stencils
from ._diffusion import SplitDiffusion
from ._grid import Grid
from ._numerics import CellDiffusion
from ._phi import phi_functions
from ._system import StateDependent, System, Taxis, is_zero


def evaluate(coefficient, params, state=None, dtype=None):
    """A coefficient's value: ``fn(params)``, ``StateDependent.fn(state, params)``, or the
    stored number (cast to ``dtype``; the structural zero stays the Python float 0.0)."""
    if isinstance(coefficient, StateDependent):
        return coefficient.fn(state, params)
    if callable(coefficient):
        return coefficient(params)
    if is_zero(coefficient) or dtype is None:
        return coefficient
    return jnp.asarray(coefficient, dtype)


def _taxis_terms(taxis: tuple[Taxis, ...], state, params) -> list:
    """``[(χ, c)]`` of every taxis term on one field, ``χ`` evaluated at ``state``."""
    return [
        (evaluate(term.chi, params, dtype=state[term.attractant].dtype) if not callable(term.chi)
         else term.chi(state, params), state[term.attractant])
        for term in taxis
    ]  # fmt: skip


def _face_speeds(request, spacing, speeds):
    """``speeds`` (per axis, precomputed from ``request``), else those of ``request = (taxis terms,
    mask)`` on one device (:func:`._stencils.max_face_speed`)."""
    if speeds is not None:
        return speeds
    return stencils.max_face_speed(request[0], spacing, request[1])


class TransportTerm(NamedTuple):
    """The arguments of :func:`._stencils.transport` but the spacing: what the local transport of one
    field needs (the stepper computes the terms of all fields of a stage together, ``._decomposition``)."""

    u: Any
    diffusivity: Any
    taxis: Any
    wall: Any = None
    mask: Any = None

    def apply(self, spacing):
        return stencils.transport(self.u, spacing, self.diffusivity, self.taxis, self.wall, self.mask)


class FieldScheme(eqx.Module):
    """How one field is advanced: its explicit part ``N``, its two stages, its step limit.

    ``carried`` is what a scheme keeps between its stages besides the field itself
    (spectral coefficients, or None); it restarts from the field at every saved frame
    (:meth:`prepare`), so a run resumed from a frame is bit-identical.
    """

    name: str = eqx.field(static=True)

    def prepare(self, u):
        """What the scheme carries for ``u`` at the start of a frame (None: nothing)."""
        return None

    def transport_term(self, u, state, params) -> TransportTerm | None:
        """The local transport of ``N(u)`` (None: none)."""
        return None

    @abc.abstractmethod
    def explicit_rate(self, u, reaction_rate, state, params, spacing, transport=None):
        """``N(u)`` (field units per day) given the reaction rate of this field and, where
        :meth:`transport_term` is not None, its transport (computed here when None)."""

    @abc.abstractmethod
    def first_stage(self, u, carried, rate, dt):
        """``a = A u + h B N(u)``; returns ``(a, carried a, memo for the second stage)``."""

    @abc.abstractmethod
    def second_stage(self, a, carried, memo, rate, dt):
        """``u⁺ = a + h C (N(a) − N(u))``; returns ``(u⁺, carried u⁺)``."""

    def speed_request(self, state, params):
        """``(taxis terms, mask)`` whose face speeds :meth:`rate_bound` needs (None: none)."""
        return None

    def rate_bound(self, state, params, spacing, speeds=None):
        """Largest outflow rate (1/day) of the explicit part at ``state``: ``dt · bound ≤ 1``
        keeps the step non-negative. None where nothing explicit limits the step. ``speeds``: the
        face speeds of :meth:`speed_request`, per axis (computed here when None)."""
        return None

    @property
    def limits_step(self) -> bool:
        """Whether the explicit part can limit the step at all (static): a positive :meth:`rate_bound`."""
        return False


class _Heun(FieldScheme):
    """The SSP-RK2 (Heun) stages: ``a = u + h N(u)``, ``u⁺ = a + ½h (N(a) − N(u))``."""

    def first_stage(self, u, carried, rate, dt):
        return u + dt.astype(u.dtype) * rate, None, rate

    def second_stage(self, a, carried, memo, rate, dt):
        delta = rate - memo
        return a + 0.5 * dt.astype(delta.dtype) * delta, None


def _minus_decay(rate, decay, u):
    # cast: a decay may be float64 beside float32 fields
    return rate if is_zero(decay) else rate - jnp.asarray(decay).astype(u.dtype) * u


class LocalSSPRK2(_Heun):
    """``∂_t u = ∇·(D∇u) − Σ ∇·(χ u ∇c) − k u + R``, all explicit on local stencils.

    Limited-upwind taxis fluxes; ``D`` (mm²/day) a number, a cell array (harmonic face means), a
    function of params or :class:`StateDependent`; ``wall`` the fixed wall value ``g`` (or None:
    zero flux); ``mask`` the domain (None: the whole box). Positivity-preserving for
    ``Δt ≤ 1/``:meth:`rate_bound`.
    """

    diffusion: Any
    decay: Any
    taxis: tuple[Taxis, ...]
    wall: Any = None
    mask: Any = None

    def transport_term(self, u, state, params):
        d = evaluate(self.diffusion, params, state)
        return TransportTerm(u, d, _taxis_terms(self.taxis, state, params), self.wall, self.mask)

    def explicit_rate(self, u, reaction_rate, state, params, spacing, transport=None):
        if transport is None:
            transport = self.transport_term(u, state, params).apply(spacing)
        return _minus_decay(reaction_rate + transport, self.decay, u)

    @property
    def limits_step(self) -> bool:
        return not (is_zero(self.diffusion) and is_zero(self.decay) and not self.taxis)

    def speed_request(self, state, params):
        return (_taxis_terms(self.taxis, state, params), self.mask) if self.taxis else None

    def rate_bound(self, state, params, spacing, speeds=None):
        request = self.speed_request(state, params) if speeds is None else None
        speeds = _face_speeds(request, spacing, speeds) if self.taxis else [0.0] * len(spacing)
        d = evaluate(self.diffusion, params, state)
        d = jnp.max(d) if jnp.ndim(d) else d  # face means never exceed the largest cell value
        return stencils.explicit_rate_bound(spacing, d, self.decay, speeds, self.wall is not None)


def _as(x, dtype):
    """``x`` in ``dtype`` (a Python number stays weakly typed)."""
    return x if isinstance(x, float | int) else jnp.asarray(x).astype(dtype)


class ScalarETDRK2(FieldScheme):
    """``ds/dt = −k s + R_s`` for a spatially uniform ODE variable by ETDRK2 with ``e^{−kh}`` exact
    (Cox & Matthews 2002, eq. 22): ``a = e^{−kh} s + h φ₁ R(s)``, ``s⁺ = a + h φ₂ (R(a) − R(s))``.

    ``phi = (e^z, φ₁(z), φ₂(z))`` at ``z = −k h`` in the precision of ``k`` (float64 for the model's
    ODE variables when x64 is on); ``k = 0`` gives ``(1, 1, ½)``, the SSP-RK2 (Heun) step. The step
    is stable for any ``k h`` and exact for a constant ``R``; ``s⁺ = e^{−kh}s + h(φ₁ − φ₂)R(s) +
    hφ₂R(a)`` with ``φ₁ ≥ φ₂ ≥ 0`` for ``z ≤ 0``, so it stays non-negative for non-negative sources
    (no step limit of its own)."""

    phi: tuple[Any, Any, Any]

    @classmethod
    def build(cls, name, decay, dt):
        if is_zero(decay):
            return cls(name, (1.0, 1.0, 0.5))
        decay = jnp.asarray(decay)
        return cls(name, phi_functions(-decay * jnp.asarray(dt).astype(decay.dtype)))

    def explicit_rate(self, u, reaction_rate, state, params, spacing, transport=None):
        return reaction_rate

    def first_stage(self, u, carried, rate, dt):
        e, p1, _ = (_as(x, u.dtype) for x in self.phi)
        return e * u + dt.astype(u.dtype) * p1 * rate, None, rate

    def second_stage(self, a, carried, memo, rate, dt):
        return a + dt.astype(a.dtype) * _as(self.phi[2], a.dtype) * (rate - memo), None


class PointwiseETDRK2(FieldScheme):
    """``∂_t u = −k u + N`` with ``e^{−kh}`` exact per cell (no diffusion); ``N`` = reaction
    and any taxis. ``phi = (e^z, φ₁(z), φ₂(z))`` at ``z = −k h``."""

    phi: tuple[Any, Any, Any]
    taxis: tuple[Taxis, ...]
    mask: Any = None

    def transport_term(self, u, state, params):
        return TransportTerm(u, 0.0, _taxis_terms(self.taxis, state, params), None, self.mask) if self.taxis else None

    def explicit_rate(self, u, reaction_rate, state, params, spacing, transport=None):
        if not self.taxis:
            return reaction_rate
        if transport is None:
            transport = self.transport_term(u, state, params).apply(spacing)
        return reaction_rate + transport

    def first_stage(self, u, carried, rate, dt):
        e, p1, _ = self.phi
        return e * u + dt * p1 * rate, None, rate

    def second_stage(self, a, carried, memo, rate, dt):
        return a + dt * self.phi[2] * (rate - memo), None

    def speed_request(self, state, params):
        return (_taxis_terms(self.taxis, state, params), self.mask) if self.taxis else None

    def rate_bound(self, state, params, spacing, speeds=None):
        """Outflow-rate bound (1/day) of the explicit taxis (None without)."""
        if not self.taxis:
            return None
        request = self.speed_request(state, params) if speeds is None else None
        return stencils.explicit_rate_bound(spacing, 0.0, 0.0, _face_speeds(request, spacing, speeds))

    @property
    def limits_step(self) -> bool:
        return bool(self.taxis)


class SpectralETDRK2(PointwiseETDRK2):
    """``∂_t u = D∇²u − k u + N`` with ``e^{hL}`` exact in DCT-II space (DST-II of ``u − g``
    with fixed wall values ``wall = (g, k g)``); ``phi`` are arrays over wavenumbers.

    The stages run on coefficients: ``â = E û + h P₁ N̂(u)``, ``û⁺ = â + h P₂ (N̂(a) − N̂(u))``,
    with ``N̂ = DCT(N − k g)``.
    """

    wall: tuple[Any, Any] | None = None

    @property
    def dirichlet(self) -> bool:
        """Whether the field has fixed wall values (DST-II of ``u − g``)."""
        return self.wall is not None

    def spectral_input(self, u):
        """What :meth:`prepare` transforms: ``u`` (``u − g`` with wall values)."""
        return u - self.wall[0] if self.wall else u

    def source(self, rate):
        """What a stage transforms of the explicit rate: ``N`` (``N − k g`` with wall values)."""
        return rate - self.wall[1] if self.wall else rate

    def field(self, u):
        """The field from the inverse transform of its coefficients (``g +`` it with wall values)."""
        return self.wall[0] + u if self.wall else u

    def first_coefficients(self, carried, rate_hat, dt):
        """``â = E û + h P₁ N̂(u)``."""
        e, p1, _ = self.phi
        return e * carried + dt * p1 * rate_hat

    def second_coefficients(self, carried, memo, rate_hat, dt):
        """``û⁺ = â + h P₂ (N̂(a) − N̂(u))``."""
        return carried + dt * self.phi[2] * (rate_hat - memo)

    def prepare(self, u):
        return self._forward(self.spectral_input(u))

    def _forward(self, x):
        return spectral.to_spectral(x, self.dirichlet)

    def _field(self, u_hat):
        return self.field(spectral.from_spectral(u_hat, self.dirichlet))

    def first_stage(self, u, carried, rate, dt):
        rate_hat = self._forward(self.source(rate))
        a_hat = self.first_coefficients(carried, rate_hat, dt)
        return self._field(a_hat), a_hat, rate_hat

    def second_stage(self, a, carried, memo, rate, dt):
        u_hat = self.second_coefficients(carried, memo, self._forward(self.source(rate)), dt)
        return self._field(u_hat), u_hat


class QuasiSteadySolve(eqx.Module):
    """``0 = D∇²c − k c + R`` for ``c``: ``c = DCT⁻¹[DCT(R)/(k − Dλ)]`` (``c = R/k`` without
    diffusion); with a fixed wall value ``g``, ``c = g + w`` and ``w`` solves the same with
    zero wall values and source ``R − k g`` (DST-II).

    One solve serves every quasi-steady field of the same kind (spectral or pointwise, with or
    without wall values): their sources are stacked on a leading axis (order ``names``), so a
    spectral group is one batched forward and one batched inverse transform."""

    names: tuple[str, ...] = eqx.field(static=True)
    inverse: Any  # stacked: (F, *grid) spectral, (F, 1, …) pointwise
    spectral: bool = eqx.field(static=True)
    wall: tuple[Any, Any] | None = None  # stacked (g, k g), (F, 1, …)

    def solve(self, sources, ops=None):
        """The fields from their stacked sources ``(F, *grid)``, stacked the same way. ``ops``: the
        transforms of a decomposed grid (``._decomposition.Slabs``; None: one device)."""
        if not self.spectral:
            return self.inverse * sources
        forward = spectral.to_spectral if ops is None else ops.forward
        inverse = spectral.from_spectral if ops is None else ops.inverse
        if self.wall is None:
            return inverse(self.inverse * forward(sources, False, 1), False, 1)
        g, kg = self.wall
        return g + inverse(self.inverse * forward(sources - kg, True, 1), True, 1)


def _quasi_steady_solves(names, solves, ndim, batched=False) -> tuple[QuasiSteadySolve, ...]:
    """``solves``: name → ``(inverse, spectral, wall)``; one solve per field, its operators stacked on a
    leading axis of one (a batched transform over fields of one kind measured slower on XLA:CPU;
    ``benchmarks/README.md``). ``batched``: one solve per kind (spectral or not, with wall values or
    not), as a decomposed grid takes them: one transpose each way for all its fields."""

    def stack(value):
        value = jnp.asarray(value)
        return (value.reshape((1,) * ndim) if value.ndim == 0 else value)[None]

    groups = {}
    for name in names:
        inverse, is_spectral, wall = solves[name]
        key = (is_spectral, wall is None) if batched else name
        groups.setdefault(key, []).append((name, stack(inverse), is_spectral, wall))
    out = []
    for members in groups.values():
        is_spectral = members[0][2]
        inverse = jnp.concatenate([m[1] for m in members]) if len(members) > 1 else members[0][1]
        wall = None
        if members[0][3] is not None:
            wall = tuple(jnp.concatenate([stack(m[3][i]) for m in members]) for i in range(2))
        out.append(QuasiSteadySolve(tuple(m[0] for m in members), inverse, is_spectral, wall))
    return tuple(out)


def domain_mask(system: System, params, dtype):
    """The System's domain as a cell array in ``dtype`` (None: the whole box)."""
    if system.domain is None:
        return None
    return jnp.asarray(evaluate(system.domain, params), dtype)


def _refuse_maps_in_transforms(system: System, name: str, coefficients: dict) -> None:
    """Refuse (at trace time, before any compute) a coefficient of a field solved by a DCT that varies in
    space: the transform diagonalises ``D∇² − k`` for one ``D`` and ``k`` over the whole box, so a map
    there would be multiplied into the eigenvalues and give a wrong answer without an error."""
    for what, value in coefficients.items():
        if is_zero(value) or jnp.ndim(value) == 0:
            continue
        if name in system.quasi_steady:
            how = "quasi-steady, solved by a DCT over the whole box"
            fix = f"give {name!r} a time derivative (not quasi-steady) with methods={{{name!r}: 'local'}}"
        else:
            source = (
                "its method" if name in dict(system.method_items) else "the default for a field with decay and no taxis"
            )
            how = f"advanced spectrally (methods={{{name!r}: 'exponential'}}, {source}: a DCT over the whole box)"
            fix = f"advance it with methods={{{name!r}: 'local'}} (finite volumes take a cell-array {what})"
        raise ValueError(
            f"System.{what}[{name!r}]: its function of params returned an array of shape {tuple(jnp.shape(value))}, "
            f"varying in space, but {name!r} is {how}, which needs one {what} for the whole box; {fix}"
        )


def _check_map_shape(where: str, value, grid: Grid) -> None:
    """A cell-array coefficient must have the grid's shape (a number broadcasts)."""
    if not isinstance(value, StateDependent) and jnp.ndim(value) > 0 and tuple(jnp.shape(value)) != tuple(grid.shape):
        raise ValueError(f"{where}: a cell array of shape {tuple(jnp.shape(value))}; the grid's shape is {grid.shape}")


def plan(
    system: System, grid: Grid, params, dt, dtype, cell_diffusion: CellDiffusion, slabs=None
) -> tuple[dict[str, FieldScheme], tuple[QuasiSteadySolve, ...], SplitDiffusion | None]:
    """Each time-dependent field's scheme, each quasi-steady field's solve and, with
    :class:`ImplicitDiffusion`, the split-off diffusion of the cell fields (None without), with operators
    (``φ``-functions of ``dt L``, inverse symbols, wall values, ``τD/Δx²``) computed once for ``dt``.
    The scheme of a field whose diffusion is split off is its :class:`LocalSSPRK2` without diffusion.
    ``slabs``: the decomposition of the grid over devices (``._decomposition.Slabs``; None: one device),
    whose symbols are laid out as its spectral coefficients and whose quasi-steady solves are batched."""
    split = cell_diffusion.split_fields(system)
    mask = domain_mask(system, params, dtype)
    symbols = {}  # the Laplacian's eigenvalues, by "has fixed wall values"

    def value(coefficients, name):
        return evaluate(coefficients.get(name, 0.0), params, dtype=dtype)

    def generator(name, wall):
        d, k = value(system.diffusion, name), value(system.decay, name)
        _refuse_maps_in_transforms(system, name, {"diffusion": d, "decay": k} if not is_zero(d) else {})
        if is_zero(system.diffusion.get(name, 0.0)):
            return jnp.asarray(-jnp.asarray(k, dtype), dtype), False
        dirichlet = wall is not None
        if dirichlet not in symbols and slabs is not None:
            symbols[dirichlet] = slabs.laplacian_symbol(grid.spacing, dirichlet, dtype)
        elif dirichlet not in symbols:
            symbols[dirichlet] = jnp.asarray(
                spectral.laplacian_symbol(grid.shape, grid.spacing, dirichlet=dirichlet), dtype
            )
        return jnp.asarray(d * symbols[dirichlet] - k, dtype), True

    walls = {}
    for name in system.dirichlet:
        g = jnp.asarray(value(system.dirichlet, name), dtype)
        walls[name] = (g, jnp.asarray(value(system.decay, name), dtype) * g)
    solves = {}
    for name in system.quasi_steady:
        lin, is_spectral = generator(name, walls.get(name))
        solves[name] = (1.0 / (-lin), is_spectral, walls.get(name) if is_spectral else None)
    solves = _quasi_steady_solves(system.quasi_steady, solves, grid.ndim, batched=slabs is not None)
    schemes, split_coefficients = {}, {}
    for name in system.dynamic_fields:
        taxis = system.taxis_on(name)
        if name in system.scalars:
            # uncast: a float64 ODE variable keeps its decay in float64
            schemes[name] = ScalarETDRK2.build(name, evaluate(system.decay.get(name, 0.0), params), dt)
        elif system.method(name) == "local":
            diffusion = system.diffusion.get(name, 0.0)
            d = diffusion if isinstance(diffusion, StateDependent) else value(system.diffusion, name)
            _check_map_shape(f"System.diffusion[{name!r}]", d, grid)
            wall = walls[name][0] if name in walls else None
            if name in split:
                split_coefficients[name] = d
                d = 0.0
            schemes[name] = LocalSSPRK2(name, d, value(system.decay, name), taxis, wall, mask)
        else:
            lin, is_spectral = generator(name, walls.get(name))
            phi = phi_functions(dt * lin)
            if is_spectral:
                schemes[name] = SpectralETDRK2(name, phi, taxis, wall=walls.get(name))  # no mask: refused by System
            else:
                schemes[name] = PointwiseETDRK2(name, phi, taxis, mask)
    diffusion = None
    if split_coefficients:
        diffusion = SplitDiffusion.build(split_coefficients, grid.spacing, dt, dtype, mask, slabs)
    return schemes, solves, diffusion
