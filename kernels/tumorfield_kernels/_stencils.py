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


def _face_difference(u, axis):
    """``u[i+1] − u[i]`` on the ``n − 1`` interior faces of ``axis``."""
    n = u.shape[axis]
    return lax.slice_in_dim(u, 1, n, axis=axis) - lax.slice_in_dim(u, 0, n - 1, axis=axis)


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
    denominator = jnp.abs(a) + jnp.abs(b)
    positive = denominator > 0
    safe = jnp.where(positive, denominator, 1)
    same_sign = jnp.where(positive, 1 + jnp.sign(a) * jnp.sign(b), 0)
    return van_leer(a, b), same_sign * ((b / safe) ** 2 * da + (a / safe) ** 2 * db)


def _van_leer_slope(u, axis):
    """Van Leer limited slope ``2ab/(a+b)`` (0 where a, b differ in sign), see :func:`van_leer`.

    ``a``, ``b`` are the backward and forward differences, with zero-gradient
    ghost cells. Since ``|slope| ≤ 2 min(|a|, |b|)``, face values
    ``u_i ± slope/2`` lie between neighbouring cell values: non-negative data
    give non-negative face values (van Leer, J. Comput. Phys. 14, 1974).
    """
    d = _face_difference(u, axis)
    pad_lo = [(0, 0)] * u.ndim
    pad_hi = [(0, 0)] * u.ndim
    pad_lo[axis] = (1, 0)
    pad_hi[axis] = (0, 1)
    return van_leer(jnp.pad(d, pad_lo), jnp.pad(d, pad_hi))


def _face_average(a, axis):
    n = a.shape[axis]
    return 0.5 * (lax.slice_in_dim(a, 1, n, axis=axis) + lax.slice_in_dim(a, 0, n - 1, axis=axis))


def taxis_face_velocity(attractant, chi, axis, dx):
    """Taxis velocity ``χ ∂c/∂x`` on the interior faces of ``axis`` (mm/day)."""
    if jnp.ndim(chi) > 0:
        chi = _face_average(chi, axis)
    return chi * _face_difference(attractant, axis) / dx


def upwind_face_value(u, velocity, axis):
    """MUSCL upwind face value of ``u`` on interior faces for the given velocity."""
    n = u.shape[axis]
    slope = _van_leer_slope(u, axis)
    left = lax.slice_in_dim(u + 0.5 * slope, 0, n - 1, axis=axis)
    right = lax.slice_in_dim(u - 0.5 * slope, 1, n, axis=axis)
    return jnp.where(velocity > 0, left, right)


def _dirichlet_wall_fluxes(u, axis, dx, diffusivity, wall_value):
    """Diffusive fluxes through the two walls for ``u = g`` there (ghost cell ``2g − u_edge``)."""
    n = u.shape[axis]
    lo = lax.slice_in_dim(u, 0, 1, axis=axis)
    hi = lax.slice_in_dim(u, n - 1, n, axis=axis)
    return 2.0 * diffusivity * (lo - wall_value) / dx, 2.0 * diffusivity * (wall_value - hi) / dx


def transport(u, spacing, diffusivity, taxis_terms, wall_value=None):
    """Local conservative transport ``∇·(D∇u − Σ χ u ∇c)``.

    ``diffusivity`` (mm²/day) is a scalar or a cell array (face value: mean of
    the two cells). ``taxis_terms`` is a sequence of ``(chi, attractant)``; ``chi`` (mm²/day per
    unit attractant) is a scalar or a cell array. Advective face fluxes are
    limited upwind (second order where smooth, positivity-preserving under
    :func:`explicit_rate_bound`). Walls are zero-flux, except that with
    ``wall_value = g`` diffusion sees the fixed value ``u = g`` on every wall
    (a ghost cell ``2g − u_edge``; advection stays zero-flux).
    """
    total = jnp.zeros_like(u)
    for axis, dx in enumerate(spacing):
        flux = None
        if not _is_zero(diffusivity):
            face_d = _face_average(diffusivity, axis) if jnp.ndim(diffusivity) > 0 else diffusivity
            flux = face_d * _face_difference(u, axis) / dx
        for chi, attractant in taxis_terms:
            velocity = taxis_face_velocity(attractant, chi, axis, dx)
            advective = velocity * upwind_face_value(u, velocity, axis)
            flux = -advective if flux is None else flux - advective
        walls = None
        if wall_value is not None and not _is_zero(diffusivity):
            walls = _dirichlet_wall_fluxes(u, axis, dx, diffusivity, wall_value)
        if flux is not None:
            total = total + _divergence_of_interior_flux(flux, axis, dx, walls)
    return total


def max_face_speed(taxis_terms, spacing):
    """Per-axis ``max |χ ∂c/∂x|`` summed over taxis terms (mm/day), per axis."""
    speeds = []
    for axis, dx in enumerate(spacing):
        speed = 0.0
        for chi, attractant in taxis_terms:
            speed = speed + jnp.max(jnp.abs(taxis_face_velocity(attractant, chi, axis, dx)))
        speeds.append(speed)
    return speeds


def explicit_rate_bound(spacing, diffusivity, decay, face_speeds, dirichlet=False):
    """Largest outflow rate (1/day) of a forward-Euler step of the local scheme.

    A cell loses at most ``u_i · Δt · (Σ_axes [2D/Δx² + 2 v_max/Δx] + k)`` in
    one step, so ``Δt · bound ≤ 1`` keeps the forward-Euler stage, and hence
    the SSP-RK2 (Heun) step, non-negative (Shu & Osher, JCP 77, 1988). With a
    fixed wall value ``g ≥ 0`` a wall cell loses up to ``2D u/Δx²`` through
    the wall face, so the diffusive part becomes ``3D/Δx²`` per axis.
    """
    rate = decay
    diffusive = (3.0 if dirichlet else 2.0) * diffusivity
    for dx, speed in zip(spacing, face_speeds, strict=True):
        rate = rate + diffusive / dx**2 + 2.0 * speed / dx
    return rate


def _is_zero(x):
    return isinstance(x, (int, float)) and x == 0
