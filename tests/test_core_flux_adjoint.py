"""The limited upwind flux's hand-written reverse rule (``tumorfield_kernels._stencils.axis_flux``).

Reverse mode transposes a primitive linear in the tangents whose transpose is written out
(``_flux_cotangents``); forward mode and everything else keep JAX's own rules. Here the written
rule is held to JAX's own derivative of the same flux (``_flux_value``, differentiated by JAX) in
every combination of coefficients (``D`` absent, a number or a field; ``χ`` likewise; faces masked
or not), in 2D and 3D, in float64 and float32, under ``vmap`` either side of ``grad``, in forward
mode and forward-over-reverse (Hessian–vector products, as the calibration's Gauss–Newton takes
them), and to central differences of the transport itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tumorfield_kernels import _stencils as stencils

SPACING = {2: (0.5, 0.25), 3: (0.5, 0.25, 0.4)}


def _jax_own(layout, *arrays):
    """The flux with JAX's own derivative (no custom rule): the reference."""
    return stencils._flux_value(layout, *arrays)


def _inputs(shape, d_kind, chi_kind, masked, dtype, seed=0):
    rng = np.random.default_rng(seed)
    field = lambda: jnp.asarray(rng.random(shape), dtype)  # noqa: E731
    u, c = field(), field()
    # a diffusivity field with zero cells (the harmonic mean's one-sided derivative)
    d = {"field": jnp.asarray(np.where(rng.random(shape) < 0.2, 0.0, rng.random(shape)), dtype),
         "scalar": jnp.asarray(0.3, dtype), None: 0.0}[d_kind]  # fmt: skip
    chi = field() if chi_kind == "field" else jnp.asarray(0.7, dtype)
    mask = jnp.asarray(rng.random(shape) > 0.2, dtype) if masked else None
    return u, c, d, chi, mask


def _transport(flux):
    """``transport(u, c, D, χ, mask)`` with the flux ``flux`` (``_flux`` or ``_jax_own``)."""

    def transport(u, c, d, chi, mask, chi_kind, wall=None):
        original = stencils._flux
        stencils._flux = flux
        try:
            taxis = [(chi, c)] if chi_kind else []
            return stencils.transport(u, SPACING[u.ndim], d, taxis, wall, mask)
        finally:
            stencils._flux = original

    return transport


HAND, OWN = _transport(stencils._flux), _transport(_jax_own)
CASES = [
    ("field", "field", True),
    ("field", "scalar", False),
    ("scalar", "field", True),
    ("scalar", "scalar", False),
    (None, "field", False),
    (None, "scalar", True),
    ("field", None, True),
    ("scalar", None, False),
]
"""Each kind of ``D`` and ``χ`` with and without masked faces (all 16 combinations agreed when written)."""


def _relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-300))


@pytest.mark.parametrize("d_kind,chi_kind,masked", CASES)
def test_reverse_rule_is_jax_own_derivative(d_kind, chi_kind, masked):
    u, c, d, chi, mask = _inputs((9, 11), d_kind, chi_kind, masked, jnp.float64)
    g = jnp.asarray(np.random.default_rng(1).standard_normal(u.shape))
    differentiated = (0, 1, 3) if d_kind is None else (0, 1, 2, 3)

    def pull(transport):
        def f(u, c, d, chi):
            return transport(u, c, d, chi, mask, chi_kind)

        return jax.jit(lambda *args: jax.vjp(f, *args)[1](g))(u, c, d, chi)

    for i, (got, want) in enumerate(zip(pull(HAND), pull(OWN), strict=True)):
        if i in differentiated:
            assert _relative(got, want) < 1e-13, (i, _relative(got, want))


def test_mask_cotangent_forward_mode_and_hessian_vector_products():
    u, c, d, chi, mask = _inputs((8, 10), "field", "field", True, jnp.float64, seed=2)
    rng = np.random.default_rng(3)
    g, du, dmask = (jnp.asarray(rng.standard_normal(u.shape)) for _ in range(3))

    def of_mask(transport):
        return jax.jit(lambda m: jax.vjp(lambda m: transport(u, c, d, chi, m, "field"), m)[1](g)[0])(mask)

    assert _relative(of_mask(HAND), of_mask(OWN)) < 1e-13

    def tangent(transport):
        return jax.jit(lambda *t: jax.jvp(lambda u, m: transport(u, c, d, chi, m, "field"), (u, mask), t)[1])(du, dmask)

    assert _relative(tangent(HAND), tangent(OWN)) < 1e-13

    def hvp(transport):
        gradient = jax.grad(lambda u: jnp.sum(transport(u, c, d, chi, mask, "field") ** 2))
        return jax.jit(lambda v: jax.jvp(gradient, (u,), (v,))[1])(du)

    assert _relative(hvp(HAND), hvp(OWN)) < 1e-12


def test_vmap_either_side_of_grad_and_3d():
    u, c, d, chi, mask = _inputs((5, 6, 7), "scalar", "field", True, jnp.float64, seed=4)
    g = jnp.asarray(np.random.default_rng(5).standard_normal(u.shape))

    def vmap_of_grad(transport):
        pull = lambda u, d: jax.vjp(lambda u, d: transport(u, c, d, chi, mask, "field"), u, d)[1](g)  # noqa: E731
        return jax.jit(jax.vmap(pull))(jnp.stack([u, 2 * u]), jnp.stack([d, 3 * d]))

    def grad_of_vmap(transport):
        def loss(cs, ds):
            out = jax.vmap(lambda c, d: transport(u, c, d, chi, mask, "field"))(cs, ds)
            return jnp.sum(out * g[None])

        return jax.jit(jax.grad(loss, (0, 1)))(jnp.stack([c, 0.5 * c]), jnp.stack([d, 2 * d]))

    leaves = jax.tree_util.tree_leaves
    for got, want in zip(leaves(vmap_of_grad(HAND)), leaves(vmap_of_grad(OWN)), strict=True):
        assert _relative(got, want) < 1e-13
    for got, want in zip(grad_of_vmap(HAND), grad_of_vmap(OWN), strict=True):
        assert _relative(got, want) < 1e-13


def test_float32_agrees_with_float64():
    u, c, d, chi, mask = _inputs((16, 12), "field", "field", False, jnp.float32, seed=6)
    g = jnp.asarray(np.random.default_rng(7).standard_normal(u.shape), jnp.float32)

    @jax.jit
    def pull(u, c, d, chi, g):
        return jax.vjp(lambda u, c, d, chi: HAND(u, c, d, chi, None, "field"), u, c, d, chi)[1](g)

    got = pull(u, c, d, chi, g)
    assert all(x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x))) for x in got)
    want = pull(*(x.astype(jnp.float64) for x in (u, c, d, chi, g)))
    for a, b in zip(got, want, strict=True):
        assert _relative(a.astype(jnp.float64), b) < 1e-5


def test_gradient_matches_central_differences_of_the_transport():
    """Independent of any derivative rule: ``⟨g, T(u + εv) − T(u − εv)⟩ / 2ε`` against ``⟨∇, v⟩``,
    with fixed wall values and a field ``D`` (smooth data: the limiter's kinks are not crossed)."""
    x = jnp.linspace(0.0, 1.0, 12)
    u = jnp.exp(-((x[:, None] - 0.4) ** 2 + (x[None, :] - 0.6) ** 2) / 0.05)
    c = 0.5 + 0.3 * jnp.sin(3 * x[:, None]) * jnp.cos(2 * x[None, :])
    d = 0.1 + 0.05 * u
    g = jnp.cos(4 * x[:, None] * x[None, :])
    v = jnp.sin(5 * x[:, None] + x[None, :])

    @jax.jit
    def loss(u):
        return jnp.sum(g * HAND(u, c, d, jnp.asarray(0.7), None, "scalar", wall=0.2))

    eps = 1e-6
    finite = (loss(u + eps * v) - loss(u - eps * v)) / (2 * eps)
    assert abs(float(jnp.vdot(jax.jit(jax.grad(loss))(u), v)) - float(finite)) < 1e-7 * max(1.0, abs(float(finite)))
