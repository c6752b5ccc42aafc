"""Agreement between a predicted tumour cell field and an observed scan on the same grid (host-side, NumPy).

The observed scan is a segmentation with *nested labels*: each label ``L ≥ 1`` stands for a
detection threshold ``θ_L`` of the normalised cell density (e.g. ``θ = 0.80`` for the T1-Gd
enhancing rim and ``θ = 0.16`` for the T2/FLAIR oedema, Swanson et al. 2008; Harpold et al. 2007),
so a voxel labelled ``L`` has ``u ≥ θ_L`` and ``u <`` every higher threshold; ``0`` is below
all of them. The region seen at threshold ``θ`` is therefore

.. math::  \\Omega_{\\mathrm{obs}}(\\theta) = \\{i : L_i \\ne 0,\\ \\theta_{L_i} \\ge \\theta\\},
           \\qquad \\Omega_{\\mathrm{pred}}(\\theta) = \\{i : u_i \\ge \\theta\\},

and the model is scored by the overlap (Dice) and the volume of these regions at each threshold
and by the voxel-wise concordance of two fields, as in the imaging-calibration literature
(Hormuth et al. 2015; Lipková et al. 2019).

Every function takes an optional boolean ``mask`` (the computational domain, e.g. the brain):
cells outside it are ignored. All arrays must have the same shape — a prediction and a scan on
different grids are refused with a :class:`ValueError` rather than broadcast.

References
----------
- L. R. Dice (1945). Measures of the amount of ecologic association between species. Ecology 26, 297–302.
- L. I.-K. Lin (1989). A concordance correlation coefficient to evaluate reproducibility.
  Biometrics 45, 255–268.
- D. A. Hormuth II, J. A. Weis, S. L. Barnes, M. I. Miga, E. C. Rericha, V. Quaranta,
  T. E. Yankeelov (2015). Predicting in vivo glioma growth with the reaction diffusion equation
  constrained by quantitative magnetic resonance imaging data. Phys. Biol. 12, 046006.
- H. L. P. Harpold, E. C. Alvord Jr., K. R. Swanson (2007). The evolution of mathematical
  modeling of glioma proliferation and invasion. J. Neuropathol. Exp. Neurol. 66, 1–9.
- K. R. Swanson, R. C. Rostomily, E. C. Alvord Jr. (2008). A mathematical modelling tool for
  predicting survival of individual patients following resection of glioblastoma: a proof of
  principle. Br. J. Cancer 98, 113–119.
- J. Lipková, P. Angelikopoulos, S. Wu et al. (2019). Personalized radiotherapy design for
  glioblastoma: integrating mathematical tumor models, multimodal scans, and Bayesian inference.
  IEEE Trans. Med. Imaging 38, 1875–1884.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _same_shape(mask: np.ndarray | None, **arrays) -> tuple[np.ndarray, ...]:
    """The arrays (NumPy) and the domain mask (all-true if None), after checking one common shape."""
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    if mask is not None:
        arrays["mask"] = np.asarray(mask)
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"arrays must be on the same grid (same shape), got {listed}")
    if mask is not None and arrays["mask"].dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {arrays['mask'].dtype}")
    domain = arrays.pop("mask") if mask is not None else np.ones(next(iter(shapes.values())), bool)
    return (*arrays.values(), domain)


def _labels_to_thresholds(labels: np.ndarray, thresholds: Mapping[int, float]) -> np.ndarray:
    """Per-cell threshold ``θ_label`` of a nested segmentation (``−∞`` for label 0)."""
    theta = {int(k): float(v) for k, v in thresholds.items()}
    if not theta or min(theta) < 1 or not all(np.isfinite(v) for v in theta.values()):
        raise ValueError(f"thresholds must map labels ≥ 1 to finite values, got {dict(thresholds)}")
    if not (np.issubdtype(labels.dtype, np.integer) or np.all(labels == np.round(labels))):
        raise ValueError("labels must be integers (a segmentation), got non-integer values")
    present = {int(v) for v in np.unique(labels)} - {0}
    if present - set(theta):
        raise ValueError(f"labels {sorted(present - set(theta))} have no threshold in {theta}")
    table = np.full(max(max(theta), max(present, default=0)) + 1, -np.inf)
    for label, value in theta.items():
        table[label] = value
    return table[labels.astype(np.int64)]


def dice(predicted_mask: np.ndarray, observed_mask: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Dice similarity coefficient of two regions (Dice 1945).

    .. math::  D(A, B) = \\frac{2\\,|A \\cap B|}{|A| + |B|} \\in [0, 1],

    with ``A``, ``B`` restricted to the domain ``mask``. When both regions are empty there is
    nothing to disagree about and ``D = 1.0`` (a model that predicts no tumour where none is
    seen is right), so the value is never NaN.
    """
    pred, obs, domain = _same_shape(mask, predicted_mask=predicted_mask, observed_mask=observed_mask)
    for name, a in (("predicted_mask", pred), ("observed_mask", obs)):
        if a.dtype != bool:
            raise ValueError(f"{name} must be a boolean array, got dtype {a.dtype}")
    a, b = pred & domain, obs & domain
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def observed_region(labels: np.ndarray, thresholds: Mapping[int, float], theta: float) -> np.ndarray:
    """``Ω_obs(θ)``: cells whose label's threshold is ≥ ``θ`` (module docstring), as a boolean array."""
    return _labels_to_thresholds(np.asarray(labels), thresholds) >= theta


def dice_at_thresholds(
    u: np.ndarray, labels: np.ndarray, thresholds: Mapping[int, float], mask: np.ndarray | None = None
) -> dict[float, float]:
    """``{θ: D(Ω_pred(θ), Ω_obs(θ))}`` for every threshold ``θ`` of the nested segmentation.

    ``Ω_pred(θ) = {u ≥ θ}`` (NaN cells are outside) and ``Ω_obs(θ) = {θ_label ≥ θ}``, both within
    ``mask`` (module docstring; Hormuth et al. 2015). ``thresholds`` maps each label ``≥ 1`` to its
    ``θ``; a label in ``labels`` without a threshold is refused. Empty-vs-empty scores 1.0 (:func:`dice`).
    """
    u, labels, domain = _same_shape(mask, u=u, labels=labels)
    cell_theta = _labels_to_thresholds(labels, thresholds)
    return {
        float(theta): dice(np.greater_equal(u, theta), cell_theta >= theta, domain)
        for theta in sorted({float(v) for v in thresholds.values()})
    }


def concordance_correlation(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Lin's concordance correlation coefficient of two fields over the cells of ``mask`` (Lin 1989).

    .. math::  \\rho_c = \\frac{2 s_{xy}}{s_x^2 + s_y^2 + (\\bar x - \\bar y)^2},

    with population moments (``1/n``). ``ρ_c = 1`` only for ``y = x``; a shift or scale lowers
    it (unlike Pearson's ``r``): for ``y = a x + b``, ``ρ_c = 2 a s_x² / ((1 + a²) s_x² + ((1 − a) x̄ − b)²)``.
    Two equal constant fields (zero denominator) give 1.0; an empty mask gives NaN, and
    NaN cells propagate to a NaN result.
    """
    x, y, domain = _same_shape(mask, x=x, y=y)
    xs, ys = x[domain].astype(np.float64), y[domain].astype(np.float64)
    if xs.size == 0:
        return float("nan")
    dx, dy = xs - xs.mean(), ys - ys.mean()
    denominator = np.mean(dx * dx) + np.mean(dy * dy) + (xs.mean() - ys.mean()) ** 2
    if denominator == 0.0:
        return 1.0
    return float(2.0 * np.mean(dx * dy) / denominator)


def volume_error(
    u: np.ndarray,
    labels: np.ndarray,
    thresholds: Mapping[int, float],
    cell_volume: float | np.ndarray,
    mask: np.ndarray | None = None,
) -> dict[float, float]:
    """``{θ: (V_pred(θ) − V_obs(θ)) / V_obs(θ)}``, the relative volume error at each threshold.

    .. math::  V_{\\mathrm{pred}}(\\theta) = \\sum_{i \\in \\Omega_{\\mathrm{pred}}(\\theta)} v_i,\\qquad
               V_{\\mathrm{obs}}(\\theta) = \\sum_{i \\in \\Omega_{\\mathrm{obs}}(\\theta)} v_i

    over the cells in ``mask``, with ``v_i = cell_volume`` (a positive scalar, or a per-cell
    array of the grid's shape). Where nothing is observed (``V_obs = 0``) the ratio is undefined;
    it is reported as ``0.0`` when nothing is predicted either and ``+inf`` otherwise, never NaN.
    """
    u, labels, domain = _same_shape(mask, u=u, labels=labels)
    volume = np.broadcast_to(np.asarray(cell_volume, np.float64), u.shape) if np.ndim(cell_volume) == 0 else None
    if volume is None:
        volume = _same_shape(None, u=u, cell_volume=cell_volume)[1].astype(np.float64)
    if not np.all(np.isfinite(volume) & (volume > 0)):
        raise ValueError("cell_volume must be positive and finite")
    cell_theta = _labels_to_thresholds(labels, thresholds)
    errors = {}
    for theta in sorted({float(v) for v in thresholds.values()}):
        predicted = float(volume[np.greater_equal(u, theta) & domain].sum())
        observed = float(volume[(cell_theta >= theta) & domain].sum())
        errors[theta] = (predicted - observed) / observed if observed > 0 else (0.0 if predicted == 0 else np.inf)
    return errors
