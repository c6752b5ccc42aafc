"""API contract of the core: errors before compute, 3D, quasi-steady solves,
scalar ODE variables, observables, chunked continuation, runtime stability
checks and the memory of reverse-mode differentiation."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import tumorfield_kernels as tk
from _problems import steepening_taxis
from tumorfield_kernels import _api


def _logistic_taxis_system():
    return tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3, "c": 0.05},
        decay={"c": 1.0},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.05),),
        reaction=lambda s, p, t: {"u": p["r"] * s["u"] * (1.0 - s["u"]), "c": s["u"]},
    )


def _bump(grid, width=0.02):
    mesh = grid.mesh()
    r2 = sum((m - 0.5 * side) ** 2 for m, side in zip(mesh, grid.length, strict=True))
    return 0.5 * np.exp(-r2 / width)


# --- input validation: clear errors before any compute ------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": ("u",), "diffusion": {"v": 1.0}}, r"System.diffusion\['v'\]: no such field"),
        ({"fields": ("u",), "diffusion": {"u": -1.0}}, r"System.diffusion\['u'\]=-1.0: must be ≥ 0"),
        ({"fields": ("u",), "decay": {"u": "fast"}}, r"System.decay\['u'\]='fast'"),
        ({"fields": ("u", "u")}, "must be unique"),
        ({"fields": "u"}, "give a tuple of names"),
        ({"fields": ("u",), "taxis": (tk.Taxis("u", "c", 1.0),)}, r"Taxis.attractant='c': no such field"),
        ({"fields": ("u",), "quasi_steady": ("u",)}, r"System.decay\['u'\]=0.0: a quasi-steady field needs decay > 0"),
        ({"fields": ("u",), "methods": {"u": "implicit"}}, "allowed are 'local', 'exponential'"),
        ({"fields": ("u", "m"), "scalars": ("m",), "diffusion": {"m": 1.0}}, "cannot diffuse"),
    ],
)
def test_system_validation(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tk.System(**kwargs)


@pytest.mark.parametrize(
    ("shape", "length", "message"),
    [
        ((8, 8), (1.0,), "must match"),
        ((8, 1), 1.0, "at least 2 cells"),
        ((8, 8), -1.0, "positive length"),
        ((2, 2, 2, 2), 1.0, "1, 2 or 3 axes"),
    ],
)
def test_grid_validation(shape, length, message):
    with pytest.raises(ValueError, match=message):
        tk.Grid(shape=shape, length=length)


NO_SUBCYCLING = tk.NoSubcycling()  # the limit ends the run (or refuses the dt) instead of cutting steps


def test_simulate_input_errors_name_key_value_and_rule():
    system = _logistic_taxis_system()
    grid = tk.Grid((12, 12), 1.0)
    good = {"u": _bump(grid), "c": 0.0}
    params = {"r": 1.0}
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    with pytest.raises(ValueError, match=r"initial\['u'\] has shape \(12, 13\); the grid's shape is \(12, 12\)"):
        tk.simulate(system, grid, {"u": np.zeros((12, 13)), "c": 0.0}, t_end=0.1, dt=0.01, params=params)
    with pytest.raises(ValueError, match=r"initial has unknown fields \['w'\]"):
        tk.simulate(system, grid, {**good, "w": 0.0}, t_end=0.1, dt=0.01, params=params)
    with pytest.raises(ValueError, match=r"initial\['c'\] is missing"):
        tk.simulate(system, grid, {"u": good["u"]}, t_end=0.1, dt=0.01, params=params)
    with pytest.raises(ValueError, match=r"SaveAt.every=0.025 is not a positive whole number of steps of dt=0.01"):
        tk.simulate(system, grid, good, t_end=0.1, dt=0.01, params=params, saveat=tk.SaveAt(every=0.025))
    with pytest.raises(ValueError, match=r"t_end - t0=0.1 is not a whole number of SaveAt.every=0.03"):
        tk.simulate(system, grid, good, t_end=0.1, dt=0.01, params=params, saveat=tk.SaveAt(every=0.03))
    with pytest.raises(ValueError, match=r"dt=5.0 day exceeds .* the largest stable dt is"):
        tk.simulate(system, grid, good, t_end=10.0, dt=5.0, params=params, numerics=tk.Numerics(substeps=NO_SUBCYCLING))
    # none of the above reached the compiled rollout
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces


def test_reaction_with_unknown_field_is_an_error():
    system = tk.System(fields=("u",), diffusion={"u": 1e-3}, reaction=lambda s, p, t: {"v": s["u"]})
    grid = tk.Grid((8,), 1.0)
    with pytest.raises(ValueError, match=r"reaction returned rates for unknown fields \['v'\]"):
        tk.simulate(system, grid, {"u": 1.0}, t_end=0.1, dt=0.01)


# --- shapes, 3D, trajectory contract ------------------------------------------------


def test_trajectory_contract_2d_and_3d():
    system = _logistic_taxis_system()
    for shape in ((12, 10), (6, 8, 10)):
        grid = tk.Grid(shape, tuple(0.1 * n for n in shape))
        traj = tk.simulate(
            system,
            grid,
            {"u": _bump(grid), "c": 0.0},
            t_end=0.2,
            dt=0.01,
            params={"r": 1.0},
            saveat=tk.SaveAt(every=0.05),
        )
        assert traj.t.shape == (5,) and len(traj) == 5
        np.testing.assert_allclose(np.asarray(traj.t), [0.0, 0.05, 0.1, 0.15, 0.2], rtol=0, atol=1e-12)
        for name in ("u", "c"):
            assert traj[name].shape == (5, *shape)
            assert traj[name].dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(traj["u"][0]), _bump(grid))
        assert float(jnp.max(traj["c"][-1])) > 0.0  # the attractant was produced


# --- quasi-steady fields: the DCT solve against a sparse direct solve ---------------


def _zero_flux_laplacian_matrix(shape, spacing, dirichlet=False):
    """The same finite-volume stencil assembled as a sparse matrix (independent of the DCT).

    ``dirichlet=True``: ghost cells ``−u_edge`` (the part linear in u of a fixed wall value).
    """
    ops = []
    for n, dx in zip(shape, spacing, strict=True):
        main = -2.0 * np.ones(n)
        main[0] = main[-1] = -3.0 if dirichlet else -1.0  # ghost −u_edge, or = u_edge: zero flux
        ops.append(sp.diags([np.ones(n - 1), main, np.ones(n - 1)], [-1, 0, 1]) / dx**2)
    total = sp.csr_matrix((int(np.prod(shape)),) * 2)
    for axis, op in enumerate(ops):
        factors = [sp.identity(n) for n in shape]
        factors[axis] = op
        kron = factors[0]
        for f in factors[1:]:
            kron = sp.kron(kron, f)
        total = total + kron
    return total.tocsr()


@pytest.mark.parametrize("shape", [(20, 14), (6, 8, 10)])
def test_quasi_steady_field_matches_sparse_solve(shape):
    grid = tk.Grid(shape, tuple(0.07 * n for n in shape))
    d, k = 0.3, 2.5
    system = tk.System(
        fields=("u", "c"),
        diffusion={"c": d},
        decay={"c": k},
        quasi_steady=("c",),
        reaction=lambda s, p, t: {"c": 3.0 * s["u"]},
    )
    u = np.random.default_rng(0).random(shape)
    traj = tk.simulate(system, grid, {"u": u}, t_end=0.02, dt=0.01)
    matrix = d * _zero_flux_laplacian_matrix(shape, grid.spacing) - k * sp.identity(u.size)
    expected = spla.spsolve(matrix.tocsc(), -3.0 * u.reshape(-1)).reshape(shape)
    rel = float(np.max(np.abs(np.asarray(traj["c"][0]) - expected)) / np.max(np.abs(expected)))
    assert rel < 1e-12, rel
    # u has no dynamics, so c stays the same solution in every frame
    np.testing.assert_allclose(np.asarray(traj["c"][-1]), expected, rtol=1e-12, atol=0)


def test_local_laplacian_equals_sparse_stencil():
    shape, spacing = (9, 7, 5), (0.1, 0.2, 0.3)
    u = np.random.default_rng(1).random(shape)
    expected = (_zero_flux_laplacian_matrix(shape, spacing) @ u.reshape(-1)).reshape(shape)
    np.testing.assert_allclose(np.asarray(tk.laplacian(jnp.asarray(u), spacing)), expected, rtol=1e-12, atol=1e-10)


# --- scalar ODE variables -----------------------------------------------------------


def test_scalar_variable_integrates_a_grid_integral():
    # m' = −k m + α ∫u dV with u fixed: m(t) = (α U / k)(1 − e^{−k t})
    grid = tk.Grid((10, 10), (2.0, 1.0))
    k, alpha = 0.7, 0.3
    system = tk.System(
        fields=("u", "m"),
        decay={"m": k},
        scalars=("m",),
        reaction=lambda s, p, t: {"m": alpha * jnp.sum(s["u"]) * grid.cell_volume},
    )
    u = np.random.default_rng(2).random(grid.shape)
    total = float(u.sum() * grid.cell_volume)
    errors = []
    for dt in (0.1, 0.05, 0.025):
        traj = tk.simulate(system, grid, {"u": u, "m": 0.0}, t_end=2.0, dt=dt, saveat=tk.SaveAt(every=1.0))
        assert traj["m"].shape == (3,) and traj["m"].dtype == jnp.float64
        exact = alpha * total / k * (1 - np.exp(-k * 2.0))
        errors.append(abs(float(traj["m"][-1]) - exact) / exact)
    # ScalarETDRK2 takes the decay exactly: exact for this constant source at every dt (its order
    # with a time-varying source: test_core_verification's scalar ODE test)
    assert max(errors) < 1e-13, errors


# --- observables -----------------------------------------------------------------


def test_observe_records_every_step():
    system = _logistic_taxis_system()
    grid = tk.Grid((12, 12), 1.0)

    def observe(state, params, t):
        return {"mass": jnp.sum(state["u"]), "t": t}

    traj = tk.simulate(
        system,
        grid,
        {"u": _bump(grid), "c": 0.0},
        t_end=0.2,
        dt=0.01,
        params={"r": 1.0},
        saveat=tk.SaveAt(every=0.1, observe=observe),
    )
    assert traj.observed["mass"].shape == (20,)
    np.testing.assert_allclose(np.asarray(traj.t_observed), 0.01 * np.arange(1, 21), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.observed["t"]), np.asarray(traj.t_observed), rtol=0, atol=1e-12)
    # the observable after steps 10 and 20 is that of the saved frames
    np.testing.assert_allclose(
        np.asarray(traj.observed["mass"])[[9, 19]], np.asarray(jnp.sum(traj["u"][1:], axis=(1, 2))), rtol=1e-14
    )


# --- chunked continuation is bit-identical ------------------------------------------


def test_advance_in_chunks_is_bit_identical():
    system = _logistic_taxis_system()
    grid = tk.Grid((16, 16), 1.0)
    initial = {"u": _bump(grid), "c": 0.0}
    params = {"r": 1.0}
    whole = tk.advance(system, grid, initial, dt=0.01, n_saves=6, steps_per_save=5, params=params, t0=0.3)
    whole_state, whole_step = whole.final_state, whole.final_step
    state, step, frames = initial, 0, []
    for _ in range(3):
        traj = tk.advance(system, grid, state, dt=0.01, n_saves=2, steps_per_save=5, params=params, step=step, t0=0.3)
        state, step = traj.final_state, traj.final_step
        frames.append(traj)
    assert int(step) == int(whole_step) == 30
    for name in ("u", "c"):
        np.testing.assert_array_equal(np.asarray(state[name]), np.asarray(whole_state[name]))
        chunked = np.concatenate([np.asarray(f[name]) for f in frames])
        np.testing.assert_array_equal(chunked, np.asarray(whole[name]))
    np.testing.assert_array_equal(np.concatenate([np.asarray(f.t) for f in frames]), np.asarray(whole.t))


# --- runtime stability check --------------------------------------------------------


def test_runtime_error_when_taxis_steepens_beyond_the_limit():
    # the attractant grows like e^{5t}, so taxis speeds (and the explicit limit)
    # outgrow a dt that was stable at t = 0
    system, grid, initial, dt = steepening_taxis()
    with pytest.raises(Exception, match="exceeds the positivity limit"):
        traj = tk.simulate(
            system, grid, initial, t_end=100 * dt, dt=dt, saveat=tk.SaveAt(every=10 * dt),
            numerics=tk.Numerics(substeps=NO_SUBCYCLING),
        )  # fmt: skip
        jax.block_until_ready(traj.fields)
    # with the check switched off the same run loses positivity (negative values,
    # then overflow): the check caught a real failure
    traj = tk.simulate(
        system,
        grid,
        initial,
        t_end=100 * dt,
        dt=dt,
        throw=False,
        numerics=tk.Numerics(substeps=tk.Unchecked()),
        saveat=tk.SaveAt(every=10 * dt),
    )
    valid = np.asarray(traj["u"])[: int(traj.n_valid)]
    assert not np.all(valid >= 0.0)
    assert traj.result == tk.RESULTS.nonfinite_state


# --- reverse-mode memory does not grow with the number of steps ---------------------


def _grad_temp_bytes(steps, checkpoint=True):
    system = _logistic_taxis_system()
    grid = tk.Grid((16, 16), 1.0)
    u0 = jnp.asarray(_bump(grid))

    def loss(r):
        traj = tk.simulate(
            system,
            grid,
            {"u": u0, "c": 0.0},
            t_end=steps * 0.001,
            dt=0.001,
            params={"r": r},
            numerics=tk.Numerics(substeps=tk.Unchecked(), adjoint=(tk.SqrtCheckpointed() if checkpoint else tk.Scan())),
        )
        return jnp.sum(traj["u"][-1])

    compiled = jax.jit(jax.grad(loss)).lower(jnp.asarray(1.0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_reverse_mode_memory_is_sublinear_in_steps():
    short, long = _grad_temp_bytes(200, True), _grad_temp_bytes(1600, True)
    # a tape of every step would hold at least the two 16×16 float64 fields per step
    tape = 1600 * 2 * 16 * 16 * 8
    print(f"grad temp bytes: checkpointed 200 steps {short}, 1600 steps {long}; full tape ≥ {tape}")
    # 8× the steps: a stored-every-step backward pass needs ~8× the memory,
    # the checkpointed scan ~√8 ≈ 2.8×
    assert long < 4.0 * short
    assert long < 0.2 * tape


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 9, 10, 17])
def test_two_level_checkpointed_scan_equals_a_plain_scan(length):
    """Carry, per-step outputs and the gradient equal ``lax.scan``'s, for perfect
    squares and for lengths with a remainder block."""

    def step(carry, _):
        x, k = carry
        x = jnp.sin(x) * k + 0.1 * x**2
        return (x, k), jnp.sum(x**3)

    def run(scan, x0, k):
        (x, _), ys = scan(step, (x0, k), length)
        return jnp.sum(x * x) + jnp.sum(ys * jnp.arange(1.0, length + 1.0))

    def plain(step, carry, length):
        return jax.lax.scan(step, carry, None, length=length)

    x0, k = jnp.linspace(0.1, 0.9, 7), jnp.asarray(0.8)
    (x_want, _), ys_want = plain(step, (x0, k), length)
    (x_got, _), ys_got = tk.SqrtCheckpointed()(step, (x0, k), length)
    assert ys_got.shape == (length,)
    np.testing.assert_array_equal(x_got, x_want)
    np.testing.assert_array_equal(ys_got, ys_want)
    want = jax.grad(run, argnums=(1, 2))(plain, x0, k)
    got = jax.grad(run, argnums=(1, 2))(tk.SqrtCheckpointed(), x0, k)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


# --- φ-functions of ETDRK2 ----------------------------------------------------------


def _phi_reference(z):
    """φ₁, φ₂ by a long series summed with ``math.fsum`` (|z| ≤ 1) or expm1."""
    if abs(z) <= 1.0:
        terms = [z**j / math.factorial(j + 1) for j in range(40)]
        terms2 = [z**j / math.factorial(j + 2) for j in range(40)]
        return math.fsum(terms), math.fsum(terms2)
    return math.expm1(z) / z, (math.expm1(z) - z) / z**2


def test_phi_functions_accurate_to_round_off():
    zs = np.array([-200.0, -3.0, -0.5001, -0.4999, -0.3, -1e-3, 0.0, 1e-9, 0.2, 0.4999, 0.5001, 2.0])
    e, phi1, phi2 = (np.asarray(v) for v in tk.phi_functions(jnp.asarray(zs)))
    for i, z in enumerate(zs):
        ref1, ref2 = _phi_reference(float(z))
        assert abs(phi1[i] - ref1) <= 4e-16 * abs(ref1), (z, phi1[i], ref1)
        assert abs(phi2[i] - ref2) <= 4e-16 * abs(ref2), (z, phi2[i], ref2)
    np.testing.assert_allclose(e, np.exp(zs), rtol=1e-15)


# --- fixed wall values (Dirichlet) --------------------------------------------------


def _dirichlet_system(g):
    # the same problem three ways: quasi-steady (DST solve), exponential (ETDRK2
    # with the DST) and local (ghost cell, SSP-RK2): D∇²c − k c + R = 0, c = g on walls
    d, k = 0.1, 4.0

    def reaction(state, params, t):
        return {name: state["s"] for name in ("q", "e", "l")}

    system = tk.System(
        fields=("s", "q", "e", "l"),
        diffusion={"q": d, "e": d, "l": d},
        decay={"q": k, "e": k, "l": k},
        quasi_steady=("q",),
        methods={"l": "local"},
        dirichlet={"q": g, "e": g, "l": lambda p: p["g"]},
        reaction=reaction,
    )
    assert system.method("e") == "exponential" and system.method("l") == "local"
    return system, d, k


def test_dirichlet_walls_agree_with_sparse_solve_in_all_three_methods():
    g = 2.0
    system, d, k = _dirichlet_system(g)
    grid = tk.Grid((12, 10), (0.6, 0.4))
    source = np.random.default_rng(3).random(grid.shape)
    lap = _zero_flux_laplacian_matrix(grid.shape, grid.spacing, dirichlet=True)
    # wall contributions of the ghost cells 2g − u_edge: +2g/Δx² in edge cells
    wall = np.zeros(grid.shape)
    for axis, dx in enumerate(grid.spacing):
        edge = [slice(None)] * grid.ndim
        for index in (0, -1):
            edge[axis] = index
            wall[tuple(edge)] += 2.0 * g / dx**2
    matrix = d * lap - k * sp.identity(source.size)
    expected = spla.spsolve(matrix.tocsc(), -(source + d * wall).reshape(-1)).reshape(grid.shape)
    initial = {"s": source, "e": 0.0, "l": 0.0}
    dt = min(tk.max_stable_dt(system, grid, initial, {"g": g}).values())
    steps = int(np.ceil(6.0 / dt))  # k t = 24: the transient is e^{−24} ≈ 4e-11
    traj = tk.simulate(
        system, grid, initial, t_end=steps * dt, dt=dt, params={"g": g}, saveat=tk.SaveAt(every=steps * dt)
    )
    for name, tol in (("q", 1e-12), ("e", 1e-9), ("l", 1e-9)):
        rel = float(np.max(np.abs(np.asarray(traj[name][-1]) - expected)) / np.max(np.abs(expected)))
        assert rel < tol, (name, rel)
    # the quasi-steady solve holds from the first frame
    np.testing.assert_allclose(np.asarray(traj["q"][0]), expected, rtol=1e-12)


def test_dirichlet_local_limit_accounts_for_the_wall_face():
    system, d, k = _dirichlet_system(1.0)
    grid = tk.Grid((20,), 1.0)
    dx = grid.spacing[0]
    limit = tk.max_stable_dt(system, grid, {"s": 0.0, "e": 0.0, "l": 0.0}, {"g": 1.0})["l"]
    np.testing.assert_allclose(limit, 1.0 / (k + 3.0 * d / dx**2), rtol=1e-12)


def test_dirichlet_quasi_steady_converges_to_cosh_profile():
    # 1D, no source: c = g cosh(a(x − L/2)) / cosh(aL/2), a = √(k/D)
    g = 1.5
    system, d, k = _dirichlet_system(g)
    a = np.sqrt(k / d)
    errors = []
    for n in (32, 64, 128):
        grid = tk.Grid((n,), 1.0)
        x = grid.coordinates(0)
        traj = tk.simulate(system, grid, {"s": 0.0, "e": g, "l": g}, t_end=1e-4, dt=1e-4, params={"g": g})
        exact = g * np.cosh(a * (x - 0.5)) / np.cosh(a * 0.5)
        errors.append(float(np.max(np.abs(np.asarray(traj["q"][0]) - exact))))
    orders = [np.log2(errors[i] / errors[i + 1]) for i in range(2)]
    print(f"Dirichlet cosh profile: max errors {errors}, orders {orders}")
    assert min(orders) > 1.8, (errors, orders)


def test_dirichlet_validation():
    with pytest.raises(ValueError, match=r"System.dirichlet\['u'\]: 'u' does not diffuse"):
        tk.System(fields=("u",), dirichlet={"u": 1.0})
    with pytest.raises(ValueError, match=r"System.dirichlet\['u'\]=-1.0: a wall value must be ≥ 0"):
        tk.System(fields=("u",), diffusion={"u": 1.0}, dirichlet={"u": -1.0})
    with pytest.raises(ValueError, match=r"System.dirichlet\['v'\]: no such field"):
        tk.System(fields=("u",), diffusion={"u": 1.0}, dirichlet={"v": 1.0})


# --- spectral transforms --------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(16,), (9,), (1,), (12, 10), (7, 8), (8, 7), (5, 7), (1, 4), (6, 8, 10), (5, 4, 3), (9, 4, 6), (2, 3, 1)]
)
def test_real_fft_dct_matches_scipy_and_inverts(shape):
    """The n-dimensional Makhoul DCT (one ``rfftn``) equals scipy's orthonormal DCT-II
    (and the DST-II variant) to round-off, for even, odd and unit axis lengths."""
    import scipy.fft
    from tumorfield_kernels import _spectral as ops

    x = np.random.default_rng(len(shape) * 100 + shape[0]).random(shape)
    coefficients = ops.to_spectral(jnp.asarray(x))
    np.testing.assert_allclose(coefficients, scipy.fft.dctn(x, type=2, norm="ortho"), rtol=0, atol=1e-13)
    np.testing.assert_allclose(ops.from_spectral(coefficients), x, rtol=0, atol=1e-14)
    # dirichlet=True: DST-II, coefficient j = DST coefficient n−1−j along each axis
    dst = scipy.fft.dstn(x, type=2, norm="ortho")[tuple(slice(None, None, -1) for _ in shape)]
    np.testing.assert_allclose(ops.to_spectral(jnp.asarray(x), True), dst, rtol=0, atol=1e-13)
    np.testing.assert_allclose(ops.from_spectral(ops.to_spectral(jnp.asarray(x), True), True), x, atol=1e-14)


@pytest.mark.parametrize("shape, batch", [((7, 8), 0), ((3, 9, 4), 1), ((5, 4, 3), 0)])
@pytest.mark.parametrize("dirichlet", [False, True])
def test_transform_primitives_transpose_to_their_inverse_and_batch(shape, batch, dirichlet):
    """The transforms are primitives with their own rules: the reverse-mode transpose of each is the
    other (the orthonormal DCT is orthogonal), equal to JAX's transpose of the Makhoul algorithm it
    replaces, ``⟨C x, y⟩ = ⟨x, Cᵀ y⟩``; the tangent of each is itself; ``vmap`` over any axis is the
    transform of each slice; float32 as float64 to its round-off."""
    from tumorfield_kernels import _spectral as ops

    rng = np.random.default_rng(sum(shape))
    x, y = (jnp.asarray(rng.standard_normal(shape)) for _ in range(2))
    axis = x.ndim - 1
    for transform, algorithm in ((ops.to_spectral, ops._forward_impl), (ops.from_spectral, ops._inverse_impl)):

        @jax.jit
        def checks(x, y, transform=transform, algorithm=algorithm):
            def f(u):
                return transform(u, dirichlet, batch)

            (transposed,) = jax.linear_transpose(f, x)(y)
            (by_autodiff,) = jax.vjp(lambda u: algorithm(u, dirichlet=dirichlet, batch=batch), x)[1](y)
            tangent = jax.jvp(f, (x,), (y,))[1]
            mapped = jax.vmap(f, in_axes=axis, out_axes=axis)(x)
            one_by_one = jnp.stack([f(jnp.take(x, i, axis=axis)) for i in range(x.shape[axis])], axis=axis)
            low = jax.grad(lambda u: jnp.sum(f(u) * y.astype(jnp.float32)))(x.astype(jnp.float32))
            return f(x), transposed, by_autodiff, tangent, f(y), mapped, one_by_one, low

        fx, transposed, by_autodiff, tangent, fy, mapped, one_by_one, low = checks(x, y)
        np.testing.assert_allclose(transposed, by_autodiff, rtol=0, atol=1e-12)
        np.testing.assert_allclose(jnp.vdot(fx, y), jnp.vdot(x, transposed), rtol=1e-12)
        np.testing.assert_allclose(tangent, fy, rtol=0, atol=1e-13)
        np.testing.assert_allclose(mapped, one_by_one, rtol=0, atol=1e-13)
        assert low.dtype == jnp.float32
        np.testing.assert_allclose(low, transposed, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(transposed))))


# --- state-dependent diffusion ------------------------------------------------------


def _nonlinear_diffusion_system(a=4.0):
    """``∂u/∂t = ∇·(D₀ (1 + a u) ∇u)``, porous-medium-like; conserves ∫u."""
    return tk.System(
        fields=("u",),
        diffusion={"u": tk.StateDependent(lambda s, p: p["D0"] * (1.0 + a * s["u"]))},
    )


def test_state_dependent_diffusion_conserves_and_converges_second_order():
    system = _nonlinear_diffusion_system()
    errors, totals = [], []
    previous = None
    for n in (16, 32, 64):
        grid = tk.Grid(shape=(n, n), length=(1.0, 1.0))
        u0 = _bump(grid, width=0.02)
        traj = tk.simulate(system, grid, {"u": u0}, t_end=0.5, dt=1e-4, params={"D0": 0.01})
        u = np.asarray(traj["u"][-1])
        totals.append(abs(u.sum() - u0.sum()) / u0.sum())
        if previous is not None:
            coarse = u.reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3))  # cell averages on the coarser grid
            errors.append(np.sqrt(np.mean((coarse - previous) ** 2)))
        previous = u
    order = np.log2(errors[0] / errors[1])
    print(f"nonlinear diffusion: self-convergence order {order:.3f}, conservation {max(totals):.1e}")
    assert max(totals) < 1e-12
    assert order > 1.8


def test_state_dependent_diffusion_limit_uses_the_largest_coefficient():
    system = _nonlinear_diffusion_system(a=4.0)
    grid = tk.Grid(shape=(10, 10), length=(1.0, 1.0))
    u0 = np.zeros(grid.shape)
    u0[3, 4] = 0.5  # D = D0 (1 + 4·0.5) = 3 D0 in that cell
    limit = tk.max_stable_dt(system, grid, {"u": u0}, {"D0": 0.01})["u"]
    assert limit == pytest.approx(1.0 / (2 * 2 * 0.03 / 0.1**2), rel=1e-12)
    traj = tk.simulate(system, grid, {"u": u0}, t_end=50 * limit, dt=limit, params={"D0": 0.01})
    assert float(jnp.min(traj["u"])) >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": {"u": "exponential"}, "decay": {"u": 1.0}}, "constant D"),
        ({"quasi_steady": ("u",), "decay": {"u": 1.0}}, "quasi-steady"),
        ({"dirichlet": {"u": 0.0}}, "fixed wall values"),
    ],
)
def test_state_dependent_diffusion_refused_where_it_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tk.System(fields=("u",), diffusion={"u": tk.StateDependent(lambda s, p: 1.0 + s["u"])}, **kwargs)
