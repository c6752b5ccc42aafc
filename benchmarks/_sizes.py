"""Grid sizes on the command line of the benchmark scripts (no JAX import: workers set it up first)."""

from __future__ import annotations


def parse_size(text: str) -> tuple[int, ...]:
    """``"512"`` → (512, 512); ``"128x3"`` → (128, 128, 128)."""
    if "x" in text:
        n, d = text.split("x")
        return (int(n),) * int(d)
    return (int(text),) * 2


def label(shape) -> str:
    return "x".join(str(n) for n in shape)
