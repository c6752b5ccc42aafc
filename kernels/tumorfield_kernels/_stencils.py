"""Finite-volume stencils on cell-centred grids: the local (explicit) operators.

Zero-flux (homogeneous Neumann) boundaries: the flux through every boundary face
is exactly zero, so totals are conserved to round-off. The local Laplacian is
the standard second-order stencil ``(Δ_h u)_i = Σ_axes (u_{i+1} − 2u_i + u_{i−1}) / Δx²``
with ghost cells equal to the edge cell; the DCT-II diagonalises exactly this
matrix (:mod:`._spectral`), so the spectral and local operators are the same
discretisation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


def _face_pair(a, axis):
    """``(a[i], a[i+1])`` on the ``n − 1`` interior faces of ``axis``."""
    n = a.shape[axis]
    return lax.slice_in_dim(a, 0, n - 1, axis=axis), lax.slice_in_dim(a, 1, n, axis=axis)


def _face_difference(u, axis):
    """``u[i+1] − u[i]`` on the ``n − 1`` interior faces of ``axis``."""
    lo, hi = _face_pair(u, axis)
    return hi - lo


def face_open(mask, axis):
    """``m_i m_{i+1}`` on the interior faces of ``axis``: 1 where both cells are inside the domain
    (``mask`` 1 inside, 0 outside), else 0. Fluxes are multiplied by it, so values outside must be finite."""
    lo, hi = _face_pair(mask, axis)
    return lo * hi


def _pad(x, axis, low, high):
    """``x`` with ``low`` and ``high`` zero layers added along ``axis``."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (low, high)
    return jnp.pad(x, pad)


def _edges(a, axis):
    """The first and the last slab of cells along ``axis`` (those next to the two walls)."""
    n = a.shape[axis]
    return lax.slice_in_dim(a, 0, 1, axis=axis), lax.slice_in_dim(a, n - 1, n, axis=axis)


def _divergence_of_interior_flux(flux, axis, dx, walls=None):
    """``(F_{i+1/2} − F_{i−1/2}) / Δx``; zero flux on both boundary faces, or ``walls = (F_lo, F_hi)``."""
    if walls is None:
        padded = _pad(flux, axis, 1, 1)
    else:
        padded = jnp.concatenate([walls[0], flux, walls[1]], axis=axis)
    n = padded.shape[axis]
    return (lax.slice_in_dim(padded, 1, n, axis=axis) - lax.slice_in_dim(padded, 0, n - 1, axis=axis)) / dx


def laplacian(u, spacing):
    """Zero-flux finite-volume Laplacian ``∇²u`` (units of u / mm²)."""
    return sum(
        _divergence_of_interior_flux(_face_difference(u, axis) / dx, axis, dx) for axis, dx in enumerate(spacing)
    )


@jax.custom_jvp
def van_leer(a, b):
    """Van Leer's limiter ``φ(a, b) = (a|b| + |a|b) / (|a| + |b|)``: ``2ab/(a+b)`` where ``ab > 0``, else 0.

    The derivative is computed from bounded ratios (:func:`_van_leer_jvp`), not by
    differentiating the quotient: JAX's rule for ``x/y`` multiplies by ``y⁻²``, which
    overflows (float32: ``y < 1e-19``) where neighbouring values differ by little,
    as everywhere in a tumour's tail, and gave ``0·∞ = NaN`` gradients.
    """
    numerator = a * jnp.abs(b) + jnp.abs(a) * b
    denominator = jnp.abs(a) + jnp.abs(b)
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), 0)


@van_leer.defjvp
def _van_leer_jvp(primals, tangents):
    """``dφ = (1 + sgn a sgn b)[(b/(|a|+|b|))² da + (a/(|a|+|b|))² db]``.

    For ``ab > 0`` this is ``∂φ/∂a = 2b²/(a+b)²``, ``∂φ/∂b = 2a²/(a+b)²``; for ``ab < 0``
    it is 0; where one difference is 0 it is the mean of the one-sided derivatives (what
    differentiating the quotient gives in exact arithmetic). The ratios lie in [0, 1], so
    nothing overflows in any precision; ``|a| + |b| = 0`` (or flushed to 0) gives 0.
    """
    a, b = primals
    da, db = tangents
    return van_leer(a, b), _squared_ratio_jvp(a, b, da, db, 1 + jnp.sign(a) * jnp.sign(b))


def _squared_ratio_jvp(a, b, da, db, factor):
    """``factor · [(b/(|a|+|b|))² da + (a/(|a|+|b|))² db]``, 0 where ``|a| + |b| = 0``.

    The double ``where`` keeps the unused branch's quotient finite, so its derivative is never NaN.
    """
    w_a, w_b = _ratio_weights(a, b, factor)
    return w_a * da + w_b * db


@jax.custom_jvp
def harmonic_mean(a, b):
    """``2ab/(a + b)`` of non-negative ``a, b`` (0 where either is 0, no ``0/0``).

    For ``a, b ≥ 0`` this is exactly :func:`van_leer`'s value. It never exceeds ``max(a, b)``
    (it is at most the arithmetic mean).
    """
    return van_leer(a, b)


@harmonic_mean.defjvp
def _harmonic_mean_jvp(primals, tangents):
    """``∂/∂a = 2b²/(a+b)²``, ``∂/∂b = 2a²/(a+b)²`` from ratios in [0, 1] (finite in float32).

    Where one argument is 0 this is the one-sided derivative from the admissible side (a
    coefficient ``≥ 0``): ``∂/∂a = 2`` at ``a = 0 < b``. Where both are 0 it is 0.
    """
    a, b = primals
    da, db = tangents
    return harmonic_mean(a, b), _squared_ratio_jvp(a, b, da, db, 2.0)


def harmonic_face_mean(a, axis):
    """``a_{i+½} = 2 a_i a_{i+1}/(a_i + a_{i+1})`` on the interior faces of ``axis`` (``a ≥ 0``).

    The conductance of two half cells in series: the flux ``a_{i+½}(u_{i+1} − u_i)/Δx`` is the
    one that is continuous across the face, and it is 0 where either cell has ``a = 0``.
    """
    lo, hi = _face_pair(a, axis)
    return harmonic_mean(hi, lo)


def _van_leer_slope(u, axis, open_faces=None):
    """Van Leer limited slope ``2ab/(a+b)`` (0 where a, b differ in sign), see :func:`van_leer`.

    ``a``, ``b`` are the backward and forward differences, with zero-gradient
    ghost cells at the walls and across closed faces (``open_faces``, :func:`face_open`),
    so cells outside a masked domain never enter a slope inside it. Since
    ``|slope| ≤ 2 min(|a|, |b|)``, face values ``u_i ± slope/2`` lie between
    neighbouring cell values: non-negative data give non-negative face values
    (van Leer, J. Comput. Phys. 14, 1974).
    """
    return van_leer(*_slope_differences(u, axis, open_faces))


def _slope_differences(u, axis, open_faces=None):
    """``(δu_{i−½}, δu_{i+½})`` per cell, closed faces and walls contributing 0 (:func:`_van_leer_slope`)."""
    d = _face_difference(u, axis)
    if open_faces is not None:
        d = d * open_faces
    return _pad(d, axis, 1, 0), _pad(d, axis, 0, 1)


def _face_average(a, axis):
    lo, hi = _face_pair(a, axis)
    return 0.5 * (hi + lo)


def taxis_face_velocity(attractant, chi, axis, dx):
    """Taxis velocity ``χ ∂c/∂x`` on the interior faces of ``axis`` (mm/day)."""
    if jnp.ndim(chi) > 0:
        chi = _face_average(chi, axis)
    return chi * _face_difference(attractant, axis) / dx


def upwind_face_value(u, velocity, axis, open_faces=None):
    """MUSCL upwind face value of ``u`` on interior faces for the given velocity (``open_faces``:
    slopes see closed faces as walls, :func:`_van_leer_slope`)."""
    n = u.shape[axis]
    slope = _van_leer_slope(u, axis, open_faces)
    left = lax.slice_in_dim(u + 0.5 * slope, 0, n - 1, axis=axis)
    right = lax.slice_in_dim(u - 0.5 * slope, 1, n, axis=axis)
    return jnp.where(velocity > 0, left, right)


def face_diffusivity(diffusivity, axis):
    """``D`` on the interior faces of ``axis``: a number as it is, a cell array by its
    :func:`harmonic_face_mean` (never above the larger cell value)."""
    return harmonic_face_mean(diffusivity, axis) if jnp.ndim(diffusivity) > 0 else diffusivity


def _dirichlet_wall_fluxes(u, axis, dx, diffusivity, wall_value):
    """Diffusive fluxes through the two walls for ``u = g`` there (ghost cell ``2g − u_edge``); a cell-array
    ``D`` has the edge cell's value on its wall face (the half cell between its centre and the wall)."""
    lo, hi = _edges(u, axis)
    d_lo, d_hi = _edges(diffusivity, axis) if jnp.ndim(diffusivity) > 0 else (diffusivity, diffusivity)
    return 2.0 * d_lo * (lo - wall_value) / dx, 2.0 * d_hi * (wall_value - hi) / dx


def axis_flux(u, axis, dx, diffusivity, taxis_terms, open_faces=None):
    """The transport flux ``D ∂u/∂x − Σ χ u ∂c/∂x`` on the interior faces of ``axis`` (None where
    there is no transport along it), closed faces (``open_faces``, :func:`face_open`) carrying none.
    :func:`transport` without its walls; a slab of a decomposed grid (``._decomposition``) takes it
    on its cells and ghost layers. Differentiated by hand (:class:`FluxLayout`): reverse mode by
    :func:`_flux_cotangents`, forward mode by JAX's own rules."""
    if _is_zero(diffusivity) and not taxis_terms:
        return None
    diffusion = None if _is_zero(diffusivity) else ("field" if jnp.ndim(diffusivity) > 0 else "scalar")
    chis = tuple(jnp.asarray(chi) for chi, _ in taxis_terms)
    layout = FluxLayout(axis, float(dx), diffusion, tuple("field" if c.ndim > 0 else "scalar" for c in chis),
                        open_faces is not None)  # fmt: skip
    arrays = (jnp.asarray(u), *(() if diffusion is None else (jnp.asarray(diffusivity),)), *chis,
              *(jnp.asarray(c) for _, c in taxis_terms), *(() if open_faces is None else (open_faces,)))  # fmt: skip
    return _flux(layout, *arrays)


class FluxLayout(NamedTuple):
    """What :func:`axis_flux` computes, apart from its arrays ``(u, [D], χ_1…χ_k, c_1…c_k, [open])``:
    the axis and ``Δx``, whether ``D`` is absent, a number or a cell field, the same for each ``χ``,
    and whether faces are masked; ``batch``: leading axes of independent problems (``vmap``).

    Its derivative is a primitive linear in the tangents (``_flux_tangent``), whose transpose is
    written out (:func:`_flux_cotangents`): JAX's own transpose of the limited upwind flux, fused
    by XLA:CPU into loops that recompute the limiter at every offset, made a voloshin2015 step's
    backward pass 6.1 forward steps at 64² against 1.9 with this one (medians; ``docs/numerics.md`` §8)."""

    axis: int
    dx: float
    diffusion: str | None
    chi: tuple[str, ...]
    masked: bool
    batch: int = 0

    def split(self, arrays):
        """``(u, D or None, chis, attractants, open or None)`` of the flat ``arrays``."""
        u, rest = arrays[0], list(arrays[1:])
        d = rest.pop(0) if self.diffusion is not None else None
        k = len(self.chi)
        chis, attractants, rest = rest[:k], rest[k : 2 * k], rest[2 * k :]
        return u, d, chis, attractants, (rest[0] if self.masked else None)


def _flux_value(layout: FluxLayout, *arrays):
    """The flux of :func:`axis_flux` (one problem: ``layout.batch == 0``)."""
    u, d, chis, attractants, open_faces = layout.split(arrays)
    axis, dx = layout.axis, layout.dx
    flux = None if d is None else face_diffusivity(d, axis) * _face_difference(u, axis) / dx
    for chi, attractant in zip(chis, attractants, strict=True):
        velocity = taxis_face_velocity(attractant, chi, axis, dx)
        advective = velocity * upwind_face_value(u, velocity, axis, open_faces)
        flux = -advective if flux is None else flux - advective
    return flux if open_faces is None else flux * open_faces


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _flux(layout: FluxLayout, *arrays):
    return _flux_value(layout, *arrays)


@_flux.defjvp
def _flux_jvp(layout, arrays, tangents):
    return _flux_value(layout, *arrays), _flux_tangent_p.bind(*arrays, *tangents, layout=layout)


def _ratio_weights(a, b, factor):
    """``(∂/∂a, ∂/∂b)`` of :func:`van_leer` (``factor = 1 + sgn a sgn b``) or :func:`harmonic_mean`
    (``factor = 2``): the derivatives of their JVP rules (:func:`_squared_ratio_jvp`), from bounded ratios."""
    denominator = jnp.abs(a) + jnp.abs(b)
    positive = denominator > 0
    safe = jnp.where(positive, denominator, 1)
    factor = jnp.where(positive, factor, 0)
    return factor * (b / safe) ** 2, factor * (a / safe) ** 2


def _sum_to(x, like):
    """``x`` summed to the shape of the number ``like`` (the cotangent of a broadcast coefficient)."""
    return jnp.sum(x).reshape(jnp.shape(like)).astype(like.dtype)


def _flux_cotangents(layout: FluxLayout, arrays, ct):
    """The cotangents of ``arrays`` for the cotangent ``ct`` of the flux (one problem).

    With ``F = open · F₀``, ``F₀ = D_f δu/Δx − Σ v ũ``, ``v = χ_f δc/Δx`` and the MUSCL face value
    ``ũ = u_L + s_L/2`` (``v > 0``) or ``u_R − s_R/2``, ``s = φ(δu_{i−½}, δu_{i+½})`` (van Leer on the
    masked differences): every term is a face array shifted at most one cell, so each cotangent is a
    few face arrays added back onto cells (``_pad``) — no limiter recomputed per offset."""
    u, d, chis, attractants, open_faces = layout.split(arrays)
    axis, dx = layout.axis, layout.dx
    n = u.shape[axis]
    du = _face_difference(u, axis)
    g = ct if open_faces is None else ct * open_faces
    flux = jnp.zeros_like(du)  # F₀, for the cotangent of the mask
    g_du = jnp.zeros_like(du)
    g_u = jnp.zeros_like(u)
    g_d = None
    if d is not None:
        g_face = g * du / dx
        if layout.diffusion == "field":
            lo, hi = _face_pair(d, axis)
            d_face = harmonic_mean(hi, lo)
            d_hi, d_lo = _ratio_weights(hi, lo, 2.0)
            g_d = (_pad(g_face * d_lo, axis, 0, 1) + _pad(g_face * d_hi, axis, 1, 0)).astype(d.dtype)
        else:
            d_face = d
            g_d = _sum_to(g_face, d)
        g_du = g_du + g * d_face / dx
        flux = flux + d_face * du / dx
    below, above = _slope_differences(u, axis, open_faces)
    w_below, w_above = _ratio_weights(below, above, 1 + jnp.sign(below) * jnp.sign(above))
    slope = van_leer(below, above)
    left = lax.slice_in_dim(u + 0.5 * slope, 0, n - 1, axis=axis)
    right = lax.slice_in_dim(u - 0.5 * slope, 1, n, axis=axis)
    g_chis, g_attractants, g_masked_du = [], [], jnp.zeros_like(du)
    for kind, chi, attractant in zip(layout.chi, chis, attractants, strict=True):
        chi_face = _face_average(chi, axis) if kind == "field" else chi
        dc = _face_difference(attractant, axis)
        velocity = chi_face * dc / dx
        forward = velocity > 0
        face_value = jnp.where(forward, left, right)
        flux = flux - velocity * face_value
        g_velocity = -g * face_value
        g_value = -g * velocity
        g_left = _pad(jnp.where(forward, g_value, 0), axis, 0, 1)
        g_right = _pad(jnp.where(forward, 0, g_value), axis, 1, 0)
        g_u = g_u + g_left + g_right
        g_slope = 0.5 * (g_left - g_right)
        g_below = lax.slice_in_dim(g_slope * w_below, 1, n, axis=axis)  # face i+½ is cell i+1's lower difference
        g_masked_du = g_masked_du + g_below + lax.slice_in_dim(g_slope * w_above, 0, n - 1, axis=axis)
        g_dc = g_velocity * chi_face / dx
        g_attractants.append((_pad(g_dc, axis, 1, 0) - _pad(g_dc, axis, 0, 1)).astype(attractant.dtype))
        g_chi_face = g_velocity * dc / dx
        if kind == "field":
            g_chis.append((0.5 * (_pad(g_chi_face, axis, 0, 1) + _pad(g_chi_face, axis, 1, 0))).astype(chi.dtype))
        else:
            g_chis.append(_sum_to(g_chi_face, chi))
    g_open = None
    if open_faces is not None:
        g_open = ct * flux + g_masked_du * du
        g_masked_du = g_masked_du * open_faces
    g_du = g_du + g_masked_du
    g_u = (g_u + _pad(g_du, axis, 1, 0) - _pad(g_du, axis, 0, 1)).astype(u.dtype)
    out = [g_u, *(() if g_d is None else (g_d,)), *g_chis, *g_attractants]
    return out + ([] if g_open is None else [g_open.astype(open_faces.dtype)])


def _batched(fn, batch: int):
    """``fn`` mapped over ``batch`` leading axes of every argument."""
    for _ in range(batch):
        fn = jax.vmap(fn)
    return fn


def _flux_tangent(*args, layout: FluxLayout):
    """The flux's tangent at ``arrays`` along ``tangents`` (``args = arrays + tangents``)."""
    half = len(args) // 2
    unbatched = layout._replace(batch=0)

    def tangent(*args):
        return jax.jvp(functools.partial(_flux_value, unbatched), args[:half], args[half:])[1]

    return _batched(tangent, layout.batch)(*args)


def _flux_tangent_transpose(ct, *args, layout: FluxLayout):
    half = len(args) // 2
    arrays = args[:half]
    if any(ad.is_undefined_primal(x) for x in arrays):
        raise ValueError("the flux's tangent is linear in its tangents only")
    unbatched = layout._replace(batch=0)
    cts = _batched(lambda ct, *arrays: _flux_cotangents(unbatched, arrays, ct), layout.batch)(
        ad.instantiate_zeros(ct), *arrays
    )
    return [None] * half + [c if ad.is_undefined_primal(t) else None for c, t in zip(cts, args[half:], strict=True)]


def _flux_tangent_batched(args, dims, *, layout: FluxLayout):
    size = next(x.shape[d] for x, d in zip(args, dims, strict=True) if d is not None)
    moved = [
        jnp.broadcast_to(x, (size, *jnp.shape(x))) if d is None else jnp.moveaxis(x, d, 0)
        for x, d in zip(args, dims, strict=True)
    ]
    return _flux_tangent_p.bind(*moved, layout=layout._replace(batch=layout.batch + 1)), 0


def _flux_tangent_jvp(primals, tangents, *, layout: FluxLayout):
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return jax.jvp(functools.partial(_flux_tangent, layout=layout), primals, tangents)


_flux_tangent_p = Primitive("tumorfield_flux_tangent")
_flux_tangent_p.def_impl(_flux_tangent)


def _flux_tangent_shape(*args, layout: FluxLayout):
    shape = jax.eval_shape(functools.partial(_flux_tangent, layout=layout), *args)
    return ShapedArray(shape.shape, shape.dtype)


_flux_tangent_p.def_abstract_eval(_flux_tangent_shape)
mlir.register_lowering(_flux_tangent_p, mlir.lower_fun(_flux_tangent, multiple_results=False))
ad.primitive_transposes[_flux_tangent_p] = _flux_tangent_transpose
ad.primitive_jvps[_flux_tangent_p] = _flux_tangent_jvp
batching.primitive_batchers[_flux_tangent_p] = _flux_tangent_batched


def wall_fluxes(u, axis, dx, diffusivity, wall_value, mask=None):
    """The fluxes through the two walls of ``axis``: the fixed-value ones (:func:`transport`) where
    ``wall_value`` is given and ``u`` diffuses, else None (zero flux)."""
    if wall_value is None or _is_zero(diffusivity):
        return None
    walls = _dirichlet_wall_fluxes(u, axis, dx, diffusivity, wall_value)
    if mask is not None:
        walls = tuple(w * m.astype(u.dtype) for w, m in zip(walls, _edges(mask, axis), strict=True))
    return walls


def transport(u, spacing, diffusivity, taxis_terms, wall_value=None, mask=None):
    """Local conservative transport ``∇·(D∇u − Σ χ u ∇c)``.

    ``diffusivity`` (mm²/day, ``≥ 0``) is a scalar or a cell array (face value: the harmonic
    mean of the two cells, :func:`harmonic_face_mean`). ``taxis_terms`` is a sequence of
    ``(chi, attractant)``; ``chi`` (mm²/day per unit attractant) is a scalar or a cell array
    (face value: arithmetic mean). Advective face fluxes are limited upwind (second order where
    smooth, positivity-preserving under :func:`explicit_rate_bound`). Walls are zero-flux, except
    that with ``wall_value = g`` diffusion sees the fixed value ``u = g`` on every wall (a ghost
    cell ``2g − u_edge``; advection stays zero-flux). ``mask`` (a cell array, 1 inside the domain,
    0 outside; None: the whole box): every face with a cell outside carries no flux, diffusive or
    advective (:func:`face_open`), and so does a wall face of a cell outside; cells outside get
    rate 0. ``mask=None`` is bit-identical to the unmasked operator.
    """
    total = jnp.zeros_like(u)
    for axis, dx in enumerate(spacing):
        open_faces = None if mask is None else face_open(mask, axis).astype(u.dtype)
        flux = axis_flux(u, axis, dx, diffusivity, taxis_terms, open_faces)
        if flux is not None:
            walls = wall_fluxes(u, axis, dx, diffusivity, wall_value, mask)
            total = total + _divergence_of_interior_flux(flux, axis, dx, walls)
    return total


def max_face_speed(taxis_terms, spacing, mask=None):
    """Per-axis ``max |χ ∂c/∂x|`` summed over taxis terms (mm/day), per axis; with ``mask``
    over the open faces only (closed faces carry no flux, :func:`transport`)."""
    speeds = []
    for axis, dx in enumerate(spacing):
        speed = 0.0
        for chi, attractant in taxis_terms:
            velocity = jnp.abs(taxis_face_velocity(attractant, chi, axis, dx))
            if mask is not None:
                velocity = velocity * face_open(mask, axis).astype(velocity.dtype)
            speed = speed + jnp.max(velocity)
        speeds.append(speed)
    return speeds


def explicit_rate_bound(spacing, diffusivity, decay, face_speeds, dirichlet=False):
    """Largest outflow rate (1/day) of a forward-Euler step of the local scheme.

    A cell loses at most ``u_i · Δt · (Σ_axes [2D/Δx² + 2 v_max/Δx] + k)`` in
    one step, so ``Δt · bound ≤ 1`` keeps the forward-Euler stage, and hence
    the SSP-RK2 (Heun) step, non-negative (Shu & Osher, JCP 77, 1988). With a
    fixed wall value ``g ≥ 0`` a wall cell loses up to ``2D u/Δx²`` through
    the wall face, so the diffusive part becomes ``3D/Δx²`` per axis.

    For a cell-array ``D`` the caller passes ``max D``: a harmonic face mean never exceeds the
    larger of its two cells, so no face exceeds it. A mask only closes faces: the bound stays valid.
    """
    rate = decay
    diffusive = (3.0 if dirichlet else 2.0) * diffusivity
    for dx, speed in zip(spacing, face_speeds, strict=True):
        rate = rate + diffusive / dx**2 + 2.0 * speed / dx
    return rate


def _is_zero(x):
    return isinstance(x, (int, float)) and x == 0
