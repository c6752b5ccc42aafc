"""Finite-volume stencils on cell-centred grids: the local (explicit) operators.

Zero-flux (homogeneous Neumann) boundaries: the flux through every boundary face
is exactly zero, so totals are conserved to round-off. The local Laplacian is
the standard second-order stencil ``(Δ_h u)_i = Σ_axes (u_{i+1} − 2u_i + u_{i−1}) / Δx²``
with ghost cells equal to the edge cell; the DCT-II diagonalises exactly this
matrix (:mod:`._spectral`), so the spectral and local operators are the same
discretisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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


def _edges(a, axis):
    """The first and the last slab of cells along ``axis`` (those next to the two walls)."""
    n = a.shape[axis]
    return lax.slice_in_dim(a, 0, 1, axis=axis), lax.slice_in_dim(a, n - 1, n, axis=axis)


def _divergence_of_interior_flux(flux, axis, dx, walls=None):
    """``(F_{i+1/2} − F_{i−1/2}) / Δx``; zero flux on both boundary faces, or ``walls = (F_lo, F_hi)``."""
    if walls is None:
        pad = [(0, 0)] * flux.ndim
        pad[axis] = (1, 1)
        padded = jnp.pad(flux, pad)
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
    denominator = jnp.abs(a) + jnp.abs(b)
    positive = denominator > 0
    safe = jnp.where(positive, denominator, 1)
    return jnp.where(positive, factor, 0) * ((b / safe) ** 2 * da + (a / safe) ** 2 * db)


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
    d = _face_difference(u, axis)
    if open_faces is not None:
        d = d * open_faces
    pad_lo = [(0, 0)] * u.ndim
    pad_hi = [(0, 0)] * u.ndim
    pad_lo[axis] = (1, 0)
    pad_hi[axis] = (0, 1)
    return van_leer(jnp.pad(d, pad_lo), jnp.pad(d, pad_hi))


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
    on its cells and ghost layers."""
    flux = None
    if not _is_zero(diffusivity):
        flux = face_diffusivity(diffusivity, axis) * _face_difference(u, axis) / dx
    for chi, attractant in taxis_terms:
        velocity = taxis_face_velocity(attractant, chi, axis, dx)
        advective = velocity * upwind_face_value(u, velocity, axis, open_faces)
        flux = -advective if flux is None else flux - advective
    if flux is not None and open_faces is not None:
        flux = flux * open_faces
    return flux


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
