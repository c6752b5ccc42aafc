"""NUTS sampling (tumorfield.fit._nuts) and scan-agreement metrics (tumorfield.fit._metrics)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tumorfield.fit import _metrics, _nuts
from tumorfield.fit._metrics import concordance_correlation, dice, dice_at_thresholds, volume_error

# ---------------------------------------------------------------------------------------------
# NUTS
# ---------------------------------------------------------------------------------------------

MEAN = np.array([1.0, -2.0, 0.5])
COV = np.array([[1.0, 0.8, 0.2], [0.8, 2.0, -0.3], [0.2, -0.3, 0.5]])
PRECISION = np.linalg.inv(COV)


def gaussian(x):
    """Correlated 3D Gaussian N(MEAN, COV)."""
    r = x - jnp.asarray(MEAN)
    return -0.5 * r @ jnp.asarray(PRECISION) @ r


def walled(x):
    """Standard 2D normal truncated to x₀ ≤ 1: beyond the wall the value and its gradient are NaN/−∞."""
    beyond = x[0] > 1.0
    return jnp.where(beyond, -jnp.inf, -0.5 * jnp.sum(x * x)) + jnp.where(beyond, jnp.sqrt(1.0 - x[0]), 0.0)


@pytest.fixture(scope="module")
def gaussian_run():
    start = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    return _nuts.run_nuts(gaussian, start, num_warmup=500, num_samples=500, key=jax.random.key(0))


def test_nuts_gaussian_moments_and_diagnostics(gaussian_run):
    res = gaussian_run
    draws = np.asarray(res.samples).reshape(-1, 3)
    sd = np.sqrt(np.diag(COV))
    np.testing.assert_array_less(np.abs(draws.mean(0) - MEAN), 0.1 * sd)  # means within 10 % of a sd
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.1)
    np.testing.assert_allclose(np.corrcoef(draws.T)[0, 1], COV[0, 1] / (sd[0] * sd[1]), atol=0.1)
    assert np.all(np.asarray(res.rhat) < 1.05)
    assert np.all(np.asarray(res.ess) > 200)
    assert np.all(np.asarray(res.divergences) == 0)
    assert np.all((np.asarray(res.acceptance) > 0.6) & (np.asarray(res.acceptance) <= 1.0))


def test_nuts_result_shapes(gaussian_run):
    res = gaussian_run
    assert res.samples.shape == (4, 500, 3)
    assert res.divergences.shape == res.acceptance.shape == res.step_size.shape == (4,)
    assert res.inverse_mass_matrix.shape == (4, 3)
    assert res.rhat.shape == res.ess.shape == (3,)
    assert res.divergences.dtype == jnp.int32
    assert np.all(np.asarray(res.step_size) > 0)


def test_nuts_traced_once_per_shape(gaussian_run):
    traces = _nuts._TRACES["count"]
    start = jnp.zeros((4, 3))
    again = _nuts.run_nuts(gaussian, start, num_warmup=500, num_samples=500, key=jax.random.key(7))
    assert _nuts._TRACES["count"] == traces  # same logdensity, shapes, settings: no new trace
    assert not np.array_equal(np.asarray(again.samples), np.asarray(gaussian_run.samples))


def test_nuts_hard_wall_rejects_failed_evaluations():
    traces = _nuts._TRACES["count"]
    res = _nuts.run_nuts(walled, jnp.zeros((4, 2)), num_warmup=300, num_samples=300, key=jax.random.key(1))
    assert _nuts._TRACES["count"] == traces + 1  # a new program: the per-chain function traced once, vmapped
    samples = np.asarray(res.samples)
    assert np.all(np.isfinite(samples))
    assert samples[..., 0].max() <= 1.0
    assert np.asarray(res.divergences).sum() > 0  # the wall was hit and rejected
    # E[x₀ | x₀ ≤ 1] = −φ(1)/Φ(1) for a standard normal; x₁ untouched
    phi, cdf = math.exp(-0.5) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs(samples[..., 0].mean() + phi / cdf) < 0.1
    assert abs(samples[..., 1].std() - 1.0) < 0.1
    assert np.all(np.asarray(res.rhat) < 1.05)


def test_guard_maps_failed_evaluations_to_minus_inf():
    guarded = _nuts.guard_logdensity(walled)
    value, grad = jax.value_and_grad(guarded)(jnp.array([2.0, 0.0]))
    assert value == -jnp.inf and np.all(np.asarray(grad) == 0.0)
    nan_value = _nuts.guard_logdensity(lambda x: jnp.log(x[0]))  # log of a negative number: NaN
    value, grad = jax.value_and_grad(nan_value)(jnp.array([-1.0]))
    assert value == -jnp.inf and np.all(np.asarray(grad) == 0.0)
    value, grad = jax.value_and_grad(guarded)(jnp.array([0.5, 1.0]))
    np.testing.assert_allclose(value, -0.625)
    np.testing.assert_allclose(grad, [-0.5, -1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"initial_positions": jnp.zeros(3)}, "chains, d"),
        ({"num_warmup": 0}, "≥ 1"),
        ({"target_acceptance": 1.0}, "target_acceptance"),
    ],
)
def test_nuts_refuses_bad_arguments(kwargs, match):
    args = {"initial_positions": jnp.zeros((2, 3)), "num_warmup": 10, "num_samples": 10, "key": jax.random.key(0)}
    with pytest.raises(ValueError, match=match):
        _nuts.run_nuts(gaussian, **(args | kwargs))


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def squares():
    """Two 4×4 squares on a 10×10 grid, offset by (2, 2): overlap 2×2 = 4 cells."""
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1:5, 1:5] = True
    b[3:7, 3:7] = True
    return a, b


def test_dice_two_overlapping_squares():
    a, b = squares()
    assert dice(a, b) == pytest.approx(2 * 4 / (16 + 16))
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    domain = np.zeros((10, 10), bool)
    domain[:, :4] = True  # a: 4×3 = 12 cells, b: 4×1 = 4 cells, overlap rows 3–4 × col 3 = 2
    assert dice(a, b, domain) == pytest.approx(2 * 2 / (12 + 4))


def test_dice_empty_regions():
    empty = np.zeros((5, 5), bool)
    assert dice(empty, empty) == 1.0
    full = np.ones((5, 5), bool)
    assert dice(empty, full) == 0.0
    assert dice(full, full, mask=empty) == 1.0  # nothing inside the domain


def test_nested_labels_dice_and_volume():
    # 1D scan: labels 2 (θ=0.8, the enhancing core), 1 (θ=0.16, oedema), 0 (below both)
    labels = np.array([0, 1, 1, 2, 2, 2, 1, 0, 0, 0])
    thresholds = {1: 0.16, 2: 0.8}
    np.testing.assert_array_equal(_metrics.observed_region(labels, thresholds, 0.16), labels > 0)
    np.testing.assert_array_equal(_metrics.observed_region(labels, thresholds, 0.8), labels == 2)
    u = np.array([0.0, 0.1, 0.5, 0.9, 0.95, 0.7, 0.3, 0.2, 0.0, 0.0])
    # θ=0.8: pred {3,4}, obs {3,4,5} → 2·2/(2+3); θ=0.16: pred {2..7}, obs {1..6} → 2·5/(6+6)
    scores = dice_at_thresholds(u, labels, thresholds)
    assert list(scores) == [0.16, 0.8]
    assert scores[0.8] == pytest.approx(4 / 5)
    assert scores[0.16] == pytest.approx(10 / 12)
    errors = volume_error(u, labels, thresholds, cell_volume=0.125)
    assert errors[0.8] == pytest.approx((2 - 3) / 3)
    assert errors[0.16] == pytest.approx(0.0)
    per_cell = np.where(np.arange(10) < 5, 1.0, 2.0)  # volumes: pred 0.16 → 3+6=9, obs → 4+4=8
    assert volume_error(u, labels, thresholds, per_cell)[0.16] == pytest.approx(1 / 8)
    domain = np.arange(10) < 4  # obs 0.8 {3}, pred {3}; obs 0.16 {1,2,3}, pred {2,3}
    assert dice_at_thresholds(u, labels, thresholds, domain) == pytest.approx({0.16: 0.8, 0.8: 1.0})
    assert volume_error(u, labels, thresholds, 1.0, domain) == pytest.approx({0.16: -1 / 3, 0.8: 0.0})


def test_volume_error_without_observed_tumour():
    labels = np.zeros(6, int)
    thresholds = {1: 0.16, 2: 0.8}
    u = np.array([0.0, 0.2, 0.0, 0.0, 0.0, 0.0])
    assert volume_error(u, labels, thresholds, 1.0) == {0.16: math.inf, 0.8: 0.0}
    assert dice_at_thresholds(u, labels, thresholds) == {0.16: 0.0, 0.8: 1.0}


def test_concordance_correlation():
    x = np.linspace(0.0, 1.0, 11)
    assert concordance_correlation(x, x) == pytest.approx(1.0)
    a, b = 0.5, 0.2  # y = a x + b: ρc = 2 a s² / ((1 + a²) s² + ((1 − a) x̄ − b)²)
    s2, mean = x.var(), x.mean()
    expected = 2 * a * s2 / ((1 + a * a) * s2 + ((1 - a) * mean - b) ** 2)
    assert concordance_correlation(x, a * x + b) == pytest.approx(expected)
    assert concordance_correlation(x, x + 0.1) == pytest.approx(2 * s2 / (2 * s2 + 0.01))
    assert concordance_correlation(x, -x) == pytest.approx(-2 * s2 / (2 * s2 + 4 * mean**2))
    domain = x < 0.45  # cells 0..4 only; y differs outside
    y = np.where(domain, x, 5.0)
    assert concordance_correlation(x, y, domain) == pytest.approx(1.0)
    assert concordance_correlation(np.full(4, 0.3), np.full(4, 0.3)) == 1.0
    assert math.isnan(concordance_correlation(x, x, np.zeros(11, bool)))


def test_metrics_refuse_mismatched_shapes_and_bad_labels():
    a, b = squares()
    with pytest.raises(ValueError, match="same grid"):
        dice(a, b[:-1])
    with pytest.raises(ValueError, match="same grid"):
        concordance_correlation(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="same grid"):
        dice_at_thresholds(np.zeros((4, 4)), np.zeros((4, 5), int), {1: 0.5})
    with pytest.raises(ValueError, match="same grid"):
        volume_error(np.zeros(4), np.zeros(4, int), {1: 0.5}, 1.0, mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="same grid"):
        volume_error(np.zeros(4), np.zeros(4, int), {1: 0.5}, np.ones(3))
    with pytest.raises(ValueError, match="no threshold"):
        dice_at_thresholds(np.zeros(4), np.array([0, 1, 3, 0]), {1: 0.5})
    with pytest.raises(ValueError, match="integers"):
        dice_at_thresholds(np.zeros(4), np.array([0, 1.5, 0, 0]), {1: 0.5})
    with pytest.raises(ValueError, match="boolean"):
        dice(a.astype(int), b)
    with pytest.raises(ValueError, match="positive"):
        volume_error(np.zeros(4), np.zeros(4, int), {1: 0.5}, 0.0)
