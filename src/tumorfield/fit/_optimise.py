"""L-BFGS with a zoom (strong-Wolfe) line search, one compiled program per iteration.

``optax.lbfgs`` (Nocedal & Wright, *Numerical Optimization*, 2006, alg. 7.5 with the
line search of alg. 3.5/3.6) minimises the loss ``L(z)`` over the unconstrained parameters.
One iteration (the two-loop direction from the value and gradient at ``z``, carried from the
previous line search, and the whole line search, whose trials evaluate ``L`` and ``∇L``) is one
``jax.jit`` program holding one copy of ``∇L``, compiled once per fit and kept by the persistent
compilation cache; the start's value and gradient come from the same program. The loop over
iterations runs on the host, which records the history and decides when to stop.

A trial whose simulation failed has ``L = ∞`` and no non-finite gradient (:func:`finite_cotangent`):
the zoom line search treats it as outside the domain and shortens the step; nothing raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._linesearch import scale_by_zoom_linesearch


@jax.custom_vjp
def finite_cotangent(z):
    """The identity, whose backward pass replaces non-finite cotangents by 0.

    The gradient of a failed run is meaningless and often NaN (``0·∞`` in the backward pass of
    a blown-up state); zeroing it at the input keeps NaN out of the line search's interpolation
    and the L-BFGS memory, at no cost (an identity is all that is traced).
    """
    return z


def _finite_cotangent_forward(z):
    return z, None


def _finite_cotangent_backward(_, cotangent):
    return (jnp.where(jnp.isfinite(cotangent), cotangent, jnp.zeros_like(cotangent)),)


finite_cotangent.defvjp(_finite_cotangent_forward, _finite_cotangent_backward)


def make_step(loss: Callable, max_linesearch_steps: int):
    """``(optimiser, step)``: the compiled iteration ``(z, state, L(z), ∇L(z), arrays) → (z⁺, state⁺,
    L(z⁺), ∇L(z⁺), line-search trials)``.

    The value and gradient at ``z`` come in (from the previous line search, which evaluated them
    at the point it accepted), so the program holds one copy of ``∇L``: the line search's.
    """
    linesearch = scale_by_zoom_linesearch(max_linesearch_steps, initial_guess_strategy="one")
    optimiser = optax.lbfgs(linesearch=linesearch)

    @jax.jit
    def step(z, state, value, grad, arrays):
        def fn(z):
            return loss(finite_cotangent(z), arrays)

        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 and int64 indices
            updates, state = optimiser.update(grad, state, z, value=value, grad=grad, value_fn=fn)
        found = (optax.tree.get(state, "value"), optax.tree.get(state, "grad"))
        return optax.apply_updates(z, updates), state, *found, optax.tree.get(state, "num_linesearch_steps")

    return optimiser, step


def _start(optimiser, step, z, arrays):
    """``L(z)`` and ``∇L(z)`` from the iteration program itself: a zero gradient makes a zero direction,
    so every line-search trial is ``z`` and the value and gradient it keeps are those at ``z``."""
    state = optimiser.init(z)
    _, _, value, grad, _ = step(z, state, jnp.asarray(jnp.inf, z.dtype), jnp.zeros_like(z), arrays)
    return value, grad


@dataclass
class History:
    """Per iteration (iteration 0: the start): loss, unconstrained point, largest gradient component, trials."""

    loss: list[float] = field(default_factory=list)
    z: list[np.ndarray] = field(default_factory=list)
    gradient: list[float] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Minimum:
    """Where the optimiser stopped: the point, its loss, why it stopped, and the history."""

    z: np.ndarray
    loss: float
    status: str
    converged: bool
    message: str
    history: History

    @property
    def n_iterations(self) -> int:
        return len(self.history.loss) - 1


def _stop(history: History, moved: bool, tolerance: float) -> tuple[str, bool, str] | None:
    """``(status, converged, message)`` once the last iteration meets a stopping rule, else None.

    Converged: the largest gradient component ≤ ``tolerance``, or the loss fell (``0 ≤`` fall) by at most
    ``tolerance · max(1, |loss|)``; and the loss did not rise. A loss that rose (float noise at the floor of
    the loss's precision, or a line search that ended on a worse point) or that is not finite is
    ``stalled``: the message says by how much it rose, and :func:`minimise` reports the lowest point."""
    before, after, gradient = history.loss[-2], history.loss[-1], history.gradient[-1]
    if not np.isfinite(after) or after > before:
        change = f"rose by {after - before:.3g} (to {after:.8g})" if np.isfinite(after) else f"became {after}"
        return (
            "stalled",
            False,
            (
                f"the loss {change} in the last iteration: the line search ended on a worse point, at the "
                f"precision of the loss (largest gradient component {gradient:.3g}); the estimate is the lowest "
                "point found"
            ),
        )
    if gradient <= tolerance:
        return "converged", True, f"largest gradient component {gradient:.3g} ≤ tolerance {tolerance:g}"
    if not moved:
        return (
            "stalled",
            False,
            (
                f"the line search found no acceptable step (largest gradient component "
                f"{gradient:.3g}): the loss is flat to this precision, or every trial failed"
            ),
        )
    if before - after <= tolerance * max(1.0, abs(after)):
        fell = f"fell by {before - after:.3g}" if before > after else "did not change"
        return (
            "converged",
            True,
            f"the loss {fell} in the last iteration, ≤ tolerance {tolerance:g} × max(1, |loss|)",
        )
    return None


def _record(history: History, z, value, grad, trials: int) -> None:
    history.loss.append(float(value))
    history.z.append(np.asarray(z, np.float64))
    history.gradient.append(float(jnp.max(jnp.abs(grad))))
    history.trials.append(trials)


def minimise(optimiser, step, z0, arrays, *, max_iterations: int, tolerance: float,
             log: Callable[[str], None] = lambda _: None) -> Minimum:  # fmt: skip
    """Minimise from ``z0`` with the ``(optimiser, step)`` of :func:`make_step` (float64 when x64 is on).

    Iteration 0 of the history is the start; each further entry is the point a line search accepted.
    """
    z, history = jnp.asarray(z0, jnp.result_type(float)), History()
    value, grad = _start(optimiser, step, z, arrays)
    _record(history, z, value, grad, 0)
    log(f"iteration 0: loss {history.loss[0]:.8g}, max |gradient| {history.gradient[0]:.3g}")
    if not np.isfinite(history.loss[0]):
        return Minimum(np.asarray(z), history.loss[0], "failed", False, "the loss at the start values is not finite",
                       history)  # fmt: skip
    if history.gradient[0] <= tolerance:  # the start meets the rule: no line search along a zero direction
        message = f"largest gradient component {history.gradient[0]:.3g} ≤ tolerance {tolerance:g} at the start"
        return Minimum(np.asarray(z), history.loss[0], "converged", True, message, history)
    state = optimiser.init(z)
    for iteration in range(1, max_iterations + 1):
        new_z, state, value, grad, trials = jax.block_until_ready(step(z, state, value, grad, arrays))
        _record(history, new_z, value, grad, int(trials))
        log(f"iteration {iteration}: loss {history.loss[-1]:.8g}, max |gradient| {history.gradient[-1]:.3g}, "
            f"{int(trials)} line-search trials")  # fmt: skip
        stop = _stop(history, bool(jnp.any(new_z != z)), tolerance)
        z = new_z
        if stop is not None:
            best = _lowest(history)
            return Minimum(history.z[best].copy(), history.loss[best], *stop, history)
    message = f"stopped after max_iterations = {max_iterations} without meeting the tolerance"
    best = _lowest(history)
    return Minimum(history.z[best].copy(), history.loss[best], "max_iterations", False, message, history)


def _lowest(history: History) -> int:
    """The iteration of the lowest finite loss: the last one unless the loss rose (its first such entry)."""
    losses = np.asarray(history.loss, np.float64)
    finite = np.isfinite(losses)
    if not finite.any():
        return len(losses) - 1
    best = int(np.argmin(np.where(finite, losses, np.inf)))
    return len(losses) - 1 if losses[-1] == losses[best] else best
