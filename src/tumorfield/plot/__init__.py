"""Figures and movies of trajectory files (matplotlib on the Agg backend: no display needed).

Everything here reads through :func:`tumorfield.io.open_trajectory`.

- :func:`plot_file`: ``tumorfield plot`` (field snapshots, 3D slices and projections, the
  constant maps once, the time series once each);
- :func:`write_movie`: ``tumorfield plot --movie`` (MP4 through imageio-ffmpeg, GIF fallback);
- :func:`compare_files`: ``tumorfield compare`` (the arms of a study on shared axes).
"""

from ._common import PlotError as PlotError
from ._common import series as series
from ._compare import STUDY_SERIES as STUDY_SERIES
from ._compare import compare_files as compare_files
from ._figures import DESCRIPTION as DESCRIPTION
from ._figures import plot_file as plot_file
from ._movie import ffmpeg_available as ffmpeg_available
from ._movie import write_movie as write_movie

__all__ = [
    "DESCRIPTION",
    "STUDY_SERIES",
    "PlotError",
    "compare_files",
    "ffmpeg_available",
    "plot_file",
    "series",
    "write_movie",
]
