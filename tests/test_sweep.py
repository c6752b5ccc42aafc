"""``tumorfield sweep`` and ``collect``: batched members equal single runs, failures stay local, bad sweeps refused."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import _sweep_models
import numpy as np
import pytest
from _sweep_models import write_base

from tumorfield._schema import ConfigError
from tumorfield.io import open_trajectory
from tumorfield.sweep import SweepRunner, collect
from tumorfield.sweep._spec import Axis, latin_hypercube

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "voloshin2015" / "ptx_anakinra.toml"
SMALL = [
    "grid.shape=[12,12]", "time.t_end=1.0", "time.dt=0.05", "time.save_every=0.5", 'run.progress="none"',
    "run.chunk_frames=2",
    'dosing.anakinra=[{time = 0.0, dose_mg_per_kg = 50.0, route = "ip", every = 1.0, count = 2}]',
]  # fmt: skip


def _sweep_file(directory: Path, parameters: str, design="grid", extra="", base=BASE, cache=None) -> Path:
    settings = [*SMALL, f'run.compilation_cache="{cache or directory / "cache"}"']
    array = "[" + ", ".join(json.dumps(item) for item in settings) + "]"  # JSON strings are TOML strings
    path = directory / "sweep.toml"
    path.write_text(
        f'[sweep]\nbase = "{base}"\ndesign = "{design}"\nset = {array}\n{extra}\n[sweep.parameters]\n{parameters}\n'
    )
    return path


def _read(path: Path) -> tuple[dict, dict, str]:
    """Per-frame fields and the final (checkpointed) state, the per-step scalars, the status."""
    with open_trajectory(path) as run:
        fields = {n: run.field(n)[:] for n in run.field_names}
        state, _ = run.checkpoint()
        fields.update({f"final {name}": value for name, value in state.items()})
        return fields, {n: run.scalars[n] for n in run.scalars}, run.status


def _close(a: dict, b: dict, rtol=2e-6):
    assert a.keys() == b.keys()
    for name in a:
        scale = float(np.max(np.abs(b[name]))) or 1.0
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=rtol * scale, err_msg=name)


PARAMETERS = '"parameters.k_i" = [0.5, 2.0]\n"dosing.anakinra.0.dose_mg_per_kg" = [1.0, 50.0]'


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sweep")
    runner = SweepRunner(_sweep_file(directory, PARAMETERS), directory / "out", log=lambda m: None)
    assert runner.n_members == 4
    results = runner.run()
    return directory, runner, results


def test_batched_members_equal_one_member_alone_and_a_plain_run(batched, tmp_path):
    directory, runner, results = batched
    assert all(r.status == "complete" for r in results.values())
    sweep_file = directory / "sweep.toml"
    command = [sys.executable, "-m", "tumorfield.cli", "sweep", str(sweep_file), "-o", str(tmp_path / "one"),
               "--member", "2"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "one").glob("member-*.h5")) == ["member-0002.h5"]
    fields, scalars, status = _read(directory / "out" / "member-0002.h5")
    alone = _read(tmp_path / "one" / "member-0002.h5")
    _close(fields, alone[0])
    _close(scalars, alone[1])
    # the same member as a plain `tumorfield run --set …`
    assert runner.sweep.members[2] == {"parameters.k_i": 2.0, "dosing.anakinra.0.dose_mg_per_kg": 1.0}
    plain = [sys.executable, "-m", "tumorfield.cli", "run", str(BASE), "-o", str(tmp_path / "plain.h5"),
             *(f"--set={item}" for item in [*SMALL, "parameters.k_i=2.0",
               'dosing.anakinra=[{time = 0.0, dose_mg_per_kg = 1.0, route = "ip", every = 1.0, count = 2}]',
               f'run.compilation_cache="{directory / "cache"}"'])]  # fmt: skip
    result = subprocess.run(plain, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    single = _read(tmp_path / "plain.h5")
    # a sweep stores scalars and final states (output.fields = "none"); the plain run every frame
    assert {name for name in fields if not name.startswith("final ")} == set()  # no per-frame grid field
    with open_trajectory(directory / "out" / "member-0002.h5") as stored:
        assert set(stored.variable_names) == {"circulating", "burden", "seeded"} and stored.n_committed == 3
    assert "tumor" in single[0]
    _close({k: v for k, v in fields.items() if k.startswith("final ")},
           {k: v for k, v in single[0].items() if k.startswith("final ")})  # fmt: skip
    _close(scalars, single[1])
    # and the members really differ
    other = _read(directory / "out" / "member-0003.h5")
    assert not np.allclose(other[1]["anakinra_mean"], scalars["anakinra_mean"])


def test_manifest_and_collect_table(batched, tmp_path):
    directory, runner, _ = batched
    with open(directory / "out" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["member"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["parameters.k_i"], r["dosing.anakinra.0.dose_mg_per_kg"]) for r in rows] == [
        ("0.5", "1.0"), ("0.5", "50.0"), ("2.0", "1.0"), ("2.0", "50.0")
    ]  # fmt: skip
    assert all(r["status"] == "complete" for r in rows) and len({r["digest"] for r in rows}) == 4
    assert collect(directory / "out", tmp_path / "table.csv") == 4
    with open(tmp_path / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for row in table:
        _, scalars, status = _read(directory / "out" / f"member-{int(row['member']):04d}.h5")
        assert row["status"] == status == "complete"
        assert float(row["metastatic_burden"]) == pytest.approx(float(scalars["metastatic_burden"][-1]), rel=1e-12)
    # a rerun of the same sweep skips every complete member
    again = SweepRunner(directory / "sweep.toml", directory / "out", log=lambda m: None).run()
    assert set(again.values()) == {"complete"}


# --- a member that fails does not stop the others -------------------------------------------


@pytest.fixture
def blow_up_model():
    _sweep_models.register()
    yield
    _sweep_models.unregister()


def _blow_up_sweep(directory: Path, values="[0.1, 500.0, 0.2, 0.3]") -> Path:
    sweep = directory / "sweep.toml"
    base = write_base(directory)
    sweep.write_text(f'[sweep]\nbase = "{base}"\ndesign = "list"\n[sweep.parameters]\n"parameters.r" = {values}\n')
    return sweep


def test_a_failing_member_is_marked_failed_and_the_others_complete(tmp_path, blow_up_model):
    results = SweepRunner(_blow_up_sweep(tmp_path), tmp_path / "out", log=lambda m: None).run()
    assert [results[i].status for i in range(4)] == ["complete", "failed", "complete", "complete"]
    with open_trajectory(tmp_path / "out" / "member-0001.h5") as run:
        assert run.status == "failed" and "not finite" in run.message and 1 <= run.n_committed < 21
        state, step = run.checkpoint()  # the last valid state (a sweep stores no per-frame grid fields)
        assert np.all(np.isfinite(state["u"])) and step == run.n_committed - 1  # one step per frame
    with open_trajectory(tmp_path / "out" / "member-0002.h5") as run:
        assert run.status == "complete" and run.n_committed == 21
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["complete", "failed", "complete", "complete"]


# --- bad sweeps are refused before any compute ------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "design", "extra", "fragment"),
    [
        ('"parameters.nope" = [1.0, 2.0]', "grid", "", "parameters.nope"),
        ('"parameters.k_i" = [2.0, 1.0]', "lhs", "samples = 4", "lower < upper"),
        ('"parameters.k_i" = []', "grid", "", "non-empty list"),
        ('"parameters.k_i" = [1.0, 2.0]\n"parameters.a_iv" = [1.0]', "list", "", "equal lengths"),
        ('"parameters.k_i" = [1.0, 99.0]', "grid", "", "parameters.k_i"),
        ('"dosing.anakinra.5.dose_mg_per_kg" = [1.0]', "grid", "", "not an index"),
        ('"parameters.k_i" = [1.0, 2.0]', "lhs", "", "samples ≥ 1"),
        ("", "grid", "", "at least one swept key path"),
        ('"parameters.k_i" = [1.0, 2.0]', "grid", "at_once = -1", "sweep.at_once = -1: must be ≥ 0"),
        ('"parameters.k_i" = [1.0, 2.0]', "grid", 'at_once = "two"', "sweep.at_once = 'two': must be an integer"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_key(tmp_path, parameters, design, extra, fragment):
    path = _sweep_file(tmp_path, parameters, design=design, extra=extra)
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        SweepRunner(path, tmp_path / "out", log=lambda m: None)
    assert not list((tmp_path / "out").glob("member-*")) if (tmp_path / "out").exists() else True


def test_cli_refuses_a_bad_sweep_with_one_line(tmp_path):
    path = _sweep_file(tmp_path, '"parameters.nope" = [1.0]')
    command = [sys.executable, "-m", "tumorfield.cli", "sweep", str(path), "-o", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "parameters.nope" in result.stderr


def test_latin_hypercube_hits_every_stratum_once_per_axis():
    axes = (Axis("a", lower=0.0, upper=1.0), Axis("b", lower=1.0, upper=100.0, log=True))
    points = np.asarray(latin_hypercube(axes, 16, seed=3))
    assert sorted(np.floor(points[:, 0] * 16).astype(int)) == list(range(16))
    u = (np.log(points[:, 1]) - np.log(1.0)) / (np.log(100.0) - np.log(1.0))
    assert sorted(np.floor(u * 16).astype(int)) == list(range(16))
    assert latin_hypercube(axes, 16, seed=3) == latin_hypercube(axes, 16, seed=3)


# --- devices and processes --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_with_test_model(argv: list[str], env: dict) -> list[str]:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import _sweep_models; "
            f"_sweep_models.register(); from tumorfield.cli import main; sys.exit(main({argv!r}))")  # fmt: skip
    return [sys.executable, "-c", code]


def _process_argv(sweep: Path, out: Path, port: int, k: int) -> list[str]:
    return ["sweep", str(sweep), "-o", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(k)]  # fmt: skip


def test_two_devices_and_two_processes_give_the_same_members(tmp_path, blow_up_model):
    """On a CPU a batch stays on one device unless ``[sweep] devices`` asks for more (host devices share
    the cores; the batch was once padded to fill the memory when split, ~10⁶ members); asked, it is split
    over two (padded to a multiple of 2); two processes split the members. All give the same members."""
    sweep = _blow_up_sweep(tmp_path, values="[0.1, 0.2, 0.3, 0.4, 0.5]")
    SweepRunner(sweep, tmp_path / "one", log=lambda m: None).run()
    reference = {i: _read(tmp_path / "one" / f"member-{i:04d}.h5") for i in range(5)}
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    argv = ["sweep", str(sweep), "-o", str(tmp_path / "host")]
    one_device = subprocess.run(_cli_with_test_model(argv, env), capture_output=True, text=True, env=env, timeout=300)
    assert one_device.returncode == 0, one_device.stderr
    assert "batches of 5 members (member 0's group) on 1 device (cpu:0)" in one_device.stderr
    asked = tmp_path / "asked.toml"
    asked.write_text(sweep.read_text().replace('design = "list"', 'design = "list"\ndevices = 2'))
    argv = ["sweep", str(asked), "-o", str(tmp_path / "devices")]
    two_devices = subprocess.run(_cli_with_test_model(argv, env), capture_output=True, text=True, env=env, timeout=300)
    assert two_devices.returncode == 0, two_devices.stderr
    assert "batches of 6 members (member 0's group) on 2 devices (cpu:0, cpu:1)" in two_devices.stderr
    assert "batch of 5" in two_devices.stderr  # one batch, padded to 6 over the 2 devices
    port = _free_port()
    plain_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    processes = [
        subprocess.Popen(
            _cli_with_test_model(_process_argv(sweep, tmp_path / "processes", port, k), plain_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=plain_env,
        )  # fmt: skip
        for k in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [o[1][-2000:] for o in outputs]
    assert "batch of 3" in outputs[0][1] and "batch of 2" in outputs[1][1]  # members 0, 2, 4 and 1, 3
    for i in range(5):
        for where in ("host", "devices", "processes"):
            fields, scalars, status = _read(tmp_path / where / f"member-{i:04d}.h5")
            assert status == "complete"
            _close(fields, reference[i][0])
            _close(scalars, reference[i][1])
    with open(tmp_path / "processes" / "manifest.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["complete"] * 5


def test_fisher_kpp_members_differing_in_any_parameter_share_a_batch(tmp_path):
    """``fisher_kpp``'s transport coefficients are parameter leaves, so members differing in ``D``,
    ``chi``, ``D_c``, ``k_c`` or the seed share one batch (one compile); ``chi = 0`` against
    ``chi > 0`` changes the fields, and so the batch."""
    from tumorfield import config as cfg
    from tumorfield.sweep._batch import batch_key, batch_problem

    def _group_key(config):
        return batch_key(config, batch_problem(config))

    base = '[model]\nname = "fisher_kpp"\n[grid]\nshape = [8, 8]\nlength = [1.0, 1.0]\n[time]\nt_end = 1.0\n'
    base += "dt = 0.01\nsave_every = 0.5\n[parameters]\nchi = 0.05\n"
    path = tmp_path / "fisher.toml"
    path.write_text(base)
    keys = [
        _group_key(cfg.load(path, sets))
        for sets in ([], ["parameters.D=4e-3", "parameters.k_c=2.0"], ["parameters.chi=0.2", "initial.radius=0.1"])
    ]
    assert keys[0] == keys[1] == keys[2]
    assert _group_key(cfg.load(path, ["parameters.chi=0.0"])) != keys[0]
