"""Figures that show the claim (issue 26): ``compare`` wraps its titles instead of cutting them short,
leaves no empty panel slot, adds the difference map of the final tumour (arm B − arm A), and refuses a
2D run's mm² and a 3D run's mm³ on one axis; the Voloshin time courses are ratios to the PTX arm on
linear axes (the 1.2× effect on metastatic burden was invisible on a log axis over nine decades), with
the uncertainty study's band, in the files' units. Checked on matplotlib's objects; the files are
written by ``write_trajectory`` from arrays (no solver run)."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _api_files import blob, write

import tumorfield as tf
from tumorfield import cli
from tumorfield.plot import PlotError, compare_files
from tumorfield.plot._common import open_with_frames, pyplot
from tumorfield.plot._compare import final_fields_figure, series_figure

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "voloshin2015"
SERIES = ("tumor_volume", "metastatic_burden", "m2_fraction", "mean_leakiness", "il1b_mean", "invasion_distance")
LONG = {
    "tumor_volume": "tumour volume ∫ n (density × volume), the primary tumour's size over the whole box",
    "m2_fraction": "tumour-weighted M2 fraction ∫ n M2 / ∫ n (M1 + M2) of the macrophages in the tumour",
}
UNITS = {"tumor_volume": "mm^d", "metastatic_burden": "cells", "m2_fraction": "1", "mean_leakiness": "1",
         "il1b_mean": "pM", "invasion_distance": "mm"}  # fmt: skip


def arm(path, grid, scale: float):
    """A voloshin2015-like arm: its fields and series, ``scale`` times the reference's burden."""
    fields = {name: blob(grid, 3, growth=scale) for name in ("tumor", "m2", "leakiness", "il1b")}
    steps = np.arange(1, 7, dtype=float)
    series = {name: (1.0 + steps) * (scale if name == "metastatic_burden" else 1.0) for name in SERIES}
    return write(path, grid, fields, series=series, units=UNITS, long_names=LONG,
                 metadata={"model_note": "synthetic"})  # fmt: skip


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    grid = tf.Grid((8, 8), (8.0, 8.0))
    return {"ptx": arm(root / "ptx.h5", grid, 1.0), "ptx_anakinra": arm(root / "ptx_anakinra.h5", grid, 1.2)}


def _inside(fig, texts) -> list[str]:
    """The texts whose drawn extent leaves the figure (clipped titles), empty if none does."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    for text in texts:
        extent = text.get_window_extent(renderer)
        if text.get_text() and (extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y1 > box.y1 + 1):
            out.append(text.get_text())
    return out


def test_compare_titles_are_whole_no_slot_is_empty_and_the_difference_is_drawn(arms, tmp_path):
    plt = pyplot()
    labels = ["PTX", "PTX + anakinra"]
    runs = [open_with_frames(p) for p in arms.values()]
    try:
        fig = series_figure(plt, runs, labels, list(SERIES[:5]))  # 5 panels in rows of 3
        fig.canvas.draw()
        axes = fig.get_axes()
        assert len(axes) == 5 and all(ax.get_visible() for ax in axes)  # no hidden (empty) slot
        assert [ax.get_gid() for ax in axes] == list(SERIES[:5])
        titles = [ax.title for ax in axes]
        assert not any("…" in t.get_text() for t in titles)
        assert titles[0].get_text().replace("\n", " ") == LONG["tumor_volume"]
        assert _inside(fig, titles) == []
        last = [ax.get_position() for ax in axes[3:]]  # the short last row is centred under the first
        first = [ax.get_position() for ax in axes[:3]]
        assert abs((last[0].x0 + last[1].x1) / 2 - (first[0].x0 + first[2].x1) / 2) < 0.01
        plt.close(fig)

        fig = final_fields_figure(plt, runs, labels, "tumor")
        fig.canvas.draw()
        difference = [ax for ax in fig.get_axes() if ax.get_gid() == "difference"]
        assert len(difference) == 1 and difference[0].get_title() == "PTX + anakinra − PTX"
        finals = [np.asarray(run.field("tumor")[-1], float) for run in runs]
        np.testing.assert_allclose(difference[0].get_images()[0].get_array(), finals[1] - finals[0])
        lo, hi = difference[0].get_images()[0].get_clim()
        assert hi == -lo > 0  # symmetric about 0
        assert _inside(fig, [ax.title for ax in fig.get_axes()] + [fig._suptitle]) == []
        plt.close(fig)
    finally:
        for run in runs:
            run.close()
    written = compare_files(list(arms.values()), str(tmp_path), labels=labels, scalars=list(SERIES))
    assert sorted(Path(p).name for p in written) == ["compare_series.png", "compare_tumor.png"]


def test_compare_refuses_mm2_and_mm3_on_one_axis(arms, tmp_path, capsys):
    grid = tf.Grid((4, 4, 4), (8.0, 8.0, 8.0))
    three_d = arm(tmp_path / "ptx_3d.h5", grid, 1.0)
    with pytest.raises(PlotError, match=r"tumor_volume is in different units \(.*\(2D\): mm2, .*\(3D\): mm3\)"):
        compare_files([arms["ptx"], three_d], str(tmp_path / "mixed"), scalars=["tumor_volume"])
    code = cli.main(["compare", str(arms["ptx"]), str(three_d), "-o", str(tmp_path / "mixed"), "--scalars",
                     "tumor_volume", "m2_fraction"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "a 2D and a 3D run do not share an axis" in err and len(err.splitlines()) == 1, err
    # series in the same units compare across dimensions
    assert cli.main(["compare", str(arms["ptx"]), str(three_d), "-o", str(tmp_path / "ok"), "--scalars",
                     "m2_fraction"]) == 0  # fmt: skip


def test_voloshin_time_courses_are_ratios_to_ptx_on_linear_axes_with_the_uncertainty_band(arms, tmp_path):
    sys.path.insert(0, str(EXPERIMENT))
    import analysis

    root = tmp_path / "uncertainty"  # uncertainty.py's layout: <arm>/manifest.csv and member files
    for name, path in arms.items():
        (root / name).mkdir(parents=True)
        with open(root / name / "manifest.csv", "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["member", "file", "status"])
            for i in range(3):
                shutil.copy(path, root / name / f"member-{i:04d}.h5")
                rows.writerow([i, f"member-{i:04d}.h5", "complete"])
    plt = pyplot()
    data = {name: analysis._series(path, analysis.TIME_COURSES) for name, path in arms.items()}
    fig = analysis.ratio_figure(plt, data, "ptx", root)
    burden = next(ax for ax in fig.get_axes() if ax.get_gid() == "metastatic_burden")
    assert burden.get_yscale() == "linear" and "arm / ptx arm" in burden.get_ylabel()
    (line,) = [ln for ln in burden.get_lines() if ln.get_label() == "ptx_anakinra"]
    np.testing.assert_allclose(line.get_ydata(), 1.2)  # the study's 1.2×, where a log axis hid it
    assert len(burden.collections) == 1  # the 5–95 % band of the parameter sets
    volume = next(ax for ax in fig.get_axes() if ax.get_gid() == "tumor_volume")
    assert "[mm²]" in volume.get_title()  # the 2D run's real units, from the file
    plt.close(fig)
    written = analysis.figures(arms, tmp_path / "figures", uncertainty=root)
    assert [p.name for p in written] == ["time_courses.png", "time_courses_absolute.png", "endpoint_snapshots.png"]
