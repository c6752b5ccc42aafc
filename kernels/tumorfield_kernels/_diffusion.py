r"""Implicit, positivity-preserving, conservative diffusion of cell fields (MPRK22 with LOD splitting).

The diffusion ``∂_t u = ∇·(D ∇u)`` of a local (cell) field is taken out of its explicit step and
advanced on its own by a half step before and after it (Strang splitting, :class:`SplitStep`).
One half step of length ``τ = Δt/2`` is locally one-dimensional: the 1D operators of the axes one
after the other (``x, y[, z]`` before the explicit step, reversed after it, so the whole step
``X Y E Y X`` is a symmetric composition, second order; Strang, SIAM J. Numer. Anal. 5, 1968).

Along one axis the finite-volume operator of :func:`._stencils.transport` is the matrix ``A`` with
``(A u)_i = (w_{i+½}(u_{i+1} − u_i) − w_{i−½}(u_i − u_{i−1}))/τ``, ``w_{i+½} = τ D_{i+½}/Δx²`` on
interior faces and ``w = 0`` on the walls (zero flux). Its columns sum to zero (every flux leaves one
cell and enters its neighbour). Each axis is advanced by the modified Patankar–Runge–Kutta scheme
MPRK22 (Burchard, Deleersnijder & Meister, Appl. Numer. Math. 47, 2003; Kopecz & Meister, BIT 58,
2018), which for this linear production–destruction system reads

.. math::
    (I − τA)\,u^{(1)} = u^n,\qquad (I − \tfrac{τ}{2} A\,\mathrm{diag}(s))\,u^{n+1} = u^n,
    \quad s_j = 1 + u^n_j / u^{(1)}_j .

Both matrices are tridiagonal M-matrices whose columns sum to one, so every stage is non-negative
for non-negative data (unconditionally: any ``τ``), the total is conserved, and the Gaussian
elimination of the solve never subtracts (non-negative results in floating point too: empty tissue
gets tiny non-negative values, never negative round-off). MPRK22 is second order in time; by
Bolley & Crouzeix (RAIRO Anal. Numér. 12, 1978) no *linear* unconditionally positive scheme is
better than first order, which is why the stage-2 matrix depends on the solution (through ``s``).

A state-dependent ``D`` (:class:`._system.StateDependent`, face value: mean of the two cells) makes
the system nonlinear, ``p_ij(u) = a_ij(u) u_j``; MPRK22 then evaluates ``D`` at the start of each
axis's step and at its first stage, and its second stage is
``u⁺ = u + τ/2 [A(uⁿ) diag(uⁿ/u⁽¹⁾) + A(u⁽¹⁾)] u⁺`` (still an M-matrix with unit column sums).
Freezing ``D`` over the half step instead was measured first order in time (observed order 1.12 on
the manufactured solution of ``tests/test_verification.py``): the state after the explicit step
lacks the last half step of diffusion, so ``D`` there is ``O(Δt)`` off ``D(t_{n+1})``.

Each solve is the Thomas algorithm (:func:`_thomas`, two ``lax.scan``\ s along the axis, batched
over the other axes); it is differentiable.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from ._system import StateDependent


def _face_mean(d, axis):
    n = d.shape[axis]
    return 0.5 * (lax.slice_in_dim(d, 1, n, axis=axis) + lax.slice_in_dim(d, 0, n - 1, axis=axis))


def _pad_faces(w, axis):
    """Interior-face weights ``(n − 1)`` → ``(below, above)`` per cell ``(n)``, zero at the walls."""
    lo = [(0, 0)] * w.ndim
    hi = [(0, 0)] * w.ndim
    lo[axis] = (1, 0)
    hi[axis] = (0, 1)
    return jnp.pad(w, lo), jnp.pad(w, hi)


_UNROLL = 4  # 1, 4, 8 and 32 measured within 10 % of each other at 512² (4 fastest)


def _thomas(lower, diag, upper, rhs):
    """Solve tridiagonal systems along axis 0 (``lower[0] = upper[−1] = 0``) by the Thomas algorithm.

    For these M-matrices (``lower, upper ≤ 0 < diag``, diagonally dominant) the forward sweep
    ``d'_i = (d_i − l_i d'_{i−1})/m_i`` and the back substitution ``x_i = d'_i − c'_i x_{i+1}``
    only add non-negative terms, so non-negative data give non-negative solutions in floating
    point; the pivots ``m_i = b_i − l_i c'_{i−1}`` stay ≥ 1 (unit column sums). Written as two
    ``lax.scan``s rather than ``lax.linalg.tridiagonal_solve``: XLA:CPU's LAPACK ``gtsv`` call
    deadlocked (0 % CPU, all threads waiting) inside the compiled rollout from 256² on jax 0.10.2.
    """
    zero = jnp.zeros_like(rhs[0])

    def forward(carry, row):
        c_prev, d_prev = carry
        a, b, c, d = row
        pivot = b - a * c_prev
        out = (c / pivot, (d - a * d_prev) / pivot)
        return out, out

    _, (c_prime, d_prime) = lax.scan(forward, (zero, zero), (lower, diag, upper, rhs), unroll=_UNROLL)

    def backward(x_next, row):
        c, d = row
        x = d - c * x_next
        return x, x

    _, x = lax.scan(backward, zero, (c_prime, d_prime), reverse=True, unroll=_UNROLL)
    return x


def _solve(lower, diag, upper, rhs, axis):
    """Solve the tridiagonal systems along ``axis`` of ``rhs`` (batched over the other axes)."""
    move = (lambda x: x) if axis == 0 else (lambda x: jnp.moveaxis(x, axis, 0))
    x = _thomas(move(lower), move(diag), move(upper), move(rhs))
    return x if axis == 0 else jnp.moveaxis(x, 0, axis)


def _ratio(numerator, denominator):
    """``u^n / u^(1)`` where ``u^(1)`` is not negligible, 1 elsewhere (``0/0`` in empty tissue).

    Any ``s ≥ 0`` keeps the stage conservative and non-negative; 1 is the smooth limit. The
    threshold ``√tiny`` keeps the derivative ``−u^n/u^(1)²`` finite in float32.
    """
    dtype = denominator.dtype
    safe = denominator > jnp.sqrt(jnp.finfo(dtype).tiny).astype(dtype)
    return jnp.where(safe, numerator / jnp.where(safe, denominator, jnp.ones((), dtype)), jnp.ones((), dtype))


def _broadcast_weight(w, u, axis):
    if jnp.ndim(w) == 0:
        shape = [1] * u.ndim
        shape[axis] = u.shape[axis] - 1
        w = jnp.broadcast_to(jnp.asarray(w, u.dtype), shape)
    below, above = _pad_faces(w, axis)  # w_{i−½}, w_{i+½}; 0 at the walls
    return jnp.broadcast_to(below, u.shape), jnp.broadcast_to(above, u.shape)


def _neighbours(x, axis):
    """``(x_{i−1}, x_{i+1})`` per cell (0 past the walls, where the face weight is 0 anyway)."""
    n = x.shape[axis]
    return (
        _pad_faces(lax.slice_in_dim(x, 0, n - 1, axis=axis), axis)[0],
        _pad_faces(lax.slice_in_dim(x, 1, n, axis=axis), axis)[1],
    )


def mprk22_axis(u, face_weight, axis, stage_weight=None):
    """One MPRK22 step of ``u_t = ∂_x(D ∂_x u)`` along ``axis``.

    ``face_weight = τ D_{i+½}/Δx²`` on the ``n − 1`` interior faces (a scalar for constant ``D``),
    with ``D`` at ``u``; ``stage_weight(u1)`` the same with ``D`` at the first stage ``u⁽¹⁾`` (None:
    ``D`` does not depend on the state). Stage 2 is ``u⁺ = u + τ/2 [A(u) diag(u/u⁽¹⁾) + A(u⁽¹⁾)] u⁺``,
    MPRK22's ``(p(uⁿ) + p(u⁽¹⁾)) u⁺_j/u⁽¹⁾_j`` for the production ``p_ij(u) = a_ij(u) u_j``.
    """
    one = jnp.ones((), u.dtype)
    below, above = _broadcast_weight(face_weight, u, axis)
    # stage 1: backward Euler, (I − τA(u)) u1 = u
    u1 = _solve(-below, one + below + above, -above, u, axis)
    ratio = _ratio(u, u1)
    if stage_weight is None:
        below1, above1 = below, above
    else:
        below1, above1 = _broadcast_weight(stage_weight(u1), u, axis)
    r_prev, r_next = _neighbours(ratio, axis)
    lower = -0.5 * (below * r_prev + below1)
    upper = -0.5 * (above * r_next + above1)
    diag = one + 0.5 * ((below + above) * ratio + below1 + above1)
    return _solve(lower, diag, upper, u, axis)


class ImplicitDiffusion(eqx.Module):
    """The diffusion ``∇·(D∇u)`` of one cell field (``D`` in mm²/day: a number, or
    :class:`StateDependent`), advanced by MPRK22 axis by axis (module docstring).

    ``weights`` are the precomputed ``τ D/Δx²`` per axis for a constant ``D`` and ``τ = Δt/2``
    (None for a state-dependent ``D``, whose face weights are built at each half step).
    """

    name: str = eqx.field(static=True)
    diffusion: Any
    spacing: tuple[float, ...] = eqx.field(static=True)
    weights: tuple[Any, ...] | None

    @classmethod
    def build(cls, name, diffusion, spacing, dt, dtype):
        if isinstance(diffusion, StateDependent):
            return cls(name, diffusion, tuple(spacing), None)
        tau = 0.5 * jnp.asarray(dt, dtype)
        return cls(
            name, diffusion, tuple(spacing), tuple(tau * jnp.asarray(diffusion, dtype) / dx**2 for dx in spacing)
        )

    def explicit_limit_rate(self, state, params):
        """``Σ_axes 2 max D/Δx²`` (1/day): the rate bound an explicit diffusion would add."""
        d = self.diffusion.fn(state, params) if isinstance(self.diffusion, StateDependent) else self.diffusion
        d = jnp.max(d) if jnp.ndim(d) else d
        return sum(2.0 * d / dx**2 for dx in self.spacing)

    def _face_weights(self, state, params, dt, axis, u):
        """``τ D_{i+½}/Δx²`` along ``axis`` with ``D`` evaluated at ``state`` whose field is ``u``."""
        if self.weights is not None:
            return self.weights[axis]
        d = self.diffusion.fn({**state, self.name: u}, params)
        d = jnp.broadcast_to(jnp.asarray(d, u.dtype), u.shape)
        return 0.5 * dt.astype(u.dtype) * _face_mean(d, axis) / self.spacing[axis] ** 2

    def half_step(self, state, params, dt, reverse: bool):
        """``u`` after a half step ``Δt/2`` of its diffusion: axes in order, or reversed. A
        state-dependent ``D`` is evaluated at the start and at the first stage of each axis's step
        (the other fields as in ``state``)."""
        u = state[self.name]
        axes = range(u.ndim)
        for axis in reversed(axes) if reverse else axes:
            if self.weights is not None:
                u = mprk22_axis(u, self.weights[axis], axis)
            else:
                weights = functools.partial(self._face_weights, state, params, dt, axis)
                u = mprk22_axis(u, weights(u), axis, weights)
        return u
