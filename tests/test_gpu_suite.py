"""The GPU suite (``benchmarks/gpu_suite.sh``) in its ``--quick`` form on CPU, so that it cannot rot.

It runs every stage (device, verification tests, ``bench_simulate.py``, ``bench_model.py``,
the 3D model run, ``bench_decomposed.py`` on 2 host devices) on tiny grids; each must have run,
or have been skipped with a reason, and every JSON file it reports must parse and hold its stage's
results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"
STAGES = ("device", "verification", "bench_simulate", "bench_model", "model_3d", "decomposed")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("the suite needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--quick", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    return out, proc


def test_every_stage_ran_or_was_skipped_with_a_reason(suite):
    out, proc = suite
    assert proc.returncode == 0, f"suite exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    summary = json.loads((out / "suite.json").read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    assert tuple(stages) == STAGES
    for name, s in stages.items():
        assert s["status"] in ("ran", "skipped"), (name, s)
        if s["status"] == "skipped":
            assert s["reason"].strip(), f"{name} was skipped without a reason"
    log = (out / "suite.log").read_text()
    assert "devices" in log and "stage bench_model: ran" in log


def test_json_outputs_exist_and_parse(suite):
    out, _ = suite
    summary = json.loads((out / "suite.json").read_text())
    ran = [s for s in summary["stages"] if s["status"] == "ran"]
    for s in ran:
        assert s["outputs"], f"stage {s['stage']} ran but wrote no JSON"
        for rel in s["outputs"]:
            json.loads((out / rel).read_text())
    if "verification" in [s["stage"] for s in ran]:
        verification = json.loads((out / "verification" / "verification.json").read_text())
        assert verification["tests"] >= 1 and not verification["failed"] and verification["failures"] == 0
    device = json.loads((out / "device" / "device.json").read_text())
    assert device["platform"] == "cpu" and device["devices"]

    (simulate,) = (out / "bench_simulate").glob("bench_simulate_cpu_*.json")
    sizes = json.loads(simulate.read_text())["sizes"]
    assert sizes and all(e["tumorfield_time_to_solution"]["wall_s"] > 0 for e in sizes.values())

    for stage in ("bench_model", "model_3d"):
        (path,) = (out / stage).glob("bench_model_cpu_*.json")
        result = json.loads(path.read_text())
        runs = [r for entry in result["sizes"].values() for r in entry["runs"].values()]
        assert runs, stage
        for r in runs:
            assert r["status"] == "ok", (stage, r.get("error"))
            assert r["accepted_dt"] > 0 and r["wall_s"] > 0 and r["cell_steps_per_s"] > 0
            assert 0 < r["fraction_of_bandwidth_bound"] < 1
            assert r["finite"] and r["min_tumor"] >= 0
            assert r["taxis_reaction_limited_dt"] > 0 and r["diffusion_limited_dt"] > 0
