"""Reading and writing volumes: TIFF, slice folders, HDF5/NeXus, Zarr/OME-Zarr, .vol, raw.

Use :func:`open_volume` and :func:`save_volume`; the format is chosen from the
suffix, or from the content when the suffix says nothing.  Reading is lazy
(dask-backed): nothing but headers is read until voxels are asked for, and
writers stream slab by slab, so volumes larger than memory convert in bounded
memory.  Writes are atomic and never overwrite an input.

================  ===================================  ===========================
format            paths                                voxel size read from
================  ===================================  ===========================
``tiff``          ``*.tif``, ``*.tiff`` (BigTIFF too)  tomo4d tag, ImageJ, resolution tags
``slices``        folder of 2D ``*.tif`` slices        ``tomo4d.json``, first slice's tags
``hdf5``          ``*.h5``, ``*.hdf5``, ``*.nxs``      ``voxel_size_nm``/``element_size_um`` attrs
``zarr``          ``*.zarr``, ``*.ome.zarr``           OME-Zarr scale transformations
``vol``           ``*.vol`` + ``*.vol.info``           ``voxelSize`` (um) in the info file
``raw``           ``*.raw``, ``*.bin``, ``*.dat``      ``shape``/``dtype`` arguments or sidecar
================  ===================================  ===========================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, check_choice
from ..volume import Volume, as_volume
from ._atomic import (OWNER_MARKER, atomic_output, check_not_input, check_outputs, clean_stale_partials,
                      prepare_folder, replaceable, scratch_path, sidecars, write_marker)
from ._lazy import lazy_from_slices

log = logging.getLogger(__name__)

FORMATS = ("tiff", "slices", "hdf5", "zarr", "vol", "raw")
_SUFFIXES = {
    ".tif": "tiff", ".tiff": "tiff", ".btf": "tiff", ".tf8": "tiff",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".nxs": "hdf5", ".nx5": "hdf5", ".he5": "hdf5",
    ".zarr": "zarr", ".vol": "vol", ".raw": "raw", ".bin": "raw", ".dat": "raw",
}
_COMPRESSION = {
    "tiff": ("none", "zlib", "zstd", "lzw"), "slices": ("none", "zlib", "zstd", "lzw"),
    "hdf5": ("gzip", "lzf", "none"), "zarr": ("zstd", "lz4", "gzip", "none"), "vol": ("none",), "raw": ("none",),
}


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def detect_format(path, *, for_writing: bool = False) -> str:
    """Name of the format of ``path`` (one of :data:`FORMATS`).

    For reading, folders are Zarr stores (``zarr.json``/``.zgroup``/``.zarray``
    inside) or slice folders; files are recognised by suffix, then by content.
    For writing, the suffix decides and a path without suffix is a slice folder.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if for_writing:
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        if suffix == "":
            return "slices"
        raise InputError(
            f"cannot tell the output format of {str(p)!r} from its suffix {suffix!r}; use one of "
            f"{', '.join(sorted(_SUFFIXES))}, no suffix for a slice folder, or format=..."
        )
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist; check the path")
    if p.is_dir():
        if any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
            return "zarr"
        if suffix == ".zarr":
            raise FormatError(f"{str(p)!r} looks like a Zarr store but has no zarr.json/.zgroup/.zarray")
        return "slices"
    if suffix in _SUFFIXES:
        fmt = _SUFFIXES[suffix]
        sniffed = _sniff(p)
        if fmt in ("tiff", "hdf5") and sniffed not in (None, fmt):
            log.info("%s has suffix %s but %s content; reading as %s", p, suffix, sniffed, sniffed)
            return sniffed
        return fmt
    sniffed = _sniff(p)
    if sniffed:
        return sniffed
    raise FormatError(
        f"unknown format of {str(p)!r}; tomo4d reads {', '.join(sorted(_SUFFIXES))}, Zarr stores and "
        "folders of TIFF slices (for other raw data give the .raw suffix with shape and dtype)"
    )


def open_volume(path, *, voxel_size_nm=None, dataset: str | None = None, chunks="auto",
                format: str | None = None, shape=None, dtype=None, offset: int = 0,
                byte_order: str = "little") -> Volume:
    """Open a volume lazily.

    Parameters
    ----------
    path : path-like
        File or folder (see the module table for formats).
    voxel_size_nm : float or (z, y, x), optional
        Overrides the voxel size stored in the file.
    dataset : str, optional
        HDF5 dataset path (default ``/entry/data/data`` or the only 3D dataset),
        or Zarr array/level inside a group (default: OME-Zarr level 0).
    chunks : "auto", int or (z, y, x)
        Dask chunking; ``"auto"`` follows the storage layout.
    format : str, optional
        Force a format instead of detecting it.
    shape, dtype, offset, byte_order
        Layout of a generic raw file.

    Returns
    -------
    Volume
        Lazy (dask-backed) volume with axes ``(z, y, x)``.
    """
    from .._validate import check_path, show

    p = Path(check_path("path", path))
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist; check the path")
    fmt = format or detect_format(p)
    check_choice("format", fmt, FORMATS)
    if dataset is not None and fmt not in ("hdf5", "zarr"):
        raise InputError(f"dataset={show(dataset)} only applies to HDF5 and Zarr inputs, not {fmt}; drop it")
    if (shape is not None or dtype is not None) and fmt != "raw":
        raise InputError(f"shape/dtype only apply to raw inputs, not {fmt} ({str(p)!r}); drop them")
    kw = dict(voxel_size_nm=voxel_size_nm, chunks=chunks)
    if fmt == "tiff":
        from .tiff import read_tiff
        vol = read_tiff(p, **kw)
    elif fmt == "slices":
        from .slices import read_slice_folder
        vol = read_slice_folder(p, **kw)
    elif fmt == "hdf5":
        from .hdf5 import read_hdf5
        vol = read_hdf5(p, dataset=dataset, **kw)
    elif fmt == "zarr":
        from .zarrio import read_zarr
        vol = read_zarr(p, dataset=dataset, **kw)
    elif fmt == "vol":
        from .raw import read_vol
        vol = read_vol(p, **kw)
    else:
        from .raw import read_raw
        vol = read_raw(p, shape=shape, dtype=dtype, offset=offset, byte_order=byte_order, **kw)
    log.debug("opened %s as %s: %r", p, fmt, vol)
    return vol


def open_image(path) -> np.ndarray:
    """Read a single 2D image (TIFF) as a numpy array."""
    from .._validate import check_path
    from .tiff import open_image as _open_image

    p = Path(check_path("path", path))
    if not p.is_file():
        what = "is a folder, not an image file" if p.is_dir() else "does not exist"
        raise InputError(f"image {str(p)!r} {what}; check the path")
    return _open_image(p)


def save_volume(volume, path, *, dataset: str | None = None, compression: str | None = None,
                format: str | None = None, overwrite: bool = False, levels: int = 1,
                progress=None) -> Path:
    """Write ``volume`` to ``path`` atomically, streaming slab by slab.

    Parameters
    ----------
    volume : Volume or array
        What to write (numpy or dask); arrays get a 1 nm voxel size.
    path : path-like
        Output; the suffix selects the format, no suffix means a slice folder.
    dataset : str, optional
        HDF5 dataset path (default ``/entry/data/data``) or Zarr array name.
    compression : str, optional
        Per format: tiff/slices ``none|zlib|zstd|lzw`` (default none, readable by
        Fiji), hdf5 ``gzip|lzf|none`` (gzip), zarr ``zstd|lz4|gzip|none`` (zstd).
    overwrite : bool
        Replace an existing output (never an input).
    levels : int
        Zarr only: number of OME-Zarr resolution levels (2x binning each).
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    vol = as_volume(volume)
    p = Path(path)
    fmt = format or detect_format(p, for_writing=True)
    check_choice("format", fmt, FORMATS)
    comp = compression or _COMPRESSION[fmt][0]
    check_choice(f"compression (for {fmt})", comp, _COMPRESSION[fmt])
    if dataset is not None and fmt not in ("hdf5", "zarr"):
        raise InputError(f"dataset={dataset!r} only applies to HDF5 and Zarr outputs, not {fmt}; drop it")
    from .._validate import check_int

    levels = check_int("levels", levels, minimum=1)
    if levels > 1:
        if fmt != "zarr":
            raise InputError(f"levels={levels} needs an OME-Zarr output (.ome.zarr), not {fmt}; drop levels or "
                             "write .ome.zarr")
        most = max(int(np.floor(np.log2(max(min(vol.shape), 1)))) + 1, 1)
        if levels > most:
            raise InputError(f"levels={levels} is too many for a volume of shape {tuple(vol.shape)}: each level "
                             f"halves it and the smallest side allows at most {most}; give levels between 1 and "
                             f"{most}")
    inputs = [vol.source]
    if fmt == "vol":
        from .raw import write_vol

        info = p.with_name(p.name + ".info")
        check_not_input(info, inputs)
        from ._common import write_sidecar

        side = p.with_name(p.name + ".json")
        with atomic_output(p, overwrite=overwrite, inputs=inputs) as tmp, \
                atomic_output(info, overwrite=overwrite, inputs=inputs) as tmp_info, \
                atomic_output(side, overwrite=True, inputs=inputs) as tmp_side:
            write_vol(vol, tmp, tmp_info, progress=progress)
            write_sidecar(tmp_side, vol.header())
        if vol.dtype != np.float32:
            log.info("%s: .vol stores float32; %s data converted", p, vol.dtype)
        return p
    with atomic_output(p, overwrite=overwrite, inputs=inputs) as tmp:
        if fmt == "tiff":
            from .tiff import write_tiff
            write_tiff(vol, tmp, compression=comp, progress=progress)
        elif fmt == "slices":
            from .slices import write_slice_folder
            write_slice_folder(vol, tmp, compression=comp, progress=progress)
        elif fmt == "hdf5":
            from .hdf5 import write_hdf5
            write_hdf5(vol, tmp, dataset=dataset, compression=comp, progress=progress)
        elif fmt == "zarr":
            from .zarrio import write_zarr
            write_zarr(vol, tmp, dataset=dataset, compression=comp, levels=levels, progress=progress)
        else:
            from ._common import write_sidecar
            from .raw import write_raw
            header = write_raw(vol, tmp, progress=progress)
    if fmt == "raw":
        side = p.with_name(p.name + ".json")
        with atomic_output(side, overwrite=True, inputs=inputs) as tmp_side:
            write_sidecar(tmp_side, header)
    return p


@dataclass(frozen=True)
class VolumeInfo:
    """Summary of a volume file, as printed by ``tomo4d info``."""

    path: str
    format: str
    shape: tuple[int, int, int]
    dtype: str
    voxel_size_nm: tuple[float, float, float]
    voxel_size_known: bool
    chunks: tuple[int, int, int] | None
    size_bytes: int
    sample_min: float
    sample_max: float
    sample_mean: float
    sampled_slices: tuple[int, ...]
    metadata: dict

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def volume_info(path, *, dataset: str | None = None, n_sample_slices: int = 8, **open_kw) -> VolumeInfo:
    """Describe a volume file reading only a few evenly spaced z-slices."""
    from .._validate import check_int, check_path

    p = Path(check_path("path", path))
    n_sample_slices = check_int("n_sample_slices", n_sample_slices, minimum=1)
    fmt = open_kw.pop("format", None) or detect_format(p)
    vol = open_volume(p, dataset=dataset, format=fmt, **open_kw)
    nz = vol.shape[0]
    idx = tuple(sorted({int(round(i)) for i in np.linspace(0, nz - 1, min(n_sample_slices, nz))}))
    sample = np.stack([np.asarray(vol.data[i]) for i in idx]).astype(np.float64)
    finite = sample[np.isfinite(sample)]
    lo, hi, mean = ((float(finite.min()), float(finite.max()), float(finite.mean())) if finite.size
                    else (float("nan"),) * 3)
    return VolumeInfo(
        path=str(p), format=fmt, shape=vol.shape, dtype=vol.dtype.name, voxel_size_nm=vol.voxel_size_nm,
        voxel_size_known=vol.voxel_size_known, chunks=vol.chunks, size_bytes=vol.nbytes,
        sample_min=lo, sample_max=hi, sample_mean=mean, sampled_slices=idx, metadata=vol.metadata.to_dict(),
    )


def convert(src, dst, *, voxel_size_nm=None, dataset: str | None = None, out_dataset: str | None = None,
            compression: str | None = None, overwrite: bool = False, levels: int = 1, progress=None,
            **open_kw) -> Path:
    """Stream ``src`` into ``dst`` (any supported formats), chunk by chunk."""
    vol = open_volume(src, voxel_size_nm=voxel_size_nm, dataset=dataset, **open_kw)
    vol = vol.with_metadata(provenance=vol.metadata.provenance + (f"converted from {os.fspath(src)}",))
    return save_volume(vol, dst, dataset=out_dataset, compression=compression, overwrite=overwrite,
                       levels=levels, progress=progress)


__all__ = ["FORMATS", "open_volume", "open_image", "save_volume", "detect_format", "volume_info",
           "VolumeInfo", "convert", "atomic_output", "check_not_input", "check_outputs", "prepare_folder",
           "replaceable", "sidecars", "clean_stale_partials", "scratch_path", "OWNER_MARKER", "write_marker",
           "lazy_from_slices"]
