"""Figures from a trajectory file: field snapshots and scalar time series (PNG, Agg)."""

from __future__ import annotations

import os
import textwrap

import h5py
import numpy as np


def _frames_to_show(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def plot_file(path: str, directory: str, n_snapshots: int = 4) -> list[str]:
    """Write ``<field>.png`` (snapshots; mid-plane z-slices in 3D) for every field and
    ``scalars.png`` (time series) into ``directory``; returns the paths written.

    Only the first ``n_committed`` frames are read, so partial runs plot too.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    with h5py.File(path, "r") as h5:
        n = int(h5.attrs["n_committed"])
        t = h5["t"][:n]
        axes = [a for a in ("z", "y", "x") if a in h5]
        fields = [
            name
            for name, ds in h5.items()
            if isinstance(ds, h5py.Dataset) and name not in ("t", *axes) and ds.ndim == 1 + len(axes)
        ]
        series = {
            name: (t, h5[name][:n], h5[name].attrs.get("units", ""))
            for name, ds in h5.items()
            if isinstance(ds, h5py.Dataset) and name not in ("t", *axes) and ds.ndim == 1
        }
        if "scalars" in h5:
            s = int(h5.attrs.get("n_scalars_committed", h5["scalars/t"].shape[0]))
            st = h5["scalars/t"][:s]
            for name, ds in h5["scalars"].items():
                if name != "t":
                    series[name] = (st, ds[:s], ds.attrs.get("units", ""))
        if n == 0:
            raise ValueError(f"{path}: no committed frames to plot")
        shown = _frames_to_show(n, n_snapshots)
        x = h5["x"][:] if "x" in h5 else None
        y = h5["y"][:] if "y" in h5 else None
        for name in fields:
            ds = h5[name]
            frames = [ds[k] for k in shown]
            if len(axes) == 3:
                frames = [f[f.shape[0] // 2] for f in frames]
            units = ds.attrs.get("units", "")
            fig, panels = plt.subplots(
                1, len(shown), figsize=(3.0 * len(shown) + 1.2, 3.2), squeeze=False, sharey=True, layout="constrained"
            )
            lo = min(float(np.nanmin(f)) for f in frames)
            hi = max(float(np.nanmax(f)) for f in frames)
            for ax, k, frame in zip(panels[0], shown, frames, strict=True):
                if frame.ndim == 1:
                    ax.plot(x, frame)
                    ax.set_ylim(lo, hi if hi > lo else lo + 1)
                    ax.set_xlabel("x (mm)")
                    image = None
                else:
                    extent = (0, x[-1] + x[0], 0, y[-1] + y[0])
                    image = ax.imshow(frame, origin="lower", extent=extent, vmin=lo, vmax=hi if hi > lo else lo + 1)
                    ax.set_xlabel("x (mm)")
                    if ax is panels[0][0]:
                        ax.set_ylabel("y (mm)")
                ax.set_title(f"t = {t[k]:.4g} day")
            if image is not None:
                fig.colorbar(image, ax=panels[0].tolist(), label=f"{name} ({units})", shrink=0.85)
            fig.suptitle(str(ds.attrs.get("long_name", name)) + (" (mid-plane z-slice)" if len(axes) == 3 else ""))
            out = os.path.join(directory, f"{name}.png")
            fig.savefig(out, dpi=100)
            plt.close(fig)
            written.append(out)
        if series:
            # a grid of small panels: models record tens of diagnostics
            ncols = min(4, len(series))
            nrows = -(-len(series) // ncols)
            fig, panels = plt.subplots(
                nrows, ncols, figsize=(3.6 * ncols, 2.4 * nrows), sharex=True, squeeze=False, layout="constrained"
            )
            for ax, (name, (ts, values, units)) in zip(panels.flat, series.items(), strict=False):
                ax.plot(ts, values)
                ax.set_title(name, fontsize=9)
                ax.set_ylabel(textwrap.shorten(str(units), 28, placeholder="…"), fontsize=8)
                ax.tick_params(labelsize=7)
            for ax in panels.flat[len(series) :]:
                ax.set_visible(False)
            for ax in panels[-1]:
                ax.set_xlabel("t (day)")
            out = os.path.join(directory, "scalars.png")
            fig.savefig(out, dpi=100)
            plt.close(fig)
            written.append(out)
    return written
