"""Images in and out: NIfTI (any nibabel volume) onto a :class:`~tumorfield_kernels.Grid`, and fields back to NIfTI.

Geometry: a grid's array index maps to world coordinates (mm) through
:meth:`Grid.world_affine`, an image's voxel index through its own affine, so
``read_image`` samples the image at ``A_image⁻¹ · A_grid · index`` whatever the two
orientations are. Values outside the image are 0 (background, label 0). Every refusal
is an :class:`ImageError` (a ``ValueError``) whose message names the file and the rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import tempfile

import numpy as np
from tumorfield_kernels import Grid, ImageError, image_geometry, load_image

KINDS = ("continuous", "probability", "labels")
_SUFFIXES = (".nii.gz", ".nii")


def check_probability(values: np.ndarray, source: str | os.PathLike) -> None:
    """:class:`ImageError` naming ``source`` unless every value lies in [0, 1] (a volume fraction
    or probability, dimensionless)."""
    low, high = float(np.min(values)), float(np.max(values))
    if low < 0 or high > 1:
        raise ImageError(f"{os.fspath(source)}: values in [{low:g}, {high:g}]; a probability map must lie in [0, 1] "
                         "(scale an 8-bit map with scale=1/255)")  # fmt: skip


def read_image(path, grid: Grid, *, kind: str = "continuous", scale: float = 1.0, max_bytes: int = 2**30) -> np.ndarray:
    """The image at ``path`` resampled onto ``grid`` (array of ``grid.shape``).

    ``kind``: ``"continuous"`` (float64; the mean over each grid cell of the trilinear
    interpolant, sampled at ``ceil(grid voxel / image voxel)`` points per axis, so an aligned
    coarsening by whole voxels is an exact block average and preserves mean × volume),
    ``"probability"`` (the same, after checking the voxels lie in [0, 1]) or ``"labels"``
    (int64, nearest neighbour at the cell centre: only the image's labels occur).
    ``scale`` multiplies the voxel values (after NIfTI's own ``scl_slope``), e.g. 1/255 for
    8-bit maps. ``max_bytes`` bounds the memory of the image's voxels and the grid's arrays.
    """
    if kind not in KINDS:
        raise ValueError(f"read_image(kind={kind!r}): one of {', '.join(KINDS)} is expected")
    image = load_image(path)
    _, affine = image_geometry(image, path)
    needed = 8 * (math.prod(image.shape) + 5 * grid.n_cells)  # float64 voxels; coordinates, sums, output
    if needed > max_bytes:
        raise ImageError(f"{path}: reading {image.shape} voxels onto a {grid.shape} grid needs "
                         f"{needed / 2**20:,.0f} MiB, over the limit of {max_bytes / 2**20:,.0f} MiB")  # fmt: skip
    data = _voxels(image, path, scale)
    if kind == "probability":
        check_probability(data, path)
    to_voxel = np.linalg.solve(affine, grid.world_affine())  # grid index → image voxel index
    if kind == "labels":
        if not np.array_equal(data, np.round(data)):
            raise ImageError(f"{path}: a label map must hold whole numbers")
        return _sample(data, to_voxel, grid, path, offsets=[np.zeros(3)], order=0).astype(np.int64)
    return _sample(data, to_voxel, grid, path, offsets=_sub_cell_offsets(to_voxel, grid), order=1)


def _voxels(image, path, scale: float) -> np.ndarray:
    """The image's voxels as a 3D float64 array times ``scale``; refuses non-finite voxels."""
    try:
        data = np.asarray(image.get_fdata(dtype=np.float64)) * scale
    except Exception as error:  # RGB or otherwise non-scalar voxel types, truncated data
        raise ImageError(f"{path}: its voxels cannot be read as numbers ({type(error).__name__}: {error})") from None
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ImageError(f"{path}: {bad:,} voxels are NaN or infinite; every voxel must be a finite number")
    return data.reshape(data.shape[:3] + (1,) * (3 - min(data.ndim, 3)))


def _sub_cell_offsets(to_voxel: np.ndarray, grid: Grid) -> list[np.ndarray]:
    """Sample offsets (grid index units) inside one cell: the centres of ``s`` equal parts per
    axis, ``s`` the number of image voxels a cell spans along it (1 when refining)."""
    spans = np.linalg.norm(to_voxel[:3, :3], axis=0)[: grid.ndim]
    counts = [max(1, math.ceil(round(float(s), 6))) for s in spans]
    axes = [(np.arange(s) + 0.5) / s - 0.5 for s in counts] + [np.zeros(1)] * (3 - grid.ndim)
    return [np.array(offset) for offset in itertools.product(*axes)]


def _sample(data: np.ndarray, to_voxel, grid: Grid, path, *, offsets, order: int) -> np.ndarray:
    """The mean over ``offsets`` of ``data`` interpolated (spline ``order``) at every grid cell;
    points outside the image's voxels count as 0."""
    from scipy import ndimage  # a jax dependency; imported here, only image input needs it

    index = np.indices(grid.shape, dtype=np.float64).reshape(grid.ndim, -1)
    index = np.vstack([index, np.zeros((3 - grid.ndim, index.shape[1]))])
    linear, shift = to_voxel[:3, :3], to_voxel[:3, 3:]
    total, hits = np.zeros(index.shape[1]), 0
    for offset in offsets:
        points = np.round(linear @ (index + offset[:, None]) + shift, 9)  # exact on aligned grids
        inside = np.all((points >= -0.5) & (points < np.array(data.shape)[:, None] - 0.5), axis=0)
        hits += np.count_nonzero(inside)
        total += np.where(inside, ndimage.map_coordinates(data, points, order=order, mode="nearest"), 0.0)
    if not hits:
        raise ImageError(f"{path}: the grid (world affine {grid.world_affine().tolist()}) does not overlap the image")
    return (total / len(offsets)).reshape(grid.shape)


def write_nifti(path, array, grid: Grid) -> str:
    """Write ``array`` (shape ``grid.shape``; 1D/2D as ``(n, 1, 1)``/``(n0, n1, 1)``) to the NIfTI-1
    file ``path`` (``.nii`` or ``.nii.gz``) with ``grid.world_affine()`` (mm) as its sform and
    qform, atomically: a temporary file in the same directory, then ``os.replace``. Returns the path."""
    import nibabel

    path = os.fspath(path)
    suffix = next((s for s in _SUFFIXES if path.endswith(s)), None)
    if suffix is None:
        raise ImageError(f"{path}: a NIfTI file name ends in {' or '.join(_SUFFIXES)}")
    array = np.asarray(array)
    if array.shape != grid.shape:
        raise ImageError(f"{path}: an array of shape {array.shape} on a grid of shape {grid.shape}")
    data = array.reshape(grid.shape + (1,) * (3 - grid.ndim))
    image = nibabel.Nifti1Image(data, grid.world_affine(), dtype=_nifti_dtype(data))
    image.set_qform(grid.world_affine(), code="aligned")
    image.header.set_xyzt_units("mm")
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        nibabel.save(image, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def _nifti_dtype(data: np.ndarray) -> type:
    """The stored type: the array's own, but labels as int32 where they fit (nibabel refuses an
    implicit int64, which few tools read) and booleans as uint8."""
    if data.dtype == bool:
        return np.uint8
    fits = data.dtype == np.int64 and (data.size == 0 or np.abs(data).max() < 2**31)
    return np.int32 if fits else data.dtype.type


def image_digest(path) -> str:
    """SHA-256 (hex) of the bytes of the file ``path``, for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class InputImage:
    """An input image as a run file records it: where it was, its bytes' SHA-256 and its
    voxel → world affine (mm, 4×4 nested tuples)."""

    path: str
    sha256: str
    affine: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, path) -> InputImage:
        """Describe the image at ``path`` (reads its header and hashes its bytes)."""
        _, affine = image_geometry(load_image(path), path)
        return cls(os.fspath(path), image_digest(path), tuple(tuple(float(v) for v in row) for row in affine))
