"""Uncertainty at the optimum: the Gauss–Newton (Laplace) approximation, and identifiability warnings.

With dimensionless residuals ``r(θ)`` (``σ`` already divided out) and ``J = ∂r/∂θ`` in natural
units (forward mode, one column per parameter), the Gauss–Newton Hessian of the negative
log-likelihood ``½ Σ r²`` is ``H = JᵀJ`` (``= Jᵀ W J`` for the raw residuals with ``W = diag(σ⁻²)``),
and the Laplace approximation of the posterior under flat priors is ``θ ~ N(θ̂, H⁻¹)``:

.. math::  \\mathrm{SE}_i = \\sqrt{(H^{-1})_{ii}},\\qquad \\rho_{ij} = (H^{-1})_{ij}/(\\mathrm{SE}_i\\,\\mathrm{SE}_j).

Directions along which ``H`` is singular (eigenvalue ≤ ``1e-12`` of the largest) are not
constrained by the data: parameters with a component along them get ``SE = ∞``. The warnings
name any parameter with ``SE/|θ̂| > 50 %`` and any pair with ``|ρ| > 0.95``. The approximation
assumes the given ``σ`` are right (``reduced χ² = Σr²/(m − n)`` near 1 says they are) and that
the model is close to linear in ``θ`` over ±SE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RELATIVE_SE_LIMIT = 0.5
CORRELATION_LIMIT = 0.95
SINGULAR = 1e-12


@dataclass(frozen=True)
class Uncertainty:
    """Standard errors (natural units), correlations, and the Gauss–Newton Hessian."""

    std_error: np.ndarray
    correlation: np.ndarray
    hessian: np.ndarray
    reduced_chi2: float


def gauss_newton(jacobian: np.ndarray, residuals: np.ndarray) -> Uncertainty:
    """:class:`Uncertainty` from ``J = ∂r/∂θ`` (``(m, n)``) and ``r`` (``(m,)``) at the optimum."""
    jacobian = np.asarray(jacobian, np.float64)
    return from_hessian(jacobian.T @ jacobian, residuals)


def from_hessian(hessian: np.ndarray, residuals: np.ndarray) -> Uncertainty:
    """:class:`Uncertainty` from a Gauss–Newton Hessian ``H`` (``(n, n)``: ``JᵀJ``, or a Schur complement
    of it where other unknowns are marginalised) and the residuals ``r`` at the optimum."""
    hessian = np.asarray(hessian, np.float64)
    m, n = np.size(residuals), hessian.shape[0]
    eigenvalues, vectors = np.linalg.eigh(hessian)
    keep = eigenvalues > SINGULAR * max(eigenvalues.max(initial=0.0), np.finfo(float).tiny)
    covariance = (vectors[:, keep] / eigenvalues[keep]) @ vectors[:, keep].T
    unconstrained = np.any(np.abs(vectors[:, ~keep]) > 1e-6, axis=1)
    variance = np.where(unconstrained, np.inf, np.diag(covariance))
    std_error = np.sqrt(np.maximum(variance, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.outer(std_error, std_error)
    correlation[np.ix_(unconstrained, unconstrained)] = np.nan
    np.fill_diagonal(correlation, 1.0)
    chi2 = float(np.sum(np.square(residuals)))
    return Uncertainty(std_error, correlation, hessian, chi2 / (m - n) if m > n else float("nan"))


CHI2_LIMIT = 4.0
"""A reduced χ² above this says the model or the sigmas do not describe the data: with right sigmas and
``m − n ≥ 10`` degrees of freedom its 99.9 % quantile is below 3."""


def chi2_limit(dof: int) -> float:
    """The reduced χ² above which :func:`fit_warnings` warns: :data:`CHI2_LIMIT`, or 1 + 4 standard deviations
    of the reduced χ² (``√(2/dof)``) where that is larger (fewer than 4 degrees of freedom), so that chance
    alone rarely trips it."""
    return max(CHI2_LIMIT, 1.0 + 4.0 * math.sqrt(2.0 / dof)) if dof > 0 else math.inf


def fit_warnings(reduced_chi2: float, m: int, n: int) -> list[str]:
    """The goodness-of-fit warning: the reduced χ² of ``m`` observations and ``n`` parameters ≫ 1."""
    limit = chi2_limit(m - n)
    if not (math.isfinite(reduced_chi2) and reduced_chi2 > limit):
        return []
    return [f"reduced χ² {reduced_chi2:.3g} > {limit:.3g}: the model or the sigmas do not describe these data "
            f"(misfit √χ²ᵣ ≈ {math.sqrt(reduced_chi2):.2g} sigmas per observation; check units, scales and sigmas) — "
            "the standard errors assume they do"]  # fmt: skip


LOW_CHI2_PROBABILITY = 1e-3
"""A reduced χ² whose lower-tail probability under right sigmas is below this says the sigmas are too large."""


def low_chi2_limit(dof: int) -> float:
    """The reduced χ² below which :func:`low_chi2_warnings` warns: the :data:`LOW_CHI2_PROBABILITY` quantile
    of χ²/dof with ``dof`` degrees of freedom (0.30 at 20, 0.61 at 100; 0 where ``dof < 1``)."""
    from scipy.stats import chi2

    return float(chi2.ppf(LOW_CHI2_PROBABILITY, dof)) / dof if dof > 0 else 0.0


def low_chi2_warnings(reduced_chi2: float, m: int, n: int) -> list[str]:
    """The other side of :func:`fit_warnings`: residuals far smaller than the sigmas say they should be."""
    limit = low_chi2_limit(m - n)
    if not (math.isfinite(reduced_chi2) and reduced_chi2 < limit):
        return []
    return [f"reduced χ² {reduced_chi2:.3g} < {limit:.3g}: the residuals are far smaller than the sigmas "
            f"(chance gives this with probability < {LOW_CHI2_PROBABILITY:g}) — the sigmas are too large, or the data "
            f"were fitted before (or made by this model without noise); the standard errors are then too wide, by "
            f"about 1/√χ²ᵣ ≈ {1 / math.sqrt(max(reduced_chi2, 1e-300)):.2g}×"]  # fmt: skip


def warnings(names, estimate, uncertainty: Uncertainty) -> list[str]:
    """Identifiability warnings: large relative standard errors and strong correlations."""
    out = []
    for name, value, se in zip(names, estimate, uncertainty.std_error, strict=True):
        if not np.isfinite(se):
            out.append(f"{name} is not identifiable from these data (the Gauss–Newton Hessian is singular along it)")
        elif se > RELATIVE_SE_LIMIT * abs(value):
            out.append(
                f"{name}: relative standard error {se / abs(value):.0%} > {RELATIVE_SE_LIMIT:.0%}: "
                "the data pin it down poorly"
            )
    for i, j in strongest_pairs(uncertainty.correlation):
        rho = uncertainty.correlation[i, j]
        if abs(rho) > CORRELATION_LIMIT:
            out.append(
                f"{names[i]} and {names[j]} are correlated {rho:+.3f} (|ρ| > {CORRELATION_LIMIT}): the data "
                "constrain a combination of them, not each"
            )
    return out


def strongest_pairs(correlation: np.ndarray, count: int | None = None) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` by decreasing ``|ρ_ij|`` (NaN last), the first ``count``."""
    n = correlation.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs.sort(key=lambda p: -np.nan_to_num(abs(correlation[p]), nan=-1.0))
    return pairs[:count]
