"""Folders of 2D TIFF slices (one file per z), naturally sorted."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import tifffile

from .._array import iter_slabs, slab_depth
from .._validate import show
from ..errors import FormatError
from ..volume import Volume, volume_from_header
from ._common import check_numeric, file_token, read_sidecar, write_sidecar
from ._lazy import ZSliceArray, lazy_from_slices
from .tiff import _tifffile_errors, checked_series, tiff_voxel_size_nm

SUFFIXES = (".tif", ".tiff")
SIDECAR = "tomo4d.json"


def natural_key(name: str):
    """Sort key that orders ``slice_2`` before ``slice_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_slices(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:  # the entries' types come with the listing: no stat per file
        names = [e.name for e in it if e.name.lower().endswith(SUFFIXES) and not e.name.startswith(".")
                 and e.is_file()]
    return [folder / n for n in sorted(names, key=natural_key)]


def read_slice_folder(folder: Path, *, voxel_size_nm=None, chunks="auto", stream: bool = False) -> Volume:
    """Open a folder of 2D TIFF slices (natural sort order) as a lazy volume.

    The voxel size comes from the folder's ``tomo4d.json``, else the first slice's tags.  The first slice
    is checked in full (:func:`~tomo4d.io.tiff.checked_series`: every page inside the file); every other
    slice's first page must have the same shape and dtype and its image data must lie inside the file
    (a slice damaged otherwise is named when it is decoded).  Those checks of the later slices are made
    when the volume is opened, or with ``stream`` when each slice is decoded (in the same opening of the
    file: one streaming pass opens each slice once, and a writer's atomic output leaves nothing when one
    fails).

    Parameters
    ----------
    folder : Path
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.
    stream : bool
        Data as a :class:`~tomo4d.io._lazy.ZSliceArray` (slabs of z-slices read on indexing) instead of
        dask: for one streaming pass (:func:`tomo4d.io.convert`) without importing dask.

    Returns
    -------
    Volume
        The slices, lazily (dask, or a ZSliceArray with ``stream``), axes ``(z, y, x)``.

    Raises
    ------
    FormatError
        No slices, or slices of different shapes or dtypes (with ``stream``: when the odd slice is read).
    """
    files = list_slices(folder)
    if not files:
        raise FormatError(f"folder {str(folder)!r} contains no .tif/.tiff slices; give a folder of 2D TIFF slices")
    shape2d, dtype, vs, single = _check_first(files[0], folder, len(files))
    later = _LaterSlices(folder, files[0].name, shape2d, dtype)
    if not stream:          # a lazy volume is checked in full now; one streaming pass checks each slice as it is read
        for i, f in enumerate(files[1:], start=2):
            try:
                with _tifffile_errors(f), tifffile.TiffFile(f) as tif:
                    later.page(tif, f)
            except FormatError as exc:
                raise FormatError(f"slice {i} of {len(files)} in folder {str(folder)!r}: {exc}") from None
            except _READ_ERRORS as exc:
                raise _unreadable(f, exc) from None
    header = read_sidecar(folder / SIDECAR)
    if header is None:
        header = {"voxel_size_nm": vs, "voxel_size_known": vs is not None,
                  "metadata": {"name": folder.name}}
    shape = (len(files), *shape2d)

    def read(indices: list[int]) -> np.ndarray:
        out = np.empty((len(indices), *shape2d), dtype)        # each slice decoded straight into its plane
        for j, i in enumerate(indices):
            try:
                with tifffile.TiffFile(files[i]) as tif:
                    page = later.page(tif, files[i]) if i else tif.pages.first
                    if single and len(tif.pages) == 1:          # one opening per slice: header, then the data
                        page.asarray(out=out[j])
                    else:                                       # another page layout: the first series, cast
                        out[j] = tif.asarray().reshape(shape2d)
            except FormatError:
                raise
            except _READ_ERRORS as exc:
                raise FormatError(
                    f"slice {str(files[i])!r} could not be read ({exc}); the file is damaged or changed since "
                    "the folder was opened: re-copy or re-export it"
                ) from None
        return out

    if stream:
        data = ZSliceArray(read, shape, dtype)
    else:
        data = lazy_from_slices(read, shape, dtype, chunks, name=f"tomo4d-slices-{file_token(folder)}")
    return volume_from_header(data, header, source=folder, voxel_size_nm=voxel_size_nm)


_READ_ERRORS = (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error)


def _unreadable(f: Path, exc: Exception) -> FormatError:
    return FormatError(
        f"slice {str(f)!r} is not a readable TIFF ({exc or type(exc).__name__}); the file is damaged "
        "or truncated: re-copy or re-export it, or remove it from the folder"
    )


def _check_first(f: Path, folder: Path, n: int):
    """Shape, dtype, voxel size and "one page" of the first slice, checked in full (every page in the file)."""
    try:
        with _tifffile_errors(f) as log, tifffile.TiffFile(f) as tif:
            s = checked_series(tif, f, log)
            if s is None:
                raise FormatError(f"slice {str(f)!r} contains no image data; remove or replace it")
            vs = tiff_voxel_size_nm(tif)
            single = len(tif.pages) == 1
    except FormatError as exc:
        raise FormatError(f"slice 1 of {n} in folder {str(folder)!r}: {exc}") from None
    except _READ_ERRORS as exc:
        raise _unreadable(f, exc) from None
    shp = tuple(d for d in s.shape if d != 1)
    if len(shp) != 2:
        raise FormatError(
            f"slice {str(f)!r} has shape {show(tuple(s.shape))}; every file in a slice folder must be one 2D image"
        )
    return shp, check_numeric(s.dtype, f), vs, single


class _LaterSlices:
    """Checks a slice after the first: its first page has the first slice's shape and dtype, its data in the file."""

    def __init__(self, folder: Path, first: str, shape2d, dtype):
        self.folder, self.first, self.shape2d, self.dtype = folder, first, shape2d, dtype

    def page(self, tif, path: Path):
        page = _first_page(tif, path)
        shp = tuple(d for d in page.shape if d != 1)
        if len(shp) != 2:
            raise FormatError(
                f"slice {str(path)!r} has shape {show(tuple(page.shape))}; every file in a slice folder must be "
                "one 2D image"
            )
        if shp != self.shape2d or page.dtype != self.dtype:
            raise FormatError(
                f"slice folder {str(self.folder)!r} mixes shapes or dtypes: {self.first!r} is {show(self.shape2d)} "
                f"{self.dtype}, {path.name!r} is {show(shp)} {page.dtype}; all slices must have the same shape and "
                "dtype"
            )
        return page


def _first_page(tif, path: Path):
    """The first page of a slice after the first (shape, dtype), its image data checked to lie in the file."""
    page = tif.pages.first
    size = int(tif.filehandle.size)
    if page.dtype is None or any(int(o) + int(c) > size for o, c in zip(page.dataoffsets, page.databytecounts)):
        raise FormatError(f"slice {str(path)!r} is truncated or damaged (its image data run past the end of the "
                          "file); re-copy or re-export it, or remove it from the folder")
    return page


def write_slice_folder(volume: Volume, tmp: Path, *, compression: str = "none", progress=None,
                       prefix: str = "slice_") -> None:
    """Write ``volume`` as a folder of 2D TIFF slices (``prefix00000.tif`` ...) plus ``tomo4d.json``.

    Parameters
    ----------
    volume : Volume
    tmp : Path
        Folder to create (the temporary of :func:`~tomo4d.io.atomic_output`).
    compression : {"none", "zlib", "zstd", "lzw"}
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.
    prefix : str
        File name of each slice before its zero-padded index.
    """
    tmp.mkdir(parents=True)
    nz = volume.shape[0]
    width = max(5, len(str(nz - 1)))
    vz, vy, vx = (v / 1e3 for v in volume.voxel_size_nm)
    comp = None if compression == "none" else compression
    depth = slab_depth(volume.shape, volume.dtype.itemsize)
    for z0, slab in iter_slabs(volume.data, depth):
        for i, page in enumerate(slab):
            tifffile.imwrite(
                tmp / f"{prefix}{z0 + i:0{width}d}.tif", np.ascontiguousarray(page),
                resolution=(1.0 / vx, 1.0 / vy), compression=comp, photometric="minisblack",
                imagej=comp is None and page.dtype.type in (np.uint8, np.uint16, np.float32),
                metadata={"spacing": vz, "unit": "um"} if comp is None else {},
            )
        if progress is not None:
            progress(z0 + len(slab), nz)
    write_sidecar(tmp / SIDECAR, volume.header())
