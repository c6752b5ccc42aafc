"""NUTS posterior sampling of a flat, unconstrained parameter vector (several chains in one program).

The sampler is the No-U-Turn Sampler (NUTS, Hoffman & Gelman 2014) as implemented in BlackJAX
(Cabezas et al. 2024): Hamiltonian Monte Carlo with the velocity-Verlet integrator, where each
transition doubles the trajectory in a random direction until it turns back on itself
(``(x⁺ − x⁻)·p < 0`` at either end, in the metric of the mass matrix) or reaches
``2^max_tree_depth`` leapfrog steps, and the next state is drawn from the whole trajectory with
multinomial weights ``∝ exp(−H)``, ``H(x, p) = −log π(x) + ½ pᵀ M⁻¹ p`` (Betancourt 2017).

Each chain tunes its own step size ``ε`` and diagonal inverse mass matrix ``M⁻¹`` with Stan's
window adaptation (``blackjax.window_adaptation``): dual averaging of ``ε`` towards the target
mean acceptance probability (Nesterov 2009; Hoffman & Gelman 2014, §3.2) and ``M⁻¹`` = the
regularised variance of the draws in slowly growing windows. After ``num_warmup`` adaptation
steps the chain keeps ``(ε, M⁻¹)`` fixed and draws ``num_samples`` states with ``jax.lax.scan``.
The whole warmup + sampling of one chain is one traced function; the chains are ``jax.vmap``-ed
over it and compiled together as one program (``jax.jit``), cached per logdensity, shapes and
settings.

A failed evaluation — a log density that is NaN or ±∞, or a gradient that is not finite
(e.g. a solver that blew up, a point outside a hard wall) — is mapped to ``log π = −∞`` with a
zero gradient. BlackJAX then sees infinite energy at that point: the trajectory is marked
divergent, stops there, and the point has zero weight, so it is a rejected proposal and the
chain stays where it was (counted in :attr:`NutsResult.divergences`).

Diagnostics over the post-warmup draws: the potential scale reduction ``R̂`` (Gelman & Rubin
1992; ``blackjax.diagnostics.potential_scale_reduction``, chains on axis 0, draws on axis 1)
and the effective sample size summed over chains (Geyer 1992 initial-monotone-sequence
estimator as in Stan; ``blackjax.diagnostics.effective_sample_size``).

References
----------
- M. D. Hoffman, A. Gelman (2014). The No-U-Turn Sampler: adaptively setting path lengths in
  Hamiltonian Monte Carlo. JMLR 15, 1593–1623.
- A. Cabezas, A. Corenflos, J. Lao, R. Louf et al. (2024). BlackJAX: Composable Bayesian
  inference in JAX. arXiv:2402.10797.
- M. Betancourt (2017). A conceptual introduction to Hamiltonian Monte Carlo. arXiv:1701.02434.
- A. Gelman, D. B. Rubin (1992). Inference from iterative simulation using multiple sequences.
  Statistical Science 7, 457–472.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
from blackjax.adaptation.base import get_filter_adapt_info_fn

LogDensity = Callable[[jax.Array], jax.Array]  # x (d,) ↦ log π(x), a scalar

_TRACES = {"count": 0}  # how often the per-chain program was traced (tests: once per shape)


class NutsResult(eqx.Module):
    """Draws and diagnostics of :func:`run_nuts` (post-warmup only)."""

    samples: jax.Array  # (chains, num_samples, d) post-warmup draws
    divergences: jax.Array  # (chains,) int32: divergent transitions while sampling (failed evaluations included)
    acceptance: jax.Array  # (chains,) mean acceptance probability while sampling
    step_size: jax.Array  # (chains,) adapted leapfrog step size ε
    inverse_mass_matrix: jax.Array  # (chains, d) adapted diagonal M⁻¹
    rhat: jax.Array  # (d,) potential scale reduction over the chains
    ess: jax.Array  # (d,) effective sample size, all chains together


def guard_logdensity(logdensity: LogDensity, promotion: tuple[str, str] | None = None) -> LogDensity:
    """``logdensity`` with failed evaluations turned into rejections.

    Returns ``x ↦ log π(x)`` whose value and gradient are those of ``logdensity`` where both are
    finite, and ``(−∞, 0)`` elsewhere (NaN, ±∞ value or a non-finite gradient component).
    The gradient is computed with the value (a custom VJP), so it is never evaluated twice.
    ``promotion = (dtype, rank)`` re-enters the caller's ``jax_numpy_dtype_promotion`` and
    ``jax_numpy_rank_promotion`` around ``logdensity`` (BlackJAX itself is traced with the
    permissive ones).
    """

    def value_and_grad(x):
        with _promotion(promotion):
            lp, grad = jax.value_and_grad(lambda y: jnp.asarray(logdensity(y), x.dtype).reshape(()))(x)
        ok = jnp.isfinite(lp) & jnp.all(jnp.isfinite(grad))
        return jnp.where(ok, lp, -jnp.inf), jnp.where(ok, grad, jnp.zeros_like(grad))

    @jax.custom_vjp
    def guarded(x):
        return value_and_grad(x)[0]

    def bwd(grad, cotangent):
        return (cotangent * grad,)

    guarded.defvjp(value_and_grad, bwd)
    return guarded


@contextlib.contextmanager
def _promotion(promotion: tuple[str, str] | None):
    """Trace a block under the numpy ``(dtype, rank)`` promotion modes given (standard/allow if None)."""
    dtype, rank = promotion or ("standard", "allow")
    with jax.numpy_dtype_promotion(dtype), jax.numpy_rank_promotion(rank):
        yield


def _one_chain(logdensity, num_warmup, num_samples, target_acceptance, max_tree_depth, key, x0):
    """Window adaptation then ``num_samples`` NUTS transitions of one chain (traced once, vmapped)."""
    _TRACES["count"] += 1
    warmup_key, sample_key = jax.random.split(key)
    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity,
        is_mass_matrix_diagonal=True,
        target_acceptance_rate=target_acceptance,
        adaptation_info_fn=get_filter_adapt_info_fn(),
        max_num_doublings=max_tree_depth,
    )
    (state, parameters), _ = warmup.run(warmup_key, x0, num_steps=num_warmup)
    kernel = blackjax.nuts(logdensity, **parameters)

    def step(state, step_key):
        state, info = kernel.step(step_key, state)
        return state, (state.position, info.is_divergent, info.acceptance_rate)

    _, (positions, divergent, acceptance) = jax.lax.scan(step, state, jax.random.split(sample_key, num_samples))
    imm = jnp.broadcast_to(parameters["inverse_mass_matrix"], x0.shape)
    step_size = jnp.asarray(parameters["step_size"], x0.dtype)
    return positions, jnp.sum(divergent, dtype=jnp.int32), jnp.mean(acceptance), step_size, imm


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _run_chains(logdensity, promotion, num_warmup, num_samples, target_acceptance, max_tree_depth, keys, positions):
    """All chains of :func:`_one_chain` vmapped, plus R̂ and ESS, in one compiled program."""
    guarded = guard_logdensity(logdensity, promotion)
    chain = partial(_one_chain, guarded, num_warmup, num_samples, target_acceptance, max_tree_depth)
    samples, divergences, acceptance, step_size, imm = jax.vmap(chain)(keys, positions)
    chains, draws, d = samples.shape
    nan = jnp.full((d,), jnp.nan, samples.dtype)
    diagnostics = blackjax.diagnostics  # (chains, draws, d) layout: chain_axis=0, sample_axis=1
    rhat = diagnostics.potential_scale_reduction(samples, chain_axis=0, sample_axis=1) if chains > 1 else nan
    ess = diagnostics.effective_sample_size(samples, chain_axis=0, sample_axis=1) if draws > 1 else nan
    return NutsResult(samples, divergences, acceptance, step_size, imm, rhat, ess)


def run_nuts(
    logdensity: LogDensity,
    initial_positions: jax.Array,
    *,
    num_warmup: int,
    num_samples: int,
    key: jax.Array,
    target_acceptance: float = 0.8,
    max_tree_depth: int = 8,
) -> NutsResult:
    """Sample ``π(x) ∝ exp(logdensity(x))`` over ``x ∈ ℝᵈ`` with NUTS, one chain per initial position.

    Each chain runs its own window adaptation (``num_warmup`` steps, diagonal mass matrix, step
    size tuned to a mean acceptance of ``target_acceptance``; Hoffman & Gelman 2014), then
    ``num_samples`` NUTS transitions with at most ``2^max_tree_depth`` leapfrog steps each
    (BlackJAX, Cabezas et al. 2024). All chains are one ``vmap``-ed, ``jit``-compiled program;
    calling again with the same ``logdensity`` object, shapes and settings reuses it.

    ``logdensity`` maps one unconstrained flat vector ``(d,)`` to a scalar and must be traceable
    by JAX; values or gradients that are NaN/±∞ count as rejected proposals (module docstring).
    R̂ needs at least 2 chains and ESS at least 2 samples; without them they are NaN.
    """
    positions = jnp.asarray(initial_positions)
    if positions.ndim != 2 or positions.shape[0] < 1 or positions.shape[1] < 1:
        raise ValueError(f"initial_positions must be (chains, d) with chains, d ≥ 1, got shape {positions.shape}")
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(jnp.result_type(float))
    if int(num_warmup) < 1 or int(num_samples) < 1 or int(max_tree_depth) < 1:
        raise ValueError(
            f"num_warmup, num_samples and max_tree_depth must be ≥ 1, got {num_warmup}, {num_samples}, {max_tree_depth}"
        )
    if not 0.0 < float(target_acceptance) < 1.0:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    keys = jax.random.split(key, positions.shape[0])
    settings = (int(num_warmup), int(num_samples), float(target_acceptance), int(max_tree_depth))
    promotion = (jax.config.jax_numpy_dtype_promotion, jax.config.jax_numpy_rank_promotion)
    with _promotion(None):  # BlackJAX mixes bool/int and ranks; the caller's modes hold inside logdensity
        return _run_chains(logdensity, promotion, *settings, keys, positions)
