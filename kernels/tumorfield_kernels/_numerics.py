"""How to solve, apart from what: numerical choices as small strategy objects.

A :class:`System` on a :class:`Grid` says what is solved; :class:`Numerics` says how — how the
cells' diffusion is advanced (:class:`ExplicitDiffusion`, :class:`ImplicitDiffusion`), what
happens where the explicit part's positivity limit falls below ``dt`` (:class:`Subcycle`,
:class:`NoSubcycling`, :class:`Unchecked`), how reverse mode stores the steps
(:class:`SqrtCheckpointed`, :class:`Scan`), and the floating-point precision. :class:`SaveAt`
says what is recorded. Every choice has one default, used by the API, the CLI, sweeps and fits
alike. Strategies are ``eqx.Module`` s: their types and integer settings are static (a new one
compiles anew), so equal choices share a compiled rollout.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax import lax

from ._system import System, is_zero

# -- cell diffusion ------------------------------------------------------------------------------


class CellDiffusion(eqx.Module):
    """How the diffusion of local (cell) fields is advanced."""

    @abc.abstractmethod
    def split_fields(self, system: System) -> tuple[str, ...]:
        """The fields whose diffusion is split off and advanced implicitly."""


class ExplicitDiffusion(CellDiffusion):
    """In the cells' explicit SSP-RK2 step, on local stencils: ``dt ∝ Δx²`` (``docs/numerics.md`` §4)."""

    def split_fields(self, system: System) -> tuple[str, ...]:
        return ()


class ImplicitDiffusion(CellDiffusion):
    """Split off (Strang) and advanced by MPRK22 with tridiagonal solves per axis: non-negative,
    conservative, second order; ``dt`` is then limited by taxis and decay only
    (``docs/numerics.md`` §4b). Zero-flux walls only."""

    def split_fields(self, system: System) -> tuple[str, ...]:
        names = tuple(
            name for name in system.dynamic_fields
            if name not in system.scalars and system.method(name) == "local"
            and not is_zero(system.diffusion.get(name, 0.0))
        )  # fmt: skip
        for name in names:
            if name in system.dirichlet:
                raise ValueError(
                    f"ImplicitDiffusion(): field {name!r} has a fixed wall value (System.dirichlet), which the "
                    "implicit diffusion does not support (zero-flux walls only); use ExplicitDiffusion()"
                )
        return names


# -- the positivity limit ------------------------------------------------------------------------


def checkpointed_while_loop(cond, body, init, max_steps):
    """A while loop that reverse mode differentiates (``equinox.internal.while_loop``, checkpointed)."""
    return eqxi.while_loop(cond, body, init, max_steps=max_steps, kind="checkpointed")


def forward_while_loop(cond, body, init, max_steps):
    """A ``lax.while_loop``: forward mode (``jax.jvp``, ``jacfwd``) differentiates it, reverse mode does not."""
    return lax.while_loop(cond, body, init)


class Substeps(eqx.Module):
    """What a step does where the explicit part's positivity limit has fallen below ``dt``."""

    @property
    def cap(self) -> int:
        """The most sub-steps a step may take (1: none)."""
        return 1

    @property
    def checks_positivity(self) -> bool:
        """Whether the rollout checks the positivity limit at every frame."""
        return True

    def forward_mode(self) -> Substeps:
        """The same choice, forward-mode differentiable (the same values)."""
        return self


class NoSubcycling(Substeps):
    """Never cut a step: a frame from which the next step would break positivity ends the run
    (``RESULTS.positivity_limit_exceeded``; that frame is kept)."""


class Unchecked(Substeps):
    """Neither cut steps nor check the limit (probe runs of ``max_stable_dt_over_run``; a run that
    outgrows the limit may go negative without a word — use only where that is known not to happen)."""

    @property
    def checks_positivity(self) -> bool:
        return False


class Subcycle(Substeps):
    """Cut the explicit part of a step into ``n = ⌈dt · bound⌉ ≤ max_substeps`` equal sub-steps where
    its positivity limit has fallen below ``dt`` (taxis steepening); a step that needs more ends the
    run (``RESULTS.substep_limit_exceeded``). ``axis_name``: the ``jax.vmap`` axis (sweep members,
    fit arms) whose members decide together whether a step is sub-cycled, so the choice stays a
    branch rather than a select that runs both. ``while_loop``: the sub-step loop
    (:func:`checkpointed_while_loop`: reverse mode; :meth:`forward_mode`: a ``lax.while_loop``)."""

    max_substeps: int = eqx.field(static=True, default=64)
    axis_name: str | None = eqx.field(static=True, default=None)
    while_loop: Callable = eqx.field(static=True, default=checkpointed_while_loop)

    def __check_init__(self):
        n = self.max_substeps
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"Subcycle(max_substeps={n!r}): must be an integer ≥ 2 (NoSubcycling() for none)")

    @property
    def cap(self) -> int:
        return self.max_substeps

    def forward_mode(self) -> Subcycle:
        return Subcycle(self.max_substeps, self.axis_name, forward_while_loop)


def substeps_from_cap(max_substeps: int, axis_name: str | None = None) -> Substeps:
    """The strategy of a config's ``numerics.max_substeps``: 1 → :class:`NoSubcycling`, else :class:`Subcycle`."""
    if isinstance(max_substeps, bool) or not isinstance(max_substeps, int) or max_substeps < 1:
        raise ValueError(f"max_substeps={max_substeps!r}: must be an integer ≥ 1 (1: no sub-cycling)")
    return NoSubcycling() if max_substeps == 1 else Subcycle(max_substeps, axis_name)


# -- reverse mode --------------------------------------------------------------------------------


class Scan(eqx.Module):
    """``lax.scan`` over the steps of a frame; reverse mode stores every step's residuals."""

    def __call__(self, step, carry, length):
        return lax.scan(step, carry, None, length=length)


class SqrtCheckpointed(Scan):
    """``lax.scan(step, carry, None, length)`` whose reverse pass stores O(√length) carries.

    Two levels (Griewank & Walther, *Evaluating Derivatives*, 2008, ch. 12): ``length =
    blocks × size + rest`` (``size`` from :meth:`block_size`); the forward pass keeps only the carry
    entering each block, and the backward pass re-runs one block at a time, keeping the carry
    entering each of its steps and re-running each step for its VJP (``jax.checkpoint`` on both
    levels). Memory is ``blocks + size`` (``2√length`` to ``3√length``) carries plus one step's
    residuals; the forward pass runs three times in all. A remainder (``rest > 0``) is a second,
    shorter scan: a second copy of the step's code in the program, which :meth:`block_size` avoids
    wherever it can.
    """

    def __call__(self, step, carry, length):
        size = self.block_size(length)
        blocks, rest = divmod(length, size)
        checkpointed_step = jax.checkpoint(step, prevent_cse=False)

        @functools.partial(jax.checkpoint, prevent_cse=False)
        def block(carry, _):
            return lax.scan(checkpointed_step, carry, None, length=size)

        carry, observed = lax.scan(block, carry, None, length=blocks)
        observed = jax.tree_util.tree_map(lambda x: x.reshape((blocks * size,) + x.shape[2:]), observed)
        if rest:
            carry, tail = jax.checkpoint(lambda c: lax.scan(checkpointed_step, c, None, length=rest))(carry)
            observed = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), observed, tail)
        return carry, observed

    @staticmethod
    def block_size(length: int) -> int:
        """Steps per block: the smallest divisor of ``length`` in ``[√length, 2√length]`` (no
        remainder block; at most ``√length`` blocks, whose entering carries a rollout of several
        frames keeps for every frame), else ``⌊√length⌋`` (with a remainder)."""
        root = max(1, math.isqrt(length))
        start = root if root * root == length else root + 1
        for size in range(start, 2 * root + 1):
            if length % size == 0:
                return size
        return root


# -- the whole choice ----------------------------------------------------------------------------

_DTYPES = (None, "float32", "float64")


def _dtype_name(dtype):
    """``"float32"``/``"float64"`` from a name or a numpy/JAX dtype (None stays None); others unchanged
    (refused by :class:`Numerics`)."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    try:
        return jnp.dtype(dtype).name
    except TypeError:
        return dtype


class Numerics(eqx.Module):
    """How a :class:`System` is advanced. Defaults are the one choice of the API, CLI, sweeps and fits.

    ``cell_diffusion``: :class:`ExplicitDiffusion` (default) or :class:`ImplicitDiffusion`.
    ``substeps``: :class:`Subcycle` (default, up to 64 sub-steps), :class:`NoSubcycling` or
    :class:`Unchecked`. ``adjoint``: :class:`SqrtCheckpointed` (default) or :class:`Scan`.
    ``dtype``: ``"float32"``, ``"float64"`` or None (JAX's default float: float32 unless x64 is
    enabled) — the precision of the fields and parameters; scalar ODE variables are float64
    whenever x64 is enabled.
    """

    cell_diffusion: CellDiffusion = ExplicitDiffusion()
    substeps: Substeps = Subcycle()
    adjoint: Scan = SqrtCheckpointed()
    dtype: str | None = eqx.field(static=True, default=None, converter=_dtype_name)

    def __check_init__(self):
        for name, value, kind in (
            ("cell_diffusion", self.cell_diffusion, CellDiffusion),
            ("substeps", self.substeps, Substeps),
            ("adjoint", self.adjoint, Scan),
        ):
            if not isinstance(value, kind):
                raise TypeError(f"Numerics({name}={value!r}): must be a {kind.__name__} (e.g. {_EXAMPLES[name]})")
        if self.dtype not in _DTYPES:
            raise ValueError(f"Numerics(dtype={self.dtype!r}): allowed are 'float32', 'float64' or None")

    @property
    def float_dtype(self):
        """The field dtype: ``dtype``, or JAX's default float."""
        return jnp.dtype(self.dtype) if self.dtype is not None else jnp.result_type(float)

    def vmapped(self, axis_name: str | None) -> Numerics:
        """The same numerics for runs ``jax.vmap``-ed under ``axis_name``: a :class:`Subcycle` decides for
        them together (None: each alone); other choices unchanged."""
        if not isinstance(self.substeps, Subcycle):
            return self
        substeps = Subcycle(self.substeps.max_substeps, axis_name, self.substeps.while_loop)
        return eqx.tree_at(lambda n: n.substeps, self, substeps)

    def forward_mode(self) -> Numerics:
        """The same numerics, forward-mode differentiable (``jacfwd``): the sub-step loop a
        ``lax.while_loop`` (same values)."""
        return eqx.tree_at(lambda n: n.substeps, self, self.substeps.forward_mode())


_EXAMPLES = {
    "cell_diffusion": "ExplicitDiffusion() or ImplicitDiffusion()",
    "substeps": "Subcycle(max_substeps=64), NoSubcycling() or Unchecked()",
    "adjoint": "SqrtCheckpointed() or Scan()",
}


class SaveAt(eqx.Module):
    """What a rollout records: frames every ``every`` days (``simulate``; default: the end only;
    ``advance`` saves every ``steps_per_save`` steps), and ``observe(state, params, t)``, a pytree of
    scalars recorded after every step (None: nothing). ``observe`` is static: the same function
    object reuses the compiled rollout."""

    every: float | None = eqx.field(static=True, default=None)
    observe: Callable | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.every is not None and not (isinstance(self.every, int | float) and 0 < self.every < math.inf):
            raise ValueError(f"SaveAt(every={self.every!r}): a positive number of days")
        if self.observe is not None and not callable(self.observe):
            raise TypeError(f"SaveAt(observe={self.observe!r}): a function observe(state, params, t)")
