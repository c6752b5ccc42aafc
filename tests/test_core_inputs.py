"""Inputs the core refuses before computing, and cell-array diffusivities it accepts (issue 26).

Before: a ``D`` that a function of params returned as a map, on a field the solver advances by a
DCT, ran without an error and was 9 % off at the peak; a map given as an array raised ``TypeError:
only 0-dimensional arrays can be converted``; a map with fixed wall values a broadcasting error; a
negative start was accepted (final mass −38) and a NaN start reported "at t = nan day".
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import tumorfield_kernels as tk

GRID = tk.Grid((8, 8), (1.0, 1.0))
Y, X = GRID.mesh()
U0 = np.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / 0.02)
D_MAP = 0.01 * (1.0 + 0.5 * np.sin(2 * np.pi * X))


def _final(system, params=None, y0=None, **kw):
    traj = tk.simulate(system, GRID, y0 or {"u": U0}, t_end=0.04, dt=0.01, params=params, **kw)
    return np.asarray(traj["u"][-1])


def test_a_map_from_params_on_a_spectral_field_is_refused_naming_the_field_and_the_method():
    params = {"D": jnp.asarray(D_MAP)}
    spectral = tk.System(("u",), diffusion={"u": lambda p: p["D"]}, decay={"u": 0.1})  # default: exponential
    with pytest.raises(ValueError, match=r"System.diffusion\['u'\].*shape \(8, 8\).*methods=\{'u': 'local'\}"):
        _final(spectral, params)
    quasi = tk.System(("u", "c"), diffusion={"u": 0.01, "c": lambda p: p["D"]}, decay={"c": 1.0}, quasi_steady=("c",))
    with pytest.raises(ValueError, match=r"System.diffusion\['c'\].*quasi-steady"):
        _final(quasi, params)
    # the method the message names runs, and agrees with the same map given as an array
    local = tk.System(("u",), diffusion={"u": lambda p: p["D"]}, decay={"u": 0.1}, methods={"u": "local"})
    as_array = tk.System(("u",), diffusion={"u": D_MAP}, decay={"u": 0.1})  # a map makes the field local
    assert as_array.method("u") == "local"
    np.testing.assert_array_equal(_final(local, params), _final(as_array))


def test_an_array_diffusion_runs_on_local_fields_and_is_refused_clearly_elsewhere():
    uniform = _final(tk.System(("u",), diffusion={"u": 0.01}))
    as_map = _final(tk.System(("u",), diffusion={"u": np.full(GRID.shape, 0.01)}))
    np.testing.assert_allclose(as_map, uniform, rtol=1e-12, atol=1e-15)  # harmonic mean of equal cells
    implicit = tk.Numerics(cell_diffusion=tk.ImplicitDiffusion())
    assert np.isfinite(_final(tk.System(("u",), diffusion={"u": D_MAP}), numerics=implicit)).all()
    with pytest.raises(ValueError, match=r"'exponential' method.*methods=\{'u': 'local'\}"):
        tk.System(("u",), diffusion={"u": D_MAP}, decay={"u": 0.1}, methods={"u": "exponential"})
    with pytest.raises(ValueError, match=r"System.diffusion\['c'\] \(a cell array\).*quasi-steady"):
        tk.System(("u", "c"), diffusion={"u": 0.01, "c": D_MAP}, decay={"c": 1.0}, quasi_steady=("c",))
    with pytest.raises(ValueError, match=r"shape \(8, 4\); the grid's shape is \(8, 8\)"):
        _final(tk.System(("u",), diffusion={"u": D_MAP[:, :4]}))
    with pytest.raises(ValueError, match=r"minimum -.*must be ≥ 0"):
        tk.System(("u",), diffusion={"u": -D_MAP})
    with pytest.raises(TypeError, match=r"System.decay\['u'\]: a cell array"):
        tk.System(("u",), diffusion={"u": 0.01}, decay={"u": D_MAP})


def test_fixed_wall_values_with_an_array_diffusion():
    wall = {"u": 0.2}
    uniform = _final(tk.System(("u",), diffusion={"u": 0.01}, dirichlet=wall))
    as_map = _final(tk.System(("u",), diffusion={"u": np.full(GRID.shape, 0.01)}, dirichlet=wall))
    np.testing.assert_allclose(as_map, uniform, rtol=1e-12, atol=1e-15)
    # a map that is 0 in the wall cells of x: nothing enters through those walls
    closed = np.where((GRID.mesh()[1] < 0.125) | (GRID.mesh()[1] > 0.875), 0.0, 0.01)
    rate = tk.transport(jnp.zeros(GRID.shape), GRID.spacing, jnp.asarray(closed), [], wall_value=0.2)
    rate = np.asarray(rate)
    assert np.all(rate[:, 0] == 0) and np.all(rate[:, -1] == 0) and np.all(rate[0, 1:-1] > 0)


def test_a_negative_or_nan_start_is_refused_at_t0_naming_the_field():
    system = tk.System(("u", "c"), diffusion={"u": 0.01}, taxis=(tk.Taxis("u", "c", 0.01),))
    with pytest.raises(ValueError, match=r"initial\['u'\] is negative at t = 0 day at cell \(0, 0\).*minimum is -0.5"):
        _final(system, y0={"u": U0 - 0.5, "c": U0})
    nan = U0.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"initial\['u'\] is not finite at t = 0 day at cell \(3, 4\)"):
        _final(system, y0={"u": nan, "c": U0})
    with pytest.raises(ValueError, match=r"initial\['c'\] is not finite"):
        tk.initial_frame(system, GRID, {"u": U0, "c": nan})
    # an attractant nothing moves may be signed (a potential): accepted
    assert np.isfinite(_final(system, y0={"u": U0, "c": U0 - 0.5})).all()
    # a later piece of a run (step > 0) may carry round-off below 0; a NaN is refused there too
    tk.advance(system, GRID, {"u": U0 - 1e-12, "c": U0}, dt=0.01, n_saves=1, steps_per_save=1, step=3)
    with pytest.raises(ValueError, match=r"initial\['u'\] is not finite at t = 0.03 day"):
        tk.advance(system, GRID, {"u": nan, "c": U0}, dt=0.01, n_saves=1, steps_per_save=1, step=3)


def test_the_app_refuses_a_nan_start_before_writing(tmp_path):
    import equinox as eqx

    from tumorfield import config as cfg
    from tumorfield.config import ConfigError
    from tumorfield.problem import Problem
    from tumorfield.run._job import _frame_zero

    text = """
[model]
name = "fisher_kpp"
[grid]
shape = [8, 8]
length = [2.0, 2.0]
[time]
t_end = 0.1
dt = 0.05
save_every = 0.05
[parameters]
D = 0.02
r = 1.0
[initial]
radius = 0.5
"""
    config = cfg.loads(text, str(tmp_path / "f.toml"))
    problem = Problem.from_config(config)
    bad = dict(problem.y0)
    bad["u"] = np.where(np.asarray(bad["u"]) > 0.5, -1.0, np.asarray(bad["u"]))
    with pytest.raises(ConfigError, match=r"initial state = 'fisher_kpp': initial\['u'\] is negative at t = 0"):
        _frame_zero(config, eqx.tree_at(lambda p: p.y0, problem, bad))
