"""Reverse-mode gradients through a whole run of the Voloshin 2015 model, checked by finite differences.

A fitter differentiates a loss of the end of a run with respect to a few leaves of the
:class:`Parameters` pytree. Here the run is as small as still means something: 8×8 cells,
one day in 20 steps of 0.05 day, an i.p. paclitaxel dose at 0.2 day and an s.c. anakinra
dose at 0.4 day, fields in float64, checkpointed rollout (the default). The loss is
``log(metastatic burden) + tumour volume`` at day 1, and the gradient covers three
mechanistic parameters (``k_i``, ``a_iv``, ``r_n``) and the paclitaxel dose amount (the PK
path). (Not the anakinra dose: 50 mg/kg saturates the IL1 receptor block, so the loss
moves by ~2e-7 per mg/kg and a central difference of it is round-off, not a check.)

Compiling ``value_and_grad`` of the rollout dominates the wall time (~30–40 s on the
2-core CI machine with no other load, up to ~70 s under load; running it takes ~0.03 s),
hence the ``slow`` mark. The finite differences reuse the same compiled function,
so they cost no compilation of their own.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tumorfield as tf
from tumorfield.models.voloshin2015 import Voloshin2015

GRID = tf.Grid((8, 8), (4.0, 4.0))
T_END, DT = 1.0, 0.05
CONFIG = {
    "initial": {"tumor_radius": 0.8, "interface_width": 0.3},
    "vessels": {"rim_radius": 1.2},
    "dosing": {
        "paclitaxel": [{"time": 0.2, "dose_mg_per_kg": 20.0, "route": "ip"}],
        "anakinra": [{"time": 0.4, "dose_mg_per_kg": 50.0, "route": "sc"}],
    },
}
NAMES = ("k_i", "a_iv", "r_n", "paclitaxel dose")
REL_STEP = 1e-5
"""Central differences in float64: truncation ~(1e-5)² and round-off ~1e-16/1e-5 keep them within ~1e-9."""
RTOL = 1e-6
"""Measured agreement is 2e-10 (k_i) to 2e-9 (a_iv); a wrong or missing derivative path is off by ≥ 1e-3."""


def _with(p0, theta):
    """``p0`` with the differentiated leaves set to ``theta`` (the dose amount: its first, only real, slot)."""
    k_i, a_iv, r_n, ptx = theta
    return eqx.tree_at(
        lambda p: (p.k_i, p.a_iv, p.r_n, p.paclitaxel_doses.amount),
        p0,
        (k_i, a_iv, r_n, p0.paclitaxel_doses.amount.at[0].set(ptx)),
    )


@pytest.mark.slow
def test_gradient_through_a_whole_run_matches_finite_differences():
    m = Voloshin2015.from_sections(CONFIG)
    m.validate(GRID, T_END, DT)
    initial = m.initial_state(GRID)
    p0 = m.params(GRID)

    def loss(theta):
        traj = tf.simulate(m.system, GRID, initial, t_end=T_END, dt=DT, params=_with(p0, theta))
        burden = traj["burden"][-1]  # float64 scalar ODE
        volume = jnp.sum(traj["tumor"][-1]) * GRID.cell_volume  # mm²
        drugs = (jnp.max(traj["paclitaxel"][-1]), jnp.max(traj["anakinra"][-1]))
        return jnp.log(burden) + volume, drugs

    theta0 = (p0.k_i, p0.a_iv, p0.r_n, p0.paclitaxel_doses.amount[0])
    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    start = time.perf_counter()
    lowered = value_and_grad.lower(theta0)
    traced = time.perf_counter()
    compiled = lowered.compile()
    built = time.perf_counter()
    (value, drugs), grad = compiled(theta0)
    grad = np.array([float(g) for g in grad])
    ran = time.perf_counter()
    print(
        f"\nvoloshin2015 value_and_grad, 8×8, {round(T_END / DT)} steps: trace+lower {traced - start:.1f} s, "
        f"compile {built - traced:.1f} s, run {ran - built:.3f} s; loss {float(value):.6f}"
    )

    # the run saw both doses, and the loss is a finite number a fitter could use
    assert float(drugs[0]) > 1.0 and float(drugs[1]) > 0.1, drugs
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad)) and np.all(grad != 0.0), grad
    # IL1-raised intravasation sheds more cells; IL1-driven M2→M1 switching leaves fewer TMEM (M2) doorways
    assert grad[1] > 0 and grad[0] < 0, grad

    fd = np.zeros_like(grad)
    for i in range(len(theta0)):
        h = REL_STEP * float(theta0[i])
        up = [jnp.asarray(x) for x in theta0]
        down = list(up)
        up[i], down[i] = up[i] + h, up[i] - h
        fd[i] = (float(compiled(tuple(up))[0][0]) - float(compiled(tuple(down))[0][0])) / (2 * h)
    for name, g, f in zip(NAMES, grad, fd, strict=True):
        print(f"  d loss / d {name:16s} AD {g: .12e}  FD {f: .12e}  rel. diff {abs(g - f) / abs(f):.1e}")
    np.testing.assert_allclose(grad, fd, rtol=RTOL, atol=0.0)
