"""Targets 1–8 of the brief (§5), from HDF5 files written by ``tumorfield run`` for every arm.

The six arms of ``experiments/voloshin2015`` run as subprocesses on a coarse grid
(24×24 cells on the configs' 8×8 mm box, dt = 0.04 day, ~1.5 min on 2 cores);
everything asserted is computed by ``experiments/voloshin2015/analysis.py`` from
the HDF5 files alone. Grid/time-step refinement (target 9) is measured by
``experiments/voloshin2015/refinement.py`` (numbers in ``docs/model.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015"
sys.path.insert(0, str(EXPERIMENT))

from analysis import ARMS, summary  # noqa: E402
from reproduce import run_arm  # noqa: E402

COARSE = ["grid.shape=[24,24]", "time.dt=0.04", "time.save_every=1.0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("voloshin2015")
    cache = outdir / "jax-cache"  # every arm shares one compiled rollout through it
    overrides = [*COARSE, f'run.compilation_cache="{cache}"']
    paths = {arm: run_arm(arm, outdir, overrides) for arm in ARMS}
    return paths, summary(paths)


def test_hdf5_files_hold_every_arm_to_the_endpoint(study):
    paths, result = study
    for arm, path in paths.items():
        with h5py.File(path, "r") as h5:
            assert h5.attrs["status"] == b"complete" or h5.attrs["status"] == "complete", arm
            assert h5["t"][-1] == pytest.approx(21.0)
            assert np.all(np.isfinite(h5["tumor"][()])) and np.min(h5["tumor"][()]) >= 0.0
            assert "voloshin2015" in h5.attrs["config"]
    assert result["treatment_window_start_day"] == pytest.approx(3.0)


@pytest.mark.parametrize("number", range(1, 9))
def test_target(study, number):
    _, result = study
    (name,) = [key for key in result["targets"] if key.startswith(f"{number} ")]
    target = result["targets"][name]
    assert target["pass"], f"target {name}: {target}"


def test_vehicle_arm_is_untreated_and_ptx_raises_il1b_only_while_drug_is_present(study):
    paths, result = study
    with h5py.File(paths["vehicle"], "r") as h5:
        assert np.max(h5["paclitaxel"][()]) == 0.0 and np.max(h5["anakinra"][()]) == 0.0
    with h5py.File(paths["ptx"], "r") as h5:
        t, il1b = h5["scalars/t"][()], h5["scalars/il1b_mean"][()]
    before = il1b[t < 3.0 - 1e-9].max()
    assert il1b[(t > 3.0) & (t < 4.0)].max() > 5 * before  # the first dose lands at day 3
