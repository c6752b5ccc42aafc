"""Micro-benchmark: the DCT-II/III pair that dominates a tumorfield step.

Usage::

    python benchmarks/bench_dct.py [--sizes 256 512 64x3 128x3]

Times the core's transforms (``tumorfield_kernels.to_spectral`` /
``from_spectral``: Makhoul's real-FFT algorithm in n dimensions, one ``rfftn``; IEEE Trans. ASSP 28, 1980)
against ``jax.scipy.fft.dctn``/``idctn`` and against an ``rfftn`` of the same
size (what a DCT costs at best), after checking the core's pair against
``scipy.fft``. AOT compiled, after ``block_until_ready``, best of 20, float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tumorfield_kernels as ops  # the public DCT pair: to_spectral, from_spectral
from jax.scipy.fft import dctn, idctn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_seconds  # noqa: E402


def best_ms(fn, x, repeats=20):
    return 1e3 * best_seconds(fn, x, repeats=repeats)


def main(argv=None):
    import scipy.fft

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "64x3", "128x3"])
    args = parser.parse_args(argv)
    print(f"device {jax.devices()[0]}, jax {jax.__version__}, float32; times in ms (best of 20)")
    print(f"{'size':>10} {'jax dctn':>9} {'core dct':>9} {'jax idctn':>9} {'core idct':>9} {'rfftn':>7} {'max err':>8}")
    for text in args.sizes:
        shape = (int(text.split("x")[0]),) * (int(text.split("x")[1]) if "x" in text else 2)
        x_np = np.random.default_rng(0).random(shape).astype(np.float32)
        x = jnp.asarray(x_np)
        want = scipy.fft.dctn(x_np.astype(np.float64), type=2, norm="ortho")
        err = max(
            float(np.max(np.abs(np.asarray(ops.to_spectral(x)) - want))),
            float(np.max(np.abs(np.asarray(ops.from_spectral(jnp.asarray(want, jnp.float32))) - x_np))),
        )
        row = [
            best_ms(lambda a: dctn(a, type=2, norm="ortho"), x),
            best_ms(ops.to_spectral, x),
            best_ms(lambda a: idctn(a, type=2, norm="ortho"), x),
            best_ms(ops.from_spectral, x),
            best_ms(jnp.fft.rfftn, x),
        ]
        print(
            f"{'x'.join(map(str, shape)):>10} "
            + " ".join(f"{v:>9.3f}" for v in row[:4])
            + f" {row[4]:>7.3f} {err:>8.1e}"
        )


if __name__ == "__main__":
    main()
