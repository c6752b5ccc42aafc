"""Trajectory files (HDF5, format ``tumorfield-trajectory/2``): reading, and the XDMF sidecar.

:func:`open_trajectory` is the one reader of the format (layout in
:mod:`tumorfield.io._reader`); analysis scripts need nothing else of tumorfield.
The writer (:mod:`tumorfield.io._writer`) is internal to ``tumorfield run``; :func:`write_trajectory`
writes a run made through the API (``tumorfield.simulate``) in the same format.
Images (NIfTI) in and out: :func:`read_image`, :func:`write_nifti` (:mod:`tumorfield.io._image`).
"""

from ._api_run import write_trajectory as write_trajectory
from ._image import ImageError as ImageError
from ._image import InputImage as InputImage
from ._image import check_probability as check_probability
from ._image import image_digest as image_digest
from ._image import read_image as read_image
from ._image import write_nifti as write_nifti
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
    "ImageError",
    "InputImage",
    "NotATrajectory",
    "StoredArrays",
    "StoredField",
    "StoredTrajectory",
    "check_probability",
    "image_digest",
    "open_trajectory",
    "read_image",
    "write_nifti",
    "write_trajectory",
    "write_xdmf",
]
