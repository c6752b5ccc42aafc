"""The whitened map prior (:mod:`tumorfield.fit._prior`) and the low-rank Laplace posterior
(:mod:`tumorfield.fit._lowrank`), against dense linear algebra on small problems.

Statistical checks use fixed keys and entrywise bounds of 5 standard errors: for ``N`` draws of a
Gaussian with covariance ``C``, the sample covariance has ``Var(Ĉ_ij) = (C_ij² + C_ii C_jj)/N``
(Anderson 2003, §3.3), and the sample sd ``sd/√(2N)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gamma, kv

from tumorfield.fit._lowrank import LowRankPosterior, randomized_eigh
from tumorfield.fit._prior import MapPrior

DRAWS = 4000


def _dense(apply, n):
    """The ``n × n`` matrix of a linear map of flat vectors (columns: images of the unit vectors)."""
    return np.asarray(jax.vmap(apply)(jnp.eye(n))).T


def _psd(n, values, seed):
    """``U diag(values) Uᵀ`` with a random orthogonal ``U``."""
    u, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (u * values) @ u.T


def _assert_covariance(samples, covariance, sigmas=5.0):
    """Sample covariance (mean known to be 0) within ``sigmas`` standard errors of ``covariance``, entrywise."""
    samples = np.asarray(samples)
    draws = samples.shape[0]
    empirical = samples.T @ samples / draws
    var = np.diag(covariance)
    stderr = np.sqrt((covariance**2 + np.outer(var, var)) / draws)
    worst = np.max(np.abs(empirical - covariance) / stderr)
    assert worst < sigmas, worst
    return empirical


# --- prior -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, spacing, length", [((32,), (0.5,), 2.0), ((16, 16), (1.0, 2.0), 3.0)])
def test_prior_sample_covariance_matches_dense_s_st(shape, spacing, length):
    prior = MapPrior.build(shape, spacing, 0.7, length)
    n = prior.size
    root = _dense(prior, n)  # σ_p S
    np.testing.assert_allclose(root, root.T, atol=1e-14)  # S symmetric (Dᵀ diag(s) D)
    covariance = root @ root.T
    variance = np.asarray(prior.pointwise_variance()).ravel()
    np.testing.assert_allclose(variance, np.diag(covariance), rtol=1e-12)  # exact diag(S Sᵀ)
    assert abs(variance.mean() - 0.7**2) < 1e-12  # normalised: mean pointwise variance = σ_p²
    samples = np.asarray(prior.sample(jax.random.key(0), DRAWS)).reshape(DRAWS, n)
    empirical = _assert_covariance(samples, covariance)
    sd = np.asarray(prior.pointwise_sd()).ravel()
    relative = np.sqrt(np.diag(empirical)) / sd - 1
    assert np.max(np.abs(relative)) < 5 / math.sqrt(2 * DRAWS), np.max(np.abs(relative))  # 5.6 %
    flat = jnp.linspace(-1.0, 1.0, n)
    np.testing.assert_allclose(prior(flat), prior(flat.reshape(shape)).ravel(), atol=1e-14)


@pytest.mark.parametrize(
    "shape, length, measured",
    # correlation between the centre and the cell ℓ away (dense S Sᵀ column), ℓ in cells, unit spacing;
    # continuum Matérn ν = 2 − d/2 at r = ℓ: 0.7358 (1D), 0.6019 (2D), 0.3679 (3D)
    [((200,), 10.0, 0.7347), ((64, 64), 6.0, 0.5924), ((24, 24, 24), 3.0, 0.3571)],
)
def test_prior_correlation_at_one_length(shape, length, measured):
    prior = MapPrior.build(shape, (1.0,) * len(shape), 1.0, length)
    centre = tuple(n // 2 for n in shape)
    away = (centre[0] + int(length),) + centre[1:]
    unit = jnp.zeros(shape).at[centre].set(1.0)
    column = np.asarray(prior(prior(unit)))  # σ_p² S Sᵀ e_centre
    variance = np.asarray(prior.pointwise_variance())
    correlation = column[away] / math.sqrt(variance[centre] * variance[away])
    nu = 2 - len(shape) / 2
    matern = 2 ** (1 - nu) / gamma(nu) * kv(nu, 1.0)
    assert abs(correlation - measured) < 1e-3
    assert abs(correlation - matern) < 0.015  # grid discretisation of the continuum kernel


def test_prior_empirical_correlation_at_one_length():
    prior = MapPrior.build((32,), (1.0,), 1.0, 4.0)
    covariance = _dense(prior, 32) @ _dense(prior, 32).T
    samples = np.asarray(prior.sample(jax.random.key(1), DRAWS))
    exact = covariance[16, 20] / math.sqrt(covariance[16, 16] * covariance[20, 20])
    empirical = np.corrcoef(samples[:, 16], samples[:, 20])[0, 1]
    assert 0.70 < exact < 0.76  # measured 0.7266; continuum 2/e = 0.7358 (walls 3–4 ℓ away)
    assert abs(empirical - exact) < 5 * (1 - exact**2) / math.sqrt(DRAWS)  # Fisher: sd(r) ≈ (1 − ρ²)/√N


@pytest.mark.parametrize("name", ["prior_sd", "correlation_length"])
@pytest.mark.parametrize("value", [0.0, -1.5, float("nan"), float("inf"), "x"])
def test_prior_refuses_non_positive_settings(name, value):
    settings = {"prior_sd": 1.0, "correlation_length": 2.0, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be a finite number > 0 \(got {value!r}\)"):
        MapPrior.build((8,), (1.0,), settings["prior_sd"], settings["correlation_length"])


def test_prior_refuses_bad_grids():
    with pytest.raises(ValueError, match="one spacing per axis"):
        MapPrior.build((8, 8), (1.0,), 1.0, 2.0)
    with pytest.raises(ValueError, match=r"spacing must be a finite number > 0 \(got 0.0\)"):
        MapPrior.build((8,), (0.0,), 1.0, 2.0)


def test_prior_float32(float32):
    prior = MapPrior.build((16, 16), (1.0, 1.0), 0.5, 3.0)
    samples = prior.sample(jax.random.key(0), 8)
    assert prior.symbol.dtype == samples.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(samples)))
    assert abs(float(jnp.mean(prior.pointwise_variance())) - 0.25) < 1e-6


# --- low-rank posterior ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "power_iterations, oversample, bound",
    # measured worst relative error of the top 10 eigenvalues: 1.3e-7, 3.4e-13, 3.9e-11
    [(1, 10, 1e-6), (1, 20, 1e-11), (2, 10, 1e-9)],
)
def test_randomized_eigh_matches_dense(power_iterations, oversample, bound):
    n, rank = 120, 10
    hessian = jnp.asarray(_psd(n, 100 * 0.7 ** np.arange(n), seed=0))
    values, vectors = randomized_eigh(
        lambda v: hessian @ v, n, rank, key=jax.random.key(1), oversample=oversample, power_iterations=power_iterations
    )
    ref_values, ref_vectors = np.linalg.eigh(np.asarray(hessian))
    ref_values, ref_vectors = ref_values[::-1][:rank], ref_vectors[:, ::-1][:, :rank]
    assert values.shape == (rank,) and vectors.shape == (n, rank)
    assert np.max(np.abs(np.asarray(values) / ref_values - 1)) < bound
    np.testing.assert_allclose(np.asarray(vectors.T @ vectors), np.eye(rank), atol=1e-13)
    alignment = np.abs(np.sum(np.asarray(vectors) * ref_vectors, axis=0))  # |cos| of each pair
    assert np.max(1 - alignment) < bound


def test_randomized_eigh_has_no_dense_n_by_n_intermediate():
    n, diagonal = 400, jnp.linspace(1.0, 2.0, 400)
    jaxpr = jax.make_jaxpr(lambda k: randomized_eigh(lambda v: diagonal * v, n, 8, key=k))(jax.random.key(0))
    shapes = [v.aval.shape for eqn in jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape")]
    assert max(math.prod(shape) for shape in shapes) <= n * 18  # n × (rank + oversample)


def test_randomized_eigh_refuses_bad_ranks():
    with pytest.raises(ValueError, match=r"1 ≤ rank ≤ n = 5 \(got 6\)"):
        randomized_eigh(lambda v: v, 5, 6, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"1 ≤ rank ≤ n = 5 \(got 0\)"):
        randomized_eigh(lambda v: v, 5, 0, key=jax.random.key(0))


def _posterior_problem(values, seed, rank):
    prior = MapPrior.build((8, 8), (1.0, 1.0), 0.7, 2.0)
    n = prior.size
    hessian = _psd(n, values, seed)
    matrix = jnp.asarray(hessian)
    posterior = LowRankPosterior.from_hessian(lambda v: matrix @ v, n, rank, key=jax.random.key(2))
    root = _dense(prior, n)  # σ_p S
    dense = np.diag(root @ np.linalg.inv(np.eye(n) + hessian) @ root.T)
    variance = posterior.covariance_diag_of(prior, prior.pointwise_variance().ravel())
    return prior, hessian, posterior, np.asarray(variance), dense


def test_full_rank_posterior_equals_dense():
    values = 50 * 0.8 ** np.arange(64)
    prior, hessian, posterior, variance, dense = _posterior_problem(values, seed=3, rank=64)
    np.testing.assert_allclose(variance, dense, rtol=1e-8)  # measured 1.8e-15
    covariance = np.linalg.inv(np.eye(64) + hessian)
    np.testing.assert_allclose(_dense(posterior.covariance_apply, 64), covariance, atol=1e-12)
    np.testing.assert_allclose(_dense(posterior.precision_apply, 64), np.eye(64) + hessian, atol=1e-10)
    root = _dense(posterior.covariance_sqrt_apply, 64)  # the sampler's linear map: T Tᵀ = (I + H̃)⁻¹
    np.testing.assert_allclose(root @ root.T, covariance, atol=1e-12)
    assert abs(float(posterior.log_det) - np.linalg.slogdet(np.eye(64) + hessian)[1]) < 1e-10


@pytest.mark.parametrize("rank, measured", [(10, 0.053), (15, 2.5e-3), (20, 9.9e-5)])
def test_truncated_posterior_within_the_tail_bound(rank, measured):
    # dropping λ_j (j > r) leaves Σ_{j>r} λ_j/(1+λ_j) (S v_j)_i² ≤ diag(S Sᵀ)_i Σ_{j>r} λ_j/(1+λ_j) of variance
    values = 1e3 * 0.5 ** np.arange(64)
    prior, _, posterior, variance, dense = _posterior_problem(values, seed=4, rank=rank)
    prior_variance = np.asarray(prior.pointwise_variance()).ravel()
    tail = np.sum(values[rank:] / (1 + values[rank:]))  # 1.24, 0.060, 1.9e-3
    error = (variance - dense) / prior_variance  # ≥ 0: the truncation over-estimates variance
    assert np.min(error) > -1e-10
    assert np.max(error) < tail
    assert np.max(error) < 1.5 * measured


def test_posterior_samples_have_the_posterior_covariance():
    n = 40
    hessian = _psd(n, 30 * 0.6 ** np.arange(n), seed=5)
    matrix = jnp.asarray(hessian)
    posterior = LowRankPosterior.from_hessian(lambda v: matrix @ v, n, 25, key=jax.random.key(3))
    mean = jnp.linspace(-2.0, 2.0, n)
    samples = np.asarray(posterior.sample(jax.random.key(4), DRAWS, mean))
    assert samples.shape == (DRAWS, n)
    covariance = np.linalg.inv(np.eye(n) + hessian)
    centred = samples - np.asarray(mean)
    _assert_covariance(centred, covariance)
    stderr = np.sqrt(np.diag(covariance) / DRAWS)
    assert np.max(np.abs(centred.mean(axis=0)) / stderr) < 5


def test_lowrank_float32(float32):
    prior = MapPrior.build((8, 8), (1.0, 1.0), 0.7, 2.0)
    hessian = jnp.asarray(_psd(64, 1e3 * 0.5 ** np.arange(64), seed=6), jnp.float32)
    posterior = LowRankPosterior.from_hessian(lambda v: hessian @ v, 64, 20, key=jax.random.key(0))
    variance = posterior.covariance_diag_of(prior, prior.pointwise_variance().ravel())
    samples = posterior.sample(jax.random.key(1), 16, jnp.zeros(64))
    for array in (posterior.eigenvalues, posterior.eigenvectors, variance, samples, posterior.log_det):
        assert array.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(array)))
    assert bool(jnp.all(variance > 0))
