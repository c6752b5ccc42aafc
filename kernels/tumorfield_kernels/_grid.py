"""Cell-centred Cartesian grids in physical units (mm), optionally placed in world space by an affine."""

from __future__ import annotations

import math
import os

import equinox as eqx
import numpy as np

_AXIS_NAMES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
_TOLERANCE = 1e-5  # relative; NIfTI stores affines in float32
_MM_PER_UNIT = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 1e-3}  # NIfTI's default unit is mm


class ImageError(ValueError):
    """An image file that cannot be used (its message names the file and the rule it breaks)."""


class Grid(eqx.Module):
    """A uniform cell-centred grid on the box ``[0, length[0]] × … `` (mm).

    Array axes follow ``shape``: in 2D ``(ny, nx)``, in 3D ``(nz, ny, nx)``.
    Cell ``i`` along an axis of ``n`` cells and side ``L`` has its centre at
    ``(i + 1/2) L / n``. Everything here is static: a grid is part of what a
    compiled simulation is specialised on.

    ``affine`` (optional, 4×4 as nested tuples) places the grid in world space (mm),
    NIfTI convention: it maps the array index ``(i0, i1, i2, 1)`` to world ``(x, y, z, 1)``;
    array axis ``a`` *is* voxel axis ``a`` of an image (i, j, k in order; a 2D grid is
    a one-voxel-thick slab ``(i, j, 0)``), so the axis names above are labels, not world
    directions. Its voxel columns must be orthogonal (rotations, flips and permutations are
    fine, shear is refused) with lengths equal to :attr:`spacing`. The physics never sees
    it: it only says where the box lies. None is the box itself (:meth:`world_affine`).
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    length: tuple[float, ...] = eqx.field(static=True)
    affine: tuple[tuple[float, ...], ...] | None = eqx.field(static=True, default=None)

    def __init__(self, shape, length, affine=None):
        self.shape = tuple(int(n) for n in shape)
        if np.ndim(length) == 0:
            length = (float(length),) * len(self.shape)
        self.length = tuple(float(side) for side in length)
        self.affine = None if affine is None else tuple(tuple(float(v) for v in row) for row in np.asarray(affine))

    def __check_init__(self):
        if len(self.shape) not in (1, 2, 3):
            raise ValueError(f"Grid.shape={self.shape}: 1, 2 or 3 axes are allowed")
        if len(self.length) != len(self.shape):
            raise ValueError(
                f"Grid.length={self.length} has {len(self.length)} entries, "
                f"Grid.shape={self.shape} has {len(self.shape)}: they must match"
            )
        if any(n < 2 for n in self.shape):
            raise ValueError(f"Grid.shape={self.shape}: every axis needs at least 2 cells")
        if any(not (side > 0 and math.isfinite(side)) for side in self.length):
            raise ValueError(f"Grid.length={self.length}: every side must be a positive length in mm")
        if self.affine is not None:
            _check_affine(np.array(self.affine), self.spacing)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Cell widths (mm) per axis."""
        return tuple(side / n for side, n in zip(self.length, self.shape, strict=True))

    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def cell_volume(self) -> float:
        """Cell area (mm², 2D) or volume (mm³, 3D)."""
        return math.prod(self.spacing)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return _AXIS_NAMES[self.ndim]

    def coordinates(self, axis: int) -> np.ndarray:
        """Cell-centre coordinates (mm) along ``axis``, float64."""
        n, dx = self.shape[axis], self.spacing[axis]
        return (np.arange(n) + 0.5) * dx

    def mesh(self) -> tuple[np.ndarray, ...]:
        """Cell-centre coordinates broadcast to the full grid (``indexing='ij'``)."""
        return tuple(np.meshgrid(*(self.coordinates(a) for a in range(self.ndim)), indexing="ij"))

    def world_affine(self) -> np.ndarray:
        """The 4×4 affine (float64) from array index to world coordinates (mm): the stored one, or
        for a box identity orientation with the grid spacing, the corner at the origin (cell
        centre ``i`` at ``(i + 1/2) Δx``); a 1D or 2D box's missing axes are 1 mm voxels at 0."""
        if self.affine is not None:
            return np.array(self.affine)
        affine = np.eye(4)
        for a, dx in enumerate(self.spacing):
            affine[a, a], affine[a, 3] = dx, dx / 2
        return affine

    def world_coordinates(self, n: int | None = None) -> np.ndarray:
        """World coordinates (mm) of the cell centres, ``(n, *shape)`` float64: the first ``n`` (default:
        as many as the grid has axes) of ``world_affine() @ [index, 0…, 1]`` — on a 2D grid (one slice of
        an image) the two in-plane coordinates."""
        index = np.indices(self.shape, dtype=np.float64).reshape(self.ndim, -1)
        index = np.vstack([index, np.zeros((3 - self.ndim, index.shape[1])), np.ones((1, index.shape[1]))])
        world = (self.world_affine() @ index)[: n or self.ndim]
        return world.reshape((len(world), *self.shape))

    @classmethod
    def from_image(cls, path, resample=None, *, max_cells: int = 2**30) -> Grid:
        """The grid of the NIfTI (or other nibabel) image at ``path``: its shape, voxel size (mm)
        and affine; shape ``(n0, n1)`` or ``(n0, n1, 1)`` gives a 2D grid. ``resample = f``
        multiplies the voxel size by ``f`` (in plane only for 2D): ``ceil(n / f)`` cells per
        axis, the new box keeping the image's corner (so it may reach past the far side by less
        than one new voxel). Raises :class:`ImageError` naming the file."""
        shape, affine = image_geometry(load_image(path), path)
        try:
            factor = 1.0 if resample is None else float(resample)
        except (TypeError, ValueError):
            factor = math.nan  # refused just below, naming the file
        if not (factor > 0 and math.isfinite(factor)):
            raise ImageError(f"{path}: resample={resample!r}: the voxel size factor must be positive")
        shape = tuple(math.ceil(round(n / factor, 9)) for n in shape)
        if min(shape) < 2 or math.prod(shape) > max_cells:
            raise ImageError(f"{path}: resample={resample!r} gives {shape}; a grid needs 2 to "
                             f"{max_cells:,} cells in all and at least 2 per axis")  # fmt: skip
        factors = [factor] * len(shape) + [1.0] * (3 - len(shape))
        scaled = affine @ _voxel_scaling(factors)
        voxel = np.linalg.norm(scaled[:3, : len(shape)], axis=0)
        try:
            return cls(shape, [n * v for n, v in zip(shape, voxel, strict=True)], scaled)
        except ValueError as error:
            raise ImageError(f"{path}: {error}") from None


def _voxel_scaling(factors) -> np.ndarray:
    """Voxel index of voxels ``factors`` times larger → old voxel index, the boxes' corners
    (old index −1/2) kept: new centre ``i`` lies at old ``(i + 1/2) f − 1/2``."""
    scaling = np.eye(4)
    for a, f in enumerate(factors):
        scaling[a, a], scaling[a, 3] = f, (f - 1) / 2
    return scaling


def _check_affine(affine: np.ndarray, spacing: tuple[float, ...]) -> None:
    """ValueError unless ``affine`` is a finite 4×4 affine with orthogonal voxel columns whose
    lengths are ``spacing`` (mm) on the grid's axes."""
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"Grid.affine={affine.tolist()}: a finite 4×4 affine with last row (0, 0, 0, 1) is needed")
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    cosines = (columns.T @ columns) / np.outer(norms, norms) if norms.all() else np.ones((3, 3))
    if np.abs(cosines - np.eye(3)).max() > _TOLERANCE:
        raise ValueError(f"Grid.affine={affine.tolist()}: the voxel axes must be orthogonal and non-zero "
                         "(sheared voxels are not a Cartesian grid); resample the image first")  # fmt: skip
    if not np.allclose(norms[: len(spacing)], spacing, rtol=_TOLERANCE, atol=0):
        raise ValueError(f"Grid.affine has voxel sizes {norms[: len(spacing)].tolist()} mm, "
                         f"Grid.length / Grid.shape = {list(spacing)} mm: they must match")  # fmt: skip


def load_image(path):
    """The image at ``path`` opened with nibabel (imported here: only image input needs it);
    its voxels stay on disk until read. :class:`ImageError` if it is missing or not an image."""
    import nibabel

    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    try:
        image = nibabel.load(path)
    except Exception as error:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ...
        raise ImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    if not isinstance(image, nibabel.spatialimages.SpatialImage):
        raise ImageError(f"{path}: not a volume image ({type(image).__name__}); NIfTI .nii/.nii.gz is expected")
    return image


def image_geometry(image, path) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid shape (2 or 3 axes) and the voxel → world (mm) affine of a nibabel ``image``;
    :class:`ImageError` for 1D, 4D and singular images."""
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageError(f"{path}: a {len(shape)}D image of shape {shape}; one 2D or 3D volume is needed")
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) < 2:
        raise ImageError(f"{path}: an image of shape {shape}; one 2D or 3D volume is needed")
    units = image.header.get_xyzt_units()[0] if hasattr(image.header, "get_xyzt_units") else "mm"
    affine = np.array(image.affine, dtype=np.float64)
    affine[:3] *= _MM_PER_UNIT.get(units, 1.0)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageError(f"{path}: its affine {affine.tolist()} is not finite or is singular")
    return shape, affine
