"""The performance budget's tools (``benchmarks/_cost.py``, ``benchmarks/bench_budget.py``) on tiny programs.

The budget itself (three model steps compiled, ≈ 1 min) runs in ``make budget``, outside this suite.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax import lax

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    """A module of ``benchmarks/`` by file, registered under its name (``bench_budget`` imports ``_cost``)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


cost = _load("_cost")
bench_budget = _load("bench_budget")
N = 4096


def spectral_filter(x):
    return jnp.fft.irfft(jnp.fft.rfft(x) * 0.5, n=x.shape[0])  # two FFTs, a fusion between them


def with_rare_branch(p, x):
    y = spectral_filter(x)
    return lax.cond(p, lambda v: jnp.fft.irfft(jnp.fft.rfft(v) * 3.0, n=v.shape[0]) + v * v, lambda v: v, y)


@pytest.fixture(scope="module")
def analysed():
    x = jnp.linspace(0.0, 1.0, N, dtype=jnp.float32)
    plain = jax.jit(spectral_filter).lower(x).compile()
    branched = jax.jit(with_rare_branch).lower(True, x).compile()
    return cost.analyse(plain, cells=N, top=5), cost.analyse(branched, cells=N, top=5)


def test_counts_ffts_fusions_and_bytes_of_a_known_program(analysed):
    plain, _ = analysed
    assert plain["ffts"] == 2
    assert plain["common_path"]["ffts"] == 2
    assert plain["fusions"] >= 1  # the product between the transforms
    assert plain["kernels"] >= plain["fusions"] + plain["ffts"]
    # the per-instruction estimate, summed in XLA's convention, is XLA's own figure
    assert plain["estimate_vs_xla"] == pytest.approx(1.0, abs=0.01)
    # rfft reads N floats and writes N/2 + 1 complex ones; irfft the reverse: at least 2 × 2 × 4 N bytes
    assert plain["bytes_per_cell"] >= 16


def test_counts_ffts_in_every_branch_and_the_common_path_takes_the_cheap_one(analysed):
    _, branched = analysed
    assert branched["ffts"] == 4  # both transforms of the rare branch are in the program
    assert branched["common_path"]["ffts"] == 2  # the cheap branch (identity) runs none
    assert branched["common_path"]["bytes"] < branched["estimated_bytes"]
    assert branched["estimate_vs_xla"] == pytest.approx(1.0, abs=0.01)


def test_top_consumers_name_the_source_lines_of_this_file(analysed):
    plain, _ = analysed
    top = plain["top"]
    assert top and top[0]["bytes"] >= top[-1]["bytes"]
    assert any(line.startswith("tests/test_budget.py:") for entry in top for line in entry["stack"])
    assert any("spectral_filter" in row["function"] for row in plain["by_function"])


def test_parse_reads_types_tuples_and_roots():
    text = """HloModule m

%fused (p0: f32[8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  ROOT %n = f32[8]{0} negate(%p0)
}

ENTRY %main (x: f32[8], y: c64[2,3]) -> (f32[8], c64[2,3]) {
  %x = f32[8]{0} parameter(0)
  %y = c64[2,3]{1,0} parameter(1)
  %f = f32[8]{0} fusion(%x), kind=kLoop, calls=%fused
  ROOT %t = (f32[8]{0}, /*index=1*/c64[2,3]{1,0}) tuple(%f, %y)
}
"""
    module = cost.parse_hlo(text)
    entry = module.computations[module.entry]
    assert [i.opcode for i in entry.instructions] == ["parameter", "parameter", "fusion", "tuple"]
    assert entry.root.name == "t" and entry.root.bytes_out == 32 + 48
    tally = cost.walk(module)
    assert (tally.kernels, tally.fusions, tally.bytes) == (1, 1, 64)


def _result(bytes_per_cell_step=1000.0, fusions=100, ffts=24):
    step = {"bytes_per_cell_step": bytes_per_cell_step, "common_bytes_per_cell_step": bytes_per_cell_step / 2,
            "fusions": fusions, "ffts": ffts}  # fmt: skip
    return {"platform": "cpu", "jax_version": "0.0", "git": "x", "time": "t", "cases": {"model_8x8": {"step": step}}}


def test_check_fails_over_budget_and_warns_far_below(tmp_path, capsys):
    budget = bench_budget.make_budget(_result())
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(budget))
    assert budget["cases"]["model_8x8"]["step.fusions"] == {"recorded": 100, "limit": 105}
    assert bench_budget.verdict(_result(), path) == 0
    assert bench_budget.verdict(_result(bytes_per_cell_step=1040.0, fusions=105), path) == 0  # within the margin

    assert bench_budget.verdict(_result(bytes_per_cell_step=1060.0), path) == 1
    out = capsys.readouterr().out
    assert "OVER: model_8x8: step.bytes_per_cell_step = 1060 is over its budget 1050" in out

    assert bench_budget.verdict(_result(ffts=25), path) == 1  # FFTs: no margin
    assert "step.ffts = 25 is over its budget 24" in capsys.readouterr().out

    assert bench_budget.verdict(_result(bytes_per_cell_step=700.0), path) == 0
    assert "step.bytes_per_cell_step = 700 is 30.0 % below the recorded 1000: tighten" in capsys.readouterr().out


def test_check_refuses_another_platform_and_skips_what_was_not_measured():
    budget = bench_budget.make_budget(_result())
    failures, _ = bench_budget.check(bench_budget.figures(_result()), budget, "gpu")
    assert failures and "platform 'cpu'" in failures[0]
    partial = copy.deepcopy(budget)
    partial["cases"]["other_4x4"] = {"vjp.ffts": {"recorded": 1, "limit": 1}}
    failures, warnings = bench_budget.check(bench_budget.figures(_result()), partial, "cpu", "0.0")
    assert not failures and warnings == ["other_4x4: not measured: vjp.ffts (--cases, --vjp)"]
