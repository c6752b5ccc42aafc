"""Trajectory files (HDF5, format ``tumorfield-trajectory/2``): reading, and the XDMF sidecar.

:func:`open_trajectory` is the one reader of the format (layout in
:mod:`tumorfield.io._reader`); analysis scripts need nothing else of tumorfield.
The writer (:mod:`tumorfield.io._writer`) is internal to ``tumorfield run``.
"""

from ._reader import NotATrajectory as NotATrajectory
from ._reader import StoredArrays as StoredArrays
from ._reader import StoredField as StoredField
from ._reader import StoredTrajectory as StoredTrajectory
from ._reader import open_trajectory as open_trajectory
from ._writer import FORMAT as FORMAT
from ._writer import STATUSES as STATUSES
from .xdmf import write_xdmf as write_xdmf

__all__ = [
    "FORMAT",
    "STATUSES",
    "NotATrajectory",
    "StoredArrays",
    "StoredField",
    "StoredTrajectory",
    "open_trajectory",
    "write_xdmf",
]
