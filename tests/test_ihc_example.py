"""Smoke test of ``experiments/voloshin2015/calibrate_ihc.py --quick``: the whole chain (truth, IHC scans,
calibration, the scalar observables' standard errors, summary and figures) runs and writes finite numbers.

The quick setup (one arm, 10² fit cells, 2 iterations) checks that the chain works, not what it finds; the
measured recovery of the default run is in ``experiments/voloshin2015/IHC_CALIBRATION.md``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import h5py
import pytest

pytestmark = pytest.mark.example  # 75 s on 2 cores (the voloshin2015 gradient's compile): make examples

HERE = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015"


def _script():
    """``calibrate_ihc.py`` imported as a module (its folder on the path)."""
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location("calibrate_ihc", HERE / "calibrate_ihc.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(HERE))


def test_quick_run_writes_finite_summary(tmp_path):
    script = _script()
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("fit.toml", "scalar_fit.toml", "observations.csv", "FIT.h5", "SCALAR.h5", "summary.json",
                 "summary.md", "figures/scans.png", "figures/std_errors.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    assert len(list(tmp_path.glob("ihc_ptx_*_day21.nii.gz"))) == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["parameters"]
    assert [r["parameter"] for r in rows] == list(script.PARAMETERS)
    for row in rows:
        for key in ("estimate", "relative_error", "se_images", "se_scalars"):
            assert math.isfinite(row[key]) and (key == "relative_error" or row[key] > 0), (row["parameter"], key)
        assert row["comment"]
    with h5py.File(tmp_path / "FIT.h5") as h5:
        fields = sorted(h5[f"fit/scans/{i}"].attrs["field"] for i in h5["fit/scans"])
        assert fields == ["m2", "tumor"]
    markdown = (tmp_path / "summary.md").read_text()
    assert all(f"`{name}`" in markdown for name in script.PARAMETERS)
