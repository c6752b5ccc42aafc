"""``tumorfield plot --movie``: chosen fields over every committed frame, as MP4 (H.264 through
imageio-ffmpeg) or, where no ffmpeg is available, an animated GIF."""

from __future__ import annotations

import os

import numpy as np

from ..io import StoredTrajectory
from ._common import PlotError, colour_range, extent, gaps, open_with_frames, pyplot, units_label
from ._figures import projections

FPS = 8


def ffmpeg_available() -> bool:
    """Whether imageio-ffmpeg and its ffmpeg binary are installed."""
    try:
        import imageio_ffmpeg

        return os.path.exists(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError, OSError):
        return False


def check_fields(run: StoredTrajectory, names) -> list[str]:
    """``names`` (default: every grid field) checked against the run's fields; :class:`PlotError`
    naming the unknown ones and the allowed ones."""
    names = list(names or run.field_names)
    unknown = [n for n in names if n not in run.fields]
    if unknown:
        raise PlotError(
            f"{run.path}: --movie: no field {', '.join(map(repr, unknown))}; the fields of this run are "
            f"{', '.join(run.field_names) or '(none)'}"
        )
    return names


def write_movie(path: str, out_stem: str, fields=None, fps: int = FPS, fmt: str | None = None) -> str:
    """Write ``<out_stem>.mp4`` (or ``.gif``) of ``fields`` of the trajectory ``path``: one frame per
    committed frame, one panel per field on its own colour scale fixed over the run (3D: the
    maximum-intensity projection along z). ``fmt``: ``"mp4"``, ``"gif"`` or None (MP4 if ffmpeg
    is available, else GIF). Returns the path written."""
    import imageio.v2 as imageio

    fmt = fmt or ("mp4" if ffmpeg_available() else "gif")
    if fmt not in ("mp4", "gif"):
        raise PlotError(f"movie format {fmt!r}: must be 'mp4' or 'gif'")
    plt = pyplot()
    with open_with_frames(path) as run:
        names = check_fields(run, fields)
        three_d = len(run.axes) == 3
        if len(run.axes) < 2:
            raise PlotError(f"{path}: --movie needs a 2D or 3D grid (this run is 1D)")
        ranges = {name: _range(run.field(name), three_d) for name in names}
        ncols = min(3, len(names))
        nrows = -(-len(names) // ncols)
        fig, panels = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.6, 3.0 * nrows + 0.5), squeeze=False)
        fig.subplots_adjust(**gaps(fig))
        images = {}
        for ax, name in zip(panels.flat, names, strict=False):
            lo, hi = ranges[name]
            images[name] = ax.imshow(_plane(run.field(name)[0], three_d), origin="lower", vmin=lo, vmax=hi,
                                     extent=extent(run, "x", "y"))  # fmt: skip
            ax.set_title(name + (" (max over z)" if three_d else ""), fontsize=9)
            ax.set_xlabel("x (mm)", fontsize=8)
            ax.set_ylabel("y (mm)", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(images[name], ax=ax, label=units_label(run.field(name).units, 20), shrink=0.85)
        for ax in panels.flat[len(names) :]:
            ax.set_visible(False)
        title = fig.suptitle("")
        out = f"{out_stem}.{fmt}"
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        options = {"fps": fps, "codec": "libx264", "quality": 7, "macro_block_size": 1} if fmt == "mp4" else \
            {"duration": 1000 / fps, "loop": 0}  # fmt: skip
        try:
            with imageio.get_writer(out, format="FFMPEG" if fmt == "mp4" else "GIF", **options) as writer:
                for k in range(run.n_committed):
                    for name in names:
                        images[name].set_data(_plane(run.field(name)[k], three_d))
                    title.set_text(f"t = {run.t[k]:.4g} day")
                    writer.append_data(_rgb(fig))
        finally:
            plt.close(fig)
    return out


def _plane(frame: np.ndarray, three_d: bool) -> np.ndarray:
    return projections(frame)["z"] if three_d else frame


def _range(field, three_d: bool) -> tuple[float, float]:
    """The colour range of a field over every frame (frame by frame: a long run does not fit in memory)."""
    return colour_range([_plane(field[k], three_d) for k in range(len(field))])


def _rgb(fig) -> np.ndarray:
    """The figure as an ``(h, w, 3)`` uint8 image, cropped to even sizes (H.264 with yuv420p needs them)."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
