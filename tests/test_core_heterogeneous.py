"""Spatially varying diffusivity (harmonic face means) and domain masks in the core operators (issue 22).

Operator level: :func:`transport` (explicit, SSP-RK2 loops written here) and :class:`SplitDiffusion`
(implicit MPRK22, Strang half steps). Measured (``-s`` prints them): conservation inside a closed
mask, exact zeros behind a ``D = 0`` interface, float32 non-negativity, the spatial order with a
smooth ``D(x)``, implicit against explicit, gradients against central differences, and bitwise
equality with the old scalar-``D`` path. Section "Heterogeneous coefficients and masked domains"
of ``docs/numerics.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk
from jax import lax
from tumorfield_kernels import _stencils as st
from tumorfield_kernels._diffusion import SplitDiffusion

SPACING = (1.0 / 32, 1.0 / 32)


@pytest.fixture
def x64():
    """float64 for the body, whatever the session's setting; restored afterwards."""
    with jax.enable_x64(True):
        yield


def _mesh(n):
    x = (np.arange(n) + 0.5) / n
    return np.meshgrid(x, x, indexing="ij")


def _disc(n, radius=0.36):
    y, x = _mesh(n)
    return ((x - 0.5) ** 2 + (y - 0.5) ** 2 < radius**2).astype(float)


def _d_map(n, mask):
    """A smooth ``D > 0`` inside (mm²/day), 0 outside."""
    y, x = _mesh(n)
    return 0.01 * (1.0 + 0.6 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)) * mask


def _attractant(n):
    y, x = _mesh(n)
    return 1.0 + np.cos(3 * x) + 0.5 * np.sin(2 * y)  # not zero-gradient at the mask: its faces must close


def _heun(rate, u, dt, steps):
    """``steps`` SSP-RK2 (Heun) steps of ``u' = rate(u)`` in one ``lax.fori_loop``."""

    def body(_, u):
        k0 = rate(u)
        a = u + dt * k0
        return a + 0.5 * dt * (rate(a) - k0)

    return lax.fori_loop(0, steps, body, u)


def _implicit(diffusion, u, dt, steps):
    """``steps`` Strang steps of the split diffusion alone: half steps forward, then reversed."""

    def body(_, u):
        u = diffusion.half_step({"u": u}, None, dt, reverse=False)["u"]
        return diffusion.half_step({"u": u}, None, dt, reverse=True)["u"]

    return lax.fori_loop(0, steps, body, u)


def _explicit_dt(d, taxis, mask, spacing=SPACING):
    speeds = st.max_face_speed(taxis, spacing, mask) if taxis else [0.0] * len(spacing)
    return 1.0 / float(st.explicit_rate_bound(spacing, float(np.max(d)), 0.0, speeds))


def _patchy_initial(n, mask, outside=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y, x = _mesh(n)
    patch = np.where((x - 0.4) ** 2 + (y - 0.55) ** 2 < 0.03, 1.0, 0.0)  # exact zeros around it
    return (patch + 0.2 * rng.random((n, n)) * (x < 0.5)) * mask + outside * (1 - mask)


@pytest.mark.parametrize("scheme", ["explicit", "implicit"])
def test_mass_inside_a_closed_mask_is_conserved_and_nothing_crosses_it(x64, scheme):
    n, steps = 32, 100
    mask = _disc(n)
    d = jnp.asarray(_d_map(n, mask))
    u0 = jnp.asarray(_patchy_initial(n, mask))
    m = jnp.asarray(mask)
    if scheme == "explicit":
        taxis = [(0.02, jnp.asarray(_attractant(n)))]
        dt = 0.9 * _explicit_dt(d, taxis, m)
        u = jax.jit(lambda u: _heun(lambda v: st.transport(v, SPACING, d, taxis, mask=m), u, dt, steps))(u0)
    else:
        dt = 0.3  # 20× the explicit diffusion limit (0.0153)
        diffusion = SplitDiffusion.build({"u": d}, SPACING, dt, jnp.float64, mask=m)
        u = jax.jit(lambda u: _implicit(diffusion, u, jnp.asarray(dt), steps))(u0)
    inside0, inside = float(jnp.sum(u0 * m)), float(jnp.sum(u * m))
    drift = abs(inside - inside0) / inside0
    print(f"\n{scheme}: relative drift of the mass inside over {steps} steps {drift:.1e}")
    assert drift < 1e-12
    assert float(jnp.max(jnp.abs(u - u0) * (1 - m))) == 0.0  # outside: untouched, bit for bit
    assert float(jnp.min(u)) >= 0.0
    assert float(jnp.max(jnp.abs(u - u0) * m)) > 1e-3  # it did move inside


@pytest.mark.parametrize("scheme", ["explicit", "implicit"])
def test_no_mass_crosses_an_interface_to_zero_diffusivity(x64, scheme):
    n, steps = 32, 100
    y, x = _mesh(n)
    tissue = (x < 0.5).astype(float)
    d = jnp.asarray(0.01 * (1.0 + 0.5 * y) * tissue)  # D = 0 for x ≥ 0.5, no mask
    u0 = jnp.asarray(np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.01) * tissue)  # large at the interface
    if scheme == "explicit":
        dt = 0.9 * _explicit_dt(d, [], None)
        u = jax.jit(lambda u: _heun(lambda v: st.transport(v, SPACING, d, []), u, dt, steps))(u0)
    else:
        diffusion = SplitDiffusion.build({"u": d}, SPACING, 0.05, jnp.float64)
        u = jax.jit(lambda u: _implicit(diffusion, u, jnp.asarray(0.05), steps))(u0)
    outside = np.asarray(u)[x >= 0.5]
    print(f"\n{scheme}: max u behind the D = 0 interface after {steps} steps: {outside.max():.1e}")
    assert np.all(outside == 0.0)
    assert abs(float(jnp.sum(u)) - float(jnp.sum(u0))) < 1e-12 * float(jnp.sum(u0))
    # the arithmetic face mean (the old rule) would leak: D/2 on the interface faces (axis 1 is x)
    arithmetic = 0.5 * (d[:, 1:] + d[:, :-1])
    assert float(jnp.max(arithmetic * (1 - tissue[:, 1:]))) > 0.0
    assert float(jnp.max(st.harmonic_face_mean(d, 1) * (1 - tissue[:, 1:]))) == 0.0


def test_float32_stays_non_negative_at_the_largest_step(float32):
    n = 32
    mask = _disc(n)
    m = jnp.asarray(mask, jnp.float32)
    d = jnp.asarray(_d_map(n, mask), jnp.float32)
    u0 = jnp.asarray(_patchy_initial(n, mask, outside=0.0), jnp.float32)
    c = jnp.asarray(20.0 * _attractant(n), jnp.float32)  # steep: taxis limits the step
    taxis = [(jnp.float32(0.02), c)]
    dt = jnp.float32(_explicit_dt(d, taxis, m))
    u_exp = jax.jit(lambda u: _heun(lambda v: st.transport(v, SPACING, d, taxis, mask=m), u, dt, 100))(u0)
    diffusion = SplitDiffusion.build({"u": d}, SPACING, 0.2, jnp.float32, mask=m)  # 13× the diffusion limit
    u_imp = jax.jit(lambda u: _implicit(diffusion, u, jnp.float32(0.2), 100))(u0)
    for name, u in (("explicit", u_exp), ("implicit", u_imp)):
        print(f"\n{name} float32: min {float(jnp.min(u)):.1e}, total {float(jnp.sum(u)):.6f}")
        assert u.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(u)))
        assert float(jnp.min(u)) >= 0.0
        assert float(jnp.max(u * (1 - m))) == 0.0


def _operator_error(n, masked):
    """Max error of ``∇·(D∇u)`` at the cells of ``[0, 1]`` for ``u = cos πx``, ``D = 1 + ½ sin 2πx``
    (zero flux at both ends); ``masked``: ``[0, 1]`` is the mask inside a box ``[0, 1.5]``."""
    cells = n * 3 // 2 if masked else n
    x = (np.arange(cells) + 0.5) / n
    d = np.where(x < 1.0, 1.0 + 0.5 * np.sin(2 * np.pi * x), 0.0)
    u = np.where(x < 1.0, np.cos(np.pi * x), 5.0)  # outside: arbitrary, must not matter
    mask = jnp.asarray((x < 1.0).astype(float)) if masked else None
    du, d2u = -np.pi * np.sin(np.pi * x), -(np.pi**2) * np.cos(np.pi * x)
    exact = np.pi * np.cos(2 * np.pi * x) * du + d * d2u
    numeric = np.asarray(st.transport(jnp.asarray(u), (1.0 / n,), jnp.asarray(d), [], mask=mask))
    return float(np.max(np.abs(numeric - exact)[x < 1.0]))


@pytest.mark.parametrize("masked", [False, True])
def test_variable_diffusivity_operator_is_second_order(x64, masked):
    errors = [_operator_error(n, masked) for n in (32, 64, 128)]
    orders = [np.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    print(f"\nmasked={masked}: max errors {errors}, observed orders {orders}")
    assert all(1.8 <= p <= 2.2 for p in orders)


def test_implicit_and_explicit_diffusion_agree_to_their_time_step_error(x64):
    n, end = 32, 0.4
    mask = _disc(n)
    m = jnp.asarray(mask)
    d = jnp.asarray(_d_map(n, mask))
    y, x = _mesh(n)
    u0 = jnp.asarray((0.2 + np.exp(-((x - 0.45) ** 2 + (y - 0.5) ** 2) / 0.02)) * mask)
    reference_steps = int(np.ceil(end / (0.25 * _explicit_dt(d, [], m))))
    explicit = jax.jit(lambda u: _heun(lambda v: st.transport(v, SPACING, d, [], mask=m), u, end / reference_steps,
                                       reference_steps))(u0)  # fmt: skip
    errors = []
    for steps in (8, 16, 32):
        dt = end / steps
        diffusion = SplitDiffusion.build({"u": d}, SPACING, dt, jnp.float64, mask=m)
        implicit = jax.jit(lambda u, diffusion=diffusion, steps=steps, dt=dt: _implicit(
            diffusion, u, jnp.asarray(dt), steps))(u0)  # fmt: skip
        errors.append(float(jnp.max(jnp.abs(implicit - explicit))))
    orders = [np.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    print(f"\nimplicit vs explicit ({reference_steps} steps): max differences {errors}, orders {orders}")
    assert errors[-1] < 2e-4 * float(jnp.max(u0))
    assert all(p > 1.7 for p in orders)


def _loss(d, u0, m, c, scheme, dtype):
    """A weighted total after 5 steps of masked transport (explicit with taxis) or 5 implicit half steps
    (one direction only: half the axis solves to compile)."""
    weights = jnp.linspace(0.0, 1.0, u0.size, dtype=dtype).reshape(u0.shape)
    if scheme == "explicit":
        u = _heun(lambda v: st.transport(v, SPACING, d, [(jnp.asarray(0.02, dtype), c)], mask=m), u0,
                  jnp.asarray(0.01, dtype), 5)  # fmt: skip
    else:
        diffusion, dt = SplitDiffusion.build({"u": d}, SPACING, 0.1, dtype, mask=m), jnp.asarray(0.1, dtype)
        u = lax.fori_loop(0, 5, lambda _, u: diffusion.half_step({"u": u}, None, dt, reverse=False)["u"], u0)
    return jnp.sum(weights * u**2)


def _gradient_problem(n=16):
    mask = _disc(n, 0.4)
    u0 = _patchy_initial(n, mask, outside=0.0)
    return mask, _d_map(n, mask), u0, _attractant(n)


@pytest.mark.parametrize("scheme", ["explicit", "implicit"])
def test_gradients_with_respect_to_the_diffusivity_map(x64, scheme):
    mask, d, u0, c = (jnp.asarray(a) for a in _gradient_problem())
    direction = jnp.asarray(np.random.default_rng(1).standard_normal(mask.shape) * 1e-3) * mask
    loss = jax.jit(lambda d: _loss(d, u0, mask, c, scheme, jnp.float64))
    grad = jax.jit(jax.grad(loss))(d)
    eps = 1e-4
    central = (float(loss(d + eps * direction)) - float(loss(d - eps * direction))) / (2 * eps)
    analytic = float(jnp.sum(grad * direction))
    print(f"\n{scheme}: directional derivative {analytic:.10e}, central difference {central:.10e}")
    assert abs(analytic - central) <= 1e-7 * abs(central)
    assert float(jnp.max(jnp.abs(grad * (1 - mask)))) == 0.0  # D outside a mask does not matter


@pytest.mark.parametrize("scheme", ["explicit", "implicit"])
def test_float32_gradients_with_zero_diffusivity_and_tiny_values_are_finite(float32, scheme):
    mask, d, u0, c = _gradient_problem()
    u0 = np.where(u0 > 0, u0, 1e-30) * mask  # tails far below float32's normal range, exact zeros outside
    f32 = jnp.float32
    mask, d, u0, c = (jnp.asarray(a, f32) for a in (mask, d, u0, c))
    grad = jax.jit(jax.grad(lambda d: _loss(d, u0, mask, c, scheme, f32)))(d)
    print(f"\n{scheme} float32: max |dL/dD| {float(jnp.max(jnp.abs(grad))):.3e}")
    assert grad.dtype == f32
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.max(jnp.abs(grad))) > 0.0


def test_harmonic_mean_values_and_derivatives_are_finite_at_zero(float32):
    a = jnp.asarray([0.0, 0.0, 1e-30, 1e-20, 0.3, 2.0], jnp.float32)
    b = jnp.asarray([0.0, 0.7, 1e-30, 3e-21, 0.3, 0.5], jnp.float32)
    value = st.harmonic_mean(a, b)
    da, db = jax.vmap(jax.grad(st.harmonic_mean, argnums=(0, 1)))(a, b)
    expected = np.where(a + b > 0, 2 * np.float64(a) * b / np.maximum(np.float64(a) + b, 1e-300), 0.0)
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-6, atol=0)
    assert bool(jnp.all(jnp.isfinite(da))) and bool(jnp.all(jnp.isfinite(db)))
    assert float(da[0]) == 0.0 and float(da[1]) == 2.0 and float(db[1]) == 0.0  # one-sided from D ≥ 0
    np.testing.assert_allclose(float(da[5]), 2 * 0.25 / 2.5**2, rtol=1e-6)
    assert float(jnp.max(value)) <= 2.0  # never above the larger value: the explicit bound stays valid


def _old_transport(u, spacing, diffusivity, taxis_terms, wall_value=None):
    """The transport before issue 22 (arithmetic face means), for the bitwise comparison."""
    total = jnp.zeros_like(u)
    for axis, dx in enumerate(spacing):
        flux = None
        if not st._is_zero(diffusivity):
            face_d = st._face_average(diffusivity, axis) if jnp.ndim(diffusivity) > 0 else diffusivity
            flux = face_d * st._face_difference(u, axis) / dx
        for chi, attractant in taxis_terms:
            velocity = st.taxis_face_velocity(attractant, chi, axis, dx)
            advective = velocity * st.upwind_face_value(u, velocity, axis)
            flux = -advective if flux is None else flux - advective
        walls = None
        if wall_value is not None and not st._is_zero(diffusivity):
            walls = st._dirichlet_wall_fluxes(u, axis, dx, diffusivity, wall_value)
        if flux is not None:
            total = total + st._divergence_of_interior_flux(flux, axis, dx, walls)
    return total


@pytest.mark.parametrize("wall", [None, 0.25])
def test_scalar_diffusivity_and_no_mask_are_bitwise_the_old_path(x64, wall):
    n = 24
    rng = np.random.default_rng(3)
    u = jnp.asarray(rng.random((n, n)))
    c = jnp.asarray(_attractant(n))
    chi_map = jnp.asarray(0.02 + 0.01 * rng.random((n, n)))
    for taxis in ([], [(0.03, c)], [(chi_map, c)]):
        old = _old_transport(u, SPACING, 0.01, taxis, wall)
        assert np.array_equal(np.asarray(st.transport(u, SPACING, 0.01, taxis, wall)), np.asarray(old))
        ones = jnp.ones((n, n))  # an all-inside mask multiplies by exactly 1
        assert np.array_equal(np.asarray(st.transport(u, SPACING, 0.01, taxis, wall, mask=ones)), np.asarray(old))
    d_map = jnp.asarray(0.01 + 0.01 * rng.random((n, n)))
    open_all = st.transport(u, SPACING, d_map, [(0.03, c)], mask=jnp.ones((n, n)))
    assert np.array_equal(np.asarray(open_all), np.asarray(st.transport(u, SPACING, d_map, [(0.03, c)])))
    scalar = SplitDiffusion.build({"u": 0.01}, SPACING, 0.05, jnp.float64)
    old_weights = tuple(0.5 * jnp.asarray(0.05, jnp.float64) * jnp.asarray(0.01, jnp.float64) / dx**2 for dx in SPACING)
    for new, old in zip(scalar.weights[0], old_weights, strict=True):
        assert jnp.ndim(new) == 0 and float(new) == float(old)


# --- the domain mask through the whole System (simulate) --------------------------------------


def _masked_system(domain):
    return tk.System(
        fields=("u",),
        diffusion={"u": lambda p: p["D"]},
        reaction=lambda s, p, t: {"u": p["rho"] * s["u"] * (1.0 - s["u"]) + 0.01},  # a source everywhere
        domain=domain,
    )


@pytest.mark.parametrize("diffusion", [tk.ExplicitDiffusion(), tk.ImplicitDiffusion()])
def test_a_masked_system_keeps_everything_inside_its_domain(diffusion):
    """A disc domain in a 24² box, D(x) from params with D = 0 outside, logistic growth plus a source:
    outside the disc the field stays exactly 0 (no flux, no reaction); with the reaction off, the mass
    inside is conserved to 1e-12 (float64)."""
    grid = tk.Grid((24, 24), (2.0, 2.0))
    y, x = grid.mesh()
    r2 = (x - 1.0) ** 2 + (y - 1.0) ** 2
    disc = (r2 < 0.7**2).astype(float)
    d_map = disc * (1e-2 + 1e-2 * (x > 1.0))
    u0 = disc * np.exp(-r2 / 0.1)
    params = {"D": d_map, "rho": 1.0}
    numerics = tk.Numerics(cell_diffusion=diffusion, dtype="float64")
    traj = tk.simulate(_masked_system(lambda p: p["domain"]), grid, {"u": u0}, t_end=1.0, dt=0.01,
                       params={**params, "domain": disc}, numerics=numerics)  # fmt: skip
    outside = np.asarray(traj["u"][-1])[disc == 0]
    assert np.all(outside == 0.0) and float(np.asarray(traj["u"][-1]).sum()) > 1.2 * float(u0.sum())
    closed = tk.System(fields=("u",), diffusion={"u": lambda p: p["D"]}, domain=disc)
    traj = tk.simulate(closed, grid, {"u": u0}, t_end=1.0, dt=0.01, params=params, numerics=numerics)
    mass = np.asarray(traj["u"]).sum(axis=(1, 2))
    assert abs(mass[-1] - mass[0]) <= 1e-12 * mass[0] and float(np.asarray(traj["u"]).min()) >= 0.0


def test_a_domain_refuses_spectral_and_quasi_steady_fields():
    disc = np.ones((8, 8))
    with pytest.raises(ValueError, match=r"field 'c' is solved spectrally .* methods=\{'c': 'local'\}"):
        tk.System(fields=("u", "c"), diffusion={"u": 1e-3, "c": 0.1}, decay={"c": 1.0}, domain=disc)
    with pytest.raises(ValueError, match=r"field 'q' is solved spectrally"):
        tk.System(fields=("u", "q"), diffusion={"q": 0.1}, decay={"q": 1.0}, quasi_steady=("q",), domain=disc)
    with pytest.raises(ValueError, match=r"System.domain: a cell array of 0 \(outside\) and 1"):
        tk.System(fields=("u",), diffusion={"u": 1e-3}, domain=0.5 * disc)
    # the same field advanced locally is accepted
    tk.System(fields=("u", "c"), diffusion={"u": 1e-3, "c": 0.1}, decay={"c": 1.0}, methods={"c": "local"},
              domain=disc)  # fmt: skip
