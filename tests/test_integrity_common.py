"""What the ``test_integrity_*`` files share: a small Fisher–KPP config, the CLI in this process,
file checksums and a small disk. (No tests here.)"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
from pathlib import Path

import pytest

from tumorfield import cli

CONFIG = """
[model]
name = "fisher_kpp"
[grid]
shape = [{n}, {n}]
length = [1.0, 1.0]
[time]
t_end = {t_end}
dt = 0.01
save_every = {save_every}
[parameters]
D = 1e-3
r = {r}
chi = 0.01
[output]
compression = "{compression}"
[run]
chunk_frames = {chunk}
progress = "none"
compilation_cache = "{cache}"
"""


def write_config(path: Path, cache: str | Path = "off", *, n=16, t_end=0.2, save_every=0.05, r=1.0, chunk=2,
                 compression="lzf") -> Path:  # fmt: skip
    """``path`` written with :data:`CONFIG` (16² u and c, 5 frames by default); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG.format(n=n, t_end=t_end, save_every=save_every, r=r, chunk=chunk,
                                  compression=compression, cache=cache))  # fmt: skip
    return path


FIT = """[fit]
arms = { a = "arm.toml" }
data = "data.csv"
[fit.parameters]
r = { init = 0.6, lower = 0.1, upper = 5.0 }
"""
DATA = "arm,t,observable,value,sigma\na,0.1,max_u,0.6,0.05\n"


def write_fit_files(directory: Path) -> Path:
    """A fit file ``directory/fit.toml`` of one arm (:data:`CONFIG`, 16², t_end 0.2 day) and data of one
    row; returns the fit file."""
    write_config(directory / "arm.toml")
    (directory / "data.csv").write_text(DATA)
    (directory / "fit.toml").write_text(FIT)
    return directory / "fit.toml"


def tumorfield(*args) -> tuple[int, list[str], str]:
    """``tumorfield ARGS`` in this process: exit code, stderr lines and stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in args])
    return code, err.getvalue().splitlines(), out.getvalue()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small_disk(tmp_path: Path):
    """A 3 MiB tmpfs under ``tmp_path`` (CI runs as root), for a fixture to yield from; skips the
    test where mounting is impossible."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
