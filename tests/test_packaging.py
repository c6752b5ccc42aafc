"""The wheel a user installs (issue 26): it ships the scenarios of experiments/, builds without a
setuptools deprecation warning, and its ``tumorfield`` runs a scenario by name outside the clone.

Cheap on purpose: the source is copied to a temporary folder (no build/ in the clone), the wheel is
built once without build isolation and installed with ``--no-deps`` into a fresh venv that sees the
running environment's packages through a ``.pth`` line (its editable ``tumorfield`` finder is not
run there: that line is no site directory). The full install from PyPI, and a voloshin2015 run, is
``.ci/run``'s smoke test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tumorfield import scenarios

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("src", "kernels", "experiments", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.h5")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    return {**env, "JAX_PLATFORMS": "cpu", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _build_wheel(tmp: Path) -> tuple[Path, str]:
    source = tmp / "source"
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, source / name, **(
            {"ignore": _IGNORE} if (ROOT / name).is_dir() else {}))  # fmt: skip
    command = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp)]
    result = subprocess.run([*command, str(source)], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = tmp.glob("tumorfield-*.whl")
    return wheel, result.stdout + result.stderr


def _venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # the running environment's packages (jax, h5py, …) after the venv's own
    (Path(purelib) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    result = subprocess.run([*install, str(wheel)], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    return venv


def test_wheel_ships_the_scenarios_and_runs_one_by_name_outside_the_clone(tmp_path):
    wheel, log = _build_wheel(tmp_path)
    assert "deprecat" not in log.lower(), [line for line in log.splitlines() if "eprecat" in line]
    prefix = "tumorfield/scenarios/data/"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = sorted(n.removeprefix(prefix) for n in names if n.startswith(prefix))
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert shipped == scenarios.selected(ROOT / "experiments")  # one definition: experiments/
    assert "voloshin2015/fit/fit.toml" in shipped and "voloshin2015/ptx.toml" in shipped
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # the MIT text travels with the wheel

    venv = _venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def tumorfield(*argv):
        return subprocess.run([venv / "bin" / "tumorfield", *argv], capture_output=True, text=True, cwd=elsewhere,
                              env=_env(), timeout=300)  # fmt: skip

    listed = tumorfield("scenarios")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [f.removesuffix(".toml") for f in shipped]
    run = tumorfield("run", "examples/fisher_kpp", "--set", "grid.shape=[16,16]", "--set", "time.t_end=2",
                     "--set", 'run.progress="none"', "--set", 'run.compilation_cache="off"', "-o", "x.h5")  # fmt: skip
    assert run.returncode == 0, run.stderr
    packaged = str(venv / "lib")
    assert f"scenario examples/fisher_kpp: {packaged}" in run.stderr, run.stderr  # the wheel's file, not the clone's
    assert (elsewhere / "x.h5").is_file()
    copy = tumorfield("scenario", "voloshin2015/fit/fit", "-o", "fit.toml")
    assert copy.returncode == 0, copy.stderr
    assert packaged in (elsewhere / "fit.toml").read_text()  # the arms: the installed package's files
