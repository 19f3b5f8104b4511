"""Reading and writing volumes: TIFF, slice folders, HDF5/NeXus, Zarr/OME-Zarr, .vol, raw.

Use :func:`open_volume` and :func:`save_volume`; the format is chosen from the
suffix, or from the content when the suffix says nothing.  Reading is lazy
(dask-backed): nothing but headers is read until voxels are asked for, and
writers stream slab by slab, so volumes larger than memory convert in bounded
memory.  Writes are atomic and never overwrite an input.

Each format is one entry of the registry in :mod:`tomo4d.io._formats` (suffixes, content
sniffing, compressions, reader, writer, sidecars); a new format is one module plus one entry.

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
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._array import to_numpy
from .._validate import check_int, check_path, show
from ..errors import FormatError, InputError, check_choice
from ..volume import Volume, as_volume
from . import _formats
from ._atomic import (
    OWNER_MARKER,
    atomic_output,
    check_not_input,
    check_outputs,
    clean_stale_partials,
    prepare_folder,
    replaceable,
    scratch_path,
    sidecars,
    write_json,
    write_marker,
)
from ._common import write_sidecar
from ._lazy import lazy_from_slices, resolve_chunks

log = logging.getLogger(__name__)

#: names of the formats of the registry (:mod:`tomo4d.io._formats`)
FORMATS = tuple(f.name for f in _formats.REGISTRY)


def detect_format(path, *, for_writing: bool = False) -> str:
    """Name of the format of ``path`` (one of :data:`FORMATS`).

    For reading, folders are Zarr stores (``zarr.json``/``.zgroup``/``.zarray``
    inside) or slice folders; files are recognised by suffix, then by content.
    For writing, the suffix decides and a path without suffix is a slice folder.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    known = _formats.SUFFIXES
    if for_writing:
        if suffix in known:
            return known[suffix]
        if suffix == "":
            return _formats.plain_folder_format()
        raise InputError(
            f"cannot tell the output format of {str(p)!r} from its suffix {suffix!r}; use one of "
            f"{', '.join(sorted(known))}, no suffix for a slice folder, or format=..."
        )
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist; check the path")
    if p.is_dir():
        return _folder_format(p, suffix)
    if suffix in known:
        fmt = known[suffix]
        sniffed = _formats.sniff(p)
        if _formats.get_format(fmt).magic and sniffed not in (None, fmt):
            log.info("%s has suffix %s but %s content; reading as %s", p, suffix, sniffed, sniffed)
            return sniffed
        return fmt
    sniffed = _formats.sniff(p)
    if sniffed:
        return sniffed
    raise FormatError(
        f"unknown format of {str(p)!r}; tomo4d reads {', '.join(sorted(known))}, Zarr stores and "
        "folders of TIFF slices (for other raw data give the .raw suffix with shape and dtype)"
    )


def _folder_format(p: Path, suffix: str) -> str:
    """Format of the folder ``p``: the one whose marker files it holds, else a slice folder."""
    fmt = _formats.folder_format(p)
    if fmt is not None:
        return fmt
    named = _formats.SUFFIXES.get(suffix)
    if named is not None and _formats.get_format(named).folder_markers:
        f = _formats.get_format(named)
        raise FormatError(f"{str(p)!r} looks like a {f.label} store but has no {'/'.join(f.folder_markers)}")
    return _formats.plain_folder_format()


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
    p = Path(check_path("path", path))
    if not p.exists():
        raise InputError(f"input {str(p)!r} does not exist; check the path")
    fmt = format or detect_format(p)
    check_choice("format", fmt, FORMATS)
    entry = _formats.get_format(fmt)
    given = {"dataset": dataset, "shape": shape, "dtype": dtype, "offset": offset, "byte_order": byte_order}
    if dataset is not None and "dataset" not in entry.read_options:
        raise InputError(f"dataset={show(dataset)} only applies to "
                         f"{_formats.labels(_formats.formats_with('dataset', reading=True))} inputs, not {fmt}; drop it")
    if (shape is not None or dtype is not None) and "shape" not in entry.read_options:
        raise InputError(f"shape/dtype only apply to {_formats.labels(_formats.formats_with('shape', reading=True))} "
                         f"inputs, not {fmt} ({str(p)!r}); drop them")
    vol = entry.read(p, **{k: given[k] for k in entry.read_options}, voxel_size_nm=voxel_size_nm, chunks=chunks)
    log.debug("opened %s as %s: %r", p, fmt, vol)
    return vol


def open_image(path) -> np.ndarray:
    """Read a single 2D image (TIFF) as a numpy array."""
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
    entry = _formats.get_format(fmt)
    comp = compression or entry.compressions[0]
    check_choice(f"compression (for {fmt})", comp, entry.compressions)
    if dataset is not None and "dataset" not in entry.write_options:
        raise InputError(f"dataset={dataset!r} only applies to "
                         f"{_formats.labels(_formats.formats_with('dataset', reading=False))} outputs, not {fmt}; "
                         "drop it")

    levels = check_int("levels", levels, minimum=1)
    if levels > 1:
        if "levels" not in entry.write_options:
            raise InputError(f"levels={levels} needs an OME-Zarr output (.ome.zarr), not {fmt}; drop levels or "
                             "write .ome.zarr")
        most = max(int(np.floor(np.log2(max(min(vol.shape), 1)))) + 1, 1)
        if levels > most:
            raise InputError(f"levels={levels} is too many for a volume of shape {tuple(vol.shape)}: each level "
                             f"halves it and the smallest side allows at most {most}; give levels between 1 and "
                             f"{most}")
    _write(entry, vol, p, overwrite=overwrite, progress=progress,
           options={"compression": comp, "dataset": dataset, "levels": levels})
    return p


def _write(entry, vol: Volume, p: Path, *, overwrite: bool, progress, options: dict) -> None:
    """Write ``vol`` to ``p`` and its sidecars with the registry entry's writer, all atomically."""
    inputs = [vol.source]
    sides = entry.sidecar_paths(p)
    for side in sides:
        check_not_input(side, inputs)
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_output(p, overwrite=overwrite, inputs=inputs))
        tmps = {s: stack.enter_context(atomic_output(side, overwrite=overwrite or s == _formats.HEADER_SIDECAR,
                                                     inputs=inputs))
                for s, side in zip(entry.sidecars, sides)}
        header = entry.write(vol, tmp, *(t for s, t in tmps.items() if s != _formats.HEADER_SIDECAR),
                             progress=progress, **{k: options[k] for k in entry.write_options})
        if _formats.HEADER_SIDECAR in tmps:
            write_sidecar(tmps[_formats.HEADER_SIDECAR], header if header is not None else vol.header())
    if entry.storage_dtype is not None and vol.dtype != np.dtype(entry.storage_dtype):
        log.info("%s: .%s stores %s; %s data converted", p, entry.name, entry.storage_dtype, vol.dtype)


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
        return asdict(self)


def volume_info(path, *, dataset: str | None = None, n_sample_slices: int = 8, **open_kw) -> VolumeInfo:
    """Describe a volume file reading only a few evenly spaced z-slices."""
    p = Path(check_path("path", path))
    n_sample_slices = check_int("n_sample_slices", n_sample_slices, minimum=1)
    fmt = open_kw.pop("format", None) or detect_format(p)
    chunks = None
    if fmt in ("tiff", "slices") and dataset is None and not open_kw:  # a few slices: read without dask
        vol = _formats.get_format(fmt).read(p, stream=True)
        chunks = resolve_chunks("auto", vol.shape, vol.dtype)           # the dask chunks open_volume gives
    else:
        vol = open_volume(p, dataset=dataset, format=fmt, **open_kw)
    nz = vol.shape[0]
    idx = tuple(sorted({int(round(i)) for i in np.linspace(0, nz - 1, min(n_sample_slices, nz))}))
    sample = np.stack([to_numpy(vol.data[i]) for i in idx]).astype(np.float64)
    finite = sample[np.isfinite(sample)]
    lo, hi, mean = ((float(finite.min()), float(finite.max()), float(finite.mean())) if finite.size
                    else (float("nan"),) * 3)
    return VolumeInfo(
        path=str(p), format=fmt, shape=vol.shape, dtype=vol.dtype.name, voxel_size_nm=vol.voxel_size_nm,
        voxel_size_known=vol.voxel_size_known, chunks=chunks or vol.chunks, size_bytes=vol.nbytes,
        sample_min=lo, sample_max=hi, sample_mean=mean, sampled_slices=idx, metadata=vol.metadata.to_dict(),
    )


def convert(src, dst, *, voxel_size_nm=None, dataset: str | None = None, out_dataset: str | None = None,
            compression: str | None = None, overwrite: bool = False, levels: int = 1, progress=None,
            **open_kw) -> Path:
    """Stream ``src`` into ``dst`` (any supported formats), chunk by chunk.

    A slice folder is streamed without dask: slabs of slices are decoded straight into one buffer each and
    the next slab is read while the previous one is compressed and written (:func:`read_slice_folder`
    ``stream=True``; the writers take any array-like that slices into numpy).
    """
    p = Path(check_path("src", src))
    if not open_kw and dataset is None and p.is_dir() and detect_format(p) == "slices":
        from .slices import read_slice_folder

        vol = read_slice_folder(p, voxel_size_nm=voxel_size_nm, stream=True)
    else:
        vol = open_volume(src, voxel_size_nm=voxel_size_nm, dataset=dataset, **open_kw)
    vol = vol.with_metadata(provenance=vol.metadata.provenance + (f"converted from {os.fspath(src)}",))
    return save_volume(vol, dst, dataset=out_dataset, compression=compression, overwrite=overwrite,
                       levels=levels, progress=progress)


__all__ = ["FORMATS", "open_volume", "open_image", "save_volume", "detect_format", "volume_info",
           "VolumeInfo", "convert", "atomic_output", "write_json", "check_not_input", "check_outputs", "prepare_folder",
           "replaceable", "sidecars", "clean_stale_partials", "scratch_path", "OWNER_MARKER", "write_marker",
           "lazy_from_slices"]
