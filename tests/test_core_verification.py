"""Analytic verification of the numerical core (float64 unless stated).

Every test measures a quantity (convergence order, conservation error,
steady-state error, gradient error, front speed) and asserts it against a
bound derived in ``docs/numerics.md``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk
from tumorfield_kernels import _api


def _slope(h, err):
    """Least-squares slope of log(err) against log(h): the observed order."""
    return float(np.polyfit(np.log(np.asarray(h)), np.log(np.asarray(err)), 1)[0])


# --- 1. manufactured solution: diffusion + decay + taxis + reaction ---------------

# Exact solution on the unit box, separable with Neumann-compatible cosines:
#   u = 1 + a(t) φ(x),  a = ½ e^{−t},        φ = Π_i cos(π x_i)           (cells: local, taxis up c)
#   c = b(t) ψ(x),      b = 1 + ½ sin 2t,    ψ = cos(2π x_0) Π_{i>0} cos(π x_i)   (attractant: exponential)
# Equations: u_t = D_u ∇²u − ∇·(χ u ∇c) + r u(1−u) + S_u
#            c_t = D_c ∇²c − k c + α u + S_c
# The sources S = (exact left side) − (exact right side) are assembled from
# ∇²φ = −n π² φ, ∇²ψ = −(n + 3) π² ψ and ∇φ·∇ψ, and evaluated at the stage
# time through the ``t`` argument of the reaction.
_MMS = {"du": 0.01, "dc": 0.05, "k": 2.0, "chi": 0.05, "r": 1.0, "alpha": 0.5}


def _mms_problem(grid, motility=0.0, du=None):
    """The manufactured problem; ``motility = β`` makes the cells' diffusion state-dependent,
    ``D_u (1 + β u)`` (``StateDependent``), with ``∇·(D_u(1+βu)∇u) = D_u[(1+βu)∇²u + β|∇u|²]`` in the
    source; ``du`` overrides ``D_u``."""
    x = grid.mesh()
    n = grid.ndim
    cos = [np.cos(np.pi * xi) for xi in x]
    sin = [np.sin(np.pi * xi) for xi in x]
    phi = np.prod(cos, axis=0)
    psi = np.cos(2 * np.pi * x[0]) * np.prod(cos[1:], axis=0)
    # ∂_i φ and ∂_i ψ, then their dot product
    dphi = [-np.pi * sin[i] * np.prod([cos[j] for j in range(n) if j != i], axis=0) for i in range(n)]
    dpsi = [-2 * np.pi * np.sin(2 * np.pi * x[0]) * np.prod(cos[1:], axis=0)]
    dpsi += [
        -np.pi * sin[i] * np.cos(2 * np.pi * x[0]) * np.prod([cos[j] for j in range(1, n) if j != i], axis=0)
        for i in range(1, n)
    ]
    grad_dot = sum(a * b for a, b in zip(dphi, dpsi, strict=True))
    grad_phi_sq = sum(a * a for a in dphi)
    lap_phi, lap_psi = -n * np.pi**2 * phi, -(n + 3) * np.pi**2 * psi
    phi, psi, grad_dot, lap_phi, lap_psi, grad_phi_sq = (
        jnp.asarray(v) for v in (phi, psi, grad_dot, lap_phi, lap_psi, grad_phi_sq)
    )
    p = dict(_MMS) if du is None else {**_MMS, "du": du}
    beta = motility

    def coefficients(t):
        return 0.5 * jnp.exp(-t), -0.5 * jnp.exp(-t), 1.0 + 0.5 * jnp.sin(2.0 * t), jnp.cos(2.0 * t)

    def exact(t):
        a, _, b, _ = coefficients(jnp.asarray(t, jnp.float64))
        return {"u": 1.0 + a * phi, "c": b * psi}

    def reaction(state, params, t):
        a, da, b, db = coefficients(t)
        u_e, c_e = 1.0 + a * phi, b * psi
        div_taxis = p["chi"] * (a * b * grad_dot + u_e * b * lap_psi)
        diffusion = p["du"] * ((1.0 + beta * u_e) * a * lap_phi + beta * a * a * grad_phi_sq)
        s_u = da * phi - diffusion + div_taxis - params["r"] * u_e * (1.0 - u_e)
        s_c = db * psi - p["dc"] * b * lap_psi + p["k"] * c_e - params["alpha"] * u_e
        u = state["u"]
        return {"u": params["r"] * u * (1.0 - u) + s_u, "c": params["alpha"] * u + s_c}

    d_u = p["du"] if beta == 0.0 else tk.StateDependent(lambda state, params: p["du"] * (1.0 + beta * state["u"]))
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": d_u, "c": p["dc"]},
        decay={"c": p["k"]},
        taxis=(tk.Taxis(field="u", attractant="c", chi=p["chi"]),),
        reaction=reaction,
    )
    assert system.method("u") == "local" and system.method("c") == "exponential"
    params = {"r": p["r"], "alpha": p["alpha"]}
    return system, exact, params


def _mms_error(n, ndim, t_end, dt, reference=None, **options):
    """``options``: ``motility``, ``du`` (of the problem) and ``cell_diffusion`` (of ``simulate``)."""
    grid = tk.Grid(shape=(n,) * ndim, length=1.0)
    cell_diffusion = options.pop("cell_diffusion", "explicit")
    system, exact, params = _mms_problem(grid, **options)
    traj = tk.simulate(
        system,
        grid,
        exact(0.0),
        t_end=t_end,
        dt=dt,
        params=params,
        numerics=tk.Numerics(
            cell_diffusion=(tk.ImplicitDiffusion() if cell_diffusion == "implicit" else tk.ExplicitDiffusion()),
            adjoint=tk.Scan(),
        ),
    )
    final = {name: traj[name][-1] for name in ("u", "c")}
    target = exact(t_end) if reference is None else reference
    # discrete L2 norm over the box, per field; the worse of the two
    err = max(float(jnp.sqrt(jnp.mean((final[f] - target[f]) ** 2))) for f in ("u", "c"))
    return err, final


@pytest.mark.parametrize(("ndim", "sizes", "t_end"), [(2, (16, 32, 64), 0.2), (3, (8, 16, 32), 0.1)])
def test_manufactured_solution_space_order(ndim, sizes, t_end):
    # dt ∝ Δx² keeps the O(Δt²) time error O(Δx⁴), far below the spatial error.
    errors, spacings = [], []
    for n in sizes:
        dx = 1.0 / n
        steps = math.ceil(t_end / (0.2 * dx * dx))
        err, _ = _mms_error(n, ndim, t_end, t_end / steps)
        errors.append(err)
        spacings.append(dx)
    order = _slope(spacings, errors)
    print(f"{ndim}D space: Δx={spacings} L2 errors={errors} order={order:.3f}")
    assert order >= 1.8, (order, errors)


@pytest.mark.parametrize(("ndim", "n"), [(2, 32), (3, 12)])
def test_manufactured_solution_time_order(ndim, n):
    t_end = 0.5
    grid = tk.Grid((n,) * ndim, 1.0)
    system, exact, params = _mms_problem(grid)
    limit = tk.max_stable_dt(system, grid, exact(0.0), params)["u"]
    steps = [60, 120, 240]
    assert t_end / steps[0] < limit  # the coarsest step is accepted
    _, reference = _mms_error(n, ndim, t_end, t_end / 3840)
    errors = [_mms_error(n, ndim, t_end, t_end / s, reference)[0] for s in steps]
    dts = [t_end / s for s in steps]
    order = _slope(dts, errors)
    print(f"{ndim}D time: dt={dts} errors vs dt={t_end / 3840:g} reference={errors} order={order:.3f}")
    assert order >= 1.8, (order, errors)


def test_implicit_cell_diffusion_time_order_with_state_dependent_motility():
    # cells diffuse with D_u (1 + 2u), D_u = 0.05: split off and advanced by MPRK22 at steps 1.7–7×
    # the explicit diffusion limit (taxis-limited steps). Observed order from successive halvings,
    # log2(|u_Δt − u_Δt/2| / |u_Δt/2 − u_Δt/4|), with no reference run.
    n, t_end, options = 16, 0.5, {"motility": 2.0, "du": 0.05, "cell_diffusion": "implicit"}
    grid = tk.Grid((n, n), 1.0)
    system, exact, params = _mms_problem(grid, motility=2.0, du=0.05)
    limits = tk.step_limits(system, grid, exact(0.0), params)["u"]
    steps = [15, 30, 60]
    assert t_end / steps[-1] > 1.5 * limits["diffusion"] and t_end / steps[0] < limits["split"], limits
    finals = [_mms_error(n, 2, t_end, t_end / s, **options)[1] for s in steps]
    differences = [
        max(float(jnp.sqrt(jnp.mean((a[f] - b[f]) ** 2))) for f in ("u", "c"))
        for a, b in zip(finals[:-1], finals[1:], strict=True)
    ]
    order = math.log2(differences[0] / differences[1])
    print(
        f"implicit cell diffusion, time: limits {limits}, steps {steps}, differences {differences}, order={order:.3f}"
    )
    assert order >= 1.8, (order, differences)


def test_implicit_cell_diffusion_space_order_with_state_dependent_motility():
    # dt ∝ Δx (as the taxis limit allows), far above the explicit diffusion limit ∝ Δx² on the finest grid
    t_end, errors, spacings = 0.2, [], []
    for n in (16, 32, 64):
        grid = tk.Grid((n, n), 1.0)
        system, exact, params = _mms_problem(grid, motility=2.0, du=0.05)
        dt = t_end / n
        limits = tk.step_limits(system, grid, exact(0.0), params)["u"]
        assert dt < limits["split"]
        err, _ = _mms_error(n, 2, t_end, dt, motility=2.0, du=0.05, cell_diffusion="implicit")
        errors.append(err)
        spacings.append(1.0 / n)
    assert dt > 10 * limits["diffusion"], limits
    order = _slope(spacings, errors)
    print(f"implicit cell diffusion, space: Δx={spacings} L2 errors={errors} order={order:.3f}")
    assert order >= 1.8, (order, errors)


# --- 2. conservation ----------------------------------------------------------------


def test_diffusion_and_taxis_conserve_totals():
    grid = tk.Grid(shape=(32, 32), length=(1.0, 1.0))
    y, x = grid.mesh()
    rng = np.random.default_rng(0)
    u0 = np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.02) + 0.1 * rng.random(grid.shape)
    c0 = np.cos(np.pi * x) * np.cos(2 * np.pi * y) + 1.0 + 0.1 * rng.random(grid.shape)
    system = tk.System(
        fields=("u", "c", "w"),
        diffusion={"u": 1e-3, "c": 0.02, "w": 0.05},
        taxis=(tk.Taxis(field="u", attractant="c", chi=0.02),),
        methods={"w": "exponential"},  # the DCT path too: its zero mode has e^{0} = 1
    )
    initial = {"u": u0, "c": c0, "w": c0}
    dt = 0.5 * min(tk.max_stable_dt(system, grid, initial).values())
    traj = tk.simulate(system, grid, initial, t_end=1000 * dt, dt=dt, saveat=tk.SaveAt(every=500 * dt))
    for name in ("u", "c", "w"):
        totals = np.asarray(jnp.sum(traj[name], axis=(1, 2)))
        drift = np.max(np.abs(totals - totals[0])) / abs(totals[0])
        print(f"{name}: relative drift of the total over 1000 steps = {drift:.2e}")
        assert drift < 1e-12, (name, drift)
    # the fields did move: conservation is not a trivial no-op
    assert float(jnp.max(jnp.abs(traj["u"][-1] - traj["u"][0]))) > 1e-2


# --- 3. positivity at the largest accepted dt; refusal beyond it --------------------


def _strong_taxis_problem():
    grid = tk.Grid(shape=(40, 40), length=(1.0, 1.0))
    y, x = grid.mesh()
    # compact cell patch (exact zeros around it) under a steep fixed attractant
    u0 = np.where((x - 0.4) ** 2 + (y - 0.5) ** 2 < 0.01, 1.0, 0.0)
    c0 = 5.0 * np.tanh((x - 0.6) / 0.05) + 2.0 * np.sin(3 * np.pi * y)
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-4},
        taxis=(tk.Taxis(field="u", attractant="c", chi=1.0),),
    )
    return system, grid, {"u": u0, "c": c0}


def test_positivity_at_largest_stable_dt():
    system, grid, initial = _strong_taxis_problem()
    dt = tk.max_stable_dt(system, grid, initial)["u"]
    # taxis dominates the limit: diffusion alone would allow a far larger step
    assert dt < 0.1 * grid.spacing[0] ** 2 / (4 * 1e-4)
    traj = tk.simulate(system, grid, initial, t_end=200 * dt, dt=dt, saveat=tk.SaveAt(every=20 * dt))
    u = np.asarray(traj["u"])
    print(f"dt={dt:.4g}, min u over 200 steps = {u.min():.3e}, max = {u.max():.3f}")
    assert u.min() >= 0.0
    # the patch moved and steepened against the attractant: taxis was strong
    assert u.max() > 1.5


def test_dt_beyond_limit_refused_naming_the_limit():
    system, grid, initial = _strong_taxis_problem()
    limit = tk.max_stable_dt(system, grid, initial)["u"]
    dt = 1.5 * limit
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    with pytest.raises(ValueError, match="largest stable dt") as info:
        tk.simulate(system, grid, initial, t_end=10 * dt, dt=dt, numerics=tk.Numerics(substeps=tk.NoSubcycling()))
    assert f"{limit:.6g}" in str(info.value)
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces  # refused before compiling


# --- 4. stiff decay reaches the analytic steady state -------------------------------


def test_stiff_decay_reaches_steady_state():
    grid = tk.Grid(shape=(16, 16), length=(1.0, 1.0))
    k, production = 1e4, 3.0  # 1/day, units/day
    system = tk.System(
        fields=("a", "b"),
        diffusion={"b": 0.1},  # b goes through the DCT path, a pointwise
        decay={"a": k, "b": k},
        reaction=lambda state, params, t: {"a": production, "b": production},
    )
    y, x = grid.mesh()
    initial = {"a": 1.0 + np.cos(np.pi * x), "b": 1.0 + np.cos(np.pi * x) * np.cos(np.pi * y)}
    assert tk.max_stable_dt(system, grid, initial) == {}  # nothing limits dt
    traj = tk.simulate(system, grid, initial, t_end=1.0, dt=0.01, saveat=tk.SaveAt(every=0.5))
    steady = production / k
    for name in ("a", "b"):
        rel = float(jnp.max(jnp.abs(traj[name][-1] - steady))) / steady
        print(f"{name}: k·dt = {k * 0.01:g}, relative error to P/k = {rel:.2e}")
        assert np.all(np.isfinite(np.asarray(traj[name])))
        assert rel < 1e-10, (name, rel)


def test_scalar_ode_clearance_faster_than_the_step_is_exact_and_second_order():
    """``ds/dt = −k s + R(t)`` with ``k Δt`` from 1 to 4 (ScalarETDRK2): exact to round-off for a
    constant ``R``, observed order 2 for ``R = 1 + sin 3t`` against the closed form."""
    k, s0 = 40.0, 2.0
    grid = tk.Grid(shape=(4, 4), length=(1.0, 1.0))

    def run(source, dt):
        system = tk.System(fields=("u", "s"), scalars=("s",), decay={"s": k}, reaction=source)
        return tk.simulate(system, grid, {"u": 0.0, "s": s0}, t_end=1.0, dt=dt, saveat=tk.SaveAt(every=0.5))

    traj = run(lambda state, params, t: {"s": 3.0}, dt=0.1)  # k·dt = 4
    exact = 3.0 / k + (s0 - 3.0 / k) * np.exp(-k * np.asarray(traj.t))
    np.testing.assert_allclose(np.asarray(traj["s"]), exact, rtol=1e-13)

    def particular(t):
        return 1.0 / k + (k * np.sin(3 * t) - 3 * np.cos(3 * t)) / (k**2 + 9)

    dts, errors = (0.1, 0.05, 0.025), []
    for dt in dts:
        s = run(lambda state, params, t: {"s": 1.0 + jnp.sin(3.0 * t)}, dt)["s"]
        assert float(jnp.min(s)) >= 0.0
        errors.append(abs(float(s[-1]) - particular(1.0) - (s0 - particular(0.0)) * np.exp(-k)))
    order = _slope(dts, errors)
    print(f"ScalarETDRK2, k = {k}/day, dt = {dts}: errors {errors}, observed order {order:.2f}")
    assert order > 1.8, (order, errors)


# --- 5. 3D Gaussian heat kernel with image sources ----------------------------------


def _gaussian_images(x, centre, length, variance, derivative):
    """1D zero-flux heat kernel (image sum) or its 4th x-derivative."""
    total = np.zeros_like(x)
    for m in range(-2, 3):
        for sign in (1.0, -1.0):
            xi = (x - sign * centre + 2 * m * length) / np.sqrt(variance)
            g = np.exp(-0.5 * xi**2) / np.sqrt(2 * np.pi * variance)
            if derivative == 4:
                g = g * (xi**4 - 6 * xi**2 + 3) / variance**2
            total = total + g
    return total


def test_heat_kernel_3d_matches_analytic_with_predicted_error():
    diffusivity, t_end, s0 = 0.01, 1.0, 0.01  # mm²/day, day, initial variance mm²
    centre, length = (0.3, 0.45, 0.6), 1.0
    variance = s0 + 2 * diffusivity * t_end
    system = tk.System(fields=("u",), diffusion={"u": diffusivity}, methods={"u": "exponential"})
    errors, ratios_to_prediction, spacings = [], [], []
    for n in (16, 32, 64):
        grid = tk.Grid(shape=(n, n, n), length=length)
        x = [grid.coordinates(a) for a in range(3)]

        def factors(var, derivative, x=x):
            return [_gaussian_images(x[a], centre[a], length, var, derivative) for a in range(3)]

        def outer(f):
            return f[0][:, None, None] * f[1][None, :, None] * f[2][None, None, :]

        u0 = outer(factors(s0, 0))
        exact = outer(factors(variance, 0))
        # leading semi-discrete error: (D t Δx²/12) Σ_i ∂⁴_i u  (docs/numerics.md)
        g, g4 = factors(variance, 0), factors(variance, 4)
        d4 = outer([g4[0], g[1], g[2]]) + outer([g[0], g4[1], g[2]]) + outer([g[0], g[1], g4[2]])
        dx = grid.spacing[0]
        predicted = diffusivity * t_end * dx**2 / 12 * d4
        traj = tk.simulate(system, grid, {"u": u0}, t_end=t_end, dt=0.25)
        err = np.asarray(traj["u"][-1]) - exact
        errors.append(np.max(np.abs(err)))
        ratios_to_prediction.append(np.max(np.abs(err - predicted)) / np.max(np.abs(predicted)))
        spacings.append(dx)
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    print(f"max errors {errors}, refinement ratios {ratios}, |err − predicted|/|predicted| {ratios_to_prediction}")
    assert all(3.8 < r < 4.2 for r in ratios), ratios
    # the prediction captures the error up to O(Δx⁴) terms: the remainder shrinks ~4× per halving
    assert ratios_to_prediction[-1] < 0.05
    assert ratios_to_prediction[1] / ratios_to_prediction[2] > 3.0


# --- 6. gradients against central finite differences --------------------------------


def _gradient_problem():
    grid = tk.Grid(shape=(16, 16), length=(1.0, 1.0))
    y, x = grid.mesh()

    def reaction(state, params, t):
        u = state["u"]
        return {"u": params["r"] * u * (1.0 - u), "c": params["alpha"] * u}

    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": lambda p: p["du"], "c": 0.05},
        decay={"c": lambda p: p["k"]},
        taxis=(tk.Taxis(field="u", attractant="c", chi=lambda state, p: p["chi"]),),
        reaction=reaction,
    )
    # no flat regions: the van Leer limiter is smooth except at extrema, so
    # finite differences do not straddle switches of its branches
    u0 = jnp.asarray(0.2 + 0.5 * np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.3))
    c0 = jnp.asarray(0.3 + 0.2 * np.cos(np.pi * x))
    params = {"r": 1.0, "alpha": 0.5, "du": 2e-3, "k": 1.0, "chi": 0.05}
    weights = jnp.asarray(np.cos(2 * np.pi * x) + np.sin(np.pi * y))

    def loss(params, u0):
        traj = tk.simulate(
            system,
            grid,
            {"u": u0, "c": c0},
            t_end=0.4,
            dt=0.01,
            params=params,
            numerics=tk.Numerics(substeps=tk.Unchecked()),
            saveat=tk.SaveAt(every=0.2),
        )
        return jnp.sum(weights * traj["u"][-1]) + jnp.sum(traj["c"][1] ** 2)

    return loss, params, u0


def test_gradient_matches_central_differences():
    loss, params, u0 = _gradient_problem()
    params = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
    grad_p, grad_u0 = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, u0)
    loss_jit = jax.jit(loss)
    for name, value in params.items():
        h = 1e-5 * float(value)
        plus = {**params, name: value + h}
        minus = {**params, name: value - h}
        fd = (float(loss_jit(plus, u0)) - float(loss_jit(minus, u0))) / (2 * h)
        rel = abs(float(grad_p[name]) - fd) / abs(fd)
        print(f"d loss/d {name}: grad={float(grad_p[name]):.10e} fd={fd:.10e} rel={rel:.1e}")
        assert rel < 1e-6, (name, rel)
    # initial state: directional derivative along a smooth direction
    y, x = np.meshgrid(*(np.linspace(0.0, 1.0, n) for n in u0.shape), indexing="ij")
    direction = jnp.asarray(np.cos(np.pi * x) * (1.0 + y))
    h = 1e-5
    fd = (float(loss_jit(params, u0 + h * direction)) - float(loss_jit(params, u0 - h * direction))) / (2 * h)
    ad = float(jnp.sum(grad_u0 * direction))
    rel = abs(ad - fd) / abs(fd)
    print(f"d loss/d u0 · v: grad={ad:.10e} fd={fd:.10e} rel={rel:.1e}")
    assert rel < 1e-6


# --- 7. vmap over parameter sets; no recompilation ----------------------------------


def test_vmap_matches_separate_runs_bitwise_without_recompiling():
    grid = tk.Grid(shape=(24, 24), length=(1.0, 1.0))
    y, x = grid.mesh()
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3, "c": 0.05},
        decay={"c": 1.0},
        taxis=(tk.Taxis(field="u", attractant="c", chi=lambda state, p: p["chi"]),),
        reaction=lambda s, p, t: {"u": p["r"] * s["u"] * (1.0 - s["u"]), "c": s["u"]},
    )
    initial = {"u": 0.5 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.02), "c": 0.0}

    def run(params):
        return tk.simulate(system, grid, initial, t_end=0.5, dt=0.01, params=params, saveat=tk.SaveAt(every=0.25))["u"]

    rs = jnp.linspace(0.5, 1.5, 8)
    chis = jnp.linspace(0.01, 0.08, 8)
    batched = jax.vmap(lambda r, chi: run({"r": r, "chi": chi}))(rs, chis)
    separate = [run({"r": rs[0], "chi": chis[0]})]
    traces = eqx.debug.get_num_traces(_api._advance_impl)
    separate += [run({"r": rs[i], "chi": chis[i]}) for i in range(1, 8)]
    again = run({"r": jnp.asarray(0.7), "chi": jnp.asarray(0.03)})
    # new parameter values reuse the compiled rollout
    assert eqx.debug.get_num_traces(_api._advance_impl) == traces
    assert not np.array_equal(np.asarray(again), np.asarray(separate[0]))
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(separate[i]))


# --- 8. Fisher–KPP front in float32 -------------------------------------------------


def test_fisher_kpp_front_float32_speed_and_empty_tissue(float32):
    r, diffusivity, t_end, dx = 0.5, 0.01, 30.0, 0.01
    length = 10.0
    grid = tk.Grid(shape=(int(round(length / dx)),), length=length)
    x = grid.coordinates(0)
    system = tk.System(
        fields=("u",),
        diffusion={"u": diffusivity},
        reaction=lambda s, p, t: {"u": r * s["u"] * (1.0 - s["u"])},
    )
    initial = {"u": np.where(x < 0.5, 1.0, 0.0).astype(np.float32)}
    dt = 0.004
    traj = tk.simulate(system, grid, initial, t_end=t_end, dt=dt, saveat=tk.SaveAt(every=1.0))
    u = np.asarray(traj["u"])
    t = np.asarray(traj.t)
    assert u.dtype == np.float32

    def front(profile):
        i = int(np.argmax(profile < 0.5))  # first cell below ½ (profile decreases)
        return x[i - 1] + (profile[i - 1] - 0.5) / (profile[i - 1] - profile[i]) * dx

    positions = np.array([front(p) for p in u])
    late = t >= 20.0
    speed = np.polyfit(t[late], positions[late], 1)[0]
    c_star = 2 * math.sqrt(diffusivity * r)

    def bramson(time):
        return c_star * time - 1.5 * math.sqrt(diffusivity / r) * math.log(time)

    expected = (bramson(t[late][-1]) - bramson(t[late][0])) / (t[late][-1] - t[late][0])
    ahead = u[-1][x > positions[-1] + 3.0]
    print(
        f"float32 front: speed {speed:.5f} mm/day, Bramson {expected:.5f}, 2√(Dr) {c_star:.5f}, "
        f"rel {abs(speed - expected) / expected:.3%}; max u 3 mm ahead {ahead.max():.2e}, min u {u.min():.1e}"
    )
    assert abs(speed - expected) / expected < 0.02
    assert ahead.size > 0 and ahead.max() < 1e-6
    assert u.min() >= 0.0


def test_float32_trap_spectral_cell_field_fills_empty_tissue(float32):
    # Why cell fields default to local stencils: a DCT spreads float32 round-off
    # (~1e-7 of the maximum) over the whole grid, including empty tissue, and
    # logistic growth amplifies it by e^{rt}, with negative values included.
    r, diffusivity = 0.5, 0.01
    grid = tk.Grid(shape=(1000,), length=10.0)
    x = grid.coordinates(0)
    far = x > 9.0
    results = {}
    for method in ("local", "exponential"):
        system = tk.System(
            fields=("u",),
            diffusion={"u": diffusivity},
            methods={"u": method},
            reaction=lambda s, p, t: {"u": r * s["u"] * (1.0 - s["u"])},
        )
        initial = {"u": np.where(x < 0.5, 1.0, 0.0).astype(np.float32)}
        traj = tk.simulate(system, grid, initial, t_end=10.0, dt=0.004, saveat=tk.SaveAt(every=10.0))
        u = np.asarray(traj["u"][-1])
        results[method] = (float(np.abs(u[far]).max()), float(u.min()))
    print(f"float32, t = 10 days, max |u| for x > 9 mm and min u: {results}")
    # local: the far field is exactly empty (the front is at ~1.6 mm) and nothing is negative
    assert results["local"] == (0.0, 0.0)
    # spectral: round-off noise grown far above float32 epsilon, with negative cells
    assert results["exponential"][0] > 1e-5 and results["exponential"][1] < -1e-5


def _steepening_taxis_problem():
    """The attractant grows as ``c = t·x`` (no transport), so the taxis speed is ``χ t`` and the
    explicit rate bound of ``u`` is ``4D/Δx² + 2χt/Δx``: with Δx = 1/16 mm, D = 1e-3 mm²/day,
    χ = 1 it is 1.024 + 32 t per day."""
    grid = tk.Grid(shape=(16, 16), length=(1.0, 1.0))
    x = (np.arange(16) + 0.5) / 16
    system = tk.System(
        fields=("u", "c"),
        diffusion={"u": 1e-3},
        taxis=(tk.Taxis(field="u", attractant="c", chi=1.0),),
        reaction=lambda s, p, t: {"c": p["ramp"]},
    )
    initial = {"u": np.ones(grid.shape), "c": np.zeros(grid.shape)}
    params = {"ramp": np.broadcast_to(x[:, None], grid.shape).copy()}
    return system, grid, initial, params


def test_in_run_positivity_error_names_the_frame():
    """A dt valid at t = 0 that taxis steepening makes invalid later stops the run inside jit,
    naming the first saved frame past the limit: dt = 0.1 passes 1/(1.024 + 32 t) at
    t ≈ 0.281 day, so frame 3 (t = 0.3) is the first bad one."""
    system, grid, initial, params = _steepening_taxis_problem()
    assert tk.max_stable_dt(system, grid, initial, params)["u"] > 0.1  # accepted at the start
    with pytest.raises(Exception, match=r"field 'u': at saved frame 3 of 5 of this call \(step 3 after its start\)"):
        jax.block_until_ready(
            tk.simulate(
                system,
                grid,
                initial,
                t_end=0.5,
                dt=0.1,
                params=params,
                saveat=tk.SaveAt(every=0.1),
                numerics=tk.Numerics(substeps=tk.NoSubcycling()),
            ).t  # fmt: skip
        )


def test_max_stable_dt_over_run_finds_the_limit_at_the_end():
    """Over a run to t = 0.5 the limit is the analytic 1/(1.024 + 32·0.5) at the last frame,
    far below the limit at the start; a run at it completes under the in-run check."""
    system, grid, initial, params = _steepening_taxis_problem()
    start = tk.max_stable_dt(system, grid, initial, params)["u"]
    over_run = tk.max_stable_dt_over_run(system, grid, initial, params, t_end=0.5)["u"]
    print(f"limit at t=0: {start:.6g} day; over the run: {over_run:.10g} day")
    np.testing.assert_allclose(start, 1 / 1.024, rtol=1e-12)
    np.testing.assert_allclose(over_run, 1 / (1.024 + 32 * 0.5), rtol=1e-12)
    n = math.ceil(0.5 / over_run)
    traj = tk.simulate(system, grid, initial, t_end=0.5, dt=0.5 / n, params=params, saveat=tk.SaveAt(every=0.5 / n))
    assert np.all(np.asarray(traj["u"]) >= 0)
