"""XDMF 3 sidecar describing a trajectory's HDF5 datasets, for ParaView/VisIt."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from ._reader import open_trajectory


def write_xdmf(h5_path: str, xdmf_path: str | None = None) -> str | None:
    """Write ``<h5 stem>.xdmf`` next to ``h5_path`` for its first ``n_committed`` frames.

    The grid is a rectilinear mesh of cell centres (``Node`` centring on the centre
    coordinates); each saved time is one grid of a temporal collection, and each
    field a hyperslab of its ``(T, ...)`` dataset. The coordinates and the constant fields
    (``/constant/<name>``, stored once) are Domain-level items that every frame references,
    so a viewer shows a constant at every time without the file or the sidecar repeating it.
    Every reference carries the ``Dimensions`` of the item it points at: VTK's XDMF 2 reader (ParaView's)
    prints "Dimensions of Attribute not set" once per frame for an attribute whose data item does not
    say them.

    Returns the sidecar's path, or None — writing none, and removing a sidecar of that name left by an
    earlier run — for 1D grids (XDMF has no 1D rectilinear topology) and for files that hold no
    time-dependent field (sweep members that store scalars only: a viewer has nothing to show).
    """
    default = xdmf_path is None
    xdmf_path = xdmf_path or os.path.splitext(h5_path)[0] + ".xdmf"
    href = os.path.basename(h5_path)
    with open_trajectory(h5_path) as run:
        n, t, axes = run.n_committed, run.t, list(run.axes)
        shape = tuple(len(run.coordinates[a]) for a in axes)
        fields = list(run.field_names)
        dtypes = {name: run.fields[name].dtype for name in fields}
        constants = {name: run.constants[name].dtype for name in run.constants}
    if len(axes) < 2 or not fields:
        if default and os.path.isfile(xdmf_path):
            os.unlink(xdmf_path)  # it described another run's file of this name
        return None

    dims = " ".join(map(str, shape))
    topology_type = "3DRectMesh" if len(shape) == 3 else "2DRectMesh"
    shared = ET.Element("Shared")  # written once, referenced by every frame
    for name in reversed(axes):  # XDMF lists rectilinear coordinates fastest axis first: x, y[, z]
        _hdf_item(shared, f"{href}:/{name}", str(shape[axes.index(name)]), np.dtype("f8"), Name=f"coordinate {name}")
    for name, dtype in constants.items():
        _hdf_item(shared, f"{href}:/constant/{name}", dims, dtype, Name=f"constant {name}")
    tmp = xdmf_path + ".tmp"
    # one frame's element at a time: a long run has tens of thousands of frames
    with open(tmp, "w") as f:
        f.write('<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n')
        f.write('<Xdmf Version="3.0">\n  <Domain>\n')
        for item in shared:
            ET.indent(item, space="  ", level=2)
            f.write("    " + ET.tostring(item, encoding="unicode").rstrip() + "\n")
        f.write('    <Grid Name="trajectory" GridType="Collection" CollectionType="Temporal">\n')
        for k in range(n):
            grid = _frame(k, float(t[k]), href, axes, shape, dims, topology_type, fields, dtypes, constants, n)
            ET.indent(grid, space="  ", level=3)
            f.write("      " + ET.tostring(grid, encoding="unicode").rstrip() + "\n")
        f.write("    </Grid>\n  </Domain>\n</Xdmf>\n")
    os.replace(tmp, xdmf_path)
    return xdmf_path


def _hdf_item(parent: ET.Element, source: str, dims: str, dtype: np.dtype, **attrs) -> ET.Element:
    """A ``DataItem`` reading the HDF5 dataset ``source`` (``file.h5:/path``) of shape ``dims``."""
    number = "Float" if np.dtype(dtype).kind == "f" else "Int"
    item = ET.SubElement(parent, "DataItem", **attrs, Dimensions=dims, NumberType=number,
                         Precision=str(np.dtype(dtype).itemsize), Format="HDF")  # fmt: skip
    item.text = source
    return item


def _reference(parent: ET.Element, name: str, dims: str) -> ET.Element:
    """A ``DataItem`` that points at the Domain-level item ``name`` (the data is read once), of shape ``dims``."""
    item = ET.SubElement(parent, "DataItem", Reference="XML", Dimensions=dims)
    item.text = f'/Xdmf/Domain/DataItem[@Name="{name}"]'
    return item


def _frame(k, time, href, axes, shape, dims, topology_type, fields, dtypes, constants, n) -> ET.Element:
    grid = ET.Element("Grid", Name=f"frame{k}", GridType="Uniform")
    ET.SubElement(grid, "Time", Value=repr(time))
    ET.SubElement(grid, "Topology", TopologyType=topology_type, Dimensions=dims)
    geometry = ET.SubElement(grid, "Geometry", GeometryType="VXVYVZ" if len(shape) == 3 else "VXVY")
    for name in reversed(axes):
        _reference(geometry, f"coordinate {name}", str(shape[axes.index(name)]))
    for name in fields:
        attribute = ET.SubElement(grid, "Attribute", Name=name, AttributeType="Scalar", Center="Node")
        hyperslab = ET.SubElement(attribute, "DataItem", ItemType="HyperSlab", Dimensions=dims, Type="HyperSlab")
        selection = ET.SubElement(hyperslab, "DataItem", Dimensions=f"3 {len(shape) + 1}", Format="XML")
        selection.text = "\n".join(
            [
                " ".join(map(str, [k] + [0] * len(shape))),  # start
                " ".join(["1"] * (len(shape) + 1)),  # stride
                " ".join(map(str, (1, *shape))),  # count
            ]
        )
        _hdf_item(hyperslab, f"{href}:/{name}", " ".join(map(str, (n, *shape))), dtypes[name])
    for name in constants:
        attribute = ET.SubElement(grid, "Attribute", Name=name, AttributeType="Scalar", Center="Node")
        _reference(attribute, f"constant {name}", dims)
    return grid
