"""HDF5 / NeXus volumes (NXtomo default dataset ``/entry/data/data``)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .._array import iter_slabs
from ..errors import FormatError, InputError
from ..volume import Volume, volume_from_header
from ._common import check_numeric, file_token, parse_header, require_3d, storage_chunks, unit_to_nm
from ._lazy import resolve_chunks

DEFAULT_DATASET = "/entry/data/data"
COMPRESSIONS = {"none": None, "gzip": "gzip", "lzf": "lzf"}


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        text = str(exc)
        what = "is truncated" if "truncated file" in text else "is damaged, truncated or not HDF5"
        raise FormatError(
            f"{str(path)!r} is not a readable HDF5 file ({text}): the file {what}; re-copy it from its "
            "source or re-export it, or check its suffix"
        ) from None


def list_datasets(f: h5py.File) -> list[tuple[str, tuple[int, ...]]]:
    found: list[tuple[str, tuple[int, ...]]] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(("/" + name, tuple(obj.shape)))

    f.visititems(visit)
    return found


def _choose_dataset(f: h5py.File, path: Path, dataset: str | None) -> str:
    if dataset is not None:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            avail = ", ".join(f"{n} {s}" for n, s in list_datasets(f)) or "none"
            raise InputError(
                f"dataset={dataset!r} does not exist in {str(path)!r}; datasets there: {avail}"
            )
        return dataset
    if DEFAULT_DATASET in f and isinstance(f[DEFAULT_DATASET], h5py.Dataset):
        return DEFAULT_DATASET
    three_d = [n for n, s in list_datasets(f) if len([d for d in s if d != 1]) == 3]
    if len(three_d) == 1:
        return three_d[0]
    avail = ", ".join(f"{n} {s}" for n, s in list_datasets(f)) or "none"
    raise InputError(
        f"{str(path)!r} has no {DEFAULT_DATASET} and {len(three_d)} 3D datasets; "
        f"choose one with dataset=... (--dataset): {avail}"
    )


def _voxel_size(ds: h5py.Dataset) -> tuple[float, float, float] | None:
    a = ds.attrs
    if "voxel_size_nm" in a:
        return tuple(float(v) for v in np.broadcast_to(a["voxel_size_nm"], 3))  # type: ignore[return-value]
    if "element_size_um" in a:  # Fiji / ilastik convention
        return tuple(float(v) * 1e3 for v in np.broadcast_to(a["element_size_um"], 3))  # type: ignore[return-value]
    if "voxel_size" in a:
        f = unit_to_nm(a.get("units", a.get("unit", "nm")))
        if f:
            return tuple(float(v) * f for v in np.broadcast_to(a["voxel_size"], 3))  # type: ignore[return-value]
    return None


class _H5Array:
    """Array-like that opens the file for each read (safe across processes)."""

    def __init__(self, path: Path, name: str, shape, dtype, squeeze_shape):
        self.path, self.name = path, name
        self.shape, self.dtype, self.ndim = tuple(squeeze_shape), np.dtype(dtype), 3
        self._raw_shape = tuple(shape)

    def __getitem__(self, key):
        try:
            with h5py.File(self.path, "r") as f:
                ds = f[self.name]
                if self._raw_shape == self.shape:
                    return ds[key]
                return ds[()].reshape(self.shape)[key]
        except (OSError, KeyError, RuntimeError) as exc:
            raise FormatError(
                f"dataset {self.name} of {str(self.path)!r} could not be read ({exc}); the file is damaged or "
                "changed since it was opened: re-copy it from its source or re-export it"
            ) from None


def read_hdf5(path: Path, *, dataset=None, voxel_size_nm=None, chunks="auto") -> Volume:
    """Open a 3D dataset of an HDF5/NeXus file lazily.

    Parameters
    ----------
    path : Path
    dataset : str, optional
        Dataset path (default ``/entry/data/data``, or the only 3D dataset of the file).
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.

    Returns
    -------
    Volume
        The dataset, lazily (dask), axes ``(z, y, x)``.

    Raises
    ------
    InputError
        No such dataset, or no default and not exactly one 3D dataset (choose with ``dataset``).
    FormatError
        The file cannot be read, or the dataset is not a 3D numeric volume.
    """
    import dask.array as da

    with _open(path) as f:
        name = _choose_dataset(f, path, dataset)
        ds = f[name]
        shape = require_3d(ds.shape, f"{path}:{name}")
        dtype = check_numeric(ds.dtype, path)
        header = parse_header(ds.attrs.get("tomo4d"))
        vs = _voxel_size(ds)
        native = ds.chunks if ds.chunks and len(ds.chunks) == 3 else None
        raw_shape = ds.shape
    if header is None:
        header = {"voxel_size_nm": vs, "voxel_size_known": vs is not None,
                  "metadata": {"name": f"{path.stem}{name}"}}
    c = resolve_chunks(chunks, shape, dtype, native=None)
    if native is not None and chunks == "auto":
        # whole native chunks, grown along z to ~64 MiB slabs
        c = (max(c[0] // native[0], 1) * native[0], shape[1], shape[2])
    arr = _H5Array(path, name, raw_shape, dtype, shape)
    data = da.from_array(arr, chunks=c, asarray=False, fancy=False,
                         name=f"tomo4d-h5-{file_token(path)}-{name}", meta=np.empty((0, 0, 0), dtype))
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def write_hdf5(volume: Volume, tmp: Path, *, dataset=None, compression: str = "gzip", progress=None) -> None:
    """Write ``volume`` to dataset ``dataset`` (default ``/entry/data/data``) of a new HDF5 file, chunked.

    The voxel size is stored as ``voxel_size_nm`` (and NeXus ``element_size_um``) attributes.

    Parameters
    ----------
    volume : Volume
    tmp : Path
        File to create (the temporary of :func:`~tomo4d.io.atomic_output`).
    dataset : str, optional
    compression : {"gzip", "lzf", "none"}
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.
    """
    name = dataset or DEFAULT_DATASET
    shape = volume.shape
    chunks = storage_chunks(shape, volume.dtype.itemsize)
    with h5py.File(tmp, "w") as f:
        if name == DEFAULT_DATASET:
            entry = f.require_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = "data"
            grp = entry.require_group("data")
            grp.attrs["NX_class"] = "NXdata"
            grp.attrs["signal"] = "data"
        ds = f.create_dataset(name, shape=shape, dtype=volume.dtype, chunks=chunks,
                              compression=COMPRESSIONS[compression])
        ds.attrs["voxel_size_nm"] = np.asarray(volume.voxel_size_nm, float)
        ds.attrs["element_size_um"] = np.asarray(volume.voxel_size_nm, float) / 1e3
        ds.attrs["axes"] = "z y x"
        ds.attrs["tomo4d"] = volume.header_json()
        meta = volume.metadata
        f.attrs["tomo4d_version"] = json.dumps(__import__("tomo4d").__version__)
        if meta.name:
            f.attrs["title"] = meta.name
        for z0, slab in iter_slabs(volume.data, chunks[0]):
            ds[z0:z0 + len(slab)] = slab
            if progress is not None:
                progress(z0 + len(slab), shape[0])
