"""Micro-benchmark: the DCT-II/III pair that dominates a tumorfield step, against a real-FFT version.

Usage::

    python benchmarks/bench_dct.py [--sizes 256 512 64x3 128x3]

``jax.scipy.fft.dctn``/``idctn`` (what ``tumorfield_kernels`` uses) transform
one axis at a time with a *complex* FFT of the full length. Makhoul's
algorithm (IEEE Trans. ASSP 28, 1980) needs only a real FFT of the reordered
input ``v = [x₀, x₂, …, x₃, x₁]``: ``X_k = Re(e^{−iπk/2n} V_k)``, and the
inverse is one ``irfft`` of ``e^{iπk/2n}(X_k − i X_{n−k})``. This script checks
both against ``scipy.fft`` and times them (AOT compiled, after
``block_until_ready``, best of 20), next to an ``rfftn`` of the same size.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.fft import dctn, idctn


def _ortho_scale(n):
    scale = np.full(n, np.sqrt(2.0 / n))
    scale[0] = np.sqrt(1.0 / n)
    return scale


def dct2_axis(x, axis):
    """Orthonormal DCT-II along ``axis`` by reorder + ``rfft``."""
    x = jnp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    v = jnp.concatenate([x[..., ::2], x[..., ::-1][..., n % 2 :: 2]], axis=-1)
    half = jnp.fft.rfft(v, axis=-1)  # V_k, k = 0 … n//2
    k = np.arange(n)
    low = k <= n // 2
    full = half[..., np.where(low, k, n - k)]
    full = jnp.where(low, full, jnp.conj(full))  # V_{n−k} = conj(V_k) for real v
    twiddle = np.exp(-1j * np.pi * k / (2 * n)) * _ortho_scale(n)
    out = jnp.real(full * jnp.asarray(twiddle, half.dtype)).astype(x.dtype)
    return jnp.moveaxis(out, -1, axis)


def dct3_axis(x, axis):
    """Inverse of :func:`dct2_axis` (orthonormal DCT-III) by one ``irfft``."""
    x = jnp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    X = x / jnp.asarray(_ortho_scale(n), x.dtype)
    m = n // 2 + 1
    k = np.arange(m)
    # X_{n−k}, with X_n = 0
    mirrored = jnp.concatenate([jnp.zeros_like(X[..., :1]), X[..., ::-1][..., : m - 1]], axis=-1)
    spectrum = jnp.asarray(np.exp(1j * np.pi * k / (2 * n)), jnp.result_type(x.dtype, jnp.complex64)) * (
        X[..., :m] - 1j * mirrored
    )
    v = jnp.fft.irfft(spectrum, n=n, axis=-1)
    even = v[..., : (n + 1) // 2]
    odd = v[..., (n + 1) // 2 :][..., ::-1]
    out = jnp.zeros_like(x).at[..., ::2].set(even).at[..., 1::2].set(odd)
    return jnp.moveaxis(out.astype(x.dtype), -1, axis)


def dct2n(x):
    for axis in range(x.ndim):
        x = dct2_axis(x, axis)
    return x


def dct3n(x):
    for axis in range(x.ndim):
        x = dct3_axis(x, axis)
    return x


def best_ms(fn, x, repeats=20):
    compiled = jax.jit(fn).lower(x).compile()
    jax.block_until_ready(compiled(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main(argv=None):
    import scipy.fft

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "64x3", "128x3"])
    args = parser.parse_args(argv)
    print(f"device {jax.devices()[0]}, jax {jax.__version__}, float32; times in ms (best of 20)")
    print(f"{'size':>10} {'jax dctn':>9} {'rfft dct':>9} {'jax idctn':>9} {'rfft idct':>9} {'rfftn':>7} {'max err':>8}")
    for text in args.sizes:
        shape = (int(text.split("x")[0]),) * (int(text.split("x")[1]) if "x" in text else 2)
        x_np = np.random.default_rng(0).random(shape).astype(np.float32)
        x = jnp.asarray(x_np)
        want = scipy.fft.dctn(x_np.astype(np.float64), type=2, norm="ortho")
        err = max(
            float(np.max(np.abs(np.asarray(dct2n(x)) - want))),
            float(np.max(np.abs(np.asarray(dct3n(jnp.asarray(want, jnp.float32))) - x_np))),
        )
        row = [
            best_ms(lambda a: dctn(a, type=2, norm="ortho"), x),
            best_ms(dct2n, x),
            best_ms(lambda a: idctn(a, type=2, norm="ortho"), x),
            best_ms(dct3n, x),
            best_ms(jnp.fft.rfftn, x),
        ]
        print(
            f"{'x'.join(map(str, shape)):>10} "
            + " ".join(f"{v:>9.3f}" for v in row[:4])
            + f" {row[4]:>7.3f} {err:>8.1e}"
        )


if __name__ == "__main__":
    main()
