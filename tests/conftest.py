"""Strict JAX settings for the whole test suite, set at import time.

- float64 by default (``jax_enable_x64``): verification tolerances need it;
  float32 behaviour is tested explicitly with the :func:`float32` fixture.
- ``jax_numpy_rank_promotion="raise"``: implicit broadcasting between arrays
  of different rank is an error, so shapes must be explicit.
- ``jax_numpy_dtype_promotion="strict"``: no silent dtype promotion (e.g.
  float32 + float64), so casts must be explicit.
"""

from __future__ import annotations

import contextlib

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@contextlib.contextmanager
def float32_context():
    """Run a block with x64 disabled (default dtype float32); strictness stays on."""
    with jax.enable_x64(False):
        yield


@pytest.fixture
def float32():
    """Run the test body with x64 disabled: arrays default to float32."""
    with float32_context():
        yield
