"""Sign-change helpers of experiments/voloshin2015/sweep_anakinra.py, on synthetic numbers (no runs)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015"


def _experiment_module(name: str, file: str):
    """An experiment script of ``experiments/voloshin2015`` imported as a module (its folder on the path)."""
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location(name, HERE / file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(HERE))


@pytest.fixture(scope="module")
def sweep():
    return _experiment_module("sweep_anakinra", "sweep_anakinra.py")


def test_effect_signs_with_tolerance(sweep):
    assert sweep.effect_signs([0.5, 1.0, 1.0005, 1.2, math.nan], tol=1e-3) == [-1, 0, 0, 1, 0]
    assert sweep.effect_signs([0.9999, 1.0001]) == [-1, 1]


def test_sign_change_linear_interpolation(sweep):
    # ratio 1.2 at x=1, 0.8 at x=3: crosses 1 halfway, at x=2
    (change,) = sweep.sign_changes([0.0, 1.0, 3.0, 5.0], [1.3, 1.2, 0.8, 0.7])
    assert change["between"] == [1.0, 3.0]
    assert change["from"] == "raises" and change["to"] == "lowers"
    assert change["at_interpolated"] == pytest.approx(2.0)
    # unequal distances to 1: 0.9 at x=2, 1.3 at x=6 → crossing at 2 + 0.1/0.4·4 = 3
    (change,) = sweep.sign_changes([2.0, 6.0], [0.9, 1.3])
    assert change["at_interpolated"] == pytest.approx(3.0)
    assert change["from"] == "lowers" and change["to"] == "raises"


def test_sign_change_log_x_and_skipped_zeros(sweep):
    # dips below 1 then comes back above: two changes; the entry within tol is skipped
    changes = sweep.sign_changes([0.01, 0.1, 1.0, 10.0], [0.9, 1.0002, 1.1, 1.2], tol=1e-3, log_x=True)
    assert len(changes) == 1
    assert changes[0]["between"] == [0.01, 1.0]
    # linear in log10 x: 0.9 → 1.1 across two decades, crossing one decade up
    assert changes[0]["at_interpolated"] == pytest.approx(0.1)
    assert sweep.sign_changes([1.0, 2.0, 3.0], [1.1, 1.2, 1.5]) == []
    with pytest.raises(ValueError):
        sweep.sign_changes([2.0, 1.0], [0.9, 1.1])


def test_boundary_by_dose_and_turning_points(sweep):
    values = [0.25, 1.0, 4.0]
    doses = [0.0, 0.1, 10.0]
    grid = np.array([[1.0, 1.2, 1.6], [1.0, 1.0, 1.4], [1.0, 0.8, 1.1]])
    low, high = sweep.boundary_by_dose(values, grid, doses, tol=1e-3)
    assert low["dose_mg_per_kg"] == 0.1 and high["dose_mg_per_kg"] == 10.0
    # at dose 0.1 the 1.0 row is exactly 1 (skipped): bracket 0.25..4, 1.2 → 0.8 crosses halfway
    (c,) = low["crossings"]
    assert c["between"] == [0.25, 4.0] and c["at_interpolated"] == pytest.approx(2.125)
    assert high["crossings"] == []
    (turn,) = sweep.turning_points([0, 0.1, 1, 10], [100, 90, 95, 120])
    assert turn["minimum_at"] == 0.1 and turn["between"] == [0, 1]


def test_row_summary(sweep):
    points = [
        {"dose_mg_per_kg": d, "metastatic_burden": b, "tumor_volume": 1.0, "seeded_cells": 1.0}
        | {"m2_fraction": 0.3, "mean_leakiness": 0.1}
        for d, b in [(0.0, 100.0), (0.01, 95.0), (1.0, 120.0), (50.0, 160.0)]
    ]
    sweep.add_ratios(points)
    row = sweep.summarise_row(points, tol=1e-3, study_dose=50.0)
    assert row["effect_sign_by_dose"] == {"0.01": "lowers", "1": "raises", "50": "raises"}
    (c,) = row["sign_changes_along_dose"]
    assert c["between"] == [0.01, 1.0]
    assert row["lowest_dose_raising_metastasis_above_ptx_alone"] == 1.0
    assert row["burden_ratio_at_study_dose"] == pytest.approx(1.6)
    assert row["target_2_burden_ratio_ge_1.5_at_study_dose"] is True


# --- experiments/voloshin2015/analysis.py: targets that cannot pass by accident (issue 13) ---------


@pytest.fixture(scope="module")
def analysis():
    return _experiment_module("voloshin_analysis", "analysis.py")


def _arm(analysis, **values):
    """Endpoints of one arm: every key the ratios read, 1.0 unless given."""
    keys = {*analysis.ENDPOINT_SCALARS, *(f"{k}_window" for k in analysis.WINDOW_SCALARS), "tumor_volume_at_start"}
    return {**dict.fromkeys(keys, 1.0), "tumor_volume": 2.0, **values}


def _study(analysis, ptx=None, ptx_anakinra=None, vehicle=None):
    """Arms for which every target holds, unless an arm is overridden."""
    good_pa = {"tumor_volume": 1.8, "metastatic_burden": 1.3, "m2_tumor": 1.2, "m2_fraction": 1.2,
               "mean_leakiness": 1.2, "invasion_distance": 0.9}  # fmt: skip
    ep = {
        "vehicle": _arm(analysis, **{"il1b_mean_window": 0.5, "il1b_production_window": 0.5, **(vehicle or {})}),
        "ptx": _arm(analysis, **(ptx or {})),
        "ptx_anakinra": _arm(analysis, **{**good_pa, **(ptx_anakinra or {})}),
    }
    return analysis.targets(analysis.ratios(ep), ep)


def test_ratio_is_undefined_for_zero_or_non_finite_denominators(analysis):
    assert analysis.ratio(2.0, 4.0) == 0.5
    for a, b in ((0.0, 0.0), (1.0, 0.0), (math.nan, 1.0), (1.0, math.nan), (math.inf, 1.0)):
        assert math.isnan(analysis.ratio(a, b)), (a, b)


def test_every_target_holds_on_the_reference_study(analysis):
    t = _study(analysis)
    assert len(t) == 5 and all(v["pass"] and v["defined"] for v in t.values()), t


def test_tumours_gone_in_both_arms_fail_every_target_they_touch(analysis):
    """0/0: the old +inf ratio made targets 3 and 4 pass when PTX had eradicated both tumours."""
    gone = {"tumor_volume": 0.0, "metastatic_burden": 0.0, "m2_tumor": 0.0, "m2_fraction": math.nan,
            "mean_leakiness": math.nan, "il1b_mean_window": math.nan}  # fmt: skip
    t = _study(analysis, ptx=gone, ptx_anakinra=gone)
    for number in (1, 2, 3, 4, 5):
        (item,) = [v for k, v in t.items() if k.startswith(f"{number} ")]
        assert not item["pass"], (number, item)
    assert not t[analysis.TARGET_NAMES[3]]["defined"] and not t[analysis.TARGET_NAMES[4]]["defined"]


def test_an_empty_tumour_region_fails_the_il1b_target(analysis):
    """x/0 and NaN: an IL1β mean over an emptied region (the old target-5 failure mode) is undefined."""
    for value in (0.0, math.nan):
        t = _study(analysis, vehicle={"il1b_mean_window": value})
        item = t[analysis.TARGET_NAMES[5]]
        assert not item["pass"] and not item["defined"], item


def test_a_shrinking_treated_tumour_fails_the_dual_effect_even_with_the_right_ratios(analysis):
    """The ratios point the right way, but the PTX tumour shrinks through treatment: not the study's tumour."""
    t = _study(analysis, ptx={"tumor_volume": 2.0, "tumor_volume_at_start": 3.0})
    assert t[analysis.TARGET_NAMES[1]]["ratio"] < 1 and t[analysis.TARGET_NAMES[2]]["ratio"] > 1
    for number in (1, 2, 3, 4, 5):
        (item,) = [v for k, v in t.items() if k.startswith(f"{number} ")]
        assert item["defined"] and not item["pass"], (number, item)
