"""Fitted parameters: where they live in a model, their allowed ranges, and the bounded log transform.

A parameter ``θ ∈ [lower, upper]`` (``0 < lower < upper < ∞``, natural units) is optimised as an
unconstrained ``z`` with

.. math::  θ(z) = \\exp\\big(\\log l + (\\log u − \\log l)\\,σ(z)\\big),\\qquad σ(z) = 1/(1 + e^{−z}),

so every trial value lies inside ``[lower, upper]``, and so inside the model's documented range
(``eqx.tree_at`` writes leaves without any range check, so the transform is what keeps a trial
valid). Bounds default to the documented range (``Parameters`` field metadata ``range``) where
that bound is positive and finite; otherwise they must be given. ``init``, ``lower`` and
``upper`` are checked with the model's own ``[parameters]`` rule before any compute.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._schema import ConfigError, suggest


def natural(z, log_lower, log_upper):
    """``θ(z) = exp(log l + (log u − log l) σ(z))`` (traceable; the bounds are traced too, so new
    bounds reuse a compiled fit)."""
    return jnp.exp(log_lower + (log_upper - log_lower) * jax.nn.sigmoid(z))


@dataclass(frozen=True)
class Bounds:
    """Start value and bounds (natural units) of the fitted parameters, in order."""

    names: tuple[str, ...]
    init: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def log(self) -> tuple[jax.Array, jax.Array]:
        """``(log lower, log upper)``: the traced arguments of :func:`natural`."""
        return jnp.log(jnp.asarray(self.lower)), jnp.log(jnp.asarray(self.upper))

    def to_natural(self, z) -> np.ndarray:
        """``θ(z)`` on the host (float64), for one point ``(n,)`` or a path ``(k, n)``."""
        z = jnp.asarray(z)
        return np.asarray((natural if z.ndim == 1 else jax.vmap(natural, (0, None, None)))(z, *self.log), np.float64)

    def to_unconstrained(self, theta) -> np.ndarray:
        """``z(θ) = logit((log θ − log l)/(log u − log l))`` (host, NumPy)."""
        s = (np.log(theta) - np.log(self.lower)) / (np.log(self.upper) - np.log(self.lower))
        return np.log(s) - np.log1p(-s)

    def at_bound(self, theta, rtol: float = 1e-3) -> list[str]:
        """Names whose value lies within ``rtol`` (of the log-width) of a bound."""
        s = (np.log(theta) - np.log(self.lower)) / (np.log(self.upper) - np.log(self.lower))
        return [n for n, v in zip(self.names, s, strict=True) if v < rtol or v > 1 - rtol]


def _range(params, name: str) -> tuple[float, float, bool] | None:
    """The documented ``(lo, hi, lo_open)`` of a field of a parameter Module, if its metadata has one."""
    if not dataclasses.is_dataclass(params):
        return None
    fields = {f.name: f for f in dataclasses.fields(params)}
    return fields[name].metadata.get("range") if name in fields else None


def check_leaf(params, name: str, model_name: str, keys: Mapping) -> None:
    """Refuse a name that is not a ``[parameters]`` key, or not a traced leaf of ``params``."""
    where = f"fit.parameters.{name}"
    if name not in keys:
        raise ConfigError(where, name, suggest(name, keys, f"parameter of model {model_name!r}"))
    leaf = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
    if leaf is None or not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise ConfigError(
            where,
            name,
            f"is a [parameters] key of {model_name!r} but not a floating leaf of its "
            "parameter pytree (model.params(grid)) in this arm's configuration (e.g. fisher_kpp's "
            "chemoattractant keys when chi = 0): the run does not use it, and it cannot be fitted",
        )


def _bound(name: str, which: str, given, documented) -> float:
    lo, hi, _ = documented if documented is not None else (0.0, math.inf, False)
    default = lo if which == "lower" else hi
    if given is None:
        if not 0 < default < math.inf:
            why = "starts at 0" if which == "lower" else "has no finite upper end"
            raise ConfigError(
                f"fit.parameters.{name}.{which}",
                None,
                f"is required: the allowed range [{lo}, {hi}] {why}, and a log transform needs 0 < lower < upper < inf",
            )
        return float(default)
    return float(given)


def bounds(entries: Mapping, params, model_name: str, keys: Mapping) -> Bounds:
    """:class:`Bounds` from ``[fit.parameters]`` entries, checked against the model's rules.

    ``keys`` are the model's ``[parameters]`` :class:`~tumorfield._schema.Key`\\ s (their rule
    checks ``init``, ``lower`` and ``upper``); ``params`` is one arm's parameter pytree.
    """
    init, lower, upper = [], [], []
    for name, entry in entries.items():
        check_leaf(params, name, model_name, keys)
        documented = _range(params, name)
        lo, hi = _bound(name, "lower", entry.lower, documented), _bound(name, "upper", entry.upper, documented)
        for which, value in (("init", entry.init), ("lower", lo), ("upper", hi)):
            problem = keys[name].check(value) if keys[name].check is not None else None
            if problem or not math.isfinite(value):
                rule = problem or "must be finite"
                raise ConfigError(f"fit.parameters.{name}.{which}", value, f"parameters.{name} {rule}")
        if not 0 < lo < hi:
            raise ConfigError(f"fit.parameters.{name}", {"lower": lo, "upper": hi}, "needs 0 < lower < upper")
        if not lo < entry.init < hi:
            raise ConfigError(f"fit.parameters.{name}.init", entry.init, f"must lie strictly inside ({lo}, {hi})")
        init.append(entry.init), lower.append(lo), upper.append(hi)
    return Bounds(tuple(entries), *(np.asarray(v, np.float64) for v in (init, lower, upper)))


def with_values(params, names: Sequence[str], values):
    """``params`` with the leaves ``names`` replaced by ``values`` (cast to each leaf's dtype), traceable.

    Dict parameters are updated, Modules rebuilt with ``eqx.tree_at`` (which skips range
    checks: keep ``values`` inside the ranges, as :class:`Bounds` does).
    """
    if not len(names):
        return params
    leaves = [params[n] if isinstance(params, Mapping) else getattr(params, n) for n in names]
    cast = [jnp.asarray(v).astype(jnp.result_type(leaf)) for v, leaf in zip(values, leaves, strict=True)]
    if isinstance(params, Mapping):
        return {**params, **dict(zip(names, cast, strict=True))}
    return eqx.tree_at(lambda p: tuple(getattr(p, n) for n in names), params, tuple(cast))
