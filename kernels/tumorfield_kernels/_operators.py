"""Finite-volume stencils and DCT-diagonalised operators on cell-centred grids.

All operators use zero-flux (homogeneous Neumann) boundaries: the flux through
every boundary face is exactly zero, so totals are conserved to round-off.

The local Laplacian is the standard second-order finite-volume stencil
``(Δ_h u)_i = Σ_axes (u_{i+1} − 2u_i + u_{i−1}) / Δx²`` with ghost cells equal
to the edge cell. A type-II DCT diagonalises exactly this matrix, with
eigenvalues ``−(4/Δx²) sin²(πk/(2n))`` per axis (Strang, SIAM Rev. 41, 1999), so
the spectral and local operators are the same discretisation.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
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


def _van_leer_slope(u, axis):
    """Van Leer limited slope ``2ab/(a+b)`` (0 where a, b differ in sign).

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
    backward = jnp.pad(d, pad_lo)
    forward = jnp.pad(d, pad_hi)
    numerator = backward * jnp.abs(forward) + jnp.abs(backward) * forward
    denominator = jnp.abs(backward) + jnp.abs(forward)
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), 0)


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


# --- spectral (DCT-II) operators ---------------------------------------------


def laplacian_symbol(shape, spacing, dtype=np.float64, dirichlet=False):
    """Eigenvalues of the zero-flux Laplacian in DCT-II space (1/mm²).

    With ``dirichlet=True``: of the Laplacian with ghost cells ``−u_edge``
    (value 0 on the walls) in the space of :func:`to_spectral` with
    ``dirichlet=True``. That matrix is diagonalised by the DST-II, with
    eigenvalues ``−(4/Δx²) sin²(π(k+1)/(2n))``; as ``DST-II(u)[k] =
    DCT-II((−1)^i u)[n−1−k]``, coefficient ``j`` of the DCT of the
    sign-alternated input has eigenvalue ``−(4/Δx²) cos²(πj/(2n))``.
    """
    symbol = np.zeros(shape, dtype=np.float64)
    for axis, (n, dx) in enumerate(zip(shape, spacing, strict=True)):
        k = np.arange(n)
        wave = np.cos if dirichlet else np.sin
        eig = -(4.0 / dx**2) * wave(np.pi * k / (2 * n)) ** 2
        view = [1] * len(shape)
        view[axis] = n
        symbol = symbol + eig.reshape(view)
    return symbol.astype(dtype)


def _alternating_sign(shape, dtype):
    """``Π_axes (−1)^{i_axis}`` as a constant array."""
    sign = np.ones(shape)
    for axis, n in enumerate(shape):
        view = [1] * len(shape)
        view[axis] = n
        sign = sign * ((-1.0) ** np.arange(n)).reshape(view)
    return jnp.asarray(sign, dtype)


def _ortho_scale(n):
    """Orthonormal DCT-II weights ``√(1/n)`` (k = 0) and ``√(2/n)`` (k > 0)."""
    scale = np.full(n, np.sqrt(2.0 / n))
    scale[0] = np.sqrt(1.0 / n)
    return scale


def _complex_dtype(dtype):
    """complex128 for float64 data, complex64 otherwise (explicit: strict promotion has no float→complex path)."""
    return jnp.dtype(jnp.complex128) if jnp.dtype(dtype) == jnp.float64 else jnp.dtype(jnp.complex64)


def _along(values, ndim, axis, dtype):
    """Constant ``values`` shaped to broadcast along ``axis`` of an ``ndim`` array (no implicit rank promotion)."""
    shape = [1] * ndim
    shape[axis] = -1
    return jnp.asarray(values, dtype).reshape(shape)


def _ortho_weights(shape, inverse=False):
    """Outer product of the per-axis orthonormal DCT-II weights (or their reciprocals)."""
    weights = np.ones((1,) * len(shape))
    for axis, n in enumerate(shape):
        scale = _ortho_scale(n)
        weights = weights * (1.0 / scale if inverse else scale).reshape(
            [-1 if a == axis else 1 for a in range(len(shape))]
        )
    return weights


def _makhoul_order(n):
    """``[0, 2, 4, …, 5, 3, 1]``: Makhoul's reordering of an axis of length ``n`` (even indices, then odd reversed)."""
    return np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)[::-1]])


def _reorder(x, inverse=False):
    """``x`` reordered along every axis (one gather: 1.2–1.8× faster before an FFT than slicing axis by axis)."""
    orders = [_makhoul_order(n) for n in x.shape]
    if inverse:
        orders = [np.argsort(order) for order in orders]
    return x[np.ix_(*orders)]


def _partner(p, axis, *, wrap):
    """``p`` at index ``n − k`` along ``axis``.

    At ``k = 0`` it is ``p[0]`` with ``wrap`` (the index ``−k mod n``) and 0 without (``X_n = 0``).
    """
    n = p.shape[axis]
    head = lax.slice_in_dim(p, 0, 1, axis=axis)
    head = head if wrap else jnp.zeros_like(head)
    return jnp.concatenate([head, lax.rev(lax.slice_in_dim(p, 1, n, axis=axis), (axis,))], axis=axis)


def _negate_frequencies(p, axes):
    """``p`` with ``k → (n − k) mod n`` on each of ``axes`` (the index of a conjugate partner)."""
    for axis in axes:
        p = _partner(p, axis, wrap=True)
    return p


def _dctn(x):
    """Orthonormal n-dimensional DCT-II by one n-dimensional real FFT (Makhoul 1980).

    With ``v`` the input reordered along every axis (:func:`_reorder`)
    and ``w_a(k) = e^{−iπk/2n_a}``, the 1D transform is ``X = Re(w · FFT(v))``
    (J. Makhoul, IEEE Trans. ASSP 28, 27–34, 1980). Along several axes the
    ``Re`` of an inner axis becomes ``(Z(k) + conj Z(−k))/2`` under the FFT of
    the outer ones, with ``−k`` on every axis not yet reduced. Starting from
    ``P = w_last · rfftn(v)`` (``k_last = 0 … n/2``) and folding the leading
    axes from the innermost out, ``S ← w_a (S + conj S(−k))/2`` gives
    ``X[…, k] = Re S`` for the stored half and ``A ← w_a (A − conj A(−k))/2``
    gives ``X[…, n − k] = −Im A`` for the other half (``−Im z = Re(iz)``).
    One gather, one FFT call and elementwise passes, no transposes: a benchmark
    step is 1.1–1.3× faster than with the same algorithm applied axis by axis.
    """
    d, shape = x.ndim, x.shape
    n, complex_dtype = shape[-1], _complex_dtype(x.dtype)
    spectrum = jnp.fft.rfftn(_reorder(x))
    half = spectrum.shape[-1]
    s = a = spectrum * _along(np.exp(-1j * np.pi * np.arange(half) / (2 * n)), d, d - 1, complex_dtype)
    for axis in range(d - 2, -1, -1):
        w = _along(0.5 * np.exp(-1j * np.pi * np.arange(shape[axis]) / (2 * shape[axis])), d, axis, complex_dtype)
        partner_axes = range(axis + 1)
        s = w * (s + jnp.conj(_negate_frequencies(s, partner_axes)))
        a = w * (a - jnp.conj(_negate_frequencies(a, partner_axes)))
    low = jnp.real(s)  # k = 0 … ⌊n/2⌋
    high = -lax.rev(jnp.imag(a[..., 1 : (n + 1) // 2]), (d - 1,))  # n − k for k = ⌊(n−1)/2⌋ … 1
    out = jnp.concatenate([low, high], axis=-1)
    return (out * jnp.asarray(_ortho_weights(shape), x.dtype)).astype(x.dtype)


def _idctn(c):
    """Inverse of :func:`_dctn` (orthonormal n-dimensional DCT-III) by one inverse real FFT.

    Per axis ``V(k) = e^{iπk/2n} (X_k − i X_{n−k})`` with ``X_n = 0``; over
    several axes the factors ``(1 − i R_a)`` (``R_a``: ``k → n − k`` on axis
    ``a``) multiply, so ``V = Π_a e^{iπk_a/2n_a} (1 − i R_a) X`` and
    ``v = irfftn(V)``, then every axis is un-reordered.
    """
    d, shape = c.ndim, c.shape
    n, complex_dtype = shape[-1], _complex_dtype(c.dtype)
    half = n // 2 + 1
    x = c * jnp.asarray(_ortho_weights(shape, inverse=True), c.dtype)
    v = lax.complex(x[..., :half], -_partner(x, d - 1, wrap=False)[..., :half])
    twiddle = _along(np.exp(1j * np.pi * np.arange(half) / (2 * n)), d, d - 1, complex_dtype)
    for axis in range(d - 1):
        m = shape[axis]
        partner = _partner(v, axis, wrap=False)
        v = v + lax.complex(jnp.imag(partner), -jnp.real(partner))  # v − i·partner
        twiddle = twiddle * _along(np.exp(1j * np.pi * np.arange(m) / (2 * m)), d, axis, complex_dtype)
    return _reorder(jnp.fft.irfftn(v * twiddle, s=shape), inverse=True).astype(c.dtype)


def to_spectral(u, dirichlet=False):
    """Orthonormal DCT-II (zero-flux walls); with ``dirichlet=True`` the DST-II up to index order.

    Computed with one n-dimensional real FFT (:func:`_dctn`), equal to
    ``jax.scipy.fft.dctn(u, type=2, norm="ortho")`` to round-off.
    """
    if dirichlet:
        u = u * _alternating_sign(u.shape, u.dtype)
    return _dctn(u)


def from_spectral(u_hat, dirichlet=False):
    """Inverse of :func:`to_spectral` with the same ``dirichlet``."""
    u = _idctn(u_hat)
    if dirichlet:
        u = u * _alternating_sign(u.shape, u.dtype)
    return u


def phi_functions(z):
    """``(e^z, φ₁(z), φ₂(z))`` with ``φ₁ = (e^z − 1)/z``, ``φ₂ = (e^z − 1 − z)/z²``.

    Taylor series near ``z = 0`` avoid cancellation (Kassam & Trefethen, SIAM
    J. Sci. Comput. 26, 2005, discuss the issue); elsewhere ``expm1`` is used.
    """
    z = jnp.asarray(z)
    small = jnp.abs(z) < 0.5
    zs = jnp.where(small, z, 0.0)
    zl = jnp.where(small, 1.0, z)
    # φ₁ = Σ z^j/(j+1)!, φ₂ = Σ z^j/(j+2)!, to j = 16: truncation < 1e-20
    # relative at |z| = 0.5, below float64 round-off (10 terms left 1e-12)
    phi1_series = jnp.zeros_like(zs)
    phi2_series = jnp.zeros_like(zs)
    for j in range(16, -1, -1):
        phi1_series = phi1_series * zs + 1.0 / _factorial(j + 1)
        phi2_series = phi2_series * zs + 1.0 / _factorial(j + 2)
    em1 = jnp.expm1(zl)
    phi1 = jnp.where(small, phi1_series, em1 / zl)
    phi2 = jnp.where(small, phi2_series, (em1 - zl) / zl**2)
    return jnp.exp(z), phi1, phi2


def _factorial(n):
    out = 1.0
    for k in range(2, n + 1):
        out *= k
    return out
