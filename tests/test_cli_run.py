"""The ``tumorfield`` CLI as a subprocess: run, refusal to overwrite, failures, signals, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tumorfield.io._writer import FileBusy, TrajectoryFile

CONFIG = """
[model]
name = "fisher_kpp"
[grid]
shape = [16, 16]
length = [1.0, 1.0]
[time]
t_end = {t_end}
dt = 0.01
save_every = {save_every}
[parameters]
D = 1e-3
r = {r}
chi = 0.01
[run]
chunk_frames = {chunk}
progress = "lines"
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


def write_config(directory: Path, name="run.toml", t_end=0.2, save_every=0.05, r=1.0, chunk=2) -> Path:
    path = directory / name
    path.write_text(CONFIG.format(t_end=t_end, save_every=save_every, r=r, chunk=chunk))
    return path


def cli(*args, cache: str, timeout=300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tumorfield.cli", *map(str, args)]
    if args[0] == "run":
        command += ["--set", f'run.compilation_cache="{cache}"']
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=timeout
    )


def read(path) -> dict:
    with h5py.File(path, "r") as h5:
        n = int(h5.attrs["n_committed"])
        s = int(h5.attrs["n_scalars_committed"])
        out = {name: h5[name][:n] for name in ("t", "u", "c")}
        out.update({f"scalars/{k}": v[:s] for k, v in h5["scalars"].items()})
        out["status"] = h5.attrs["status"].decode()
        out["n"] = n
    return out


def test_run_inspect_plot(tmp_path, cache):
    config = write_config(tmp_path)
    out = tmp_path / "out.h5"
    result = cli("run", config, "-o", out, cache=cache)
    assert result.returncode == 0, result.stderr
    assert "compilation" in result.stderr and "t = 0.2/0.2 day (100 %)" in result.stderr
    data = read(out)
    assert data["status"] == "complete" and data["n"] == 5
    np.testing.assert_allclose(data["t"], [0.0, 0.05, 0.1, 0.15, 0.2], rtol=0, atol=1e-12)
    assert data["scalars/t"].shape == (21,)  # every step, t = 0 included
    assert np.all(np.isfinite(data["u"])) and data["u"][-1].max() > data["u"][0].max()  # it grows
    assert (tmp_path / "out.xdmf").exists()
    assert not list(tmp_path.glob(".out.h5.*"))  # no temporary left behind

    result = cli("inspect", out, cache=cache)
    assert result.returncode == 0, result.stderr
    assert "status:      complete" in result.stdout and "5 committed" in result.stdout
    assert "tumour_burden" in result.stdout and 'name = "fisher_kpp"' in result.stdout

    figures = tmp_path / "figures"
    result = cli("plot", out, "-o", figures, cache=cache)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in figures.iterdir())
    assert names == ["c.png", "scalars.png", "u.png"]
    for p in figures.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_existing_output_is_refused(tmp_path, cache):
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    result = cli("run", write_config(tmp_path), "-o", out, cache=cache)
    assert result.returncode == 2
    assert "exists" in result.stderr and "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"precious"


def test_overwrite_keeps_old_file_when_the_new_run_fails(tmp_path, cache):
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    bad = cli("run", write_config(tmp_path), "-o", out, "--overwrite", "--set", "parameters.D=-1", cache=cache)
    assert bad.returncode == 2 and "parameters.D = -1" in bad.stderr
    assert out.read_bytes() == b"precious"
    blowup = write_config(tmp_path, "blowup.toml", t_end=2.0, save_every=0.1, r=1000.0, chunk=4)
    failed = cli("run", blowup, "-o", out, "--overwrite", "--set", "time.dt=0.1", cache=cache)
    assert failed.returncode == 3, failed.stderr
    assert out.read_bytes() == b"precious"  # untouched by a numerical failure
    kept = tmp_path / "out.failed.h5"
    assert str(kept) in failed.stderr and read(kept)["status"] == "failed"
    ok = cli("run", write_config(tmp_path), "-o", out, "--overwrite", cache=cache)
    assert ok.returncode == 0, ok.stderr
    assert read(out)["status"] == "complete"


def test_nan_exits_3_naming_field_time_and_place_and_keeps_earlier_frames(tmp_path, cache):
    out = tmp_path / "out.h5"
    config = write_config(tmp_path, t_end=2.0, save_every=0.1, r=1000.0, chunk=4)
    result = cli("run", config, "-o", out, "--set", "time.dt=0.1", "--set", "parameters.chi=0.0", cache=cache)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if "numerical failure" in line]
    assert len(message) == 1
    assert "field 'u'" in message[0] and "t = " in message[0] and "at cell (" in message[0] and "mm" in message[0]
    with h5py.File(out, "r") as h5:
        n = int(h5.attrs["n_committed"])
        u = h5["u"][:n]
        assert h5.attrs["status"] == b"failed" and "c" not in h5  # chi = 0: no chemoattractant
        assert n >= 2 and np.all(np.isfinite(u))
        data = {"n": n}
        assert "not finite" in h5.attrs["message"]
        # the first non-finite frame is the one after the committed ones
        assert f"t = {0.1 * data['n']:.6g} day" in message[0]


def test_positivity_violation_in_the_solver_exits_3(tmp_path, cache):
    out = tmp_path / "out.h5"
    config = write_config(tmp_path, t_end=2.0, save_every=0.1, r=1000.0, chunk=4)
    result = cli("run", config, "-o", out, "--set", "time.dt=0.1", "--set", "numerics.max_substeps=1", cache=cache)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "numerical failure" in line]
    assert "dt = 0.1 day exceeds the positivity limit" in line and "'u'" in line and "at t = " in line
    data = read(out)
    assert data["status"] == "failed" and data["n"] >= 2 and np.all(np.isfinite(data["u"]))
    # the last frame kept is the one from which the next step would break positivity
    assert f"at t = {data['t'][-1]:.6g} day" in line


def test_dt_beyond_the_stability_limit_at_start_is_bad_input(tmp_path, cache):
    """With explicit cell diffusion (``cell_diffusion = "auto"`` would take the implicit one here: its log
    says so, and the run goes through)."""
    out = tmp_path / "out.h5"
    result = cli("run", write_config(tmp_path), "-o", out, "--set", "parameters.D=1.0", "--set",
                 "numerics.max_substeps=1", "--set", "numerics.cell_diffusion=explicit", cache=cache)  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert "run.toml: time.dt = 0.01: " in line and "positivity limit" in line and "at t = 0" in line
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_subcycling_forced_by_cell_diffusion_logs_the_implicit_hint(tmp_path, cache):
    """D = 1 mm²/day on 16² cells of 1/16 mm: the explicit limit is ≈ 0.001 day, dt = 0.01 runs by
    sub-cycling with explicit cell diffusion, and the log says that implicit cell diffusion would take
    that dt (taxis and growth allow far more); the default ``"auto"`` takes it, and says why."""
    out = tmp_path / "out.h5"
    result = cli("run", write_config(tmp_path, t_end=0.1, save_every=0.05), "-o", out, "--set",
                 "parameters.D=1.0", "--set", "numerics.cell_diffusion=explicit", cache=cache)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (sub,) = [line for line in result.stderr.splitlines() if "sub-cycling:" in line][:1]
    assert "explicit sub-steps (numerics.max_substeps = 64)" in sub
    (hint,) = [line for line in result.stderr.splitlines() if "hint:" in line]
    assert "binds the step of u (limit 0.000" in hint and 'numerics.cell_diffusion = "implicit"' in hint
    assert int(read(out)["scalars/substeps"].max()) >= 2
    # by default ("auto") the same dt runs with implicit cell diffusion: no sub-cycling, no hint
    implicit = cli("run", write_config(tmp_path, t_end=0.1, save_every=0.05), "-o", tmp_path / "implicit.h5",
                   "--set", "parameters.D=1.0", cache=cache)  # fmt: skip
    assert implicit.returncode == 0, implicit.stderr
    assert "hint:" not in implicit.stderr and "sub-cycling:" not in implicit.stderr
    assert "cell diffusion implicit: at t = 0 the cells' explicit diffusion would limit the step of u" in (
        implicit.stderr
    )
    assert int(read(tmp_path / "implicit.h5")["scalars/substeps"].max()) == 1
    with h5py.File(tmp_path / "implicit.h5") as h5:
        assert h5.attrs["cell_diffusion"].startswith("implicit: ")


def _wait_for_frames(path: Path, proc: subprocess.Popen, n: int, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                with h5py.File(path, "r", locking=False) as h5:
                    if int(h5.attrs["n_committed"]) >= n:
                        return
            except (OSError, KeyError):
                pass
        time.sleep(0.02)
    raise TimeoutError(f"{path} never reached {n} frames")


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, cache):
    """A 401-frame run, one frame per chunk, and its uninterrupted result."""
    directory = tmp_path_factory.mktemp("long")
    config = write_config(directory, t_end=4.0, save_every=0.01, chunk=1)
    reference = directory / "reference.h5"
    result = cli("run", config, "-o", reference, cache=cache)
    assert result.returncode == 0, result.stderr
    return config, read(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_resume_is_bit_identical(tmp_path, cache, long_run, sig):
    config, expected = long_run

    out = tmp_path / "out.h5"
    command = [sys.executable, "-m", "tumorfield.cli", "run", str(config), "-o", str(out)]
    command += ["--set", f'run.compilation_cache="{cache}"']
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    _wait_for_frames(out, proc, 3)
    if sig == signal.SIGUSR1:  # a second writer (say, a `resume`) is refused while the run goes on
        with pytest.raises(FileBusy, match="being written by another tumorfield process"):
            TrajectoryFile.open_for_resume(str(out))
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr
    assert "tumorfield resume" in stderr
    partial = read(out)
    assert partial["status"] == "interrupted" and 3 <= partial["n"] < 401
    for key in ("t", "u", "c"):  # what was committed before the signal is already the final answer
        np.testing.assert_array_equal(partial[key], expected[key][: partial["n"]])

    result = cli("resume", out, cache=cache)
    assert result.returncode == 0, result.stderr
    resumed = read(out)
    assert resumed["status"] == "complete"
    assert resumed.keys() == expected.keys()
    for key in expected:
        if key != "status":
            np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)  # bit for bit


def test_kill_9_during_overwrite_keeps_old_file_and_resume_replaces_it(tmp_path, cache, long_run):
    config, expected = long_run
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    command = [sys.executable, "-m", "tumorfield.cli", "run", str(config), "-o", str(out), "--overwrite"]
    command += ["--set", f'run.compilation_cache="{cache}"']
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.h5.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    (partial,) = tmp_path.glob(".out.h5.*.partial")
    _wait_for_frames(partial, proc, 3)
    proc.kill()
    proc.communicate()
    assert out.read_bytes() == b"precious"  # the old output is untouched by the killed run
    result = cli("resume", partial, cache=cache)
    assert result.returncode == 0, result.stderr
    assert not partial.exists()
    resumed = read(out)  # the resumed run took the old file's place
    assert resumed["status"] == "complete"
    for key in expected:
        if key != "status":
            np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)


def test_second_run_loads_every_program_from_the_persistent_cache(tmp_path):
    """With the in-run stability checks on, the compiled rollout has no host callback, so a second
    process finds every program in the persistent cache: nothing is compiled again."""
    cache = str(tmp_path / "cache")
    config = write_config(tmp_path, t_end=0.2, save_every=0.05, chunk=3)  # chunks of 3 and 2 frames: two programs
    logs = []
    for name in ("a.h5", "b.h5"):
        result = cli("run", config, "-o", tmp_path / name, cache=cache)
        assert result.returncode == 0, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "persistent cache:" in line and "in all" in line]
        logs.append(line)
    assert "0 hits" in logs[0] and " 0 misses" not in logs[0]
    assert logs[1].endswith(" 0 misses") and " 0 hits" not in logs[1], logs
    np.testing.assert_array_equal(read(tmp_path / "a.h5")["u"], read(tmp_path / "b.h5")["u"])
