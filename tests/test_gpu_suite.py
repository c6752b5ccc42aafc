"""The GPU suite (``benchmarks/gpu_suite.sh``) on CPU, so that no stage can rot before a lease runs it.

* ``--quick`` runs every stage of the full form at tiny sizes: each must have run (``budget`` and
  ``glioma`` may be skipped only for their stated reasons: no ``bench_budget.py``, no nilearn) and
  written its JSON with the figures a lease is for;
* ``SUITE_DRY_RUN=1`` lists the full form's commands: their sizes are those of the issue, their
  options are in the scripts' ``--help`` (the full form's arguments cannot rot either), and stages 1–6
  fit the deadline;
* ``SUITE_DRY_RUN=sleep:N`` runs the deadline logic with ``sleep`` in place of the stages: timeouts
  cut to the time left, stages past the deadline skipped with the reason;
* ``bench_model.py`` stopped by ``--worker-timeout`` still writes what its worker measured.

The ``--quick`` run (≈ 4 min of CPU: each stage compiles its own programs) is marked ``suite`` and runs
outside the 15-minute suite, as ``make suite-quick`` in ``.ci/run``; the rest runs in ``make test``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"
STAGES = (
    "device",
    "model_3d",
    "ensemble",
    "fit",
    "calibrate",
    "verification",
    "bench_model",
    "budget",
    "decomposed",
    "glioma",
)
HAS_BUDGET = (ROOT / "benchmarks" / "bench_budget.py").exists()
HAS_NILEARN = importlib.util.find_spec("nilearn") is not None


def run_suite(out: Path, *options: str, timeout: float = 900, **env) -> tuple[subprocess.CompletedProcess, float]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("the suite needs bash and coreutils' timeout")
    environ = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", **env}
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPT), *options, str(out)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def stages_of(out: Path) -> dict:
    summary = json.loads((out / "suite.json").read_text())
    return {s["stage"]: s for s in summary["stages"]}


def only(out: Path, stage: str, pattern: str) -> dict:
    (path,) = (out / stage).glob(pattern)
    return json.loads(path.read_text())


def expected_skip(name: str) -> str | None:
    """Why a stage may be skipped on this machine (None: it must run)."""
    if name == "budget" and not HAS_BUDGET:
        return "bench_budget.py"
    if name == "glioma" and not HAS_NILEARN:
        return "nilearn"
    return None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    proc, _ = run_suite(out, "--quick")
    return out, proc


@pytest.mark.suite
def test_every_stage_ran(quick):
    out, proc = quick
    assert proc.returncode == 0, f"suite exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    stages = stages_of(out)
    assert tuple(stages) == STAGES
    for name, s in stages.items():
        why = expected_skip(name)
        if why is None:
            assert s["status"] == "ran", (name, s)
            assert s["outputs"], f"stage {name} ran but wrote no JSON"
            assert s["timeout_s"] > 0 and s["seconds"] is not None
        else:
            assert s["status"] == "skipped" and why in s["reason"], (name, s)
    for s in stages.values():
        for rel in s["outputs"]:
            json.loads((out / rel).read_text())
    assert not (out / "jax_cache").exists()  # the quick form's cache goes with it


@pytest.mark.suite
def test_device_and_verification(quick):
    out, _ = quick
    device = only(out, "device", "device.json")
    assert device["platform"] == "cpu" and device["device_count"] >= 1 and device["jax_platforms"] == "cpu"
    verification = only(out, "verification", "verification.json")
    assert verification["tests"] >= 1 and verification["failures"] == 0 and not verification["failed"]


def model_runs(out: Path, stage: str) -> list[dict]:
    result = only(out, stage, "bench_model_cpu_*.json")
    runs = [r for entry in result["sizes"].values() for r in entry["runs"].values()]
    assert runs, stage
    return runs


@pytest.mark.suite
@pytest.mark.parametrize("stage", ["model_3d", "bench_model"])
def test_model_figures(quick, stage):
    out, _ = quick
    for r in model_runs(out, stage):
        assert r["status"] == "ok", (stage, r.get("error"))
        assert len(r["shape"]) == 3
        assert r["accepted_dt"] > 0 and r["wall_s"] > 0 and r["cell_steps_per_s"] > 0
        assert r["finite"] and r["min_tumor"] >= 0
        assert 0 < r["fraction_of_bandwidth_bound"] < 1
        # the bytes of one step (XLA's, and the common path's from its HLO), against the triad measured in
        # the same worker and the device's peak
        assert r["bandwidth"]["triad_bytes_per_s"] > 0 and r["bandwidth"]["copy_bytes_per_s"] > 0
        cost = r["xla_cost"]
        assert cost["bytes_accessed"] > 0 and cost["compile_s"] > 0 and cost["hlo"]["kernels"] > 0
        assert r["xla_bytes_per_cell_step"] == pytest.approx(cost["bytes_accessed"] / r["cells"])
        assert cost["bytes_basis"].startswith("common path")
        assert r["bytes_per_cell_step"] == pytest.approx(cost["hlo"]["common_path"]["bytes"] / r["cells"])
        assert 0 < r["bytes_per_cell_step"] <= r["xla_bytes_per_cell_step"]
        assert r["fraction_of_triad_bandwidth"] == pytest.approx(
            r["bytes_per_cell_step"] * r["cell_steps_per_s"] / r["bandwidth"]["triad_bytes_per_s"]
        )
        assert cost["cell_steps_per_s_at_issue_bandwidth"] == pytest.approx(2.7e12 / r["bytes_per_cell_step"])
        assert r["peak_bandwidth"]["bytes_per_s"] is None and r["fraction_of_peak_bandwidth"] is None  # a CPU
        assert isinstance(cost["loop_probe"]["counts_iterations"], bool)
    (r,) = model_runs(out, stage)
    if stage == "model_3d":  # the 3D stage skips the frame limits (three programs fewer to compile)
        assert r["binding"].startswith("not measured") and "taxis_reaction_limited_dt" not in r
    else:
        assert r["taxis_reaction_limited_dt"] > 0 and r["diffusion_limited_dt"] > 0
    figures = stages_of(out)[stage]["figures"]
    (found,) = figures.values()
    assert found["cell_steps_per_s"] == r["cell_steps_per_s"] and found["bytes_per_cell_step"] > 0


@pytest.mark.suite
def test_bench_model_loads_the_3d_stage_programs(quick):
    """Stage 7 in --quick compiles the rollout and the step of stage 2 from the shared cache."""
    out, _ = quick
    (first,), (second,) = model_runs(out, "model_3d"), model_runs(out, "bench_model")
    assert second["xla_cost"]["compile_s"] < first["xla_cost"]["compile_s"]


@pytest.mark.suite
def test_ensemble_fit_calibrate_figures(quick):
    out, _ = quick
    ensemble = only(out, "ensemble", "bench_ensemble_cpu_*.json")
    (row,) = ensemble["sizes"].values()
    assert ensemble["members"] == 4 and row["batched"]["members"] == 4
    assert row["batched"]["members_per_s"] > 0 and row["speedup_batched_vs_process_per_member"] > 0
    assert row["batch_member_throughput_vs_single"] > 0

    fit = only(out, "fit", "bench_fit_cpu_*.json")
    gradient = fit["gradient"]
    assert fit["status"] == "complete" and gradient["repeats"] >= 5
    assert len(gradient["forward_times_s"]) == len(gradient["value_and_grad_times_s"]) == gradient["repeats"]
    assert gradient["ratio_median"] > 0 and gradient["ratio"] > 0

    calibrate = only(out, "calibrate", "bench_calibrate_cpu_*.json")
    assert calibrate["status"] == "complete" and calibrate["max_iterations"] == 2
    assert calibrate["gradient"]["ratio_median"] > 0
    assert 1 <= calibrate["solution"]["iterations"] <= 2 and calibrate["solution"]["wall_s"] > 0
    assert stages_of(out)["fit"]["figures"]["ratio_median"] == gradient["ratio_median"]


@pytest.mark.suite
def test_decomposed_glioma_budget_figures(quick):
    out, _ = quick
    (size,) = only(out, "decomposed", "decomposed_cpu_*.json")["sizes"]
    assert size["one_device_step_s"] > 0 and size["devices"] == 2 and size["collectives_per_step"] > 0
    if HAS_NILEARN:
        (entry,) = only(out, "glioma", "bench_glioma_cpu_*.json")["sizes"].values()
        assert entry["cell_steps_per_s"] > 0 and entry["finite"]
    if HAS_BUDGET:
        (case,) = stages_of(out)["budget"]["figures"].values()
        assert 0 < case["common_bytes_per_cell_step"] <= case["bytes_per_cell_step"] and case["fusions"] > 0


def option_values(command: list[str], option: str) -> list[str]:
    """The words after ``option`` up to the next option."""
    i = command.index(option)
    values = []
    for word in command[i + 1 :]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


def test_full_form_commands(tmp_path):
    """The full form's stages, their sizes and options, without running them (SUITE_DRY_RUN=1)."""
    proc, _ = run_suite(tmp_path, timeout=120, SUITE_DRY_RUN="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    stages = stages_of(tmp_path)
    assert tuple(stages) == STAGES
    for name, s in stages.items():
        why = expected_skip(name)
        assert s["status"] == ("dry-run" if why is None else "skipped"), (name, s)
    command = {name: s["command"] for name, s in stages.items()}
    timeout = {name: s["timeout_s"] for name, s in stages.items()}
    assert sum(timeout[name] for name in STAGES[:6]) <= 570  # stages 1–6 fit the deadline at their timeouts
    assert option_values(command["model_3d"], "--sizes") == ["256x3"]
    assert int(option_values(command["model_3d"], "--worker-timeout")[0]) < timeout["model_3d"]
    members = int(option_values(command["ensemble"], "--members")[0])
    (size,) = option_values(command["ensemble"], "--sizes")
    assert members >= 64 and members * int(size) ** 2 >= 4_000_000  # ≥ 4 M cells per batch
    assert option_values(command["fit"], "--parts") == ["gradient"]
    assert int(option_values(command["fit"], "--repeats")[0]) >= 5
    assert int(option_values(command["calibrate"], "--size")[0]) >= 64
    assert option_values(command["calibrate"], "--max-iterations")
    assert "tests/test_core_verification.py" in command["verification"]
    assert option_values(command["bench_model"], "--sizes") == ["512"]
    assert {"--baseline", "--baseline-tree", "--no-baseline"} & set(command["bench_model"])
    # every option of every stage is one its script knows (its --help, the scripts side by side): the
    # full form's arguments cannot rot either
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'kernels'}"}
    helps = {}
    for name, words in command.items():
        scripts = [w for w in words if w.startswith("benchmarks/") and w.endswith(".py")]
        if scripts:
            (script,) = scripts
            helps[name] = subprocess.Popen([sys.executable, script, "--help"], cwd=ROOT, env=env,
                                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    # every stage but device and verification runs a script of benchmarks/
    assert set(helps) == {n for n in STAGES if n not in ("device", "verification") and expected_skip(n) is None}
    for name, proc in helps.items():
        text = proc.communicate(timeout=120)[0]
        for option in (w for w in command[name] if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"{name}: no {option} in its --help"


def test_deadline_cuts_and_skips(tmp_path):
    """Stages sleep 10 s in place of their work under a deadline of 34 s (15 s kept for the summary):
    the device stage's timeout is cut to the ~19 s left, it ends at ~10 s; stages 2 and 6 start in the
    two lanes with ~9 s left (5 or more while they start by 14 s), are cut to it and time out; every later
    stage is skipped for the deadline."""
    proc, wall = run_suite(tmp_path, "--quick", timeout=120, SUITE_DEADLINE="34", SUITE_DRY_RUN="sleep:10")
    assert proc.returncode == 1, proc.stdout[-3000:]  # stages timed out
    assert wall < 34 + 10, wall
    stages = stages_of(tmp_path)
    assert tuple(stages) == STAGES
    assert stages["device"]["status"] == "ran" and "cut" in stages["device"]["reason"]
    for name in ("model_3d", "verification"):
        assert stages[name]["status"] == "timeout" and "cut" in stages[name]["reason"], stages[name]
        assert stages[name]["timeout_s"] < 10
    for name in ("ensemble", "fit", "calibrate", "bench_model", "decomposed"):
        assert stages[name]["status"] == "skipped" and stages[name]["reason"].startswith("deadline"), stages[name]


def test_bench_model_keeps_a_stopped_worker_s_figures(tmp_path):
    """A worker stopped by --worker-timeout: the JSON holds what it measured (the bandwidths at least)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'kernels'}"}
    command = [sys.executable, "benchmarks/bench_model.py", "--out", str(tmp_path), "--quick", "--sizes", "8x3",
               "--t-end", "0.5", "--lean", "--dt-from-t0", "--no-reference", "--no-baseline",
               "--cell-diffusion", "implicit", "--worker-timeout", "15"]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("bench_model_*.json")
    (run,) = json.loads(path.read_text())["sizes"]["8x8x8"]["runs"].values()
    assert run["status"] == "timeout" and run["timeout_s"] == 15  # its runs compile for longer
    # how far it got depends on the machine's speed; whatever it got to is kept (the bandwidths come first)
    assert run["phase_done"] in ("bandwidth", "probe", "first run", "timed runs", "xla cost")
    assert run["bandwidth"]["triad_bytes_per_s"] > 0
