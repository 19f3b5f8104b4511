"""Multi-page TIFF / BigTIFF volumes (ImageJ-compatible) and 2D images."""

from __future__ import annotations

import json
import logging
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from .._array import iter_slabs, slab_depth
from .._validate import show
from ..errors import FormatError
from ..volume import Volume, volume_from_header
from ._common import check_numeric, file_token, parse_header, require_3d, unit_to_nm
from ._lazy import ZSliceArray, lazy_from_slices

#: Private TIFF tag holding the tomo4d JSON header (exact voxel size + metadata).
HEADER_TAG = 65000
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_BIG = 2**32 - 2**26
COMPRESSIONS = {"none": None, "zlib": "zlib", "zstd": "zstd", "lzw": "lzw"}


_log = logging.getLogger(__name__)
_FIX = "re-copy the file from its source or re-export it"


class _TifffileErrors(logging.Filter):
    """Takes what tifffile logs in this thread (it would otherwise only print it).

    tifffile reports a broken IFD chain, an invalid page offset or a corrupt tag by
    logging an ERROR and carrying on with whatever it could parse, which silently
    turns a truncated 64-slice stack into a one-slice volume; tomo4d turns those
    records into a :class:`FormatError` instead.  ``errors`` holds the ERROR
    records, ``notes`` every record (used to explain a file without pages).
    """

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()
        self.errors: list[str] = []
        self.notes: list[tuple[int, str]] = []

    def filter(self, record):
        if record.thread != self.thread:
            return True
        self.notes.append((record.levelno, record.getMessage()))
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())
        return False  # reported by the FormatError, or passed on below


@contextmanager
def _tifffile_errors(path: Path):
    """Capture tifffile's log records while ``path`` is parsed; pass them on if it is accepted."""
    taken = _TifffileErrors()
    logger = logging.getLogger("tifffile")
    logger.addFilter(taken)
    accepted = False
    try:
        yield taken
        accepted = True
    finally:
        logger.removeFilter(taken)
        if accepted:
            for level, msg in taken.notes:
                _log.log(level, "%s: tifffile: %s", path, msg)


def _not_readable(path: Path, reason: str) -> FormatError:
    return FormatError(
        f"{str(path)!r} is not a readable TIFF file ({reason}); the file is damaged, truncated or not a "
        f"TIFF: {_FIX}, or check its suffix"
    )


def _open(path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, struct.error):
            reason = f"the file ends inside its header ({exc})"
        raise _not_readable(path, reason) from None


def _planes(shape, plane_shape) -> int:
    n = int(np.prod(shape, dtype=np.int64))
    m = int(np.prod(plane_shape, dtype=np.int64))
    return n // m if m else 0


def _expected_planes(tif: tifffile.TiffFile, plane_shape) -> tuple[int | None, str]:
    """Number of 2D planes the file's own header announces, and which header says so."""
    ij = tif.imagej_metadata
    if ij and ij.get("images"):
        return int(ij["images"]), "ImageJ"
    if ij:
        n = 1
        for key in ("slices", "frames", "channels"):
            n *= int(ij.get(key) or 1)
        if n > 1:
            return n, "ImageJ"
    shaped = tif.shaped_metadata
    if shaped and isinstance(shaped[0], dict) and shaped[0].get("shape"):
        try:
            return _planes(shaped[0]["shape"], plane_shape), "shape"
        except (TypeError, ValueError):
            return None, ""
    return None, ""


def check_intact(tif: tifffile.TiffFile, path: Path, log: _TifffileErrors) -> None:
    """Refuse a TIFF whose pages do not match its header or run past its end.

    ``log`` holds what tifffile logged while parsing (see
    :func:`_tifffile_errors`); a clean file logs no error.  Checked: every IFD of
    the chain can be read, every page's image data lie inside the file, a
    contiguous series fits the file, and the number of readable planes equals
    the number the ImageJ/shaped header announces.
    """
    errors = log.errors
    size = int(tif.filehandle.size)
    pages = tif.pages
    try:
        n_pages = len(pages)  # walks the whole IFD chain; a broken chain is logged
    except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
        raise _not_readable(path, str(exc)) from None
    if n_pages == 0:
        raise _not_readable(path, log.notes[0][1] if log.notes else "it contains no image pages")
    page0 = pages.first
    plane_shape = tuple(page0.shape)
    plane_bytes = int(np.prod(plane_shape, dtype=np.int64)) * page0.dtype.itemsize if page0.dtype else 0
    intact = 0
    overrun = None
    pages.useframes = True  # TiffFrames: only the strip offsets and counts of each page
    for i in range(n_pages):
        try:
            page = pages[i]
        except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError) as exc:
            errors.append(f"page {i}: {exc}")
            break
        end = max((int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts) if c), default=0)
        if end > size:
            overrun = (i, end)
            break
        intact += 1
    if overrun is None and intact == n_pages:
        # the last IFD must be whole, up to its next-page offset (0): tifffile reads a cut one as 0
        last = pages[n_pages - 1]
        t = tif.tiff
        fh = tif.filehandle
        fh.seek(last.offset)
        head = fh.read(t.tagnosize)
        ifd_end = last.offset + t.tagnosize + t.offsetsize
        if len(head) == t.tagnosize:
            ifd_end += struct.unpack(t.tagnoformat, head)[0] * t.tagsize
        if ifd_end > size:
            overrun = (n_pages - 1, ifd_end)
    expected, source = _expected_planes(tif, plane_shape)
    readable = intact
    if expected and n_pages == 1 and intact == 1 and page0.is_contiguous and plane_bytes:
        # ImageJ files over 4 GiB: one IFD, then every plane contiguous after the first one
        readable = min(expected, (size - int(page0.dataoffsets[0])) // plane_bytes)
    if expected is not None and readable < expected:
        raise FormatError(
            f"{str(path)!r} is truncated: its {source} header says {expected} slices, only {readable} "
            f"readable (file size {size} bytes); {_FIX}"
        )
    if overrun is not None:
        i, end = overrun
        raise FormatError(
            f"{str(path)!r} is truncated: page {i + 1} of {n_pages} (its directory or image data) ends at "
            f"byte {end}, beyond the end of the file ({size} bytes); {_FIX}"
        )
    if errors:
        raise FormatError(
            f"{str(path)!r} is not a readable TIFF file: it is damaged or truncated (tifffile reports "
            f"{errors[0]!r}; {intact} of {max(n_pages, expected or 0)} pages readable, file size {size} bytes); {_FIX}"
        )


def checked_series(tif: tifffile.TiffFile, path: Path, log: _TifffileErrors):
    """The first image series of ``tif`` (None if there is none), after :func:`check_intact`."""
    try:
        series = tif.series[0] if tif.series else None
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError) as exc:
        check_intact(tif, path, log)  # names the truncation when it can
        raise _not_readable(path, str(exc) or type(exc).__name__) from None
    check_intact(tif, path, log)
    return series


def _read_error(path: Path, exc: Exception) -> FormatError:
    return FormatError(
        f"{str(path)!r} could not be read ({exc}); the file is damaged or changed since it was opened: {_FIX}"
    )


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


def read_tiff(path: Path, *, voxel_size_nm=None, chunks="auto", stream: bool = False) -> Volume:
    """Open a 3D TIFF stack (BigTIFF, ImageJ hyperstacks) lazily.

    The voxel size comes from tomo4d's own header tag, else the ImageJ ``spacing`` and
    resolution tags.

    Parameters
    ----------
    path : Path
        The ``.tif``/``.tiff`` file.
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.
    stream : bool
        Data as a :class:`~tomo4d.io._lazy.ZSliceArray` (z-slices read on indexing) instead of dask, for a
        few reads without importing dask (:func:`tomo4d.io.volume_info`).

    Returns
    -------
    Volume
        The stack, lazily (dask), axes ``(z, y, x)``.

    Raises
    ------
    FormatError
        The file is damaged, truncated or holds no 3D stack (the message says how to fix it).
    """
    with _tifffile_errors(path) as log, _open(path) as tif:
        series = checked_series(tif, path, log)
        if series is None:
            raise FormatError(f"{str(path)!r} contains no image data; give a TIFF holding a 3D stack")
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
        try:
            with tifffile.TiffFile(path) as t:
                if n_pages >= shape[0]:
                    return t.asarray(key=indices, series=0)
                return t.series[0].asarray()[indices]  # one 3D page (SGI depth): read whole
        except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError) as exc:
            raise _read_error(path, exc) from None

    if stream:
        data = ZSliceArray(read, shape, dtype)
    else:
        data = lazy_from_slices(read, shape, dtype, chunks, name=f"tomo4d-tiff-{file_token(path)}")
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def open_image(path: Path) -> np.ndarray:
    """Read a 2D image (first page); raise if the file is 3D."""
    with _tifffile_errors(path) as log, _open(path) as tif:
        series = checked_series(tif, path, log)
        if series is None:
            raise FormatError(f"{str(path)!r} contains no image data; give a TIFF holding one 2D image")
        shape = tuple(s for s in series.shape if s != 1)
        if len(shape) != 2:
            raise FormatError(
                f"{str(path)!r} holds data of shape {show(tuple(series.shape))}, not a single 2D image; "
                "use tomo4d.io.open_volume() for volumes"
            )
        check_numeric(series.dtype, path)
        try:
            return series.asarray().reshape(shape)
        except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError) as exc:
            raise _read_error(path, exc) from None


def write_tiff(volume: Volume, tmp: Path, *, compression: str = "none", progress=None) -> None:
    """Write ``volume`` as one TIFF stack to ``tmp``, slab by slab.

    ImageJ-compatible (uint8, uint16, float32, uncompressed, < 4 GiB), else BigTIFF; tomo4d's
    header (voxel size, metadata) goes in a private tag.

    Parameters
    ----------
    volume : Volume
    tmp : Path
        Where to write (the temporary of :func:`~tomo4d.io.atomic_output`).
    compression : {"none", "zlib", "zstd", "lzw"}
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.
    """
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
            for page in slab:
                yield np.ascontiguousarray(page)
            if progress is not None:
                progress(min(z0 + len(slab), total), total)

    with tifffile.TiffWriter(tmp, bigtiff=big, imagej=imagej) as tw:
        tw.write(pages(), **kwargs)
