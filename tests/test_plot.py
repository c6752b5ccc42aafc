"""``tumorfield plot`` and ``tumorfield compare``: which figures, what each shows (the PNG's
``Description`` lists it), the movie, 3D views, and every refusal (exit 2, one line)."""

from __future__ import annotations

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from _viewer_runs import run
from PIL import Image

from tumorfield import cli
from tumorfield.io import open_trajectory
from tumorfield.plot import DESCRIPTION, STUDY_SERIES, series, write_movie
from tumorfield.plot._figures import mid_slices, projections

INTERNAL = {"vessels", "voxel_volume", "cell_volume"}  # constants or helpers: never a per-frame figure
ODE_SCALARS = {"burden", "circulating", "seeded"}  # voloshin2015 stores them once, as observables


def shown(png) -> list[str]:
    """What a figure shows, from its PNG ``Description`` text chunk."""
    text = Image.open(png).text["Description"]
    assert text.startswith(DESCRIPTION)
    return text[len(DESCRIPTION) :].split(", ")


def tumorfield(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(result, *needles) -> None:
    code, out, err = result
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.splitlines()
    assert line.startswith("tumorfield: error:") and all(n in line for n in needles), line


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # imageio-ffmpeg's fork + exec of ffmpeg
def test_plot_draws_the_model_fields_once_each_series_once_and_a_movie(tmp_path, capsys):
    path = run("voloshin_ptx")
    with open_trajectory(path) as stored:
        fields, n = stored.field_names, stored.n_committed
        expected_series = list(stored.scalars) + [v for v in stored.variables if v not in stored.carried]
    code, out, err = tumorfield(capsys, "plot", path, "-o", tmp_path, "--snapshots", "2", "--movie", "tumor", "m2")
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {f"{f}.png" for f in fields} | {"constants.png", "scalars.png", "movie.mp4"}
    assert sorted(out.split()) == sorted(str(tmp_path / name) for name in names)
    assert not {f"{name}.png" for name in INTERNAL | ODE_SCALARS} & names
    for field in fields:
        assert shown(tmp_path / f"{field}.png") == [field]
    assert shown(tmp_path / "constants.png") == ["vessels"]
    panels = shown(tmp_path / "scalars.png")
    assert len(panels) == len(set(panels)) and sorted(panels) == sorted(expected_series)
    assert {"metastatic_burden", "circulating_cells", "seeded_cells"} <= set(panels) and not ODE_SCALARS & set(panels)
    movie = _ffmpeg_frames(tmp_path / "movie.mp4")
    assert len(movie) == n and movie[0].ndim == 3
    assert not np.array_equal(movie[0], movie[-1])  # the fields and the title change over time


def _ffmpeg_frames(path) -> list[np.ndarray]:
    """Every frame of a video, decoded by imageio-ffmpeg."""
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [frame for frame in reader]


def test_movie_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    import tumorfield.plot._movie as movie

    monkeypatch.setattr(movie, "ffmpeg_available", lambda: False)
    path = run("fisher_3d")
    out = write_movie(str(path), str(tmp_path / "u"))
    assert out.endswith("u.gif")
    with open_trajectory(path) as stored:
        assert len(iio.imread(out, index=None)) == stored.n_committed


def test_3d_run_figures_are_mid_slices_and_projections(tmp_path, capsys):
    path = run("fisher_3d")
    code, out, err = tumorfield(capsys, "plot", path, "-o", tmp_path, "--snapshots", "2")
    assert code == 0, err
    with open_trajectory(path) as stored:
        fields = stored.field_names
    assert "u" in fields
    assert {p.name for p in tmp_path.iterdir()} == {f"{f}{kind}.png" for f in fields for kind in ("", "_mip")} | {
        "scalars.png"
    }
    assert shown(tmp_path / "u.png") == shown(tmp_path / "u_mip.png") == ["u"]
    volume = np.arange(4 * 5 * 6, dtype=float).reshape(4, 5, 6)
    slices, maxima = mid_slices(volume), projections(volume)
    np.testing.assert_array_equal(slices["z"], volume[2])
    np.testing.assert_array_equal(slices["y"], volume[:, 2, :])
    np.testing.assert_array_equal(slices["x"], volume[:, :, 3])
    for i, axis in enumerate("zyx"):
        np.testing.assert_array_equal(maxima[axis], volume.max(axis=i))


def test_compare_puts_the_arms_on_shared_axes(tmp_path, capsys):
    arms = [run("voloshin_ptx"), run("voloshin_il1b_ko")]
    code, out, err = tumorfield(capsys, "compare", *arms, "-o", tmp_path, "--labels", "wild type", "IL1β KO")
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"compare_series.png", "compare_tumor.png"}
    assert shown(tmp_path / "compare_series.png") == list(STUDY_SERIES["voloshin2015"])
    assert shown(tmp_path / "compare_tumor.png") == ["wild type", "IL1β KO"]
    with open_trajectory(arms[0]) as a, open_trajectory(arms[1]) as b:  # the arms differ: a real comparison
        assert not np.array_equal(series(a)["il1b_mean"][1], series(b)["il1b_mean"][1])


def test_compare_draws_any_models_shared_series_with_their_units(tmp_path, capsys):
    """fisher_kpp has no study series: compare draws every series the files share, or ``--scalars``."""
    arms = [run("fisher_3d"), run("fisher_3d_fast")]
    with open_trajectory(arms[0]) as a, open_trajectory(arms[1]) as b:
        every, first_field = list(series(a)), a.field_names[0]  # fisher_kpp has no "tumor": the first field
        assert every == list(series(b)) and {"tumour_burden", "max_u"} <= set(every)
        assert a.scalars.units["tumour_burden"] == "mm3"  # from the model's Observable, written out for 3D
        assert not np.array_equal(series(a)["tumour_burden"][1], series(b)["tumour_burden"][1])
    code, out, err = tumorfield(capsys, "compare", *arms, "-o", tmp_path / "all")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "all").iterdir()} == {"compare_series.png", f"compare_{first_field}.png"}
    assert shown(tmp_path / "all" / "compare_series.png") == every
    chosen = ["max_u", "tumour_burden"]
    code, out, err = tumorfield(capsys, "compare", *arms, "-o", tmp_path / "some", "--scalars", *chosen)
    assert code == 0, err
    assert shown(tmp_path / "some" / "compare_series.png") == chosen
    refused(tumorfield(capsys, "compare", *arms, "-o", tmp_path / "none", "--scalars", "tumor_volume"),
            "--scalars: tumor_volume not recorded by every file", "tumour_burden")  # fmt: skip
    assert not (tmp_path / "none").exists()


def test_refusals_name_the_file_and_what_is_allowed(tmp_path, capsys):
    figures = tmp_path / "figures"
    refused(tumorfield(capsys, "plot", tmp_path / "absent.h5", "-o", figures), "absent.h5", "does not exist")
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    refused(tumorfield(capsys, "plot", text, "-o", figures), "notes.h5", "not a tumorfield trajectory")
    refused(tumorfield(capsys, "plot", run("fisher_3d"), "-o", figures, "--movie", "u", "tumour"),
            "no field 'tumour'", "fields of this run are c, u")  # fmt: skip
    assert not figures.exists()  # refused before any figure is drawn
    empty = tmp_path / "empty.h5"
    with h5py.File(run("fisher_3d"), "r") as source, h5py.File(empty, "w") as h5:
        for key, value in source.attrs.items():
            h5.attrs[key] = value
        h5.attrs["n_committed"] = np.int64(0)
        h5.attrs["n_scalars_committed"] = np.int64(0)
        for name in ("t", "scalars", "checkpoint", "z", "y", "x"):
            source.copy(name, h5)
    refused(tumorfield(capsys, "plot", empty, "-o", figures), "empty.h5", "no frame")
    refused(tumorfield(capsys, "compare", run("voloshin_ptx"), run("fisher_3d"), "-o", figures),
            "different models", "voloshin2015", "fisher_kpp")  # fmt: skip
    refused(tumorfield(capsys, "compare", run("voloshin_ptx"), run("voloshin_il1b_ko"), "-o", figures,
                       "--labels", "one"), "1 labels for 2 files")  # fmt: skip
    refused(tumorfield(capsys, "compare", run("voloshin_ptx"), "-o", figures), "at least two")
    refused(tumorfield(capsys, "compare", run("voloshin_ptx"), tmp_path / "absent.h5", "-o", figures), "absent.h5")
    assert not figures.exists()


@pytest.mark.parametrize("fmt", ["webm"])
def test_unknown_movie_format_is_refused(tmp_path, fmt):
    from tumorfield.plot import PlotError

    with pytest.raises(PlotError, match="'mp4' or 'gif'"):
        write_movie(str(run("fisher_3d")), str(tmp_path / "m"), fmt=fmt)
