"""optax's zoom (strong-Wolfe) line search with one evaluation of ``L`` and ``∇L`` in its program.

``optax.scale_by_zoom_linesearch`` runs a ``while_loop`` whose body is a ``lax.cond`` between the
interval search (Nocedal & Wright, alg. 3.5) and the zoom (alg. 3.6), and each branch calls
``value_and_grad(L)`` itself. For a fit, ``L`` is a whole checkpointed simulation and its
gradient, so the compiled iteration held two copies of it: twice the XLA compile, twice the
executable to load from the persistent cache.

:func:`scale_by_zoom_linesearch` is the same line search (optax's own ``zoom_linesearch``
``init``/``step``/``cond`` functions, the same defaults, the same state type) with the
evaluation hoisted out of the ``cond``. Each step of the loop:

1. runs optax's step with a *probe* in place of ``value_and_grad``, which costs nothing and
   answers "every condition met" (``−∞`` with a zero gradient), so optax does not switch to its
   safe step: the state it returns holds the step size it chose to try next (both branches choose
   it from the state alone, before they evaluate anything);
2. evaluates ``L`` and ``∇L`` once, at ``z + η·d`` for that step size;
3. runs optax's step again with a *replay* that returns these values.

Steps 1 and 3 compute the same trial point from the same state, so the result is optax's own
iteration. The replay checks that (to a few ulps) and returns ``NaN`` where it does not hold, which
the line search treats as a failed trial: a future optax that chose its trial differently could
slow a fit down but never feed it values of another point. ``tests/test_fit.py`` checks that the
iterates equal ``optax.lbfgs`` with optax's line search on a test function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optax._src.linesearch import ScaleByZoomLinesearchState, ZoomLinesearchInfo, zoom_linesearch

_DEFAULTS = {
    "max_stepsize": None,
    "tol": 0.0,
    "increase_factor": 2.0,
    "slope_rtol": 1e-4,
    "curv_rtol": 0.9,
    "approx_dec_rtol": 1e-6,
    "interval_threshold": 1e-5,
}
"""``zoom_linesearch`` arguments as ``optax.scale_by_zoom_linesearch`` passes them by default."""


def _probe(step):
    """Stands in for ``value_and_grad`` while optax picks its trial: every condition met, no NaN."""
    value = jnp.asarray(-jnp.inf, jnp.result_type(*jax.tree_util.tree_leaves(step)))
    return value, jax.tree_util.tree_map(jnp.zeros_like, step)


def _same_point(a, b) -> jax.Array:
    """Whether two trial points agree to a few ulps (they are one computation, done twice)."""

    def close(x, y):
        eps = jnp.finfo(jnp.result_type(x)).eps
        return jnp.all(jnp.abs(x - y) <= 8 * eps * jnp.maximum(1.0, jnp.abs(y)))

    return jnp.all(jnp.stack([close(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                                                            strict=True)]))  # fmt: skip


def scale_by_zoom_linesearch(max_linesearch_steps: int, initial_guess_strategy: str = "keep"):
    """``optax.scale_by_zoom_linesearch(max_linesearch_steps, initial_guess_strategy=...)`` (other
    arguments at optax's defaults) whose program evaluates ``value_fn`` and its gradient once."""
    init_ls, step_ls, cond_ls = zoom_linesearch(max_linesearch_steps=max_linesearch_steps, verbose=False, **_DEFAULTS)
    transform = optax.scale_by_zoom_linesearch(max_linesearch_steps, initial_guess_strategy=initial_guess_strategy)

    def update_fn(updates, state: ScaleByZoomLinesearchState, params, *, value, grad, value_fn, **extra_args):
        if extra_args:
            raise TypeError(f"value_fn takes no extra arguments here; got {sorted(extra_args)}")
        value_and_grad = jax.value_and_grad(value_fn)
        start = init_ls(updates, params, value=value, grad=grad, prev_stepsize=state.learning_rate,
                        initial_guess_strategy=initial_guess_strategy)  # fmt: skip

        def body(ls):
            chosen = step_ls(ls, value_and_grad_fn=_probe, fn_kwargs={}).stepsize
            point = optax.tree.add_scale(ls.params, chosen, ls.updates)
            found, gradient = value_and_grad(point)

            def replay(step):
                return jnp.where(_same_point(step, point), found, jnp.nan), gradient

            return step_ls(ls, value_and_grad_fn=replay, fn_kwargs={})

        final = jax.lax.while_loop(cond_ls, body, start)
        info = ZoomLinesearchInfo(
            num_linesearch_steps=final.count,
            decrease_error=final.decrease_error,
            curvature_error=final.curvature_error,
        )
        new_state = ScaleByZoomLinesearchState(
            learning_rate=final.stepsize, value=final.value, grad=final.grad, info=info
        )
        return optax.tree.scale(final.stepsize, updates), optax.tree.cast_like(new_state, other_tree=state)

    return optax.GradientTransformationExtraArgs(transform.init, update_fn)
