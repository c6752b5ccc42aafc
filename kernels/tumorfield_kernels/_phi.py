"""The φ-functions of exponential integrators, accurate to round-off near zero."""

from __future__ import annotations

import jax.numpy as jnp


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
