"""Saving and loading stage outputs: tables (CSV, + Parquet when pyarrow is installed) and volumes (OME-Zarr).

Every writer is atomic (:func:`tomo4d.io.atomic_output` underneath) and returns the written paths
relative to the run folder, as the done-markers list them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .stage import rel

__all__ = ["has_parquet", "load_labels", "read_table_of", "read_volume", "save_float_volume", "save_label_volume",
           "write_tables"]


def has_parquet() -> bool:
    """pyarrow is installed: tables are also written as Parquet."""
    return importlib.util.find_spec("pyarrow") is not None


def write_tables(table, out: Path, name: str) -> tuple[str, ...]:
    """``tables/<name>.csv`` (always) and ``tables/<name>.parquet`` (with pyarrow)."""
    from ..quantify import write_table

    suffixes = (".parquet", ".csv") if has_parquet() else (".csv",)
    return tuple(rel(out, write_table(table, out / "tables" / f"{name}{s}", overwrite=True)) for s in suffixes)


def read_table_of(out: Path, name: str):
    """``tables/<name>`` as ``{column: array}`` (Parquet when present, else CSV), or None."""
    from ..quantify import read_table

    for suffix in (".parquet", ".csv"):
        p = out / "tables" / f"{name}{suffix}"
        if p.exists() and (suffix == ".csv" or has_parquet()):
            return read_table(p)
    return None


def read_volume(path: Path, voxel_size_nm=None):
    """A volume file as a :class:`~tomo4d.volume.Volume` (numpy), voxel size overridden when given."""
    from ..io import open_volume

    return open_volume(path, voxel_size_nm=voxel_size_nm).compute()


def save_label_volume(labels: np.ndarray, out: Path, name: str, voxel_size_nm, title: str) -> str:
    """``volumes/<name>.ome.zarr`` of integer labels (napari-compatible)."""
    from ..segment import save_labels

    return rel(out, save_labels(labels, out / "volumes" / f"{name}.ome.zarr", voxel_size_nm=voxel_size_nm,
                                name=title, overwrite=True))


def save_float_volume(data: np.ndarray, out: Path, name: str, voxel_size_nm, title: str) -> str:
    """``volumes/<name>.ome.zarr`` of a float32 map."""
    from ..io import save_volume
    from ..volume import Volume, VolumeMetadata

    vol = Volume(np.asarray(data, np.float32), voxel_size_nm, VolumeMetadata(name=title))
    return rel(out, save_volume(vol, out / "volumes" / f"{name}.ome.zarr", overwrite=True))


def load_labels(out: Path, name: str) -> np.ndarray:
    """The label volume ``volumes/<name>.ome.zarr`` as a numpy array."""
    from ..io import open_volume

    return open_volume(out / "volumes" / f"{name}.ome.zarr").numpy()
