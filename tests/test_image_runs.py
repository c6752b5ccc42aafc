"""Image-based runs (issue 22, the run-file side): a run file records its grid's affine and every
input image (covered by the metadata checksum), ``inspect`` lists them, ``resume`` refuses a run
whose image changed or went missing, ``plot`` draws the tumour over the anatomy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from _viewer_runs import run as viewer_run
from tumorfield_kernels import Grid

from tumorfield import cli
from tumorfield import config as cfg
from tumorfield.io import NotATrajectory, image_digest, open_trajectory, write_nifti
from tumorfield.plot import plot_file
from tumorfield.plot._overlay import centre_of_mass, plot_overlay, wants_overlay

# voxel axis i → world −x, j → +y, k → +z (1 mm), then an offset: a LAS-like image
AFFINE = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -30.0], [0, 0, 1.0, -10.0], [0, 0, 0, 1]])
CONFIG = """
[model]
name = "fisher_kpp"
[grid]
image = "{image}"
[time]
t_end = {t_end}
dt = 0.05
save_every = 0.1
[parameters]
D = 0.1
r = 1.0
[initial]
radius = 2.0
[run]
chunk_frames = 1
progress = "none"
compilation_cache = "{cache}"
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax-cache"))


def anatomy(path: Path, shape=(10, 12, 8), affine=AFFINE) -> Path:
    """A small smooth 'brain' (a Gaussian blob) as NIfTI, on ``affine``."""
    grid = Grid(shape, [n * float(np.linalg.norm(affine[:3, a])) for a, n in enumerate(shape)], affine)
    index = np.indices(shape)
    blob = np.exp(-sum(((x - (n - 1) / 2) / (0.4 * n)) ** 2 for x, n in zip(index, shape, strict=True)))
    return Path(write_nifti(path, blob.astype(np.float32), grid))


def config_file(directory: Path, image: Path, cache: str, t_end=0.3) -> Path:
    path = directory / "run.toml"
    path.write_text(CONFIG.format(image=image.name, t_end=t_end, cache=cache))
    return path


def tumorfield(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_run_records_its_grid_affine_and_input_images_under_the_metadata_checksum(tmp_path, capsys, cache):
    image = anatomy(tmp_path / "wm.nii.gz")
    config = config_file(tmp_path, image, cache)
    out = tmp_path / "out.h5"
    code, _, err = tumorfield(capsys, "run", config, "-o", out)
    assert code == 0, err
    grid = cfg.load(config).grid
    with open_trajectory(out) as stored:
        np.testing.assert_array_equal(np.reshape(stored.metadata["grid_affine"], (4, 4)), AFFINE)
        assert stored.grid == grid and stored.grid.affine is not None
        (key, recorded), = stored.input_images.items()  # fmt: skip
        assert key == "grid.image" and recorded.path == str(image.resolve())
        assert recorded.sha256 == image_digest(image)
        np.testing.assert_allclose(recorded.affine, AFFINE)
        records = json.loads(stored.metadata["input_images"])
        assert [sorted(r) for r in records] == [["affine", "key", "path", "sha256"]]
    code, text, err = tumorfield(capsys, "inspect", out)
    assert code == 0, err
    assert f"grid.image      {image.resolve()}  sha256 {image_digest(image)[:12]}" in text

    # a box run records its box's affine and no image; its grid reads back as the plain box
    with open_trajectory(viewer_run("fisher_3d")) as box:
        assert box.grid == Grid((8, 8, 8), (4.0, 4.0, 4.0)) and box.input_images == {}
        np.testing.assert_allclose(np.reshape(box.metadata["grid_affine"], (4, 4)), Grid((8, 8, 8), 4.0).world_affine())
        assert json.loads(box.metadata["input_images"]) == []

    # both attributes are covered by meta_sha256: an edit, or deleting them, is refused
    edits = {
        "grid_affine": lambda h5: h5.attrs.modify("grid_affine", (AFFINE + np.eye(4) * 1e-12).ravel()),
        "input_images": lambda h5: h5.attrs.modify("input_images", json.dumps([])),
        "both deleted": lambda h5: [h5.attrs.__delitem__(k) for k in ("grid_affine", "input_images")],
    }
    for what, edit in edits.items():
        copy = tmp_path / f"edited {what}.h5"
        copy.write_bytes(out.read_bytes())
        with h5py.File(copy, "r+") as h5:
            edit(h5)
        with pytest.raises(NotATrajectory, match="edited afterwards"):
            open_trajectory(copy)


def interrupted_run(tmp_path: Path, image: Path, cache: str) -> Path:
    """A run of 21 frames stopped after frame 0 (as a signal leaves it: ``interrupted``, resumable)."""
    from tumorfield.run import Run

    config = cfg.load(config_file(tmp_path, image, cache, t_end=2.0))
    run = Run.start(config, tmp_path / "out.h5", overwrite=False, argv=["test"], log=lambda message: None)
    outcome = run.end("interrupted", "interrupted by SIGTERM")
    assert outcome.status == "interrupted"
    return outcome.path


def test_resume_refuses_a_changed_or_missing_input_image_and_continues_an_unchanged_one(tmp_path, capsys, cache):
    image = anatomy(tmp_path / "wm.nii.gz")
    out = interrupted_run(tmp_path, image, cache)
    before, original = out.read_bytes(), image.read_bytes()
    old = image_digest(image)

    anatomy(image, shape=(10, 12, 9))  # the same name, other bytes
    new = image_digest(image)
    code, _, err = tumorfield(capsys, "resume", out)
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.splitlines()
    assert f"{image.resolve()} (grid.image) changed since the run started: SHA-256 {old[:12]}… now {new[:12]}…" in line
    assert out.read_bytes() == before  # refused before anything was written

    image.unlink()
    code, _, err = tumorfield(capsys, "resume", out)
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.splitlines()
    assert f"{image.resolve()} (grid.image) is unreadable or missing" in line and old[:12] in line
    assert out.read_bytes() == before

    image.write_bytes(original)
    code, _, err = tumorfield(capsys, "resume", out)
    assert code == 0, err
    with open_trajectory(out) as stored:
        assert stored.status == "complete" and stored.n_committed == 21
        assert stored.input_images["grid.image"].sha256 == old


def _panel_count(run_path: Path, tmp_path: Path) -> tuple[int, str]:
    """Draw the overlay of ``run_path`` and return its number of slice panels and its title."""
    from tumorfield.plot._common import pyplot

    seen = {}

    def save(plt, fig, out, shown):
        seen["panels"] = [ax for ax in fig.axes if str(ax.get_gid()).startswith("overlay:")]
        seen["title"] = fig._suptitle.get_text()
        plt.close(fig)
        return out

    with open_trajectory(run_path) as stored:
        assert wants_overlay(stored)
        plot_overlay(pyplot(), stored, "u", str(tmp_path), save)
    return len(seen["panels"]), seen["title"]


def test_plot_draws_the_tumour_over_the_anatomy_and_skips_box_runs(tmp_path, capsys, cache):
    from PIL import Image

    image = anatomy(tmp_path / "wm.nii.gz")
    out = tmp_path / "out.h5"
    assert tumorfield(capsys, "run", config_file(tmp_path, image, cache, t_end=0.2), "-o", out)[0] == 0
    code, text, err = tumorfield(capsys, "plot", out, "-o", tmp_path / "fig")
    assert code == 0, err
    overlay = tmp_path / "fig" / "u_overlay.png"
    assert str(overlay) in text.split() and Image.open(overlay).text["Description"] == "tumorfield: u"
    panels, title = _panel_count(out, tmp_path)
    assert panels == 3 and "wm.nii.gz (grid.image)" in title and "voxel" not in title

    # a box run: no overlay, no error
    code, text, err = tumorfield(capsys, "plot", viewer_run("fisher_3d"), "-o", tmp_path / "box")
    assert code == 0, err
    assert not list((tmp_path / "box").glob("*_overlay.png")) and (tmp_path / "box" / "u.png").exists()


def test_a_2d_oblique_image_run_gets_one_panel_in_voxel_indices(tmp_path, capsys, cache):
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rotated = np.array([[c, -s, 0, 5.0], [s, c, 0, -3.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    image = anatomy(tmp_path / "slice.nii.gz", shape=(14, 12), affine=rotated)
    out = tmp_path / "out.h5"
    assert tumorfield(capsys, "run", config_file(tmp_path, image, cache, t_end=0.2), "-o", out)[0] == 0
    panels, title = _panel_count(out, tmp_path)
    assert panels == 1 and "oblique affine: axes in voxel indices" in title
    written = plot_file(str(out), str(tmp_path / "fig"))
    assert str(tmp_path / "fig" / "u_overlay.png") in written


def test_centre_of_mass():
    frame = np.zeros((5, 6, 7))
    frame[1, 4, 2] = 2.0
    frame[3, 4, 2] = 2.0
    assert centre_of_mass(frame) == (2, 4, 2)
    assert centre_of_mass(np.zeros((4, 5))) == (2, 2)
