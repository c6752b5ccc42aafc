"""Profile likelihood of one fitted parameter: ``L_p(θ_j) = min over the others of L(θ)``.

With ``L = ½ Σ r²`` the negative log-likelihood up to a constant, the likelihood-ratio statistic
``2 (L_p(θ_j) − L_min)`` is asymptotically χ²₁ (Wilks 1938), so the 95 % profile interval is
``{θ_j : L_p(θ_j) − L_min ≤ ½ χ²₁(0.95) = 1.921}`` (Venzon & Moolgavkar 1988; Raue et al. 2009,
*Bioinformatics* 25:1923 for its use on dynamic models). Unlike the Gauss–Newton interval
``θ̂_j ± 1.96 SE`` it follows the curvature of a nonlinear model and shows a parameter the data
cannot bound: a profile that stays below the threshold up to the edge of the scanned range.

The profile is scanned outwards from the estimate on each side, every point re-optimised with
L-BFGS from the optimum of its neighbour, the parameter held fixed by the loss's mask
(``arrays["held"]``): the fit's own compiled iteration serves every point of every profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ._optimise import minimise

THRESHOLD_95 = 0.5 * 3.841458820694124
"""½ χ²₁(0.95): the rise of ``L = ½ Σ r²`` above its minimum at the 95 % profile interval's ends."""


@dataclass(frozen=True)
class Profile:
    """The profile of ``name``: the fixed values (natural units, increasing), the minimal loss at
    each, the re-optimised point (every parameter, natural units), whether each optimisation
    converged, and the 95 % interval (``nan`` at an end the scanned range did not reach)."""

    name: str
    values: np.ndarray
    loss: np.ndarray
    points: np.ndarray
    converged: np.ndarray
    lower: float
    upper: float
    minimum_loss: float

    @property
    def bounded(self) -> bool:
        """Whether the profile rises above the 95 % threshold on both sides within the scanned range."""
        return bool(np.isfinite(self.lower) and np.isfinite(self.upper))


def scan_values(estimate: float, std_error: float, lower: float, upper: float, points: int, span: float):
    """``points`` values of a parameter, evenly spaced in ``log θ`` over ``θ̂ · exp(±span · SE/θ̂)``
    (the whole ``[lower, upper]`` when the SE is not finite), kept strictly inside the bounds and
    holding ``θ̂`` itself; returns ``(values below θ̂ in decreasing order, values above increasing)``."""
    log_lo, log_hi = np.log(lower), np.log(upper)
    margin = 1e-3 * (log_hi - log_lo)
    centre = float(np.log(estimate))
    half = span * std_error / estimate if np.isfinite(std_error) and std_error > 0 else log_hi - log_lo
    lo, hi = max(centre - half, log_lo + margin), min(centre + half, log_hi - margin)
    side = max(1, (points - 1) // 2)
    below = centre + (lo - centre) * np.arange(1, side + 1) / side
    above = centre + (hi - centre) * np.arange(1, side + 1) / side
    return np.exp(below[below < centre]), np.exp(above[above > centre])


def _crossing(values: np.ndarray, rise: np.ndarray) -> float:
    """Where ``rise`` (from 0 at ``values[0]``, the estimate, outwards) first exceeds the threshold,
    by linear interpolation in ``log θ``; ``nan`` if it never does."""
    above = np.nonzero(rise > THRESHOLD_95)[0]
    if not len(above):
        return float("nan")
    k = above[0]
    a, b = np.log(values[k - 1]), np.log(values[k])
    w = (THRESHOLD_95 - rise[k - 1]) / (rise[k] - rise[k - 1])
    return float(np.exp(a + w * (b - a)))


def profile(fit, result, name: str, *, points: int = 9, span: float = 3.0, log: Callable = lambda _: None) -> Profile:
    """The profile likelihood of ``name`` around ``result`` (a :class:`FitResult` of ``fit``)."""
    j = fit.names.index(name)
    bounds, spec = fit.bounds, fit.spec.fit
    below, above = scan_values(result.estimate[j], result.std_error[j], bounds.lower[j], bounds.upper[j], points, span)
    optimiser, step = fit._optimiser, fit._step  # the fit's own compiled iteration
    fixed = np.arange(len(fit.names)) == j
    mask = jnp.asarray(fixed)
    z_hat = np.array(bounds.to_unconstrained(result.estimate), np.float64)
    rows = [(float(result.estimate[j]), float(result.loss), np.asarray(result.estimate), bool(result.converged))]
    for side in (below, above):
        z = z_hat.copy()
        for value in side:
            z[j] = bounds.to_unconstrained(np.where(fixed, value, result.estimate))[j]
            arrays = {**fit.arrays, "held": mask, "held_z": jnp.asarray(z, fit.arrays["held_z"].dtype)}
            found = minimise(optimiser, step, z, arrays, max_iterations=spec.max_iterations, tolerance=spec.tolerance)
            z = np.array(found.z, np.float64)
            rows.append((float(value), float(found.loss), bounds.to_natural(z), bool(found.converged)))
            log(f"profile of {name}: {value:.6g} → loss {found.loss:.8g} ({found.status})")
            if found.loss - result.loss > 2 * THRESHOLD_95 or not np.isfinite(found.loss):
                break  # well past the interval's end (or the model failed there): stop this side
    rows.sort(key=lambda row: row[0])
    values = np.array([r[0] for r in rows])
    loss = np.array([r[1] for r in rows])
    minimum = float(min(result.loss, np.nanmin(loss)))
    rise = loss - minimum
    centre = int(np.argmin(np.abs(values - result.estimate[j])))
    lower = _crossing(values[centre::-1], rise[centre::-1])
    upper = _crossing(values[centre:], rise[centre:])
    return Profile(name, values, loss, np.stack([r[2] for r in rows]), np.array([r[3] for r in rows]), lower, upper,
                   minimum)  # fmt: skip


def profile_warnings(profile: Profile, result) -> list[str]:
    """What a profile says that the Gauss–Newton table does not."""
    out = []
    if not profile.bounded:
        ends = [w for w, v in (("below", profile.lower), ("above", profile.upper)) if not np.isfinite(v)]
        out.append(f"{profile.name}: the profile likelihood stays within the 95 % threshold {' and '.join(ends)} "
                   "the scanned range: the data do not bound it there")  # fmt: skip
    if profile.minimum_loss < result.loss - 1e-6 * max(1.0, abs(result.loss)):
        out.append(f"{profile.name}: the profile found a lower loss ({profile.minimum_loss:.8g} < {result.loss:.8g}) "
                   "than the fit: the optimiser stopped short of the optimum")  # fmt: skip
    return out
