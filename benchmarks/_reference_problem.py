"""The benchmark's reference problem, written for tumorfield and for py-pde.

Three fields on a box with zero-flux boundaries (mm, days):

.. math::
    ∂_t u = D_u ∇²u − ∇·(χ_u u ∇c) + r u (1 − u)                  (tumour cells)
    ∂_t c = D_c ∇²c − λ_c c + s_c u                                 (chemoattractant)
    ∂_t m = D_m ∇²m − ∇·(χ_m m ∇c) − d_m m + s_m c (1 − m)          (macrophages)

Coefficients follow the magnitudes of ``shared/science/MODEL.md`` §3: a small
cytokine (``D_c`` ≈ 8.6 mm²/day, half-life ≈ 30 min), cell motilities near
0.009 mm²/day, tumour growth 0.5/day. The cytokine's grid-scale diffusion
rate ``4 d D_c/Δx²`` is what limits an explicit solver; tumorfield integrates
it exactly (ETDRK2 in DCT space) and is limited only by the cells' taxis and
diffusion.
"""

from __future__ import annotations

import numpy as np

PARAMS = {
    "D_u": 8.6e-3,  # mm²/day
    "chi_u": 0.02,  # mm²/day per unit c
    "r": 0.5,  # 1/day
    "D_c": 8.6,  # mm²/day
    "lambda_c": 30.0,  # 1/day
    "s_c": 30.0,  # c-units/day per unit u (so c ≈ u at equilibrium, far from gradients)
    "D_m": 9.0e-3,  # mm²/day
    "chi_m": 0.1,  # mm²/day per unit c
    "d_m": 0.1,  # 1/day
    "s_m": 0.5,  # 1/day per unit c
}

BOX_2D = 10.0  # mm
BOX_3D = 5.0  # mm


def box(ndim: int) -> float:
    return BOX_2D if ndim == 2 else BOX_3D


def initial_state(shape) -> dict[str, np.ndarray]:
    """Three tumour nodules (Gaussian, peak 0.8), no attractant, 5 % macrophages.

    Deterministic and smooth, so every resolution samples the same function.
    """
    ndim = len(shape)
    side = box(ndim)
    axes = [(np.arange(n) + 0.5) * side / n for n in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    centres = [(0.40, 0.45, 0.50), (0.62, 0.55, 0.45), (0.50, 0.68, 0.58)]
    widths = [0.08, 0.06, 0.05]
    u = np.zeros(shape)
    for centre, width in zip(centres, widths, strict=True):
        r2 = sum((x - f * side) ** 2 for x, f in zip(mesh, centre[-ndim:], strict=True))
        u += 0.8 * np.exp(-r2 / (2 * (width * side) ** 2))
    u = np.minimum(u, 0.9)
    return {"u": u, "c": np.zeros(shape), "m": np.full(shape, 0.05)}


def tumorfield_system(tf):
    """The problem as a ``tumorfield.System`` (``tf`` is the imported package)."""

    def reaction(state, p, t):
        u, c, m = state["u"], state["c"], state["m"]
        return {
            "u": p["r"] * u * (1 - u),
            "c": p["s_c"] * u,
            "m": p["s_m"] * c * (1 - m),
        }

    return tf.System(
        fields=("u", "c", "m"),
        diffusion={"u": PARAMS["D_u"], "c": PARAMS["D_c"], "m": PARAMS["D_m"]},
        decay={"c": PARAMS["lambda_c"], "m": PARAMS["d_m"]},
        taxis=(
            tf.Taxis(field="u", attractant="c", chi=PARAMS["chi_u"]),
            tf.Taxis(field="m", attractant="c", chi=PARAMS["chi_m"]),
        ),
        reaction=reaction,
    )


def tumorfield_params() -> dict[str, float]:
    return {k: PARAMS[k] for k in ("r", "s_c", "s_m")}


def pypde_problem(shape):
    """The same equations, grid and initial data for py-pde (numba backend).

    Returns ``(pde, state, dt_stable)``; ``dt_stable`` is the forward-Euler
    limit ``2 / (4 d D_c/Δx² + λ_c)`` of the stiffest term (the cytokine) times
    0.9, the step an explicit fixed-step user would take.
    """
    import pde

    ndim = len(shape)
    side = box(ndim)
    grid = pde.CartesianGrid([[0.0, side]] * ndim, list(shape), periodic=False)
    p = PARAMS
    equations = {
        "u": f"{p['D_u']}*laplace(u) - {p['chi_u']}*divergence(u*gradient(c)) + {p['r']}*u*(1 - u)",
        "c": f"{p['D_c']}*laplace(c) - {p['lambda_c']}*c + {p['s_c']}*u",
        "m": f"{p['D_m']}*laplace(m) - {p['chi_m']}*divergence(m*gradient(c)) - {p['d_m']}*m + {p['s_m']}*c*(1 - m)",
    }
    equation = pde.PDE(equations, bc={"derivative": 0})
    init = initial_state(shape)
    state = pde.FieldCollection([pde.ScalarField(grid, init[name], label=name) for name in ("u", "c", "m")])
    dx = side / shape[0]
    dt = 0.9 * 2.0 / (4 * ndim * p["D_c"] / dx**2 + p["lambda_c"])
    return equation, state, dt
