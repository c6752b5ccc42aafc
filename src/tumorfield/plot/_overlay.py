"""``<field>_overlay.png``: the last frame of a run on an image-based grid drawn over its anatomy,
as neuro-imaging viewers show a tumour: orthogonal slices through the tumour's centre of mass
(one slice in 2D), the anatomy in grey, the field in colour, transparent where it is small, with
contour lines at 0.16 and 0.8 (the detection thresholds of T2/FLAIR and T1-Gd in glioma models),
axes in world mm through the grid's affine."""

from __future__ import annotations

import os

import numpy as np

from ..io import ImageError, StoredTrajectory, image_digest, read_image
from ._common import units_label

CONTOURS = (0.16, 0.8)
"""Contour levels of the overlay (fractions of the carrying capacity)."""
GRID_IMAGE = "grid.image"
_WORLD = ("x", "y", "z")
_VOXEL = ("i", "j", "k")


def wants_overlay(run: StoredTrajectory) -> bool:
    """Whether ``run`` is image-based: its grid came from an image (``grid.image``) or is placed in world
    space by an affine other than a box's own; 1D runs and plain boxes get no overlay."""
    return len(run.axes) >= 2 and (GRID_IMAGE in run.input_images or run.grid.affine is not None)


def overlay_fields(run: StoredTrajectory) -> list[str]:
    """The fields drawn over the anatomy: ``tumor`` if the model has it, else every grid field."""
    return ["tumor"] if "tumor" in run.fields else list(run.field_names)


def _anatomy(run: StoredTrajectory) -> tuple[np.ndarray | None, str]:
    """The anatomy on the run's grid (``grid.image``, else the first input image) and a note for the
    title: which image, or why there is none (missing, unreadable, changed since the run)."""
    images = run.input_images
    key = GRID_IMAGE if GRID_IMAGE in images else next(iter(images), None)
    if key is None:
        return None, "no anatomy image recorded"
    image = images[key]
    name = os.path.basename(image.path)
    try:
        data = read_image(image.path, run.grid)
    except (OSError, ImageError) as error:
        return None, f"anatomy {name} not readable ({type(error).__name__})"
    changed = image_digest(image.path) != image.sha256
    return data, f"anatomy {name} ({key})" + (", CHANGED since the run" if changed else "")


def _axis_aligned(affine: np.ndarray) -> bool:
    """Whether every voxel axis of ``affine`` runs along one world axis (flips and permutations allowed)."""
    linear = affine[:3, :3]
    return all(np.count_nonzero(np.abs(linear[:, a]) > 1e-9 * np.abs(linear[:, a]).max()) == 1 for a in range(3))


def _axis(affine: np.ndarray, a: int, n: int, world: bool) -> tuple[tuple[float, float], bool, str]:
    """Array axis ``a`` of ``n`` cells as a panel axis: its (low, high) edges, whether the data must be
    flipped to run low → high, and its label."""
    if not world:
        return (-0.5, n - 0.5), False, f"{_VOXEL[a]} (voxel)"
    w = _world_axis(affine, a)
    scale, offset = affine[w, a], affine[w, 3]
    edges = (offset + scale * -0.5, offset + scale * (n - 0.5))
    return (min(edges), max(edges)), scale < 0, f"{_WORLD[w]} (mm)"


def centre_of_mass(frame: np.ndarray) -> tuple[int, ...]:
    """The cell nearest the centre of mass of ``frame`` (its positive part); the middle if it is empty."""
    weight = np.clip(np.nan_to_num(frame), 0, None)
    total = float(weight.sum())
    if total <= 0:
        return tuple(n // 2 for n in frame.shape)
    index = np.indices(frame.shape).reshape(frame.ndim, -1)
    centre = index @ weight.ravel() / total
    return tuple(int(np.clip(round(float(c)), 0, n - 1)) for c, n in zip(centre, frame.shape, strict=True))


def _world_axis(affine: np.ndarray, a: int) -> int:
    return int(np.argmax(np.abs(affine[:3, a])))


def _panels(frame: np.ndarray, centre: tuple[int, ...], affine: np.ndarray, world: bool) -> list[tuple]:
    """``(cut axis, horizontal axis, vertical axis, index)`` of every panel (array axes): one slice in 2D;
    in 3D three, ordered axial, coronal, sagittal where the affine is axis-aligned (the cut along world
    z, y, x; the lower world axis of the other two horizontal: x–y, x–z, y–z), else along k, j, i."""
    key = (lambda a: _world_axis(affine, a)) if world else (lambda a: a)
    if frame.ndim == 2:
        h, v = sorted((0, 1), key=key)
        return [(None, h, v, (slice(None), slice(None)))]
    out = []
    for cut in sorted(range(3), key=key, reverse=True):
        h, v = sorted((a for a in range(3) if a != cut), key=key)
        index = [slice(None)] * 3
        index[cut] = centre[cut]
        out.append((cut, h, v, tuple(index)))
    return out


def plot_overlay(plt, run: StoredTrajectory, name: str, directory: str, save) -> str:
    """``directory/<name>_overlay.png``: the last frame of ``name`` over the anatomy (see the module)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    field, grid = run.field(name), run.grid
    frame = np.asarray(field[-1], dtype=np.float64)
    anatomy, note = _anatomy(run)
    affine = grid.world_affine()
    world = _axis_aligned(affine)
    centre = centre_of_mass(frame)
    top = max(float(np.nanmax(frame)), max(CONTOURS))
    norm, cmap = Normalize(0.0, top), colormaps["plasma"]
    panels = _panels(frame, centre, affine, world)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(3.6 * len(panels) + 1.4, 6.4), 4.2), squeeze=False)
    fig.subplots_adjust(left=0.9 / fig.get_figwidth(), right=1 - 1.3 / fig.get_figwidth(), bottom=0.14, top=0.76,
                        wspace=0.35)  # fmt: skip
    grey = None
    if anatomy is not None:
        lo, hi = np.percentile(anatomy, [1, 99.5]) if np.ptp(anatomy) > 0 else (0.0, 1.0)
        grey = Normalize(float(lo), float(hi) if hi > lo else float(lo) + 1)
    for ax, (cut, h, v, index) in zip(axes[0], panels, strict=True):
        (h_edges, h_flip, h_label), (v_edges, v_flip, v_label) = (
            _axis(affine, h, grid.shape[h], world), _axis(affine, v, grid.shape[v], world))  # fmt: skip
        layers = [frame[index]] + ([anatomy[index]] if anatomy is not None else [])
        layers = [plane.T if h < v else plane for plane in layers]  # rows: vertical axis, columns: horizontal
        layers = [np.flip(p, 1) if h_flip else p for p in layers]
        layers = [np.flip(p, 0) if v_flip else p for p in layers]
        tumour, background = layers[0], (layers[1] if anatomy is not None else None)
        extent = (*h_edges, *v_edges)
        if background is not None:
            ax.imshow(background, cmap="gray", norm=grey, origin="lower", extent=extent, interpolation="nearest")
        else:
            ax.set_facecolor("black")
        rgba = cmap(norm(tumour))
        rgba[..., 3] = np.clip(tumour / (0.5 * top), 0.0, 1.0) * 0.85  # transparent where the tumour is small
        ax.imshow(rgba, origin="lower", extent=extent, interpolation="nearest")
        levels = [c for c in CONTOURS if np.nanmin(tumour) < c < np.nanmax(tumour)]
        if levels:
            hs = np.linspace(*h_edges, tumour.shape[1] + 1)
            vs = np.linspace(*v_edges, tumour.shape[0] + 1)
            ax.contour(0.5 * (hs[1:] + hs[:-1]), 0.5 * (vs[1:] + vs[:-1]), tumour, levels=levels,
                       colors=["cyan", "white"][: len(levels)] if levels[0] == CONTOURS[0] else ["white"],
                       linewidths=1.0)  # fmt: skip
        ax.set_xlim(*h_edges)
        ax.set_ylim(*v_edges)
        ax.set_aspect("equal")
        ax.set_xlabel(h_label, fontsize=8)
        ax.set_ylabel(v_label, fontsize=8)
        ax.tick_params(labelsize=7)
        if cut is not None:
            where = _slice_position(affine, cut, centre, world)
            ax.set_title(where, fontsize=8)
        ax.set_gid(f"overlay:{'' if cut is None else grid.axis_names[cut]}")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes[0].tolist(), label=f"{name} ({units_label(field.units)})",
                 shrink=0.85)  # fmt: skip
    contours = ", ".join(f"{c:g}" for c in CONTOURS)
    frame_note = "" if world else "; oblique affine: axes in voxel indices"
    fig.suptitle(f"{field.long_name} at t = {run.t[-1]:.4g} day\n{note}\ncontours at {contours}{frame_note}",
                 fontsize=9)  # fmt: skip
    return save(plt, fig, os.path.join(directory, f"{name}_overlay.png"), [name])


def _slice_position(affine: np.ndarray, cut: int, centre: tuple[int, ...], world: bool) -> str:
    """Title of a 3D panel: where its slice lies (world mm along the cut's world axis, or its voxel index)."""
    if not world:
        return f"{_VOXEL[cut]} = {centre[cut]}"
    w = _world_axis(affine, cut)
    position = affine[:3, :3] @ np.asarray(centre, dtype=np.float64) + affine[:3, 3]
    return f"{_WORLD[w]} = {position[w]:.4g} mm"
