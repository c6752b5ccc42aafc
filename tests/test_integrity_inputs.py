"""Every size-like or hostile input is refused before compute: exit 2, one line naming the key,
the value and the allowed range, no traceback, nothing written."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import pytest
from test_integrity_common import DATA, small_disk, tumorfield, write_config, write_fit_files

from tumorfield.config import _memory

VOLOSHIN = Path(__file__).parent.parent / "experiments" / "voloshin2015" / "ptx.toml"


def refused(code: int, err: list[str], out: str, *fragments: str) -> str:
    """Assert a one-line exit-2 refusal containing ``fragments``; returns the line."""
    assert code == 2 and out == "", err
    assert len(err) == 1 and "Traceback" not in err[0] and err[0].startswith("tumorfield: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


@pytest.fixture
def fisher(tmp_path) -> Path:
    return write_config(tmp_path / "fisher.toml")


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("time.dt=1e-12", ("time.dt = 1e-12", "2e+11 steps", "1 to 1,000,000,000")),
        ("time.t_end=1e300", ("time.t_end", "≤ 1e+06 day")),
        ("time.t_end=100000", ("time.save_every = 0.05", "plans 2,000,001 frames", "1 to 1,000,000")),
        ("grid.length=[1e200, 1e200]", ("grid.length", "[1e-06, 1e+06] mm")),
        ("grid.length=[1e-300, 1e-300]", ("grid.length", "[1e-06, 1e+06] mm")),
        ("grid.shape=[100000, 100000]", ("grid.shape", "10,000,000,000 cells", "65,536 cells per axis")),
        ("grid.shape=[40000, 40000]", ("grid.shape", "1,073,741,824 in all")),
    ],
)
def test_size_limits_of_the_generic_sections(tmp_path, fisher, override, fragments):
    out = tmp_path / "out.h5"
    refused(*tumorfield("run", fisher, "-o", out, "--set", override), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fisher.toml"]


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("dosing.paclitaxel=[{time=1.0, dose_mg_per_kg=20, count=100000000}]", ("count = 100000000", "1 to 10,000")),
        ("dosing.paclitaxel=[{time=inf, dose_mg_per_kg=20}]", ("time = inf", "≤ 1000000.0")),
        ("dosing.paclitaxel=[{time=1.0, dose_mg_per_kg=inf}]", ("dose_mg_per_kg = inf", "≤ 10000.0")),
        ("dosing.anakinra=[{time=1.0, dose_mg_per_kg=20, every=0}]", ("every = 0", "> 0")),
        ("dosing.anakinra=[" + ", ".join(["{time=1.0, dose_mg_per_kg=20, count=4000}"] * 3) + "]",
         ("12,000 administrations of anakinra", "at most 10,000")),
        ("vessels.intratumoral_count=1000000000", ("vessels.intratumoral_count = 1000000000", "≤ 1000")),
    ],
)  # fmt: skip
def test_size_limits_of_the_voloshin2015_sections(tmp_path, override, fragments):
    refused(*tumorfield("run", VOLOSHIN, "-o", tmp_path / "out.h5", "--set", override), *fragments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, fragments",
    [
        (b"\xff\xfe[model]\nname = 1\n", ("is not UTF-8 text (byte 0xff at offset 0)",)),
        (b"[model]\x00\nname = 'fisher_kpp'\n", ("contains NUL bytes",)),
        (b"a = " + b"[" * 50000 + b"]" * 50000 + b"\n", ("nested too deeply",)),
        (b"# " + b"x" * (2**20 + 10) + b"\n", ("larger than 1024 KiB",)),
        (os.urandom(4096), ("not UTF-8", )),
    ],
)  # fmt: skip
def test_binary_huge_or_deep_configs_are_refused(tmp_path, content, fragments):
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    refused(*tumorfield("run", config, "-o", tmp_path / "out.h5"), *fragments)
    assert not (tmp_path / "out.h5").exists()


def test_a_device_as_config_is_refused_unread(tmp_path):
    refused(*tumorfield("run", "/dev/zero", "-o", tmp_path / "out.h5"), "is a character device", "regular file")


def test_an_over_long_output_name_is_refused(tmp_path, fisher):
    name = "x" * 240 + ".h5"
    refused(*tumorfield("run", fisher, "-o", tmp_path / name), "the output name is 243 bytes long", "at most 233")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fisher.toml"]


@pytest.mark.parametrize("kind", ["char-device", "directory", "link-to-directory", "directory-as-failed-copy"])
def test_outputs_that_are_not_regular_files_are_refused_before_compute(tmp_path, fisher, kind):
    target = tmp_path / "out.h5"
    if kind == "char-device":
        target = Path("/dev/null")
    elif kind == "directory":
        target.mkdir()
    elif kind == "link-to-directory":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    else:
        (tmp_path / "out.failed.h5").mkdir()
    why = "is a directory" if kind != "char-device" else "is not a regular file"
    refused(*tumorfield("run", fisher, "-o", target, "--overwrite"), why)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the device node survives, even as root
    assert not list(tmp_path.glob(".out.h5*")) and not list(Path("/dev").glob(".null.*"))


# --- memory against the job's cgroup -----------------------------------------------------------


def _fake_cgroup(tmp_path, monkeypatch, version: int, limit: int, usage: int, inactive: int) -> None:
    """A cgroup tree under ``tmp_path`` with this process in ``/job`` (v2) or ``memory:/job`` (v1)."""
    root = tmp_path / "cgroup"
    job = (root if version == 2 else root / "memory") / "job"
    job.mkdir(parents=True)
    names = ("memory.max", "memory.current", "inactive_file") if version == 2 else \
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")  # fmt: skip
    (job / names[0]).write_text(f"{limit}\n")
    (job / names[1]).write_text(f"{usage}\n")
    (job / "memory.stat").write_text(f"anon 1\n{names[2]} {inactive}\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/job\n" if version == 2 else "4:memory:/job\n1:cpu:/\n")
    monkeypatch.setattr(_memory, "_CGROUP", root)
    monkeypatch.setattr(_memory, "_PROC_CGROUP", proc)


@pytest.mark.parametrize("version", [1, 2])
def test_memory_is_checked_against_the_cgroup_limit(tmp_path, monkeypatch, fisher, version):
    gib = 2**30
    _fake_cgroup(tmp_path, monkeypatch, version, limit=2 * gib, usage=int(1.9 * gib), inactive=0)
    assert _memory.cgroup_available() == 2 * gib - int(1.9 * gib)
    assert _memory.available_memory() <= 0.11 * gib  # smaller than the host's MemAvailable
    line = refused(*tumorfield("run", fisher, "-o", tmp_path / "out.h5"), "grid.shape", "0.4 GiB for the process")
    assert "may use 0.10 GiB" in line and "cgroup" in line


def test_reclaimable_page_cache_counts_as_available(tmp_path, monkeypatch, fisher):
    gib = 2**30
    _fake_cgroup(tmp_path, monkeypatch, 2, limit=2 * gib, usage=int(1.9 * gib), inactive=gib)
    assert _memory.cgroup_available() == pytest.approx(1.1 * gib, rel=1e-6)


def test_the_per_process_floor_is_part_of_the_estimate(tmp_path, monkeypatch, fisher):
    """16² × 2 fields needs a few KiB of arrays, but no process runs in 0.3 GiB."""
    _fake_cgroup(tmp_path, monkeypatch, 2, limit=2**30, usage=int(0.7 * 2**30), inactive=0)
    refused(*tumorfield("run", fisher, "-o", tmp_path / "out.h5"), "needs about 0.39 GiB")


# --- output size against free disk -------------------------------------------------------------


@pytest.fixture
def disk(tmp_path):
    """A 3 MiB file system (:func:`test_integrity_common.small_disk`)."""
    yield from small_disk(tmp_path)


def test_an_uncompressed_output_larger_than_the_free_disk_is_refused_before_compute(disk, fisher):
    result = tumorfield("run", fisher, "-o", disk / "out.h5", "--set", "grid.shape=[256, 256]",
                        "--set", "time.save_every=0.01", "--set", "output.compression=none")  # fmt: skip
    refused(*result, "the output needs about", "MiB free", "output.compression")
    assert list(disk.iterdir()) == []


# --- every user-named text input: regular files of bounded size, UTF-8, bounded nesting --------------


@pytest.fixture
def fit_dir(tmp_path) -> Path:
    """A fit file (one arm, the 16² Fisher–KPP config, t_end 0.2 day) and a data file of one row."""
    write_fit_files(tmp_path)
    return tmp_path


def _hostile(path: Path, kind: str) -> str:
    """Make ``path`` a FIFO, a directory or a link to ``/dev/null`` (a device that cannot exhaust memory
    where a reader reads it, unlike ``/dev/zero``); returns what the refusal says it is.
    A reader blocked on the FIFO is released after 20 s (the test then fails instead of hanging)."""
    if kind == "fifo":
        os.mkfifo(path)
        timer = threading.Timer(20, _release_fifo, [path])
        timer.daemon = True
        timer.start()
        return "is a FIFO"
    if kind == "directory":
        path.mkdir()
        return "is a directory"
    path.symlink_to("/dev/null")
    return "is a character device"


def _release_fifo(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


HOSTILE = ["fifo", "directory", "device"]


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("which", ["fit file", "fit data", "arm config"])
def test_fit_inputs_that_are_not_regular_files_are_refused_unread(fit_dir, which, kind):
    name = {"fit file": "other.toml", "fit data": "data.csv", "arm config": "arm.toml"}[which]
    path = fit_dir / name
    path.unlink(missing_ok=True)
    what = _hostile(path, kind)
    fit = fit_dir / "other.toml" if which == "fit file" else fit_dir / "fit.toml"
    line = refused(*tumorfield("fit", fit, "-o", fit_dir / "FIT.h5"), str(path), what, "must be a regular file")
    assert ("fit.data = " in line) == (which == "fit data")
    assert not (fit_dir / "FIT.h5").exists()


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("which", ["sweep file", "sweep base"])
def test_sweep_inputs_that_are_not_regular_files_are_refused_unread(tmp_path, which, kind):
    """``base = "/dev/zero"`` grew to 23 GB; a FIFO blocked forever (and swallowed SIGTERM)."""
    write_config(tmp_path / "base.toml")
    sweep = tmp_path / "sweep.toml"
    base = tmp_path / "hostile.toml" if which == "sweep base" else tmp_path / "base.toml"
    text = f'[sweep]\nbase = "{base}"\n[sweep.parameters]\n"parameters.r" = [0.5, 1.0]\n'
    if which == "sweep base":
        sweep.write_text(text)
        what = _hostile(base, kind)
    else:
        what = _hostile(sweep, kind)
    line = refused(*tumorfield("sweep", sweep, "-o", tmp_path / "out"), what, "must be a regular file")
    assert ("sweep.base = " in line) == (which == "sweep base")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, fragments",
    [
        (b"[fit]\ndata = '\xff'\n", ("fit.toml", "not UTF-8 text (byte 0xff at offset 14)")),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", ("nested too deeply",)),  # the parser's RecursionError
        (b"[fit]\nx." + b".".join([b"k"] * 100) + b" = 1\n", ("nested too deeply", "at most 32 levels")),
        (b"#" * (2**20 + 1), ("larger than 1024 KiB",)),
    ],
)
def test_fit_files_that_are_binary_deep_or_huge_are_refused(fit_dir, content, fragments):
    (fit_dir / "fit.toml").write_bytes(content)
    refused(*tumorfield("fit", fit_dir / "fit.toml", "-o", fit_dir / "FIT.h5"), *fragments)


@pytest.mark.parametrize(
    "base, fragments",
    [
        ("/etc/passwd", ("sweep.base = '/etc/passwd'", "is not a valid TOML file")),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", ("sweep.base", "nested too deeply")),
        (b"[model]\nname = '\xfe'\n", ("sweep.base", "not UTF-8 text (byte 0xfe at offset 16)")),
        (b"#" * (2**20 + 1), ("sweep.base", "larger than 1024 KiB")),
    ],
)
def test_a_sweep_base_that_is_not_toml_is_refused(tmp_path, base, fragments):
    if isinstance(base, bytes):
        (tmp_path / "base.toml").write_bytes(base)
        base = tmp_path / "base.toml"
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'[sweep]\nbase = "{base}"\n[sweep.parameters]\n"parameters.r" = [0.5, 1.0]\n')
    line = refused(*tumorfield("sweep", sweep, "-o", tmp_path / "out"), *fragments)
    assert line.startswith(f"tumorfield: error: {sweep}: ")


def _long_field(rows: str) -> str:
    return rows + 'a,0.1,max_u,"' + "1" * (200 * 1024) + '",0.05\n'


@pytest.mark.parametrize(
    "data, fragments",
    [
        (b"arm,t,observable,value,sigma\na,0.1,max_u,\xff,0.05\n", ("fit.data", "not UTF-8 text (byte 0xff")),
        (b"arm,t,observable,value,sigma\x00\n", ("fit.data", "contains NUL bytes")),
        (_long_field(DATA).encode(), ("line 3", "field larger than field limit (131072)")),
        (b"arm,t,observable,value,sigma\na,1e308,max_u,0.6,0.05\n", ("line 2: t = 1e+308", "must lie in [0, 0.2]")),
        (b"arm,t,observable,value,sigma\na,0.1,max_u,0.6,1e-320\n", ("line 2: sigma = 1e-320", "a normal float")),
        (b"arm,t,observable,value,sigma\na,0.1,max_u,0.6,1e-15\n", ("sigma = 1e-15", "≥ 1e-12 × |value|")),
        (b"arm,t,observable,value,sigma,sigma\na,0.1,max_u,0.6,0.05,9\n", ("header", "names sigma more than once")),
        (b"arm,t,observable,value,sigma\n" + b"#" * (64 * 2**20), ("fit.data", "larger than 65536 KiB")),
    ],
)
def test_fit_data_that_is_binary_malformed_or_extreme_is_refused(fit_dir, data, fragments):
    (fit_dir / "data.csv").write_bytes(data)
    line = refused(*tumorfield("fit", fit_dir / "fit.toml", "-o", fit_dir / "FIT.h5"), *fragments)
    assert f"{fit_dir / 'data.csv'}: " in line
    assert not (fit_dir / "FIT.h5").exists()


def test_fit_data_from_a_spreadsheet_with_a_byte_order_mark_is_read(fit_dir):
    from tumorfield.fit._data import ArmGrid, read_observations

    (fit_dir / "data.csv").write_bytes(b"\xef\xbb\xbf" + DATA.encode())
    rows = read_observations(fit_dir / "data.csv", {"a": ArmGrid(("max_u",), 0.01, 0.2)}, "normal")
    assert list(rows.arm) == ["a"] and list(rows.step) == [10]
