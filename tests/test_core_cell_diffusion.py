"""Implicit (MPRK22, split) cell diffusion and sub-cycling of the explicit part (issue 14).

Measured quantities (``-s`` prints them) are asserted against the bounds of
``docs/numerics.md`` (section 4b): conservation, positivity at the largest accepted step,
empty tissue in float32, a gradient against central differences, no recompilation, the 3D
Keller–Segel collapse completing by sub-cycling, and the cap-exceeded result. The
convergence orders of the implicit diffusion are in ``tests/test_core_verification.py``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk
from _problems import steepening_taxis
from tumorfield_kernels import _api


def _motility(state, params):
    """``D (1 + 2u)`` (mm²/day): state-dependent, as the tumour's ``D_n(1 + a_D Φ_T)``."""
    return params["D"] * (1.0 + 2.0 * state["u"])


def _chi(state, params):
    return params["chi"]


def _reaction(state, params, t):
    return {"u": params["r"] * state["u"] * (1.0 - state["u"]), "c": params["a"] * state["u"]}


SYSTEM = tk.System(
    fields=("u", "c"),
    diffusion={"u": tk.StateDependent(_motility), "c": 0.05},
    decay={"c": 1.0},
    taxis=(tk.Taxis(field="u", attractant="c", chi=_chi),),
    reaction=_reaction,
)
PARAMS = {"D": 0.02, "chi": 0.02, "r": 1.0, "a": 0.5}


def _smooth_initial(grid):
    y, x = grid.mesh()
    return {
        "u": 0.5 + 0.3 * np.cos(np.pi * x) * np.cos(np.pi * y) + 0.1 * x,
        "c": 1.0 + 0.5 * np.cos(2 * np.pi * x) + 0.2 * y,
    }


def test_implicit_diffusion_conserves_mass_and_stays_non_negative_far_beyond_the_diffusion_limit():
    # no reaction, state-dependent motility and taxis, no-flux walls, float64
    grid = tk.Grid((32, 32), (1.0, 1.0))
    y, x = grid.mesh()
    u0 = np.where((x - 0.4) ** 2 + (y - 0.5) ** 2 < 0.02, 1.0, 0.0)  # exact zeros around a patch
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": tk.StateDependent(lambda state, params: 0.02 * (1.0 + 4.0 * state["u"])), "c": 0.0},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.02),),
    )
    initial = {"u": u0, "c": np.cos(np.pi * x) * np.sin(np.pi * y)}
    limits = tk.step_limits(system, grid, initial)["u"]
    dt = limits["split"]  # the largest accepted step: taxis-limited
    assert dt > 50 * limits["diffusion"], limits  # diffusion alone would need a far smaller step
    traj = tk.simulate(
        system,
        grid,
        initial,
        t_end=200 * dt,
        dt=dt,
        numerics=tk.Numerics(cell_diffusion=tk.ImplicitDiffusion()),
        saveat=tk.SaveAt(every=50 * dt),
    )
    u = np.asarray(traj["u"])
    totals = u.sum(axis=(1, 2))
    drift = float(np.max(np.abs(totals - totals[0])) / totals[0])
    print(
        f"limits {limits}; dt = {dt:.4g}: relative drift of the total over 200 steps = {drift:.2e}, min u = {u.min()}"
    )
    assert drift < 1e-12
    assert u.min() >= 0.0
    assert np.abs(u[-1] - u[0]).max() > 0.1  # it moved


def test_implicit_diffusion_keeps_empty_tissue_empty_in_float32(float32):
    # Fisher–KPP front in float32 at a step 8× the explicit diffusion limit: no negative
    # round-off anywhere (an M-matrix solve never subtracts). Unlike the explicit stencil
    # (one cell per stage), the implicit solve reaches every cell, with values that fall
    # geometrically ahead of the front.
    n, side = 400, 4.0
    grid = tk.Grid((n,), side)
    (x,) = grid.mesh()
    system = tk.System(
        fields=("u",),
        diffusion={"u": 0.01},
        reaction=lambda state, params, t: {"u": 0.5 * state["u"] * (1 - state["u"])},
    )
    u0 = np.where(x < 0.2, 1.0, 0.0)
    diffusion_limit = tk.step_limits(system, grid, {"u": u0})["u"]["diffusion"]
    dt = 0.04  # 8× diffusion_limit = 0.005
    assert dt >= 7.9 * diffusion_limit
    traj = tk.simulate(
        system,
        grid,
        {"u": u0},
        t_end=10.0,
        dt=dt,
        numerics=tk.Numerics(cell_diffusion=tk.ImplicitDiffusion(), dtype="float32"),
        saveat=tk.SaveAt(every=2.0),
    )
    u = np.asarray(traj["u"])
    assert u.dtype == np.float32
    far = u[:, x > 3.0]
    front = float(x[np.argmin(np.abs(u[-1] - 0.5))])
    print(f"float32 implicit: front at {front:.3f} mm, min u = {u.min()}, far field (x > 3 mm) max = {far.max():.3e}")
    ahead = u[-1][x > front]
    assert u.min() >= 0.0
    # the tail ahead of the front decreases monotonically (no round-off noise of either sign) and
    # lies below the pulled front's own tail e^{−√(r/D) (x − front)} (≈ 5e-5 at 1.4 mm)
    assert np.all(np.diff(ahead) <= 0.0)
    assert far.max() < 1e-6
    explicit = tk.simulate(system, grid, {"u": u0}, t_end=10.0, dt=0.004, numerics=tk.Numerics(dtype="float32"))
    front_explicit = float(x[np.argmin(np.abs(np.asarray(explicit["u"][-1]) - 0.5))])
    print(f"front of the explicit run at dt = 0.004: {front_explicit:.3f} mm")
    assert abs(front - front_explicit) <= 2 * grid.spacing[0]


def test_gradient_through_implicit_diffusion_and_subcycles_matches_central_differences():
    # implicit diffusion at 2.5× its explicit limit, and taxis strong enough that the explicit
    # part sub-cycles: reverse mode through both (the sub-cycles' checkpointed while loop); the
    # finite differences reuse the compiled rollout (parameters are traced)
    grid = tk.Grid((16,), 1.0)
    (x,) = grid.mesh()
    initial = {"u": 0.5 + 0.3 * np.cos(np.pi * x) + 0.1 * x, "c": 1.0 + 0.5 * np.cos(2 * np.pi * x)}
    params = {**PARAMS, "D": 0.1, "chi": 0.6}

    def loss(p):
        traj = tk.simulate(
            SYSTEM,
            grid,
            initial,
            t_end=0.1,
            dt=0.05,
            params=p,
            numerics=tk.Numerics(cell_diffusion=tk.ImplicitDiffusion(), substeps=tk.Subcycle(4)),
            saveat=tk.SaveAt(every=0.1),
        )
        u, c = traj["u"][-1], traj["c"][-1]
        return jnp.sum(u**2) + jnp.sum(c * u), traj

    limits = tk.step_limits(SYSTEM, grid, initial, params)["u"]
    assert 0.05 > 2.5 * limits["diffusion"] and 0.05 > 2 * limits["split"], limits
    _, traj = loss(params)
    assert int(np.asarray(traj.stats.substeps).max()) >= 2, traj.stats.substeps
    grad = jax.grad(lambda p: loss(p)[0])(params)
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    for name in ("D", "chi", "r"):
        h = 1e-6 * params[name]
        fd = float(loss({**params, name: params[name] + h})[0] - loss({**params, name: params[name] - h})[0]) / (2 * h)
        rel = abs(float(grad[name]) - fd) / abs(fd)
        print(f"limits {limits}: d/d{name} {float(grad[name]):.10g}, central difference {fd:.10g}, rel {rel:.1e}")
        assert rel < 1e-5, (name, rel)
    # the six forward runs at new parameter values reuse the first compiled rollout
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces


def _keller_segel_3d():
    """README system in 3D without growth (mass is conserved): 24³ on a 4 mm box, χ = 0.05,
    D_u = 1e-3, D_c = 0.5 mm²/day, k = 1/day, attractant production s u with s = 40/day,
    from u = 1 + 10 % noise. Aggregates collapse; at dt = 0.004 the explicit positivity limit
    falls below dt at t ≈ 2 (3.6e-3 day at t = 2.0, 3.1e-3 at t = 3.0)."""
    grid = tk.Grid((24, 24, 24), 4.0)
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3, "c": 0.5},
        decay={"c": 1.0},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.05),),
        reaction=lambda state, params, t: {"c": 40.0 * state["u"]},
    )
    u0 = 1.0 + 0.1 * np.random.default_rng(0).standard_normal(grid.shape)
    return system, grid, {"u": u0, "c": np.full(grid.shape, 40.0)}


def test_keller_segel_collapse_3d_completes_by_subcycling():
    system, grid, initial = _keller_segel_3d()
    traj = tk.simulate(
        system,
        grid,
        initial,
        t_end=3.0,
        dt=0.004,
        numerics=tk.Numerics(substeps=tk.Subcycle(64)),
        saveat=tk.SaveAt(every=0.2),
    )
    u = np.asarray(traj["u"])
    totals = u.sum(axis=(1, 2, 3))
    drift = float(np.max(np.abs(totals - totals[0])) / totals[0])
    substeps = np.asarray(traj.stats.substeps)
    limit_at_end = 1.0 / float(traj.stats.rate_bound["u"][-1])
    print(f"substeps per frame {substeps}; limit at t = 3: {limit_at_end:.3g} day; drift {drift:.1e}; "
          f"min u {u.min():.3g}, max u {u.max():.3g}")  # fmt: skip
    assert traj.successful and len(traj) == 16
    assert limit_at_end < 0.004 and substeps.max() >= 2  # it did need sub-cycling
    assert drift < 1e-10
    assert u.min() >= 0.0
    assert u.max() > 20  # collapsed


def test_subcycle_cap_exceeded_during_the_run():
    # the attractant grows like e^{5t}: taxis outgrows 4 sub-steps of a dt stable at t = 0
    system, grid, initial, dt = steepening_taxis()
    traj = tk.simulate(
        system,
        grid,
        initial,
        t_end=400 * dt,
        dt=dt,
        throw=False,
        numerics=tk.Numerics(substeps=tk.Subcycle(4)),
        saveat=tk.SaveAt(every=10 * dt),
    )
    n_valid = int(traj.n_valid)
    substeps = np.asarray(traj.stats.substeps)
    message = tk.failure_message(traj, grid, dt, max_substeps=4, limit_name="numerics.max_substeps")
    print(f"substeps {substeps[: n_valid + 1]}; {message}")
    assert traj.result == tk.RESULTS.substep_limit_exceeded
    assert 2 < n_valid < len(traj) and substeps[n_valid] > 4 and substeps[1:n_valid].max() <= 4
    assert substeps[1:n_valid].max() >= 2  # it sub-cycled before giving up
    assert np.all(np.asarray(traj["u"][:n_valid]) >= 0.0)
    assert f"dt = {dt} day needed {substeps[n_valid]} explicit sub-steps" in message
    assert "numerics.max_substeps = 4" in message and f"by t = {float(traj.t[n_valid]):.6g} day" in message
    with pytest.raises(tk.SolverError, match="more than max_substeps = 4"):
        tk.simulate(
            system,
            grid,
            initial,
            t_end=400 * dt,
            dt=dt,
            numerics=tk.Numerics(substeps=tk.Subcycle(4)),
            saveat=tk.SaveAt(every=10 * dt),
        )
    # refused before compiling: a dt beyond max_substeps × the limit at the start; bad values
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    with pytest.raises(ValueError, match="times max_substeps = 4; the largest stable dt is"):
        tk.simulate(system, grid, initial, t_end=10 * dt, dt=5 * dt, numerics=tk.Numerics(substeps=tk.Subcycle(4)))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"max_substeps={bad!r}: must be an integer ≥ 1"):
            tk.simulate(
                system, grid, initial, t_end=dt, dt=dt, numerics=tk.Numerics(substeps=tk.substeps_from_cap(bad))
            )
    with pytest.raises(TypeError, match=r"Numerics\(cell_diffusion='implicitly'\): must be a CellDiffusion"):
        tk.simulate(system, grid, initial, t_end=dt, dt=dt, numerics=tk.Numerics(cell_diffusion="implicitly"))
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces
    # without throw the start check gives the result, and the message says so
    start = tk.simulate(
        system, grid, initial, t_end=10 * dt, dt=5 * dt, throw=False, numerics=tk.Numerics(substeps=tk.Subcycle(4))
    )
    assert start.result == tk.RESULTS.substep_limit_exceeded and int(start.n_valid) == 1
    message = tk.failure_message(start, grid, 5 * dt, max_substeps=4, limit_name="numerics.max_substeps")
    assert "at the start of this call" in message and "numerics.max_substeps = 4" in message
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_substeps"):
            tk.simulate(
                system, grid, initial, t_end=dt, dt=dt, numerics=tk.Numerics(substeps=tk.substeps_from_cap(bad))
            )
    with pytest.raises(TypeError, match=r"Numerics\(cell_diffusion='implicitly'\): must be a CellDiffusion"):
        tk.simulate(system, grid, initial, t_end=dt, dt=dt, numerics=tk.Numerics(cell_diffusion="implicitly"))


def test_vmapped_members_decide_together_whether_to_subcycle():
    """Under ``vmap(axis_name=)`` with ``batch_axis``, a member that needs no sub-cycling while another
    does takes one sub-step of dt: every member equals its separate run to round-off (the one-sub-step
    loop is the same arithmetic, compiled in another fusion), with the same sub-step counts, and the
    sub-cycling choice stays a real branch (a ``cond`` in the batched program)."""
    steepening, grid, initial, dt = steepening_taxis()
    system = tk.System(
        fields=steepening.fields, diffusion=steepening.diffusion, taxis=steepening.taxis,
        reaction=lambda s, p, t: {"c": p["g"] * s["c"]},
    )  # fmt: skip
    growth = jnp.asarray([0.0, 5.0])  # member 0: the attractant is constant; member 1: it steepens

    def run(g, batch_axis=None):
        return tk.simulate(
            system,
            grid,
            initial,
            t_end=40 * dt,
            dt=dt,
            params={"g": g},
            throw=False,
            numerics=tk.Numerics(substeps=tk.Subcycle(16, axis_name=batch_axis)),
            saveat=tk.SaveAt(every=10 * dt),
        )

    batched = jax.vmap(lambda g: run(g, "members"), axis_name="members")(growth)
    separate = [run(g) for g in growth]
    assert all(traj.result == tk.RESULTS.successful for traj in separate)
    assert (
        int(np.max(np.asarray(separate[1].stats.substeps))) >= 2
        and int(np.max(np.asarray(separate[0].stats.substeps))) == 1
    )
    for i in range(2):
        np.testing.assert_allclose(np.asarray(batched["u"][i]), np.asarray(separate[i]["u"]), rtol=1e-13, atol=0)
        np.testing.assert_array_equal(
            np.asarray(batched.stats.step_substeps[i]), np.asarray(separate[i].stats.step_substeps)
        )
    assert np.all(np.asarray(batched["u"]) >= 0.0)

    def conds(batch_axis):
        fn = jax.vmap(lambda g: run(g, batch_axis).fields["u"], axis_name="members")
        return str(jax.make_jaxpr(fn)(growth)).count("cond[")

    assert conds("members") > conds(None)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 33, 64])
def test_cyclic_reduction_solves_the_face_form_matrix(n):
    """``_tridiagonal_solve`` (cyclic reduction) against a dense solve of the same M-matrix, odd and
    even lengths; in float32, with face weights over nine decades and a right-hand side that is
    mostly exact zeros, the solution is non-negative and the column sums (mass) are kept."""
    from tumorfield_kernels._diffusion import _tridiagonal_solve

    rng = np.random.default_rng(n)
    p, q = (rng.uniform(0, 5, (n, 3)) for _ in range(2))
    p[-1] = q[-1] = 0.0
    rhs = rng.uniform(0, 1, (n, 3))
    matrix = np.zeros((3, n, n))
    for i in range(n):
        matrix[:, i, i] = 1.0 + q[i] + (p[i - 1] if i else 0.0)
        if i:
            matrix[:, i, i - 1] = -q[i - 1]
        if i < n - 1:
            matrix[:, i, i + 1] = -p[i]
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-13)  # unit column sums
    expected = np.stack([np.linalg.solve(matrix[j], rhs[:, j]) for j in range(3)], axis=1)
    x = np.asarray(_tridiagonal_solve(jnp.asarray(p), jnp.asarray(q), jnp.asarray(rhs)))
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-14)
    # float32, stiff and sparse
    w = (10.0 ** rng.uniform(-6, 3, (n, 1))).astype(np.float32)
    w[-1] = 0.0
    sparse = np.where(rng.uniform(size=(n, 5)) < 0.2, rng.uniform(0, 1e-20, (n, 5)), 0.0).astype(np.float32)
    x32 = np.asarray(_tridiagonal_solve(jnp.asarray(w), jnp.asarray(w), jnp.asarray(sparse)))
    assert x32.dtype == np.float32 and np.all(x32 >= 0.0)
    np.testing.assert_allclose(x32.sum(axis=0), sparse.sum(axis=0), rtol=1e-5)


def test_tridiagonal_solve_reverse_rule_is_jax_own_derivative():
    """The solve's reverse mode is implicit differentiation (``lax.custom_linear_solve``: one solve with
    the transposed matrix, the product's derivative in the face weights); it must equal JAX's own
    derivative of the cyclic reduction, for full and broadcast face weights, under ``vmap`` and in
    forward mode, and leave the forward values bit for bit as they were."""
    from tumorfield_kernels import _diffusion

    def reduction(back, ahead, rhs):  # the solve differentiated by JAX through every reduction level
        zero = jnp.zeros_like(back[:1])
        lower = -jnp.concatenate([zero, ahead[:-1]], axis=0)
        diag = 1.0 + ahead + jnp.concatenate([zero, back[:-1]], axis=0)
        return _diffusion._reduce(lower, diag, -back, rhs)

    rng = np.random.default_rng(0)
    n, m = 10, 4
    back, ahead = (jnp.asarray(rng.random((n, m))).at[-1].set(0.0) for _ in range(2))
    rhs, g = jnp.asarray(rng.random((n, m))), jnp.asarray(rng.standard_normal((n, m)))
    solve = jax.jit(_diffusion._tridiagonal_solve)
    np.testing.assert_array_equal(solve(back, ahead, rhs), jax.jit(reduction)(back, ahead, rhs))
    for coefficients in ((back, ahead), (back[:, :1], ahead[:, :1])):
        got = jax.jit(lambda *a: jax.vjp(_diffusion._tridiagonal_solve, *a)[1](g))(*coefficients, rhs)
        want = jax.jit(lambda *a: jax.vjp(reduction, *a)[1](g))(*coefficients, rhs)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    tangents = tuple(jnp.asarray(rng.standard_normal((n, m))) for _ in range(3))
    forward = [jax.jit(lambda *t, f=f: jax.jvp(f, (back, ahead, rhs), t)[1])(*tangents)
               for f in (_diffusion._tridiagonal_solve, reduction)]  # fmt: skip
    np.testing.assert_allclose(*forward, rtol=1e-12, atol=1e-14)
    stacked = jnp.stack([rhs, 2.0 * rhs])
    got, want = (jax.jit(jax.vmap(lambda r, f=f: jax.vjp(f, back, ahead, r)[1](g)))(stacked)
                 for f in (_diffusion._tridiagonal_solve, reduction))  # fmt: skip
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
