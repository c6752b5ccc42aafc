"""The core's contracts: run-time failure as a result, traced System coefficients, the grid in the reaction."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk
from tumorfield_kernels import _api


def _steepening_taxis_problem():
    """``c = t·x``: the rate bound of ``u`` is ``2D/Δx² + 2χt/Δx = 2.048 + 64 t`` per day (Δx = 1/32 mm),
    so dt = 0.1 day passes the positivity limit at t ≈ 0.124 day."""
    grid = tk.Grid((64,), 2.0)
    x = grid.coordinates(0)
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3},
        taxis=(tk.Taxis(field="u", attractant="c", chi=1.0),),
        reaction=lambda s, p, t: {"c": p["ramp"]},
    )
    return system, grid, {"u": np.ones(grid.shape), "c": np.zeros(grid.shape)}, {"ramp": x.copy()}


def _blow_up_problem():
    """Explicit logistic growth at r·dt = 100: the local scheme overflows within a few frames."""
    grid = tk.Grid((8,), 1.0)
    system = tk.System(fields=("u",), diffusion={"u": 1e-4}, reaction=lambda s, p, t: {"u": p["r"] * s["u"] ** 2})
    return system, grid, {"u": np.full(grid.shape, 0.5)}


def test_positivity_failure_is_a_result_without_throw():
    system, grid, initial, params = _steepening_taxis_problem()
    traj = tk.simulate(
        system, grid, initial, t_end=0.5, dt=0.1, params=params, throw=False, saveat=tk.SaveAt(every=0.1),
        numerics=tk.Numerics(substeps=tk.NoSubcycling()),
    )  # fmt: skip
    assert traj.result == tk.RESULTS.positivity_limit_exceeded
    # frames 0 (t = 0) … 2 (t = 0.2, the first state beyond the limit) are solutions; 3–5 were not computed
    assert int(traj.n_valid) == 3
    np.testing.assert_allclose(np.asarray(traj.t[:3]), [0.0, 0.1, 0.2], rtol=1e-12)
    assert np.all(np.isnan(np.asarray(traj.t[3:]))) and np.all(np.isnan(np.asarray(traj["u"][3:])))
    assert np.all(np.asarray(traj["u"][:3]) >= 0)
    # the per-frame bound is the analytic one at the valid frames, and its crossing is the failing frame
    bound = np.asarray(traj.stats.rate_bound["u"][:3])
    np.testing.assert_allclose(bound, 2.048 + 64 * np.array([0.0, 0.1, 0.2]), rtol=1e-10)
    assert list(0.1 * bound > 1) == [False, False, True]
    message = tk.failure_message(traj, grid, 0.1)
    assert message.startswith("field 'u': at t = 0.2 day, dt = 0.1 day exceeds the positivity limit")


def test_nonfinite_state_is_a_result_and_names_the_cell():
    system, grid, initial = _blow_up_problem()
    traj = tk.simulate(
        system, grid, initial, t_end=2.0, dt=0.1, params={"r": 1000.0}, throw=False, saveat=tk.SaveAt(every=0.1)
    )
    assert traj.result == tk.RESULTS.nonfinite_state
    n = int(traj.n_valid)
    assert 1 <= n < len(traj)
    assert np.all(np.isfinite(np.asarray(traj["u"][:n])))
    assert not np.all(np.isfinite(np.asarray(traj["u"][n])))  # the bad frame is kept to be inspected
    assert np.all(np.isnan(np.asarray(traj["u"][n + 1 :])))
    message = tk.failure_message(traj, grid, 0.1)
    assert message.startswith(f"field 'u' is not finite at t = {0.1 * n:.6g} day at cell (")
    with pytest.raises(tk.SolverError, match="field 'u' is not finite"):
        tk.simulate(system, grid, initial, t_end=2.0, dt=0.1, params={"r": 1000.0}, saveat=tk.SaveAt(every=0.1))


def test_throw_false_never_raises_even_for_a_dt_beyond_the_limit_at_the_start():
    system, grid, initial, params = _steepening_taxis_problem()
    no_subcycling = tk.Numerics(substeps=tk.NoSubcycling())
    traj = tk.simulate(
        system, grid, initial, t_end=2.0, dt=1.0, params=params, throw=False, saveat=tk.SaveAt(every=1.0),
        numerics=no_subcycling,
    )  # fmt: skip
    assert traj.result == tk.RESULTS.positivity_limit_exceeded and int(traj.n_valid) == 1
    with pytest.raises(ValueError, match="largest stable dt"):
        tk.simulate(system, grid, initial, t_end=2.0, dt=1.0, params=params, saveat=tk.SaveAt(every=1.0),
                    numerics=no_subcycling)  # fmt: skip


def test_successful_run_reports_success_and_every_frame_valid():
    system, grid, initial, params = _steepening_taxis_problem()
    traj = tk.simulate(
        system, grid, initial, t_end=0.5, dt=0.01, params=params, throw=False, saveat=tk.SaveAt(every=0.1)
    )
    assert traj.successful and int(traj.n_valid) == len(traj) == 6
    again = tk.simulate(system, grid, initial, t_end=0.5, dt=0.01, params=params, saveat=tk.SaveAt(every=0.1))
    np.testing.assert_array_equal(np.asarray(again["u"]), np.asarray(traj["u"]))


def test_vmapped_members_fail_independently():
    system, grid, initial = _blow_up_problem()

    def run(r):
        traj = tk.simulate(
            system, grid, initial, t_end=1.0, dt=0.1, params={"r": r}, throw=False, saveat=tk.SaveAt(every=0.1)
        )
        return traj.result == tk.RESULTS.successful, traj.n_valid

    ok, n_valid = jax.vmap(run)(jnp.asarray([0.1, 1000.0, 0.2]))
    assert list(np.asarray(ok)) == [True, False, True]
    assert list(np.asarray(n_valid)[[0, 2]]) == [11, 11] and int(n_valid[1]) < 11


def test_gradient_of_a_failed_trial_is_a_value():
    """A fit rejects a failed trial by its result: ``value_and_grad`` returns (its gradient is not
    meaningful), and a successful trial's gradient is unaffected by the failure handling."""
    system, grid, initial = _blow_up_problem()

    def loss(r):
        traj = tk.simulate(
            system, grid, initial, t_end=1.0, dt=0.1, params={"r": r}, throw=False, saveat=tk.SaveAt(every=0.5)
        )
        ok = traj.result == tk.RESULTS.successful
        return jnp.where(ok, jnp.sum(jnp.where(ok, traj["u"][-1], 0.0)), jnp.inf)

    value, _ = jax.value_and_grad(loss)(jnp.asarray(1000.0))
    assert value == jnp.inf
    value, grad = jax.value_and_grad(loss)(jnp.asarray(0.1))
    assert np.isfinite(float(value)) and float(grad) > 0


def test_throw_inside_a_trace_raises_at_run_time():
    system, grid, initial = _blow_up_problem()

    @jax.jit
    def final(r):
        return tk.simulate(system, grid, initial, t_end=1.0, dt=0.1, params={"r": r})["u"][-1]

    assert np.all(np.isfinite(np.asarray(final(0.1))))
    with pytest.raises(Exception, match="a field became NaN or infinite"):
        jax.block_until_ready(final(1000.0))


def test_compiled_rollout_has_no_host_callback():
    """Nothing in the rollout calls back to Python, with the stability check on: it can be cached."""
    system, grid, initial, params = _steepening_taxis_problem()
    state = _api._prepare_state(system, grid, initial, jnp.float64)
    args = (system, grid, state, tk.cast_floats(params, jnp.float64), jnp.asarray(0.01), jnp.asarray(0.0))
    for numerics in (tk.Numerics(adjoint=tk.Scan()), tk.Numerics(adjoint=tk.SqrtCheckpointed(), dtype="float64"),
                     tk.Numerics(substeps=tk.NoSubcycling())):  # fmt: skip
        text = str(eqx.filter_make_jaxpr(_api._advance_impl)(*args, jnp.asarray(0, jnp.int32), 3, 4, numerics, None)[0])
        assert "callback" not in text, "a host callback in the rollout"
        assert "while" in text or "scan" in text  # sanity: this is the rollout


def test_new_coefficient_values_reuse_the_compiled_rollout():
    grid = tk.Grid((16, 16), 1.0)
    initial = {"u": np.random.default_rng(0).random(grid.shape), "c": 0.0}

    def run(d_u, chi, k):
        system = tk.System(
            fields=("u", "c"),
            diffusion={"u": d_u, "c": 0.05},
            decay={"c": k},
            taxis=(tk.Taxis(field="u", attractant="c", chi=chi),),
            reaction=_reaction,
        )
        return np.asarray(tk.simulate(system, grid, initial, t_end=0.05, dt=0.01)["u"][-1])

    first = run(1e-3, 0.05, 1.0)
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    second = run(2e-3, 0.02, 2.0)
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces  # no recompilation
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(run(1e-3, 0.05, 1.0), first)  # the values, not the first compile, decide
    run(0.0, 0.05, 1.0)  # a zero removes the diffusion term: a new program, by design
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces + 1


def _reaction(s, p, t):
    return {"u": s["u"] * (1.0 - s["u"]), "c": s["u"]}


def test_reaction_receives_the_grid_when_wrapped_with_grid():
    """``∫ u dV`` through ``grid.cell_volume`` in the reaction feeds an ODE variable: ``ds/dt = ∫u`` for constant u."""
    grid = tk.Grid((8, 10), (2.0, 1.0))
    system = tk.System(
        fields=("u", "s"),
        scalars=("s",),
        reaction=tk.WithGrid(lambda state, params, t, grid: {"s": jnp.sum(state["u"]) * grid.cell_volume}),
    )
    with pytest.raises(TypeError, match="WithGrid"):
        tk.System(fields=("u",), reaction=42)
    traj = tk.simulate(system, grid, {"u": 0.5, "s": 0.0}, t_end=1.0, dt=0.1)
    np.testing.assert_allclose(float(traj["s"][-1]), 0.5 * 2.0 * 1.0 * 1.0, rtol=1e-12)
