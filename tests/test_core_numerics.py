"""Numerical choices as objects (``tk.Numerics``, ``tk.SaveAt``): validation, and which choices reuse the
compiled rollout. Equal strategy objects (a new instance with the same settings) reuse it; another
strategy or cap is another program (one new trace, then reused)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk
from tumorfield_kernels import _api


def _reaction(s, p, t):
    return {"u": p["r"] * s["u"] * (1 - s["u"]), "c": 20.0 * s["u"]}


GRID = tk.Grid((12, 12), 1.0)
SYSTEM = tk.System(
    fields=("u", "c"), diffusion={"u": 1e-3, "c": 0.1}, decay={"c": 1.0}, taxis=(tk.Taxis("u", "c", 0.5),),
    reaction=_reaction,
)  # fmt: skip


def _problem():
    y, x = GRID.mesh()
    return SYSTEM, GRID, {"u": np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.02), "c": 0.0}


def _run(numerics):
    system, grid, y0 = _problem()
    return tk.simulate(system, grid, y0, t_end=0.05, dt=0.01, params={"r": 1.0}, numerics=numerics, throw=False)


def test_equal_choices_reuse_the_compile_and_new_structures_compile_once():
    traces = lambda: eqx.debug.get_num_traces(_api._advance_impl)  # noqa: E731
    _run(tk.Numerics())
    base = traces()
    _run(tk.Numerics(cell_diffusion=tk.ExplicitDiffusion(), substeps=tk.Subcycle(64), adjoint=tk.SqrtCheckpointed()))
    assert traces() == base  # equal objects (the defaults spelled out): the same program
    for numerics in (
        tk.Numerics(cell_diffusion=tk.ImplicitDiffusion()),
        tk.Numerics(substeps=tk.Subcycle(max_substeps=8)),
        tk.Numerics(substeps=tk.NoSubcycling()),
        tk.Numerics(adjoint=tk.Scan()),
    ):
        before = traces()
        _run(numerics)
        assert traces() == before + 1, numerics  # a new structure: compiled once …
        _run(eqx.tree_at(lambda n: n, numerics, numerics))
        _run(type(numerics)(numerics.cell_diffusion, numerics.substeps, numerics.adjoint, numerics.dtype))
        assert traces() == before + 1, numerics  # … and reused by an equal one


def test_defaults_are_the_cli_defaults():
    numerics = tk.Numerics()
    assert numerics.cell_diffusion == tk.ExplicitDiffusion() and numerics.adjoint == tk.SqrtCheckpointed()
    assert numerics.substeps == tk.Subcycle(max_substeps=64) and numerics.substeps.cap == 64
    assert tk.substeps_from_cap(1) == tk.NoSubcycling() and tk.substeps_from_cap(5) == tk.Subcycle(5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: tk.Numerics(cell_diffusion="implicit"),
            r"Numerics\(cell_diffusion='implicit'\): must be a CellDiffusion",
        ),
        (lambda: tk.Numerics(substeps=64), r"Numerics\(substeps=64\): must be a Substeps"),
        (lambda: tk.Numerics(adjoint=True), r"Numerics\(adjoint=True\): must be a Scan"),
        (lambda: tk.Numerics(dtype="float16"), r"Numerics\(dtype='float16'\): allowed are"),
        (lambda: tk.Subcycle(max_substeps=1), r"Subcycle\(max_substeps=1\): must be an integer ≥ 2"),
        (lambda: tk.Subcycle(max_substeps=2.5), r"Subcycle\(max_substeps=2.5\)"),
        (lambda: tk.SaveAt(every=-1.0), r"SaveAt\(every=-1.0\): a positive number of days"),
        (lambda: tk.SaveAt(observe="mass"), r"SaveAt\(observe='mass'\): a function"),
    ],
)
def test_bad_choices_are_refused_naming_the_value_and_the_rule(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_advance_refuses_saveat_every_and_non_numerics():
    system, grid, y0 = _problem()
    with pytest.raises(ValueError, match=r"SaveAt\(every=0.02\) is simulate's"):
        tk.advance(system, grid, y0, dt=0.01, n_saves=1, steps_per_save=2, params={"r": 1.0},
                   saveat=tk.SaveAt(every=0.02))  # fmt: skip
    with pytest.raises(TypeError, match="numerics=.*must be a tumorfield Numerics"):
        _run({"cell_diffusion": "implicit"})


def test_forward_mode_numerics_give_the_same_values_and_a_jvp():
    """``Numerics.forward_mode()`` swaps the sub-step loop for a ``lax.while_loop``: the same values, and
    ``jax.jvp`` works through a sub-cycled run (the checkpointed loop is reverse-mode only)."""
    import jax

    system, grid, y0 = _problem()
    dt = 0.05

    def final(r, numerics):
        traj = tk.simulate(system, grid, y0, t_end=2 * dt, dt=dt, params={"r": r}, numerics=numerics)
        return traj["u"][-1], traj.stats.substeps

    reverse, substeps = final(jnp.asarray(1.0), tk.Numerics())
    assert int(np.max(np.asarray(substeps))) >= 2  # it sub-cycles
    forward, _ = final(jnp.asarray(1.0), tk.Numerics().forward_mode())
    np.testing.assert_array_equal(np.asarray(forward), np.asarray(reverse))
    _, tangent = jax.jvp(lambda r: final(r, tk.Numerics().forward_mode())[0], (1.0,), (1.0,))
    assert np.all(np.isfinite(np.asarray(tangent))) and float(jnp.abs(tangent).max()) > 0
    gradient = jax.grad(lambda r: jnp.sum(final(r, tk.Numerics())[0]))(1.0)
    np.testing.assert_allclose(float(gradient), float(jnp.sum(tangent)), rtol=1e-4)


def test_make_stepper_steps_like_the_rollout():
    system, grid, y0 = _problem()
    params = tk.cast_floats({"r": 1.0}, None)
    stepper = tk.make_stepper(system, grid, params, 0.01)
    state = tk.initial_frame(system, grid, y0, params)
    for n in range(3):
        state = stepper(state, 0.01 * n)
    traj = tk.simulate(system, grid, y0, t_end=0.03, dt=0.01, params=params)
    np.testing.assert_allclose(np.asarray(state["u"]), np.asarray(traj["u"][-1]), rtol=1e-6, atol=1e-7)
