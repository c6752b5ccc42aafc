"""The scans of a calibration (``[[fit.images]]``), read onto their arm's grid and checked before compute.

Misfits (dimensionless residuals, summed as ``½ Σ r²``; docs/calibration.md):

- ``kind = "density"``: ``r = (u(t) − d)/σ`` per cell of the domain (a voxel-wise Gaussian likelihood
  of the field against the image resampled onto the grid);
- ``kind = "segmentation"``: for each threshold ``θ`` of the labels (nested: a voxel labelled ``L`` is
  above ``thresholds[L]`` and below every higher threshold; 0 is below all), the observed indicator
  ``y_θ = 1[threshold of the voxel's label ≥ θ]`` against the smoothed threshold of the field,
  ``r = (S((u(t) − θ)/w) − y_θ)/σ_ℓ`` with ``S`` the logistic function: a smoothed-threshold Gaussian
  likelihood, differentiable everywhere (``w`` → 0 is the hard threshold of the imaging convention:
  visible where u ≥ 0.8 on T1Gd, u ≥ 0.16 on FLAIR).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from tumorfield_kernels import ImageError

from .._schema import ConfigError


@dataclass(frozen=True)
class Scan:
    """One scan on its arm's grid: ``target`` is the density map, or the stacked indicators ``y_θ`` of
    the ascending ``thresholds``; ``labels`` the label image (segmentations, for the metrics)."""

    index: int
    arm: str
    t: float
    step: int
    field: str
    kind: str
    file: str
    target: np.ndarray
    thresholds: tuple[float, ...]
    label_thresholds: dict[int, float]
    labels: np.ndarray | None
    sigma: float
    width: float

    def residuals(self, u, domain):
        """The scan's residuals at the predicted field ``u`` (zero outside ``domain``), flattened."""
        if self.kind == "density":
            return ((u - self.target) / self.sigma * domain).ravel()
        levels = jnp.asarray(self.thresholds, u.dtype).reshape((-1,) + (1,) * u.ndim)
        smooth = jax.nn.sigmoid((u[None] - levels) / self.width)
        return ((smooth - self.target) / self.sigma * domain[None]).ravel()


def _label_thresholds(where: str, raw: dict) -> dict[int, float]:
    """``{label: threshold}`` from a TOML table (keys are strings), checked: labels ≥ 1, thresholds in
    (0, 1) and distinct (nested levels)."""
    if not raw:
        raise ConfigError(f"{where}.thresholds", raw, 'a segmentation needs { label = threshold, … }, e.g. '
                          '{ 1 = 0.8, 2 = 0.16 }')  # fmt: skip
    table = {}
    for label, value in raw.items():
        try:
            number = int(label)
        except ValueError:
            number = -1
        if number < 1 or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(f"{where}.thresholds", raw, "labels must be integers ≥ 1 and thresholds in (0, 1)")
        table[number] = float(value)
    if len(set(table.values())) != len(table):
        raise ConfigError(f"{where}.thresholds", raw, "thresholds must differ (nested levels, one per label)")
    return table


def _read(where: str, path: str, grid, kind: str) -> np.ndarray:
    from ..io import read_image  # nibabel and scipy only where images are read

    try:
        return read_image(path, grid, kind=kind)
    except ImageError as error:
        raise ConfigError(f"{where}.file", path, str(error)) from None


def _segmentation(where: str, image, path: str, grid, domain) -> tuple:
    table = _label_thresholds(where, image.thresholds)
    labels = _read(where, path, grid, "labels")
    found = set(np.unique(labels).tolist()) - {0}
    unknown = sorted(found - set(table))
    if unknown:
        raise ConfigError(f"{where}.file", path, f"has labels {unknown} that are not in thresholds {sorted(table)}")
    if not np.any((labels > 0) & (domain > 0)):
        raise ConfigError(f"{where}.file", path, "is an empty segmentation (no labelled voxel inside the domain)")
    levels = tuple(sorted(table.values()))
    voxel_level = np.vectorize(lambda v: table.get(int(v), 0.0), otypes=[np.float64])(labels)
    target = np.stack([(voxel_level >= level).astype(np.float64) for level in levels])
    return target, levels, table, labels


def load_scans(spec, problems: dict) -> tuple[Scan, ...]:
    """Every ``[[fit.images]]`` entry read onto its arm's grid (``problems``: arm → Problem) and checked:
    the arm, the field, the time on the arm's step grid, the image (readable, on or resampleable onto
    the grid, finite), the labels and thresholds; a :class:`ConfigError` naming the key otherwise."""
    scans = []
    for i, image in enumerate(spec.images):
        where = f"fit.images[{i}]"
        if image.arm not in problems:
            raise ConfigError(f"{where}.arm", image.arm, f"must be one of the arms {sorted(problems)}")
        problem = problems[image.arm]
        system, grid, dt = problem.system, problem.grid, problem.dt
        if image.field not in system.fields or image.field in system.scalars:
            fields = [f for f in system.fields if f not in system.scalars]
            raise ConfigError(f"{where}.field", image.field, f"must be a grid field of the arm's model: {fields}")
        t_end = spec.arms[image.arm].time.t_end
        if not 0 < image.t <= t_end * (1 + 1e-9):  # first: t/dt is then finite
            raise ConfigError(f"{where}.t", image.t, f"must lie in (0, {t_end}] day (time.t_end of arm {image.arm!r})")
        step = round(image.t / dt)
        if step < 1 or abs(step * dt - image.t) > 1e-9 * max(1.0, image.t):
            raise ConfigError(f"{where}.t", image.t, f"must be a positive whole number of the arm's steps (dt = {dt})")
        domain = domain_of(problem)
        if image.kind == "density":
            target, levels, table, labels = _read(where, image.file, grid, "continuous"), (), {}, None
            sigma = image.sigma
        else:
            target, levels, table, labels = _segmentation(where, image, image.file, grid, domain)
            sigma = image.label_sigma
        scans.append(Scan(i, image.arm, float(image.t), step, image.field, image.kind, image.file, target, levels,
                          table, labels, sigma, image.width))  # fmt: skip
    return tuple(scans)


def domain_of(problem) -> np.ndarray:
    """The arm's domain mask (1 inside; the whole box where its System has none)."""
    domain = problem.system.domain
    if domain is None:
        return np.ones(problem.grid.shape)
    return np.asarray(domain(problem.params) if callable(domain) else domain, np.float64)
