"""One grid over several devices (``simulate(..., mesh=)``, ``[run] devices``) equals one device.

Everything is measured once, in one subprocess with 8 forced host devices
(``tests/_decomposition_checks.py``: one JAX start and its compiles shared by all the tests here);
the tests read its JSON. Problems (float32, 100 steps, 2, 4 and 8 devices against one):

- ``keller_segel_3d``: 16×8×8, chemotaxis up a spectral (DCT, ETDRK2) attractant and a quasi-steady
  one, explicit cell diffusion; the end state and the gradient of ``Σ u²`` with respect to the
  parameters and the initial cells (reverse mode through the halo exchanges and the transposes);
- ``keller_segel_2d_implicit_dirichlet``: 16×16, the same with implicit (MPRK22, LOD) cell diffusion
  and fixed wall values on both attractants (DST-II), state and gradient;
- ``voloshin2015_3d``: the model of the ``ptx`` arm on 16×8×8 (state-dependent tumour motility,
  three quasi-steady fields, three spectral drugs and cytokines, macrophage taxis, ODE scalars from
  grid integrals);
- ``run_files``: a ``fisher_kpp`` run with ``[run] devices = 2`` stores what a one-device run stores.

The audit reads the HLO of the compiled 8-device rollout: the collectives of one step (the loop's
body) are those ``docs/numerics.md`` §11 counts, no all-gather moves a whole field, and the memory
per device is at most 1/8 of one device's plus the halo and transpose buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5
"""float32: measured agreement is 1e-7 to 1e-6 (the order of sums and of the separable DCT differ)."""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("decomposition") / "report.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'kernels'}"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_decomposition_checks.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


EXPECTED = {
    "keller_segel_3d": ("2", "4", "8"),
    "keller_segel_2d_implicit_dirichlet": ("2", "8"),
    "voloshin2015_3d": ("2", "4", "8"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.slow
def test_decomposed_runs_equal_one_device(report, name):
    devices = report[name]["devices"]
    assert tuple(sorted(devices)) == EXPECTED[name]
    for n, entry in devices.items():
        assert entry["state"] <= TOLERANCE, (name, n, entry)


@pytest.mark.slow
def test_a_gradient_through_the_decomposed_rollout_equals_one_device(report):
    entry = report["keller_segel_3d"]["devices"]["8"]  # d Σu²/d (r, χ, u₀): reverse mode through it all
    assert entry["gradient"] <= TOLERANCE and entry["state_of_gradient_program"] <= TOLERANCE, entry


@pytest.mark.slow
def test_the_positivity_bound_is_differentiated_as_on_one_device(report):
    assert report["bound_gradient"] <= TOLERANCE  # the all-gather of the slabs' maxima (no pmax: no derivative)


@pytest.mark.slow
def test_a_decomposed_run_file_equals_a_one_device_run_file(report):
    files = report["run_files"]  # fisher_kpp with taxis, default numerics (Subcycle: the bound's exchange)
    assert files["status"] == ["complete", "complete"]
    assert files["fields"] <= TOLERANCE and files["scalars"] <= TOLERANCE, files


# The collectives of one step on 8 devices, as docs/numerics.md §11 counts them (NoSubcycling, so no
# rate bound in the step): a halo exchange is 2 collective-permutes, one per stage for all fields; a
# spectral transform of a group of fields is one all-to-all; a quasi-steady solve of a group is 2.
#  - keller_segel_3d: per stage the quasi-steady w (2) and c's rate forward and field back (2);
#  - voloshin2015_3d: per stage {mde, chemo, vegf} (2) and {il1b, paclitaxel, anakinra} (2), and the
#    integral of the shed cells (the ODE of the circulating cells): one all-reduce of one number.
DESIGN = {
    "keller_segel_3d": {"all-to-all": 8, "collective-permute": 4, "all-gather": 0, "all-reduce": 0},
    "voloshin2015_3d": {"all-to-all": 8, "collective-permute": 4, "all-gather": 0, "all-reduce": 1},
}


@pytest.mark.parametrize("name", sorted(DESIGN))
@pytest.mark.slow
def test_the_compiled_step_holds_the_designed_collectives(report, name):
    audit = report[name]["devices"]["8"]["audit"]
    (step,) = audit["per_step"]  # the step loop's body
    assert {k: step[k] for k in DESIGN[name]} == DESIGN[name], step
    assert audit["largest_all_gather"] < audit["field_cells"]  # never a whole field on one device
    gradient = report[name]["devices"]["8"].get("audit_gradient")
    for loop in gradient["per_step"] if gradient else ():  # forward and backward: the same exchanges
        assert loop["all-to-all"] == DESIGN[name]["all-to-all"] and loop["all-gather"] == 0, loop
        assert loop["collective-permute"] == DESIGN[name]["collective-permute"], loop


@pytest.mark.parametrize("name", sorted(DESIGN))
@pytest.mark.slow
def test_memory_per_device_is_an_eighth_plus_halo_and_transpose_buffers(report, name):
    audit = report[name]["devices"]["8"]["audit"]
    one, mesh = audit["memory_one"], audit["memory_mesh"]
    for part in ("argument", "output"):  # the state: its slabs, plus the replicated ODE scalars and loss
        assert mesh[part] <= one[part] / 8 + 1024, (part, one, mesh)  # and 64-byte alignment per buffer
    # temporaries: the slab's share plus the buffers of the collectives, each at most a send and a
    # receive buffer of its operand (ghost layers, transposed blocks): 2 × the bytes the step's
    # collectives hold
    (buffers,) = audit["bytes_per_step"]
    assert mesh["temp"] <= one["temp"] / 8 + 2 * sum(buffers.values()), (one, mesh, buffers)


def test_a_device_count_that_does_not_split_the_grid_is_refused_naming_what_works():
    import tumorfield_kernels as tk

    with pytest.raises(ValueError, match=r"device counts that work for this grid: 2, 4, 8"):
        tk.check_split((16, 8, 8), 3)
    with pytest.raises(ValueError, match="1D grid"):
        tk.check_split((64,), 2)
    tk.check_split((16, 8, 8), 8)


def test_run_devices_is_checked_with_the_config(tmp_path):
    from tumorfield.config import ConfigError, loads

    text = (
        '[model]\nname = "fisher_kpp"\n[grid]\nshape = [16, 16]\nlength = [1.0, 1.0]\n'
        "[time]\nt_end = 0.1\ndt = 0.01\nsave_every = 0.05\n[run]\ndevices = {}\n"
    )
    assert loads(text.format(4)).run.devices == 4 and loads(text.format('"all"')).run.devices == "all"
    with pytest.raises(ConfigError, match=r"run.devices = 3: grid \(16, 16\) cannot be split into 3 slabs"):
        loads(text.format(3))
    with pytest.raises(ConfigError, match="run.devices"):
        loads(text.format(0))
