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
for non-negative data (unconditionally: any ``τ``), the total is conserved, and the solve (cyclic
reduction) builds right-hand sides and solutions from non-negative terms only (non-negative results
in floating point too: empty tissue gets tiny non-negative values, never negative round-off).
MPRK22 is second order in time; by Bolley & Crouzeix (RAIRO Anal. Numér. 12, 1978) no *linear*
unconditionally positive scheme is better than first order, which is why the stage-2 matrix
depends on the solution (through ``s``).

A cell-array ``D`` has the face value of :func:`._stencils.transport`, the harmonic mean
``2D_iD_{i+1}/(D_i + D_{i+1}) ≥ 0``; a domain mask (``SplitDiffusion.mask``) multiplies ``w`` by
:func:`._stencils.face_open` (0 on faces with a cell outside). Either only sets face weights to
values ``≥ 0``, so the matrices stay M-matrices with unit column sums: positivity and conservation
hold as above, and a cell outside the mask (all its faces closed) keeps its value exactly.

A state-dependent ``D`` (:class:`._system.StateDependent`, face value: harmonic mean) makes
the system nonlinear, ``p_ij(u) = a_ij(u) u_j``; MPRK22 then evaluates ``D`` at the start of each
axis's step and at its first stage, and its second stage is
``u⁺ = u + τ/2 [A(uⁿ) diag(uⁿ/u⁽¹⁾) + A(u⁽¹⁾)] u⁺`` (still an M-matrix with unit column sums).
Freezing ``D`` over the half step instead was measured first order in time (observed order 1.12 on
the manufactured solution of ``tests/test_core_verification.py``): the state after the explicit step
lacks the last half step of diffusion, so ``D`` there is ``O(Δt)`` off ``D(t_{n+1})``.

Each solve is cyclic reduction (:func:`_reduce`: ``⌈log₂ n⌉`` levels of whole-array passes, batched
over the other axes, on the matrix's face weights). Reverse mode differentiates it implicitly
(``lax.custom_linear_solve``: one solve with the transposed matrix, another M-matrix).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax import lax

from ._stencils import face_diffusivity, face_open
from ._system import StateDependent


def _reduce(lower, diag, upper, rhs):
    """Solve ``l_i x_{i−1} + b_i x_i + u_i x_{i+1} = r_i`` along axis 0 by cyclic reduction.

    ``l, u ≤ 0 < b`` (an M-matrix; ``l_0 = u_{n−1} = 0``), broadcastable against ``rhs`` row by
    row. One level combines each odd row ``i`` with its even neighbours (weights ``α = −l_i/b_{i−1}``,
    ``γ = −u_i/b_{i+1}``, both ≥ 0), which leaves a tridiagonal M-matrix over the odd unknowns
    (Hockney, J. ACM 12, 1965; Buzbee, Golub & Nielson, SIAM J. Numer. Anal. 7, 1970); after it is
    solved, ``x_{2j} = (r_{2j} − l_{2j} x_{2j−1} − u_{2j} x_{2j+1})/b_{2j}``. Every right-hand side
    and every back-substituted value is a sum of non-negative terms, so non-negative data give
    non-negative solutions in floating point, as with the Thomas algorithm; but each of the
    ``⌈log₂ n⌉`` levels is a few whole-array passes instead of ``n`` dependent row updates.
    """
    n = rhs.shape[0]
    if n == 1:
        return rhs / diag
    if n % 2 == 0:  # one decoupled row (x = 0) makes the length odd: every odd row has two neighbours

        def pad(x, value):
            return jnp.concatenate([x, jnp.full((1,) + x.shape[1:], value, x.dtype)], axis=0)

        lower, diag, upper, rhs = pad(lower, 0), pad(diag, 1), pad(upper, 0), pad(rhs, 0)
    l_even, b_even, u_even, r_even = lower[0::2], diag[0::2], upper[0::2], rhs[0::2]
    alpha = -lower[1::2] / b_even[:-1]
    gamma = -upper[1::2] / b_even[1:]
    odd = _reduce(
        alpha * l_even[:-1],
        diag[1::2] + alpha * u_even[:-1] + gamma * l_even[1:],
        gamma * u_even[1:],
        rhs[1::2] + alpha * r_even[:-1] + gamma * r_even[1:],
    )
    zero = jnp.zeros_like(odd[:1])
    even = (r_even - l_even * jnp.concatenate([zero, odd]) - u_even * jnp.concatenate([odd, zero])) / b_even
    k = odd.shape[0]
    pairs = jnp.stack([even[:k], odd], axis=1).reshape((2 * k,) + odd.shape[1:])
    return jnp.concatenate([pairs, even[k:]], axis=0)[:n]


def _tridiagonal_solve(back, ahead, rhs):
    r"""Solve ``−q_{i−1} x_{i−1} + (1 + q_i + p_{i−1}) x_i − p_i x_{i+1} = rhs_i`` along axis 0.

    The matrix is given by its faces: ``p_k ≥ 0`` (``back``) couples ``x_{k+1}`` into row ``k`` and
    ``q_k ≥ 0`` (``ahead``) couples ``x_k`` into row ``k + 1``, for the ``n − 1`` interior faces
    (row ``n − 1`` of both is 0: the wall). This is every matrix ``I − τ A`` of this module: an
    M-matrix whose columns sum to one. ``back``/``ahead`` broadcast against ``rhs`` row by row
    (shape ``(n, 1, …)`` for a constant ``D``). Solved by cyclic reduction (:func:`_reduce`).

    History: first ``lax.linalg.tridiagonal_solve``, whose LAPACK ``gtsv`` call on XLA:CPU
    deadlocked (0 % CPU, all threads waiting) inside the compiled rollout from 256² on jax 0.10.2;
    then the Thomas algorithm as two ``lax.scan``\ s over the rows (2.6 ms per 512² solve on one
    core, against 0.57 ms by cyclic reduction; on a GPU a row scan is ``2n`` dependent launches).
    """
    zero = jnp.zeros_like(back[:1])
    lower = -jnp.concatenate([zero, ahead[:-1]], axis=0)
    diag = 1.0 + ahead + jnp.concatenate([zero, back[:-1]], axis=0)
    upper = -back
    # Reverse mode: one solve with the transposed matrix (also an M-matrix: its rows sum to one) and
    # the matvec's derivative in the face weights (implicit differentiation), instead of JAX's
    # transpose of every reduction level.
    transposed = (jnp.concatenate([zero, upper[:-1]], axis=0), diag, jnp.concatenate([lower[1:], zero], axis=0))
    return lax.custom_linear_solve(
        functools.partial(_tridiagonal_product, lower, diag, upper),
        rhs,
        solve=lambda _, b: _reduce(lower, diag, upper, b),
        transpose_solve=lambda _, b: _reduce(*transposed, b),
    )


def _tridiagonal_product(lower, diag, upper, x):
    """``l_i x_{i−1} + b_i x_i + u_i x_{i+1}`` along axis 0 (``l_0 = u_{n−1} = 0``)."""
    zero = jnp.zeros_like(x[:1])
    return lower * jnp.concatenate([zero, x[:-1]], axis=0) + diag * x + upper * jnp.concatenate([x[1:], zero], axis=0)


def _ratio(numerator, denominator):
    """``u^n / u^(1)`` where ``u^(1)`` is not negligible, 1 elsewhere (``0/0`` in empty tissue).

    Any ``s ≥ 0`` keeps the stage conservative and non-negative; 1 is the smooth limit. The
    threshold ``√tiny`` keeps the derivative ``−u^n/u^(1)²`` finite in float32.
    """
    dtype = denominator.dtype
    safe = denominator > jnp.sqrt(jnp.finfo(dtype).tiny).astype(dtype)
    return jnp.where(safe, numerator / jnp.where(safe, denominator, jnp.ones((), dtype)), jnp.ones((), dtype))


def _to_front(x, axis):
    return x if axis == 0 else jnp.moveaxis(x, axis, 0)


def _from_front(x, axis):
    return x if axis == 0 else jnp.moveaxis(x, 0, axis)


def _face_rows(w, n, ndim, dtype):
    """Interior-face weights (``n − 1`` rows on axis 0, or a number) → ``n`` rows, the last 0 (the wall)."""
    if jnp.ndim(w) == 0:
        rows = jnp.where(jnp.arange(n) < n - 1, jnp.asarray(w, dtype), jnp.zeros((), dtype))
        return rows.reshape((n,) + (1,) * (ndim - 1))
    return jnp.concatenate([w, jnp.zeros_like(w[:1])], axis=0)


def mprk22_first(v, rows):
    """MPRK22's first stage along axis 0 (backward Euler, ``(I − τA) u⁽¹⁾ = u``), face weights as
    ``n`` rows (:func:`_face_rows`)."""
    return _tridiagonal_solve(rows, rows, v)


def mprk22_second(v, v1, rows, stage_rows):
    """MPRK22's second stage along axis 0 from ``u = v``, its first stage ``v1`` and the face-weight
    rows at both (:func:`mprk22_axis`)."""
    ratio = _ratio(v, v1)
    ratio_next = jnp.concatenate([ratio[1:], jnp.zeros_like(ratio[:1])], axis=0)  # s_{k+1}; 0 past the wall
    back = 0.5 * (rows * ratio_next + stage_rows)
    ahead = 0.5 * (rows * ratio + stage_rows)
    return _tridiagonal_solve(back, ahead, v)


def mprk22_axis(u, face_weight, axis, stage_weight=None):
    """One MPRK22 step of ``u_t = ∂_x(D ∂_x u)`` along ``axis``.

    ``face_weight = τ D_{i+½}/Δx²`` on the ``n − 1`` interior faces (a number for constant ``D``),
    with ``D`` at ``u``; ``stage_weight(u1)`` the same with ``D`` at the first stage ``u⁽¹⁾`` (None:
    ``D`` does not depend on the state). Stage 1 is backward Euler, ``(I − τA(u)) u⁽¹⁾ = u``; stage 2
    is ``u⁺ = u + τ/2 [A(u) diag(u/u⁽¹⁾) + A(u⁽¹⁾)] u⁺`` (MPRK22's ``(p(uⁿ) + p(u⁽¹⁾)) u⁺_j/u⁽¹⁾_j``
    for the production ``p_ij(u) = a_ij(u) u_j``), whose faces are
    ``p_k = ½(w_k s_{k+1} + w⁽¹⁾_k)`` and ``q_k = ½(w_k s_k + w⁽¹⁾_k)`` with ``s = u/u⁽¹⁾``
    (:func:`_tridiagonal_solve`). The solves run along axis 0 of ``u`` moved so that ``axis`` comes first.
    """
    n, ndim, dtype = u.shape[axis], u.ndim, u.dtype
    v = _to_front(u, axis)
    w = _face_rows(face_weight if jnp.ndim(face_weight) == 0 else _to_front(face_weight, axis), n, ndim, dtype)
    v1 = mprk22_first(v, w)
    if stage_weight is None:
        w1 = w
    else:
        w1 = _face_rows(_to_front(stage_weight(_from_front(v1, axis)), axis), n, ndim, dtype)
    return _from_front(mprk22_second(v, v1, w, w1), axis)


def _mask_faces(w, mask, axis):
    """Face weights ``w`` with the faces that touch a cell outside ``mask`` closed (None: unchanged)."""
    return w if mask is None else w * face_open(mask, axis).astype(w.dtype)


class SplitDiffusion(eqx.Module):
    """The diffusion ``∇·(D∇u)`` of the split-off cell fields (``D`` in mm²/day, ``≥ 0``: a number, a
    cell array, or :class:`StateDependent`, per field), advanced by MPRK22 axis by axis (module docstring).

    ``weights[i]`` are the precomputed ``τ D_{i+½}/Δx²`` per axis of field ``i`` for a ``D`` that does
    not depend on the state, with ``τ = Δt/2`` (a number for a number ``D`` without mask, else face
    arrays; None for a state-dependent ``D``, whose face weights are built at each half step).
    ``mask``: the domain (a cell array, 1 inside, 0 outside; None: the whole box), built into every
    face weight: no flux crosses a face with a cell outside. With ``mask=None`` and a number ``D``
    the weights, and so the results, are those of the unmasked scheme bit for bit.

    ``slabs`` (``._decomposition.Slabs``; None: one device): the grid split along axis 0 over devices.
    The weights along axis 0 are then ``n`` rows (:func:`_face_rows`, split with the cells), and the
    sweeps along axis 0 run after a transpose of all fields together (:meth:`half_step`).
    """

    names: tuple[str, ...] = eqx.field(static=True)
    diffusions: tuple[Any, ...]
    spacing: tuple[float, ...] = eqx.field(static=True)
    weights: tuple[tuple[Any, ...] | None, ...]
    mask: Any = None
    slabs: Any = eqx.field(static=True, default=None)

    @classmethod
    def build(cls, coefficients: dict, spacing, dt, dtype, mask=None, slabs=None):
        """``coefficients``: field name → its ``D`` (a number, a cell array or :class:`StateDependent`);
        ``mask``: the domain (a cell array, 1 inside, 0 outside) or None; ``slabs`` as above."""
        tau = 0.5 * jnp.asarray(dt, dtype)
        mask = None if mask is None else jnp.asarray(mask, dtype)

        def constant(d, axis, dx):
            d = jnp.asarray(d, dtype)
            if slabs is not None and axis == 0 and (jnp.ndim(d) or mask is not None):
                return slabs.face_rows(d, mask, tau, dx)
            return _mask_faces(tau * face_diffusivity(d, axis) / dx**2, mask, axis)

        weights = tuple(
            None if isinstance(d, StateDependent) else tuple(constant(d, a, dx) for a, dx in enumerate(spacing))
            for d in coefficients.values()
        )
        return cls(tuple(coefficients), tuple(coefficients.values()), tuple(spacing), weights, mask, slabs)

    def explicit_limit_rates(self, state, params) -> dict:
        """Per field, ``Σ_axes 2 max D/Δx²`` (1/day): the rate bound an explicit diffusion would add
        (valid with harmonic face means, never above the larger cell, and with a mask, which only
        closes faces)."""
        rates = {}
        for name, d in zip(self.names, self.diffusions, strict=True):
            d = d.fn(state, params) if isinstance(d, StateDependent) else d
            d = jnp.max(d) if jnp.ndim(d) else d
            rates[name] = sum(2.0 * d / dx**2 for dx in self.spacing)
        return rates

    def _face_weights(self, index, state, params, dt, axis, u):
        """``τ D_{i+½}/Δx²`` on the interior faces along ``axis`` (harmonic mean, closed faces 0),
        with ``D`` of field ``index`` evaluated at ``state`` whose field is ``u``."""
        d = self.diffusions[index].fn({**state, self.names[index]: u}, params)
        d = jnp.broadcast_to(jnp.asarray(d, u.dtype), u.shape)
        w = 0.5 * dt.astype(u.dtype) * face_diffusivity(d, axis) / self.spacing[axis] ** 2
        return _mask_faces(w, self.mask, axis)

    def _axis_step(self, index, u, state, params, dt, axis):
        """One MPRK22 step of field ``index`` (now ``u``) along ``axis``, on the whole array."""
        if self.weights[index] is not None:
            return mprk22_axis(u, self.weights[index][axis], axis)
        weights = functools.partial(self._face_weights, index, state, params, dt, axis)
        return mprk22_axis(u, weights(u), axis, weights)

    def half_step(self, state, params, dt, reverse: bool) -> dict:
        """The fields after a half step ``Δt/2`` of their diffusion: axes in order, or reversed. A
        state-dependent ``D`` is evaluated at the start and at the first stage of each axis's step
        (the other fields as in ``state``). On slabs the fields go axis by axis together (they are
        independent): along axis 0 all of them after one transpose (:meth:`_slab_sweep`)."""
        if self.slabs is not None:
            new = {name: state[name] for name in self.names}
            axes = range(len(self.spacing))
            for axis in reversed(axes) if reverse else axes:
                if axis == 0:
                    new = self._slab_sweep(new, state, params, dt)
                    continue
                for index, name in enumerate(self.names):
                    new[name] = self._axis_step(index, new[name], state, params, dt, axis)
            return new
        new = {}
        for index, name in enumerate(self.names):
            u = state[name]
            axes = range(u.ndim)
            for axis in reversed(axes) if reverse else axes:
                u = self._axis_step(index, u, state, params, dt, axis)
            new[name] = u
        return new

    def _slab_rows(self, index, state, params, dt, u):
        """The face-weight rows along axis 0 of state-dependent field ``index`` at ``u``, on slabs."""
        d = self.diffusions[index].fn({**state, self.names[index]: u}, params)
        d = jnp.broadcast_to(jnp.asarray(d, u.dtype), u.shape)
        return self.slabs.face_rows(d, self.mask, 0.5 * dt.astype(u.dtype), self.spacing[0])

    def _slab_sweep(self, fields, state, params, dt) -> dict:
        """One MPRK22 step along axis 0 of every field, on slabs: one transpose there and back for all
        (``._decomposition.Slabs.sweep0``), and for state-dependent ``D`` one more each way for the
        second stage, whose weights are evaluated at the first stage on the slabs."""
        rows, stage = [], []
        for index, name in enumerate(self.names):
            if self.weights[index] is not None:
                rows.append(self.weights[index][0])
                stage.append(None)
            else:
                fn = functools.partial(self._slab_rows, index, state, params, dt)
                rows.append(fn(fields[name]))
                stage.append(fn)
        out = self.slabs.sweep0([fields[name] for name in self.names], rows, stage)
        return dict(zip(self.names, out, strict=True))
