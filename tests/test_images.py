"""Images in and out (issue 22): ``Grid`` with a world affine, ``Grid.from_image``, ``read_image``
(block averages, nearest-neighbour labels, every refusal), ``write_nifti`` and ``tumorfield export``."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import nibabel
import numpy as np
import pytest
from _viewer_runs import run
from tumorfield_kernels import Grid

from tumorfield import cli
from tumorfield.io import ImageError, InputImage, image_digest, open_trajectory, read_image, write_nifti

MNI_WM = Path(nibabel.__file__).parents[1] / "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
# array axis 0 → world −y (0.5 mm), axis 1 → +z (1 mm), axis 2 → +x (2 mm), then an offset
OBLIQUE = np.array([[0, 0, 2.0, -30.0], [-0.5, 0, 0, 12.0], [0, 1.0, 0, 4.5], [0, 0, 0, 1]])


def save(path, data, affine) -> Path:
    nibabel.save(nibabel.Nifti1Image(np.asarray(data), affine), path)
    return Path(path)


def world_centres(affine, shape) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape ``(*shape, 3)``."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def test_a_box_grid_is_unchanged_and_its_affine_places_cell_centres_at_half_cells():
    box = Grid((4, 8), (2.0, 4.0))
    assert box == Grid([4, 8], [2, 4]) and hash(box) == hash(Grid((4, 8), (2.0, 4.0))) and box.affine is None
    np.testing.assert_array_equal(
        box.world_affine(), [[0.5, 0, 0, 0.25], [0, 0.5, 0, 0.25], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    placed = Grid((4, 5, 6), (2.0, 5.0, 12.0), OBLIQUE)
    assert placed == Grid((4, 5, 6), (2.0, 5.0, 12.0), OBLIQUE.tolist()) and placed != Grid((4, 5, 6), (2, 5, 12))
    assert hash(placed) == hash(Grid((4, 5, 6), (2.0, 5.0, 12.0), OBLIQUE))
    with pytest.raises(ValueError, match="must match"):
        Grid((4, 5, 6), (2.0, 5.0, 6.0), OBLIQUE)  # 1 mm along axis 2, the affine says 2 mm
    sheared = OBLIQUE.copy()
    sheared[0, 0] = 0.3
    with pytest.raises(ValueError, match="orthogonal"):
        Grid((4, 5, 6), (2.0 * math.hypot(0.5, 0.3), 5.0, 12.0), sheared)


@pytest.mark.parametrize("shape", [(4, 5, 6), (4, 5)])
def test_write_nifti_puts_each_cell_at_its_world_coordinates(tmp_path, shape):
    affine = OBLIQUE
    grid = Grid(shape, [n * s for n, s in zip(shape, (0.5, 1.0, 2.0), strict=False)], affine)
    x, y, z = np.moveaxis(world_centres(affine, shape + (1,) * (3 - len(shape))), -1, 0)
    field = (x + 10 * y + 100 * z).reshape(shape)  # a value that says where it is
    path = write_nifti(tmp_path / "f.nii.gz", field, grid)
    image = nibabel.load(path)
    assert image.shape == shape + (1,) * (3 - len(shape)) and image.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    x, y, z = np.moveaxis(world_centres(image.affine, image.shape), -1, 0)  # read back through nibabel alone
    np.testing.assert_allclose(image.get_fdata(), x + 10 * y + 100 * z, rtol=1e-12, atol=1e-9)
    again = Grid.from_image(path)
    assert again.shape == shape and np.allclose(again.length, grid.length) and np.allclose(again.affine, affine)
    np.testing.assert_allclose(read_image(path, grid), field, atol=1e-9)  # same grid: the values themselves
    assert not [p for p in tmp_path.iterdir() if p.name != "f.nii.gz"]  # no temporary file left


def probability_map(tmp_path, shape, affine) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(0).uniform(0, 1, shape)
    return save(tmp_path / "p.nii.gz", data, affine), data


@pytest.mark.parametrize("shape", [(7, 9, 5), (7, 9, 1), (7, 9)])
def test_resample_2_block_averages_a_probability_map_and_keeps_its_mass(tmp_path, shape):
    path, data = probability_map(tmp_path, shape, OBLIQUE)
    grid = Grid.from_image(path, resample=2)
    planar = shape[:2] if len(shape) == 2 or shape[2] == 1 else shape
    assert grid.shape == tuple(math.ceil(n / 2) for n in planar)
    voxel = (0.5, 1.0, 2.0)
    assert np.allclose(grid.spacing, [2 * v for v in voxel[: grid.ndim]])
    centre = OBLIQUE @ ([0.5, 0.5, 0.5 if grid.ndim == 3 else 0.0, 1.0])  # the first 2×2(×2) block's centre
    np.testing.assert_allclose(grid.world_affine()[:, 3], centre)
    coarse = read_image(path, grid, kind="probability")
    assert coarse.shape == grid.shape and coarse.dtype == np.float64
    assert coarse.sum() * grid.cell_volume == pytest.approx(data.sum() * math.prod(voxel[: grid.ndim]), rel=1e-6)
    assert coarse.flat[0] == pytest.approx(data[:2, :2, :2].mean() if grid.ndim == 3 else data[:2, :2].mean())


def test_mni152_white_matter_on_a_coarse_grid():
    grid = Grid.from_image(MNI_WM, resample=8)
    assert grid.shape == (25, 30, 24) and grid.spacing == (8.0, 8.0, 8.0)
    wm = read_image(MNI_WM, grid, kind="probability", scale=1 / 255)  # an 8-bit map
    assert wm.shape == grid.shape and 0 <= wm.min() and wm.max() <= 1 and wm.max() > 0.9
    voxels = nibabel.load(MNI_WM).get_fdata() / 255
    assert wm.sum() * grid.cell_volume == pytest.approx(voxels.sum(), rel=1e-6)  # 1 mm³ voxels


def test_a_label_map_keeps_only_its_labels(tmp_path):
    labels = np.random.default_rng(1).choice([0, 3, 7], size=(9, 8, 6)).astype(np.int16)
    path = save(tmp_path / "labels.nii.gz", labels, OBLIQUE)
    coarse = read_image(path, Grid.from_image(path, resample=2.5), kind="labels")
    rotated = Grid((10, 10, 10), 8.0, [[0, 0.8, 0, -28], [0, 0, -0.8, 13], [0.8, 0, 0, -1], [0, 0, 0, 1]])
    for grid in (coarse, read_image(path, rotated, kind="labels")):
        assert grid.dtype == np.int64 and set(np.unique(grid)) <= {0, 3, 7} and len(np.unique(grid)) == 3
    same = read_image(path, Grid.from_image(path), kind="labels")
    np.testing.assert_array_equal(same, labels)
    written = nibabel.load(write_nifti(tmp_path / "out.nii", same, Grid.from_image(path)))
    assert written.get_data_dtype() == np.int32 and np.array_equal(np.asanyarray(written.dataobj), labels)


def refusals(tmp_path) -> list:
    """(what, call) pairs, each of which must raise ImageError naming its file."""
    good, _ = probability_map(tmp_path, (6, 6, 6), np.diag([1.0, 1.0, 1.0, 1.0]))
    grid = Grid.from_image(good)
    (tmp_path / "text.nii.gz").write_text("not an image")
    nan = save(tmp_path / "nan.nii.gz", np.where(np.eye(6)[:, :, None] > 0, np.nan, 0.5) * np.ones(6), np.eye(4))
    four = save(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 3)), np.eye(4))
    sheared = save(
        tmp_path / "sheared.nii.gz", np.zeros((4, 4, 4)), [[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0] * 3 + [1]]
    )
    far = Grid((4, 4, 4), 4.0, [[1, 0, 0, 500], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    loud = save(tmp_path / "loud.nii.gz", np.full((4, 4, 4), 255.0), np.eye(4))
    fractional = save(tmp_path / "fractional.nii.gz", np.full((4, 4, 4), 1.5), np.eye(4))
    return [
        ("missing", "absent.nii.gz", "no such file", lambda: Grid.from_image(tmp_path / "absent.nii.gz")),
        ("not an image", "text.nii.gz", "not a readable image", lambda: read_image(tmp_path / "text.nii.gz", grid)),
        ("NaN voxels", "nan.nii.gz", "NaN", lambda: read_image(nan, grid)),
        ("4D", "4d.nii.gz", "4D image", lambda: Grid.from_image(four)),
        ("sheared", "sheared.nii.gz", "orthogonal", lambda: Grid.from_image(sheared)),
        ("no overlap", "p.nii.gz", "does not overlap", lambda: read_image(good, far)),
        ("probability", "loud.nii.gz", "[0, 1]", lambda: read_image(loud, grid, kind="probability")),
        ("labels", "fractional.nii.gz", "whole numbers", lambda: read_image(fractional, grid, kind="labels")),
        ("memory", "p.nii.gz", "over the limit", lambda: read_image(good, grid, max_bytes=1000)),
        ("cells", "p.nii.gz", "cells", lambda: Grid.from_image(good, max_cells=100)),
        ("too coarse", "p.nii.gz", "at least 2", lambda: Grid.from_image(good, resample=6)),
        ("resample", "p.nii.gz", "positive", lambda: Grid.from_image(good, resample=0)),
        ("resample", "p.nii.gz", "positive", lambda: Grid.from_image(good, resample="2x")),
        ("suffix", "f.png", ".nii", lambda: write_nifti(tmp_path / "f.png", np.zeros(grid.shape), grid)),
        ("shape", "f.nii", "shape", lambda: write_nifti(tmp_path / "f.nii", np.zeros((2, 2)), grid)),
    ]


def test_every_refusal_names_the_file_and_the_rule(tmp_path):
    for what, name, rule, call in refusals(tmp_path):
        with pytest.raises(ImageError) as caught:
            call()
        assert name in str(caught.value) and rule in str(caught.value), (what, str(caught.value))


def test_input_image_records_path_digest_and_affine(tmp_path):
    path, _ = probability_map(tmp_path, (4, 4, 4), OBLIQUE)
    described = InputImage.of(path)
    assert described.sha256 == image_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert described.path == str(path) and np.allclose(described.affine, OBLIQUE)
    hash(described)  # frozen: usable as provenance keys


def tumorfield(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_writes_one_nifti_per_field_and_frame_on_the_box_affine(tmp_path, capsys):
    import nilearn.image

    path = run("voloshin_ptx")  # 16² box, frames every 0.2 day to 0.6
    code, out, err = tumorfield(capsys, "export", path, "-o", tmp_path / "nii", "--frames", "all", "--field", "tumor")
    assert code == 0, err
    with open_trajectory(path) as stored:
        days, tumor, x = stored.t, stored.field("tumor")[:], stored.coordinates["x"]
    names = [f"tumor_t{format(day, 'g')}.nii.gz" for day in days]
    assert out.split() == [str(tmp_path / "nii" / n) for n in names] and "tumor_t0.2.nii.gz" in names
    dx = 2 * x[0]
    for k, name in enumerate(names):
        image = nibabel.load(tmp_path / "nii" / name)
        assert image.shape == (16, 16, 1)
        np.testing.assert_allclose(image.affine, [[dx, 0, 0, dx / 2], [0, dx, 0, dx / 2], [0, 0, 1, 0], [0, 0, 0, 1]])
        np.testing.assert_array_equal(image.get_fdata()[..., 0], tumor[k])
    assert nilearn.image.load_img(tmp_path / "nii" / names[-1]).shape == (16, 16, 1)
    code, out, err = tumorfield(capsys, "export", run("fisher_3d"), "-o", tmp_path / "3d")  # last frame, all fields
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "3d").iterdir()) == ["c_t0.4.nii.gz", "u_t0.4.nii.gz"]
    image = nibabel.load(tmp_path / "3d" / "u_t0.4.nii.gz")
    box = [[0.5, 0, 0, 0.25], [0, 0.5, 0, 0.25], [0, 0, 0.5, 0.25], [0, 0, 0, 1]]  # 8 cells over 4 mm
    assert image.shape == (8, 8, 8) and np.allclose(image.affine, box)


def test_export_refusals_exit_2_with_one_line(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    out = tmp_path / "nii"
    for argv, needles in [
        ((run("fisher_3d"), "--field", "u", "tumour"), ("no field 'tumour'", "fields are c, u")),
        ((run("fisher_3d"), "--frames", "0,9"), ("frames 0 to 4", "[9]")),
        ((run("fisher_3d"), "--frames", "first"), ("'all', 'last'",)),
        ((text,), ("notes.h5", "not a tumorfield trajectory")),
        ((tmp_path / "absent.h5",), ("absent.h5", "does not exist")),
    ]:
        code, _, err = tumorfield(capsys, "export", *argv, "-o", out)
        assert code == 2 and "Traceback" not in err, err
        (line,) = err.splitlines()
        assert line.startswith("tumorfield: error:") and all(n in line for n in needles), line
    assert not out.exists()


def test_a_stored_grid_affine_is_the_exported_one():
    from types import SimpleNamespace

    from tumorfield.export import GRID_AFFINE, stored_grid

    centres = {"z": (np.arange(4) + 0.5) * 0.5, "y": (np.arange(5) + 0.5) * 1.0, "x": (np.arange(6) + 0.5) * 2.0}
    box = SimpleNamespace(axes=("z", "y", "x"), coordinates=centres, metadata={})
    assert stored_grid(box) == Grid((4, 5, 6), (2.0, 5.0, 12.0))
    placed = SimpleNamespace(axes=box.axes, coordinates=centres, metadata={GRID_AFFINE: OBLIQUE})
    np.testing.assert_array_equal(stored_grid(placed).world_affine(), OBLIQUE)


def test_voloshin_vessel_map_from_an_image(tmp_path):
    """``[vessels] image = …``: the prescribed vessel map read from a NIfTI image onto the grid (the run's
    /constant/vessels), recorded as an input image; a negative density is refused naming the key."""
    import tumorfield as tf

    grid = tf.Grid((16, 16), (8.0, 8.0))
    density = np.linspace(0.0, 2.0, 256).reshape(16, 16)
    write_nifti(tmp_path / "cd31.nii.gz", density, grid)
    base = open("experiments/voloshin2015/ptx.toml").read()
    text = base + '\n[vessels]\nimage = "cd31.nii.gz"\n'
    (tmp_path / "ptx.toml").write_text(text)
    config = tf.config.load(tmp_path / "ptx.toml", ["grid.shape=[16,16]"])
    np.testing.assert_allclose(config.model.params(config.grid).vessels, density, rtol=1e-6)
    assert dict(config.input_images)["vessels.image"] == str(tmp_path / "cd31.nii.gz")
    write_nifti(tmp_path / "cd31.nii.gz", density - 1.0, grid)
    with pytest.raises(tf.config.ConfigError, match=r"vessels.image = .*cd31.nii.gz.*has negative values"):
        tf.config.load(tmp_path / "ptx.toml", ["grid.shape=[16,16]"])
