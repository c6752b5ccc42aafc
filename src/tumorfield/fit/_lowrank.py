"""Matrix-free low-rank Laplace posterior for whitened map unknowns.

With the prior ``m = σ_p S z``, ``z ~ N(0, I)`` (:mod:`._prior`), and ``H̃`` the prior-preconditioned
Gauss–Newton Hessian of the data misfit in the whitened unknowns (``H̃ = σ_p² Sᵀ J_mᵀ J_m S`` for
dimensionless residuals), the Laplace approximation of the posterior is ``z ~ N(ẑ, (I + H̃)^{-1})``.
Given the dominant eigenpairs ``H̃ v_i = λ_i v_i`` (``Vᵀ V = I``), the Sherman–Morrison–Woodbury
identity gives

.. math::  (I + H̃)^{-1} ≈ I − V\\,\\mathrm{diag}\\big(λ_i/(1+λ_i)\\big)\\,Vᵀ,

exact when the omitted ``λ_i`` are 0, and optimal among rank-``r`` negative updates of ``I``
(Spantini et al., SIAM J. Sci. Comput. 37, A2451, 2015). The eigenpairs come from
:func:`randomized_eigh`, which needs only Hessian–vector products: Bui-Thanh, Ghattas, Martin &
Stadler (SIAM J. Sci. Comput. 35, A2494, 2013); Isaac, Petra, Stadler & Ghattas (J. Comput.
Phys. 296, 348, 2015); hIPPYlib's ``doublePassG`` (Villa, Petra & Ghattas, ACM TOMS 47(2), 16, 2021).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def randomized_eigh(matvec, n, rank, *, key, oversample=10, power_iterations=1, dtype=None):
    """Top-``rank`` eigenpairs of a symmetric positive semi-definite ``H`` given only as ``matvec(v) = H v``.

    Halko, Martinsson & Tropp (SIAM Rev. 53, 217, 2011), Algs. 4.4 and 5.3 (hIPPYlib's double
    pass): with ``ℓ = min(rank + oversample, n)`` and ``Ω`` an ``n × ℓ`` Gaussian block,

    .. math::  Q = \\mathrm{orth}(H^{q+1} Ω)\\ \\text{(re-orthonormalised after every product)},\\quad
               B = Qᵀ (H Q) = W Λ Wᵀ,\\quad U = Q W,

    ``q = power_iterations``; the Ritz pairs ``(Λ, U)`` are returned, largest first: eigenvalues
    ``(rank,)`` and orthonormal eigenvectors ``(n, rank)``. ``q + 2`` block products (``matvec``
    vmapped over ``ℓ`` columns), memory ``O(n ℓ)``, never a dense ``n × n`` matrix. The error of
    ``λ_j`` shrinks like ``(λ_{ℓ+1}/λ_j)^{2q+1}`` (Halko et al. §10.4; Saad 2011, Thm. 5.2).
    ``dtype``: of ``Ω`` (default: JAX's default float); ``matvec`` must keep it.
    """
    n, rank = int(n), int(rank)
    if not 1 <= rank <= n:
        raise ValueError(f"rank must satisfy 1 ≤ rank ≤ n = {n} (got {rank})")
    if int(oversample) < 0 or int(power_iterations) < 0:
        raise ValueError(f"oversample and power_iterations must be ≥ 0 (got {oversample}, {power_iterations})")
    width = min(rank + int(oversample), n)
    block = jax.vmap(matvec, in_axes=1, out_axes=1)
    omega = jax.random.normal(key, (n, width), jnp.zeros((), dtype).dtype)
    q, _ = jnp.linalg.qr(block(omega))
    for _ in range(int(power_iterations)):
        q, _ = jnp.linalg.qr(block(q))
    small = q.T @ block(q)
    values, vectors = jnp.linalg.eigh(0.5 * (small + small.T))
    order = jnp.arange(width - 1, width - 1 - rank, -1)
    return values[order], q @ vectors[:, order]


class LowRankPosterior(eqx.Module):
    """``N(ẑ, (I + H̃)^{-1})`` with ``(I + H̃)^{-1} = I − V diag(λ/(1+λ)) Vᵀ`` in the whitened unknowns.

    ``eigenvalues``: ``λ_i`` of ``H̃`` (``(r,)``; negatives, round-off of a PSD operator, count as 0);
    ``eigenvectors``: ``V`` (``(n, r)``, orthonormal columns). The mean ``ẑ`` is not stored.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array

    @classmethod
    def from_hessian(cls, matvec, n, rank, *, key, oversample=10, power_iterations=1, dtype=None):
        """From ``matvec(v) = H̃ v`` by :func:`randomized_eigh` (same arguments)."""
        values, vectors = randomized_eigh(
            matvec, n, rank, key=key, oversample=oversample, power_iterations=power_iterations, dtype=dtype
        )
        return cls(values, vectors)

    def _shrink(self):
        """``λ/(1+λ)`` with ``λ ≥ 0``: the weights of the negative update of ``I``."""
        values = jnp.maximum(self.eigenvalues, 0)
        return values / (1 + values)

    @property
    def log_det(self):
        """``log det(I + H̃) = Σ_i log(1 + λ_i)``: the Laplace evidence's Occam term, and the information gain."""
        return jnp.sum(jnp.log1p(jnp.maximum(self.eigenvalues, 0)))

    def covariance_apply(self, v):
        """``(I + H̃)^{-1} v = v − V (λ/(1+λ) ⊙ Vᵀ v)`` for an ``n``-vector ``v``."""
        return v - self.eigenvectors @ (self._shrink() * (self.eigenvectors.T @ v))

    def precision_apply(self, v):
        """``(I + H̃) v = v + V (λ ⊙ Vᵀ v)`` with the retained eigenpairs."""
        return v + self.eigenvectors @ (jnp.maximum(self.eigenvalues, 0) * (self.eigenvectors.T @ v))

    def covariance_sqrt_apply(self, xi):
        """``T ξ = ξ + V (((1+λ)^{-1/2} − 1) ⊙ Vᵀ ξ)``, with ``T Tᵀ = (I + H̃)^{-1}`` (``T`` symmetric)."""
        factor = jax.lax.rsqrt(1 + jnp.maximum(self.eigenvalues, 0)) - 1
        return xi + self.eigenvectors @ (factor * (self.eigenvectors.T @ xi))

    def covariance_diag_of(self, apply_sqrt, prior_variance):
        """The pointwise posterior variance of ``m = A z`` for the linear ``A = apply_sqrt`` (e.g. ``σ_p S``).

        .. math::  \\mathrm{diag}\\big(A (I + H̃)^{-1} Aᵀ\\big) = \\mathrm{diag}(A Aᵀ) − Σ_i \\frac{λ_i}{1+λ_i} (A v_i)^2

        ``apply_sqrt`` maps an ``n``-vector to ``m`` (any shape; vmapped over the ``r`` columns of
        ``V``); ``prior_variance``: ``diag(A Aᵀ)`` in that shape, e.g. ``MapPrior.pointwise_variance()``
        with ``apply_sqrt`` the :class:`~._prior.MapPrior` itself on flat ``z``.
        """
        images = jax.vmap(apply_sqrt, in_axes=1)(self.eigenvectors)  # (r, *m.shape)
        reduction = jnp.tensordot(self._shrink(), images**2, axes=1)
        return prior_variance - reduction

    def sample(self, key, n, mean_z=None):
        """``n`` draws of ``z ~ N(mean_z, (I + H̃)^{-1})`` (``(n, dim)``): ``z = mean_z + T ξ``, ``ξ ~ N(0, I)``.

        ``mean_z``: the MAP point ``ẑ`` (default 0). Map each row with the prior (``σ_p S z``) for ``m``.
        """
        dim = self.eigenvectors.shape[0]
        xi = jax.random.normal(key, (int(n), dim), self.eigenvectors.dtype)
        draws = jax.vmap(self.covariance_sqrt_apply)(xi)
        return draws if mean_z is None else draws + jnp.reshape(jnp.asarray(mean_z, draws.dtype), (1, dim))
