"""Multi-page TIFF / BigTIFF volumes (ImageJ-compatible) and 2D images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from .._array import iter_slabs, slab_depth
from ..errors import FormatError
from ..volume import Volume, volume_from_header
from ._common import check_numeric, file_token, parse_header, require_3d, unit_to_nm
from ._lazy import lazy_from_slices

#: Private TIFF tag holding the tomo4d JSON header (exact voxel size + metadata).
HEADER_TAG = 65000
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_BIG = 2**32 - 2**26
COMPRESSIONS = {"none": None, "zlib": "zlib", "zstd": "zstd", "lzw": "lzw"}


def _open(path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise FormatError(f"{str(path)!r} is not a readable TIFF file ({exc}); check the file or its suffix") from None


def _resolution_nm(page) -> tuple[float | None, float | None]:
    """(y, x) pixel size in nm from the TIFF resolution tags, if meaningful."""
    tags = page.tags
    try:
        xr = tags["XResolution"].value
        yr = tags["YResolution"].value
    except KeyError:
        return None, None
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
    unit_nm = {2: 2.54e7, 3: 1e7}.get(int(unit))  # inch, centimetre
    def size(r):
        num, den = (r if isinstance(r, tuple) else (r, 1))
        return den / num if num else None
    sy, sx = size(yr), size(xr)
    return (sy * unit_nm if sy and unit_nm else sy), (sx * unit_nm if sx and unit_nm else sx)


def tiff_voxel_size_nm(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """Voxel size from ImageJ metadata (spacing, unit) and resolution tags."""
    page = tif.pages[0]
    ij = tif.imagej_metadata or {}
    unit = ij.get("unit")
    if unit is not None:
        f = unit_to_nm(unit)
        if f is None:
            return None
        try:
            xr = page.tags["XResolution"].value
            yr = page.tags["YResolution"].value
            sx = xr[1] / xr[0] * f
            sy = yr[1] / yr[0] * f
        except (KeyError, ZeroDivisionError, TypeError):
            return None
        sz = float(ij.get("spacing", sx / f)) * f
        return (sz, sy, sx)
    sy, sx = _resolution_nm(page)
    if sy and sx and "ResolutionUnit" in page.tags and int(page.tags["ResolutionUnit"].value) in (2, 3):
        return (sx, sy, sx)  # no z spacing in plain TIFF: assume isotropic
    return None


def _header(tif: tifffile.TiffFile) -> dict | None:
    tag = tif.pages[0].tags.get(HEADER_TAG)
    return parse_header(tag.value) if tag is not None else None


def read_tiff(path: Path, *, voxel_size_nm=None, chunks="auto") -> Volume:
    with _open(path) as tif:
        if not tif.series:
            raise FormatError(f"{str(path)!r} contains no image data")
        series = tif.series[0]
        if "S" in series.axes and series.shape[series.axes.index("S")] > 1:
            raise FormatError(
                f"{str(path)!r} holds colour (RGB) images; convert to a single-channel grey stack first"
            )
        header = _header(tif)
        plane = tuple(d for d in series.shape if d != 1)
        if header is not None and len(plane) == 2:
            shape = (1, *plane)  # a one-slice volume written by tomo4d
        else:
            shape = require_3d(series.shape, path)
        dtype = check_numeric(series.dtype, path)
        vs = tiff_voxel_size_nm(tif) if header is None else None
        n_pages = len(series.pages)
    if header is None:
        header = {"voxel_size_nm": vs, "voxel_size_known": vs is not None,
                  "metadata": {"name": path.stem, "provenance": []}}
    header.setdefault("metadata", {})

    def read(indices: list[int]) -> np.ndarray:
        with tifffile.TiffFile(path) as t:
            if n_pages >= shape[0]:
                return t.asarray(key=indices, series=0)
            return t.series[0].asarray()[indices]  # one 3D page (SGI depth): read whole

    data = lazy_from_slices(read, shape, dtype, chunks, name=f"tomo4d-tiff-{file_token(path)}")
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def open_image(path: Path) -> np.ndarray:
    """Read a 2D image (first page); raise if the file is 3D."""
    with _open(path) as tif:
        series = tif.series[0]
        shape = tuple(s for s in series.shape if s != 1)
        if len(shape) != 2:
            raise FormatError(
                f"{str(path)!r} holds data of shape {series.shape}, not a single 2D image; "
                "use tomo4d.io.open_volume() for volumes"
            )
        check_numeric(series.dtype, path)
        return series.asarray().reshape(shape)


def write_tiff(volume: Volume, tmp: Path, *, compression: str = "none", progress=None) -> None:
    data = volume.data
    dtype = volume.dtype
    big = volume.nbytes > _BIG
    imagej = (dtype.type in IMAGEJ_DTYPES) and not big and compression == "none"
    vz, vy, vx = (v / 1e3 for v in volume.voxel_size_nm)  # ImageJ works in microns
    header = volume.header_json()
    kwargs = dict(
        shape=volume.shape, dtype=dtype,
        resolution=(1.0 / vx, 1.0 / vy),
        extratags=[(HEADER_TAG, "s", 0, header, True)],
        compression=COMPRESSIONS[compression],
        photometric="minisblack",
    )
    if imagej:
        kwargs["metadata"] = {"spacing": vz, "unit": "um", "axes": "ZYX"}
    else:
        kwargs["resolutionunit"] = "CENTIMETER"
        kwargs["resolution"] = (1e4 / vx, 1e4 / vy)
        kwargs["metadata"] = None
        kwargs["description"] = json.dumps({"shape": list(volume.shape)})
    depth = slab_depth(volume.shape, dtype.itemsize)
    total = volume.shape[0]

    def pages():
        for z0, slab in iter_slabs(data, depth):
            for i, page in enumerate(slab):
                yield np.ascontiguousarray(page)
            if progress is not None:
                progress(min(z0 + len(slab), total), total)

    with tifffile.TiffWriter(tmp, bigtiff=big, imagej=imagej) as tw:
        tw.write(pages(), **kwargs)
