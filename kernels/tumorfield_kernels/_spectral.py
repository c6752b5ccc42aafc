"""DCT-II-diagonalised operators on cell-centred grids with zero-flux (or fixed-value) walls.

A type-II DCT diagonalises the zero-flux finite-volume Laplacian of
:mod:`._stencils`, with eigenvalues ``−(4/Δx²) sin²(πk/(2n))`` per axis
(Strang, SIAM Rev. 41, 1999); the DST-II does the same for fixed wall values.
Transforms are Makhoul's algorithm on one n-dimensional real FFT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


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


def _reorder(x, inverse=False, batch=0):
    """``x`` reordered along every axis after the ``batch`` leading ones (one gather: 1.2–1.8×
    faster before an FFT than slicing axis by axis)."""
    orders = [_makhoul_order(n) for n in x.shape[batch:]]
    if inverse:
        orders = [np.argsort(order) for order in orders]
    return x[(slice(None),) * batch + np.ix_(*orders)]


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


def _dctn(x, batch=0):
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
    spectrum = jnp.fft.rfftn(_reorder(x, batch=batch), axes=tuple(range(batch, d)))
    half = spectrum.shape[-1]
    s = a = spectrum * _along(np.exp(-1j * np.pi * np.arange(half) / (2 * n)), d, d - 1, complex_dtype)
    for axis in range(d - 2, batch - 1, -1):
        w = _along(0.5 * np.exp(-1j * np.pi * np.arange(shape[axis]) / (2 * shape[axis])), d, axis, complex_dtype)
        partner_axes = range(batch, axis + 1)
        s = w * (s + jnp.conj(_negate_frequencies(s, partner_axes)))
        a = w * (a - jnp.conj(_negate_frequencies(a, partner_axes)))
    low = jnp.real(s)  # k = 0 … ⌊n/2⌋
    high = -lax.rev(jnp.imag(a[..., 1 : (n + 1) // 2]), (d - 1,))  # n − k for k = ⌊(n−1)/2⌋ … 1
    out = jnp.concatenate([low, high], axis=-1)
    return (out * _batched_weights(shape, batch, x.dtype)).astype(x.dtype)


def _idctn(c, batch=0):
    """Inverse of :func:`_dctn` (orthonormal n-dimensional DCT-III) by one inverse real FFT.

    Per axis ``V(k) = e^{iπk/2n} (X_k − i X_{n−k})`` with ``X_n = 0``; over
    several axes the factors ``(1 − i R_a)`` (``R_a``: ``k → n − k`` on axis
    ``a``) multiply, so ``V = Π_a e^{iπk_a/2n_a} (1 − i R_a) X`` and
    ``v = irfftn(V)``, then every axis is un-reordered.
    """
    d, shape = c.ndim, c.shape
    n, complex_dtype = shape[-1], _complex_dtype(c.dtype)
    half = n // 2 + 1
    x = c * _batched_weights(shape, batch, c.dtype, inverse=True)
    v = lax.complex(x[..., :half], -_partner(x, d - 1, wrap=False)[..., :half])
    twiddle = _along(np.exp(1j * np.pi * np.arange(half) / (2 * n)), d, d - 1, complex_dtype)
    for axis in range(batch, d - 1):
        m = shape[axis]
        partner = _partner(v, axis, wrap=False)
        v = v + lax.complex(jnp.imag(partner), -jnp.real(partner))  # v − i·partner
        twiddle = twiddle * _along(np.exp(1j * np.pi * np.arange(m) / (2 * m)), d, axis, complex_dtype)
    spatial = tuple(range(batch, d))
    return _reorder(jnp.fft.irfftn(v * twiddle, s=shape[batch:], axes=spatial), True, batch).astype(c.dtype)


def _batched_weights(shape, batch, dtype, inverse=False):
    """:func:`_ortho_weights` of the spatial axes, with length-1 batch axes (no implicit rank promotion)."""
    return jnp.asarray(_ortho_weights(shape[batch:], inverse).reshape((1,) * batch + shape[batch:]), dtype)


def _signed(u, batch):
    return u * _alternating_sign(u.shape[batch:], u.dtype).reshape((1,) * batch + u.shape[batch:])


def _forward_impl(u, *, dirichlet, batch):
    return _dctn(_signed(u, batch) if dirichlet else u, batch)


def _inverse_impl(u_hat, *, dirichlet, batch):
    u = _idctn(u_hat, batch)
    return _signed(u, batch) if dirichlet else u


_forward_p = Primitive("tumorfield_dct")
_inverse_p = Primitive("tumorfield_idct")


def _define(primitive, impl, transpose):
    """A linear transform as a primitive: its tangent is itself, its transpose ``transpose`` (the
    orthonormal DCT's adjoint is its inverse), and under ``vmap`` the mapped axis is one more batch
    axis. JAX's own transpose of Makhoul's algorithm (a scatter-add for the gather, 7.7× the gather's
    time at 512² on CPU; complex copies) made a voloshin2015 step's backward pass ~10 % slower at 64²
    (measured by an A/B since removed: ``benchmarks/README.md``)."""
    primitive.def_impl(jax.jit(impl, static_argnames=("dirichlet", "batch")))  # eager calls: one compile
    primitive.def_abstract_eval(lambda x, **_: ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(primitive, mlir.lower_fun(impl, multiple_results=False))
    ad.deflinear2(primitive, lambda ct, x, **params: [transpose.bind(ad.instantiate_zeros(ct), **params)])

    def batched(args, dims, *, dirichlet, batch):
        (x,), (dim,) = args, dims
        out = primitive.bind(jnp.moveaxis(x, dim, 0), dirichlet=dirichlet, batch=batch + 1)
        return out, 0

    batching.primitive_batchers[primitive] = batched


_define(_forward_p, _forward_impl, _inverse_p)
_define(_inverse_p, _inverse_impl, _forward_p)


def to_spectral(u, dirichlet=False, batch=0):
    """Orthonormal DCT-II (zero-flux walls); with ``dirichlet=True`` the DST-II up to index order.

    Computed with one n-dimensional real FFT (:func:`_dctn`), equal to
    ``jax.scipy.fft.dctn(u, type=2, norm="ortho")`` to round-off. ``batch``: the number of leading
    axes that stack independent fields (one batched FFT call for all of them). A primitive whose
    transpose (reverse mode) is :func:`from_spectral`: the transform is orthogonal.
    """
    return _forward_p.bind(jnp.asarray(u), dirichlet=bool(dirichlet), batch=int(batch))


def from_spectral(u_hat, dirichlet=False, batch=0):
    """Inverse of :func:`to_spectral` with the same ``dirichlet`` and ``batch`` (and its transpose)."""
    return _inverse_p.bind(jnp.asarray(u_hat), dirichlet=bool(dirichlet), batch=int(batch))
