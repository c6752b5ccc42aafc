"""Plasma pharmacokinetics of bolus and absorbed doses (one-compartment, linear).

A dose ``D`` (mg/kg) given at ``t_k`` contributes, at ``τ = t − t_k ≥ 0``,

- intravenous bolus:   ``C(τ) = D/V · e^{−k_e τ}``
- absorbed (i.p., s.c.): ``C(τ) = D/(V/F) · k_a/(k_a − k_e) · (e^{−k_e τ} − e^{−k_a τ})``

(Gibaldi & Perrier, *Pharmacokinetics*, 2nd ed., 1982, ch. 1). ``V`` is in
L/kg, so ``D/V`` is mg/L; it is converted to nM with the molar mass. Doses are
superposed (linear kinetics). A dose counts from ``t ≥ t_k − tolerance``, so
that a dose on a step boundary is seen by the step that starts there whatever
the float rounding of ``t``.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

ROUTES = ("iv", "ip", "sc")

DOSE_TOLERANCE = 1e-4
"""Days (8.6 s): a dose at ``t_k`` is active from ``t ≥ t_k − DOSE_TOLERANCE``."""


class Doses(eqx.Module):
    """A dosing schedule of one drug: times (day), amounts (mg/kg), route flags (1 = i.v. bolus).

    ``pad_to`` appends zero-amount doses up to a multiple of that many entries, so
    that schedules of different lengths share array shapes, and hence one compiled
    rollout (the route is an array, not a static field, for the same reason).
    """

    time: Float[Array, ...]
    amount: Float[Array, ...]
    iv: Float[Array, ...]

    def __init__(self, time=(), amount=(), routes=(), pad_to: int | None = None):
        time, amount, routes = list(time), list(amount), list(routes)
        for i, route in enumerate(routes):
            if route not in ROUTES:
                raise ValueError(f"Doses routes[{i}]={route!r}: allowed are {', '.join(map(repr, ROUTES))}")
        if not len(time) == len(amount) == len(routes):
            raise ValueError(
                f"Doses: {len(time)} times, {len(amount)} amounts and {len(routes)} routes: one entry per dose"
            )
        if pad_to:
            extra = -len(time) % pad_to if time else pad_to
            time, amount, routes = time + [0.0] * extra, amount + [0.0] * extra, routes + ["ip"] * extra
        self.time = jnp.asarray(np.asarray(time, dtype=np.float64))
        self.amount = jnp.asarray(np.asarray(amount, dtype=np.float64))
        self.iv = jnp.asarray(np.asarray([route == "iv" for route in routes], dtype=np.float64))

    def __len__(self) -> int:
        return int(self.time.shape[0])


def plasma_concentration(doses: Doses, t, molar_mass, iv, absorbed):
    """Plasma concentration (nM) at time ``t`` (day) of the superposed ``doses``.

    ``iv = (k_e, V)`` and ``absorbed = (k_a, k_e, V/F)`` with rates in 1/day and
    volumes in L/kg; ``molar_mass`` in g/mol. Returns an array of ``t``'s dtype.
    """
    t = jnp.asarray(t)
    if len(doses) == 0:
        return jnp.zeros((), t.dtype)
    tau = t - doses.time
    active = tau >= -DOSE_TOLERANCE
    tau = jnp.maximum(tau, 0.0)
    ke_iv, v_iv = iv
    ka, ke, v_f = absorbed
    bolus = doses.amount / v_iv * jnp.exp(-ke_iv * tau)
    # k_a ≠ k_e is enforced by the parameter checks, so the Bateman function is regular
    bateman = doses.amount / v_f * ka / (ka - ke) * (jnp.exp(-ke * tau) - jnp.exp(-ka * tau))
    mg_per_l = jnp.where(active, jnp.where(doses.iv > 0.5, bolus, bateman), 0.0)
    return jnp.sum(mg_per_l) * (1e6 / molar_mass)
