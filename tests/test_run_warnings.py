"""What a run warns about, once, in the log and in the file (issue 26): a tumour a few cells across at
t = 0, a tumour on the walls of the box at the end. After ``resume`` completes a run, its status no longer
says "interrupted by SIGTERM"; the first progress rate after ``resume`` counts only this process's days
(it said 5.48e+06 day/s)."""

from __future__ import annotations

import io

import pytest

from tumorfield import cli
from tumorfield import config as cfg
from tumorfield._progress import Progress
from tumorfield.io import open_trajectory
from tumorfield.run import Run, _signals

FISHER = """
[model]
name = "fisher_kpp"
[grid]
shape = [12, 12]
length = [2.0, 2.0]
[time]
t_end = {t_end}
dt = 0.02
save_every = 0.2
[parameters]
D = {D}
r = {r}
chi = 0.0
[initial]
radius = {radius}
[run]
chunk_frames = 3
progress = "none"
compilation_cache = "{cache}"
"""


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("warnings")
    out = {}
    for name, values in {"crowded": {"t_end": 1.0, "D": 0.05, "r": 10.0, "radius": 0.25},
                         "quiet": {"t_end": 0.4, "D": 0.005, "r": 0.1, "radius": 0.4}}.items():  # fmt: skip
        out[name] = root / f"{name}.toml"
        out[name].write_text(FISHER.format(cache=root / "jax-cache", **values))
    return out


def test_a_coarse_tumour_and_a_full_box_are_warned_about_once_in_the_log_and_the_file(configs, tmp_path, capsys):
    out = tmp_path / "crowded.h5"
    assert cli.main(["run", str(configs["crowded"]), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    coarse = [line for line in err.splitlines() if "warning: the initial 'u' is" in line]
    walls = [line for line in err.splitlines() if "warning: 'u' reaches the walls of the box at t = 1 day" in line]
    assert len(coarse) == 1 and "cells across along" in coarse[0] and "fewer than 4" in coarse[0], err
    assert len(walls) == 1 and "the box is too small" in walls[0], err
    with open_trajectory(out) as run:
        assert run.warnings == [coarse[0].split("warning: ", 1)[1], walls[0].split("warning: ", 1)[1]]
        u = run.field("u")[-1]
        assert min(u[0].max(), u[-1].max(), u[:, 0].max(), u[:, -1].max()) > 0.1 * u.max()
    assert cli.main(["inspect", str(out)]) == 0
    assert capsys.readouterr().out.count("\nwarning:     ") == 2


def test_resume_completes_with_a_clean_status_and_no_warning_where_none_is_due(configs, tmp_path, capsys):
    out = tmp_path / "quiet.h5"
    config = cfg.load(str(configs["quiet"]))
    logged = []
    run = Run.start(config, out, overwrite=False, argv=["tumorfield", "run"], log=logged.append)
    _signals._early["signal"] = "SIGTERM"  # as if SIGTERM had arrived: the loop stops on frame 0's checkpoint
    try:
        outcome = run.execute()
    finally:
        _signals._early["signal"] = None
    assert outcome.status == "interrupted"
    with open_trajectory(out) as stored:
        assert (stored.status, stored.message) == ("interrupted", "interrupted by SIGTERM")
    assert cli.main(["resume", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and not any("warning" in line for line in logged), err
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "status:      complete\n" in text and "SIGTERM" not in text.split("config:")[0], text
    with open_trajectory(out) as stored:
        assert stored.status == "complete" and stored.message is None and stored.warnings == []


def test_the_first_rate_after_resume_counts_only_this_processs_days(monkeypatch):
    clock = iter([100.0, 100.0, 110.0])  # construction, the first update (the resume point), 10 s later
    monkeypatch.setattr("tumorfield._progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = Progress(0.0, 20.0, "lines", stream)
    progress.update(10.0)  # resumed at day 10: nothing computed yet, nothing printed
    assert stream.getvalue() == ""
    progress.update(11.0)  # one day in 10 s
    assert "t = 11/20 day (55 %), 0.1 day/s, ETA 90 s" in stream.getvalue(), stream.getvalue()
