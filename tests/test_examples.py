"""Small versions of the two classic examples in docs/examples, with what they reproduce asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fisher_kpp():
    return _load("fisher_kpp")


@pytest.fixture(scope="module")
def keller_segel():
    return _load("keller_segel")


def test_fisher_kpp_front_speed_with_bramson_delay(fisher_kpp):
    """Front speed → 2√(Dr) once the −(3/2)√(D/r) ln t delay is accounted for; without it the fit is slow."""
    res = fisher_kpp.run(n=1000, length=100.0, D=1.0, r=1.0, t_end=40.0, dt=4e-3)
    c0 = res["speed_continuum"]
    assert abs(res["speed_fit_bramson"] / c0 - 1) < 5e-3
    # the logarithmic delay is real: ignoring it underestimates the speed by ≈ 3/(2 t̄) ~ 5 %
    assert res["speed_fit_no_log"] < c0 * (1 - 0.02)
    # the semi-discrete spreading speed exceeds 2√(Dr) by O(Δx²)
    assert 0 < res["speed_discrete"] - c0 < 0.01 * c0


def test_fisher_kpp_discrete_speed_converges():
    """``c_h`` → 2√(Dr) at second order in Δx (a check of the formula the example quotes)."""
    fk = _load("fisher_kpp")
    e1 = fk.discrete_spreading_speed(1.0, 1.0, 0.2) - 2.0
    e2 = fk.discrete_spreading_speed(1.0, 1.0, 0.1) - 2.0
    assert 3.5 < e1 / e2 < 4.5


def test_keller_segel_growth_rate_matches_discrete_dispersion(keller_segel):
    """A single DCT mode grows at σ of the *discrete* operator (q² → −λ_h), not the continuous one.

    Mode 11 of 32 cells (Δx = 0.625) lies near the edge of the unstable band,
    where ``σ`` is steep in ``q²``: the two dispersion relations differ by
    ≈ 20 %, and the measured rate sits on the discrete one to < 0.3 % (what
    is left is the O(Δt²) time error).
    """
    g = keller_segel.measure_growth(shape=(4, 32), length=(2.5, 20.0), mode=(0, 11), t_end=3.0, dt=5e-3)
    measured, discrete, continuous = g["sigma_measured"], g["sigma_discrete"], g["sigma_continuous"]
    assert discrete > 0
    assert abs(measured / discrete - 1) < 3e-3
    assert abs(discrete / continuous - 1) > 0.1
    assert abs(measured / continuous - 1) > 0.1


def test_keller_segel_stable_mode_decays(keller_segel):
    """Beyond the instability band (q² > (χ u₀ s − D_u k)/(D_u D_c) = 4) a mode decays at the predicted rate."""
    g = keller_segel.measure_growth(shape=(4, 32), length=(2.5, 10.0), mode=(0, 8), t_end=1.0, dt=2.5e-3)
    assert g["sigma_discrete"] < 0
    assert g["amplitude"][-1] < g["amplitude"][0]
    assert abs(g["sigma_measured"] / g["sigma_discrete"] - 1) < 1e-2


def test_keller_segel_aggregation_conserves_mass(keller_segel):
    """Aggregation from noise: mass conserved to round-off, density stays positive, peaks form."""
    agg = keller_segel.aggregate(n=24, side=10.0, t_end=12.0, u_stop=4.0, eps=0.05, seed=1)
    assert agg["max_u"] >= 4.0
    assert agg["min_u"] >= 0.0
    assert agg["mass_rel_change"] < 1e-12
    np.testing.assert_allclose(agg["mass"], agg["mass"][0], rtol=1e-12)
