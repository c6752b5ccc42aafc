"""A whitened Gaussian random-field prior for a spatially varying parameter map (in log space).

The map ``m`` (one value per cell, e.g. ``log D(x) − log D₀``) is written in whitened unknowns
``z ~ N(0, I)`` (``n_cells`` entries) as

.. math::  m = σ_p\\, S z,\\qquad S = C^{1/2} = c\\,(I − ℓ^2 Δ)^{-1},\\qquad C ∝ (I − ℓ^2 Δ)^{-2},

with ``Δ`` the zero-flux finite-volume Laplacian of the grid: the bi-Laplacian prior of
Bui-Thanh, Ghattas, Martin & Stadler (SIAM J. Sci. Comput. 35, A2494, 2013) and hIPPYlib
(Villa, Petra & Ghattas, ACM TOMS 47(2), 16, 2021), a Matérn field of smoothness
``ν = 2 − d/2`` (Lindgren, Rue & Lindström, JRSS-B 73, 2011). ``S`` is diagonal in the
orthonormal DCT-II basis ``D`` that diagonalises ``Δ`` (eigenvalues ``−λ_k ≤ 0``):
``S = Dᵀ diag(s) D`` with the symbol ``s_k = c / (1 + ℓ² λ_k)``, so ``S`` is symmetric and
``S Sᵀ = Dᵀ diag(s²) D``. As the rows of ``D`` are orthonormal, the grid mean of the pointwise
variance ``diag(S Sᵀ)_i = Σ_k s_k² D_{ki}²`` is ``Σ_k s_k² / N``; ``c = (N / Σ_k (1 + ℓ²λ_k)^{-2})^{1/2}``
makes it 1 exactly, so the pointwise variance of ``m`` averages ``σ_p²`` over the grid (larger
than average next to the zero-flux walls, where the field is reflected onto itself).

``ℓ`` (``correlation_length``, mm) is the length in the operator. The continuum correlation at
distance ``ℓ`` is ``2^{1−ν}/Γ(ν) K_ν(1)``: ``2/e = 0.736`` in 1D (ν = 3/2), ``K_1(1) = 0.602``
in 2D (ν = 1), ``1/e = 0.368`` in 3D (ν = 1/2); Lindgren et al.'s "practical range" (correlation
≈ 0.13) is ``√(8ν) ℓ``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import from_spectral, laplacian_symbol, to_spectral


def _positive(name, value):
    """``value`` as a float, refused (``ValueError`` naming it and the rule) unless finite and > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
    return number


def prior_symbol(grid_shape, spacing, correlation_length):
    """The DCT-II symbol ``s_k = c/(1 + ℓ² λ_k)`` of ``S`` (float64, grid shape), ``Σ_k s_k² = N``.

    ``λ_k ≥ 0``: the eigenvalues of ``−Δ`` (zero-flux walls, :func:`tumorfield_kernels.laplacian_symbol`).
    """
    eig = -laplacian_symbol(tuple(grid_shape), tuple(spacing), np.float64)
    symbol = 1.0 / (1.0 + correlation_length**2 * eig)
    return symbol * np.sqrt(symbol.size / np.sum(symbol**2))


def dct_basis(n):
    """The orthonormal DCT-II matrix ``D[k, i] = w_k cos(πk(2i+1)/(2n))`` (row k: basis vector k), float64."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    weights = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return weights * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


class MapPrior(eqx.Module):
    """``m = prior_sd · S z`` with ``z ~ N(0, I)``: a whitened bi-Laplacian (Matérn) prior on a grid.

    ``symbol``: the DCT-II symbol of ``S`` (grid shape, :func:`prior_symbol`); ``prior_sd``: ``σ_p``,
    the root-mean-square over the grid of the pointwise prior sd of ``m``. Build with :meth:`build`.
    """

    symbol: jax.Array
    prior_sd: float
    shape: tuple[int, ...] = eqx.field(static=True)

    @classmethod
    def build(cls, grid_shape, spacing, prior_sd, correlation_length, dtype=None):
        """The prior of a grid of ``grid_shape`` cells of ``spacing`` (mm per axis).

        ``prior_sd`` (> 0, units of ``m``) and ``correlation_length`` (``ℓ`` > 0, mm) are refused
        with a ``ValueError`` otherwise. ``dtype``: of ``symbol`` (default: JAX's default float).
        """
        prior_sd = _positive("prior_sd", prior_sd)
        length = _positive("correlation_length", correlation_length)
        shape = tuple(int(n) for n in grid_shape)
        if not shape or min(shape) < 1 or len(tuple(spacing)) != len(shape):
            raise ValueError(f"grid_shape must have ≥ 1 axis of ≥ 1 cell and one spacing per axis (got {grid_shape!r})")
        spacing = tuple(_positive("spacing", dx) for dx in spacing)
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        return cls(jnp.asarray(prior_symbol(shape, spacing, length), dtype), prior_sd, shape)

    @property
    def size(self):
        """``N``, the number of cells (and of whitened unknowns)."""
        return math.prod(self.shape)

    def sqrt_apply(self, z):
        """``S z`` (unit-average variance, no ``prior_sd``) for ``z`` of grid shape or flat; same shape back."""
        z = jnp.asarray(z)
        grid = jnp.reshape(z, self.shape)
        out = from_spectral(self.symbol.astype(z.dtype) * to_spectral(grid))
        return jnp.reshape(out, z.shape)

    def __call__(self, z):
        """``m = prior_sd · S z`` for ``z`` of grid shape or flat (``N``); ``m`` has the shape of ``z``."""
        z = jnp.asarray(z)
        return jnp.asarray(self.prior_sd, z.dtype) * self.sqrt_apply(z)

    def whiten(self, m):
        """``z`` with ``m = prior_sd · S z`` (``S`` is invertible: its symbol is positive); the shape of ``m``."""
        m = jnp.asarray(m)
        grid = jnp.reshape(m, self.shape) / jnp.asarray(self.prior_sd, m.dtype)
        return jnp.reshape(from_spectral(to_spectral(grid) / self.symbol.astype(m.dtype)), m.shape)

    def pointwise_variance(self):
        """The exact prior variance of each cell of ``m``: ``σ_p² diag(S Sᵀ)`` (grid shape).

        ``diag(S Sᵀ)_i = Σ_k s_k² Π_a D_a[k_a, i_a]²``: ``s²`` contracted along each axis ``a`` with
        the squared 1D DCT-II matrix (:func:`dct_basis`), ``O(N Σ_a n_a)`` work, no dense ``N × N``.
        """
        out = self.symbol**2
        for axis, n in enumerate(self.shape):
            squares = jnp.asarray(dct_basis(n) ** 2, out.dtype)
            out = jnp.moveaxis(jnp.tensordot(out, squares, axes=([axis], [0])), -1, axis)
        return jnp.asarray(self.prior_sd**2, out.dtype) * out

    def pointwise_sd(self):
        """The exact prior sd of each cell of ``m`` (grid shape): the square root of :meth:`pointwise_variance`."""
        return jnp.sqrt(self.pointwise_variance())

    def sample(self, key, n):
        """``n`` draws of ``m`` (``(n, *shape)``), from ``z ~ N(0, I)`` in the dtype of ``symbol``."""
        z = jax.random.normal(key, (int(n), *self.shape), self.symbol.dtype)
        return jax.vmap(self)(z)
