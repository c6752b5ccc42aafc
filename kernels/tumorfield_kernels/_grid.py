"""Cell-centred Cartesian grids in physical units (mm)."""

from __future__ import annotations

import math

import equinox as eqx
import numpy as np

_AXIS_NAMES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}


class Grid(eqx.Module):
    """A uniform cell-centred grid on the box ``[0, length[0]] × … `` (mm).

    Array axes follow ``shape``: in 2D ``(ny, nx)``, in 3D ``(nz, ny, nx)``.
    Cell ``i`` along an axis of ``n`` cells and side ``L`` has its centre at
    ``(i + 1/2) L / n``. Everything here is static: a grid is part of what a
    compiled simulation is specialised on.
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    length: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, shape, length):
        self.shape = tuple(int(n) for n in shape)
        if np.ndim(length) == 0:
            length = (float(length),) * len(self.shape)
        self.length = tuple(float(side) for side in length)

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
