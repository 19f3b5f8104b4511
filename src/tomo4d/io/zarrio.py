"""Zarr v3 arrays and OME-Zarr (NGFF 0.5) multiscale images.

Written layout (OME-Zarr 0.5)::

    volume.zarr/            group, attributes {"ome": {"multiscales": [...]}, "tomo4d": header}
      0/                    full resolution (z, y, x)
      1/, 2/ ...            optional 2x-binned levels (``levels=`` > 1)

Reading also understands NGFF 0.4 attributes (``multiscales`` at the top level)
and plain Zarr arrays (voxel size from a ``voxel_size_nm`` attribute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._array import lazy_from_reader, prefetched_slabs
from ..errors import FormatError, InputError
from ..volume import Volume, volume_from_header
from ._common import check_numeric, parse_header, require_3d, storage_chunks, unit_to_nm
from ._lazy import resolve_chunks

COMPRESSIONS = ("zstd", "lz4", "gzip", "none")


def _codecs(compression: str):
    from zarr.codecs import BloscCodec, GzipCodec

    if compression == "none":
        return None
    if compression == "gzip":
        return [GzipCodec(level=4)]
    return [BloscCodec(cname=compression, clevel=3, shuffle="bitshuffle")]


def _ome_multiscales(attrs) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    if "multiscales" in attrs:
        return attrs["multiscales"]
    return None


def _scale_nm(ms: dict, ds: dict) -> tuple[float, float, float] | None:
    axes = ms.get("axes") or []
    scale = None
    for t in ds.get("coordinateTransformations", []) or []:
        if t.get("type") == "scale":
            scale = t.get("scale")
    if scale is None:
        return None
    spatial = []
    for i, ax in enumerate(axes):
        name = ax if isinstance(ax, str) else ax.get("name")
        kind = "space" if isinstance(ax, str) and ax in "zyx" else (ax.get("type") if isinstance(ax, dict) else None)
        if kind == "space" or name in ("z", "y", "x"):
            unit = ax.get("unit") if isinstance(ax, dict) else None
            f = unit_to_nm(unit) if unit else None
            if unit and f is None:
                return None
            spatial.append(float(scale[i]) * (f or 1.0))
    if not axes:
        spatial = [float(s) for s in scale[-3:]]
    return tuple(spatial[-3:]) if len(spatial) >= 3 else None  # type: ignore[return-value]


class _ZarrChunks:
    """A Zarr array for :func:`dask.array.from_array` whose damaged chunks raise :class:`FormatError`."""

    def __init__(self, arr, path: Path):
        self.arr, self.path = arr, path
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), arr.ndim

    def __getitem__(self, key):
        try:
            return self.arr[key]
        except Exception as exc:  # codecs raise RuntimeError/ValueError/TypeError for damaged chunks
            raise FormatError(
                f"Zarr store {str(self.path)!r} could not be read ({type(exc).__name__}: {exc}); a chunk file "
                "is damaged or truncated: re-copy the store from its source or re-export it"
            ) from None


def read_zarr(path: Path, *, dataset=None, voxel_size_nm=None, chunks="auto") -> Volume:
    """Open a Zarr array or OME-Zarr group lazily.

    Parameters
    ----------
    path : Path
        The store (folder).
    dataset : str, optional
        Array or resolution level inside a group (default: OME-Zarr level 0, or the only array).
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.

    Returns
    -------
    Volume
        The array, lazily (dask), axes ``(z, y, x)``.

    Raises
    ------
    InputError
        No such array or level, or a group whose array must be chosen with ``dataset``.
    FormatError
        The store cannot be read, or the array is not a 3D numeric volume.
    """
    import zarr
    from dask.base import tokenize

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a bad store
        raise FormatError(
            f"{str(path)!r} is not a readable Zarr store ({type(exc).__name__}: {exc}): its metadata "
            "(zarr.json, or .zarray/.zgroup/.zattrs) is damaged or incomplete; re-copy the store from its "
            "source or re-export it"
        ) from None
    header = None
    vs = None
    if isinstance(node, zarr.Array):
        if dataset not in (None, "", "/"):
            raise InputError(f"dataset={dataset!r} given but {str(path)!r} is a single Zarr array; drop dataset")
        arr = node
        header = parse_header(arr.attrs.get("tomo4d"))
        if "voxel_size_nm" in arr.attrs:
            vs = tuple(float(v) for v in arr.attrs["voxel_size_nm"])
    else:
        header = parse_header(node.attrs.get("tomo4d"))
        multiscales = _ome_multiscales(node.attrs)
        names = sorted(node.array_keys())
        try:
            if dataset is None and multiscales:
                ms = multiscales[0]
                ds = ms["datasets"][0]
                dataset = ds["path"]
                vs = _scale_nm(ms, ds)
            elif dataset is not None and multiscales:
                ms = multiscales[0]
                for ds in ms["datasets"]:
                    if ds["path"] == str(dataset).strip("/"):
                        vs = _scale_nm(ms, ds)
                if str(dataset).strip("/") != ms["datasets"][0]["path"]:
                    header = None  # a binned level: its voxel size comes from the multiscales
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise FormatError(
                f"{str(path)!r} has malformed OME-Zarr 'multiscales' metadata ({type(exc).__name__}: {exc}); "
                "re-copy the store from its source or re-export it"
            ) from None
        if not multiscales and dataset is None:
            if len(names) != 1:
                raise InputError(
                    f"{str(path)!r} is a Zarr group with arrays {names or 'none'}; choose one with dataset=... (--dataset)"
                )
            dataset = names[0]
        try:
            arr = node[str(dataset).strip("/")]
        except KeyError:
            raise InputError(f"dataset={dataset!r} does not exist in {str(path)!r}; arrays there: {names}") from None
        if not isinstance(arr, zarr.Array):
            raise InputError(f"dataset={dataset!r} in {str(path)!r} is a group, not an array")
        if vs is None and "voxel_size_nm" in arr.attrs:
            vs = tuple(float(v) for v in arr.attrs["voxel_size_nm"])
    shape = require_3d(arr.shape, path)
    dtype = check_numeric(arr.dtype, path)
    if header is None:
        header = {"voxel_size_nm": vs, "voxel_size_known": vs is not None, "metadata": {"name": path.stem}}
    elif vs is not None and voxel_size_nm is None:
        header["voxel_size_nm"] = list(vs)
    data = lazy_from_reader(_ZarrChunks(arr, path), chunks=arr.chunks, name=f"tomo4d-zarr-{tokenize(arr)}")
    if tuple(arr.shape) != shape:
        data = data.reshape(shape)
    if chunks != "auto":
        data = data.rechunk(resolve_chunks(chunks, shape, dtype))
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def write_zarr(volume: Volume, tmp: Path, *, dataset=None, compression: str = "zstd", levels: int = 1,
               progress=None) -> None:
    """Write an OME-Zarr 0.5 group (``dataset`` names a plain array inside a group instead).

    Parameters
    ----------
    volume : Volume
    tmp : Path
        Store to create (the temporary of :func:`~tomo4d.io.atomic_output`).
    dataset : str, optional
        Name of a plain array inside the group instead of the OME-Zarr levels.
    compression : {"zstd", "lz4", "gzip", "none"}
    levels : int
        OME-Zarr resolution levels (2x binning each).
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.
    """
    import zarr

    root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    header = volume.header()
    if dataset not in (None, "", "0"):
        arr = _write_level(root, str(dataset).strip("/"), volume.data, compression, progress)
        arr.attrs["voxel_size_nm"] = list(volume.voxel_size_nm)
        arr.attrs["tomo4d"] = volume.header_json()
        return
    datasets = []
    level_data = volume.data
    for level in range(max(int(levels), 1)):
        factor = 2**level
        if level > 0:
            import dask.array as da

            src = da.from_zarr(root[str(level - 1)])
            shape = src.shape
            trimmed = src[: shape[0] // 2 * 2 or 1, : shape[1] // 2 * 2 or 1, : shape[2] // 2 * 2 or 1]
            if min(trimmed.shape) < 2:
                break
            level_data = da.coarsen(np.mean, trimmed.astype(np.float32), {0: 2, 1: 2, 2: 2}).astype(volume.dtype)
        _write_level(root, str(level), level_data, compression, progress if level == 0 else None)
        datasets.append({
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [v * factor for v in volume.voxel_size_nm]}],
        })
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{
            "name": volume.metadata.name or "volume",
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": datasets,
        }],
    }
    root.attrs["tomo4d"] = volume.header_json()
    del header


def _write_level(root, name: str, data, compression: str, progress):
    shape = tuple(int(s) for s in data.shape)
    dtype = np.dtype(data.dtype)
    chunks = storage_chunks(shape, dtype.itemsize)
    arr = root.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                            compressors=_codecs(compression), fill_value=0,
                            dimension_names=("z", "y", "x"))
    # zarr compares every voxel of every chunk with the fill value to skip empty chunks (a quarter of a
    # conversion's CPU); a chunk is empty iff all its bytes are zero (fill 0, compared bit for bit as zarr
    # does), which one plane usually disproves: chunks shown not empty are written without zarr's check
    unchecked = arr.with_config({"write_empty_chunks": True}) if hasattr(arr, "with_config") else None
    for z0, slab in prefetched_slabs(data, chunks[0]):
        z1 = z0 + len(slab)
        full = _nonempty_chunks(slab, chunks[1:]) if unchecked is not None else None
        if full is None:
            arr[z0:z1] = slab
        elif all(f for _, _, f in full):
            unchecked[z0:z1] = slab
        else:
            for ys, xs, f in full:  # empty chunks of a new array are left unwritten, as zarr leaves them
                if f:
                    unchecked[z0:z1, ys, xs] = slab[:, ys, xs]
        if progress is not None:
            progress(z1, shape[0])
    return arr


def _nonempty_chunks(slab: np.ndarray, chunks_yx) -> list[tuple[slice, slice, bool]] | None:
    """(y, x) slices of the chunks of a z-slab and whether each holds a non-zero byte; None: not decidable."""
    slab = np.asarray(slab)
    if slab.dtype.kind not in "biuf" or slab.dtype.itemsize not in (1, 2, 4, 8):
        return None
    bits = slab.view(f"u{slab.dtype.itemsize}")
    out = []
    for y0 in range(0, slab.shape[1], chunks_yx[0]):
        for x0 in range(0, slab.shape[2], chunks_yx[1]):
            ys, xs = slice(y0, y0 + chunks_yx[0]), slice(x0, x0 + chunks_yx[1])
            block = bits[:, ys, xs]
            out.append((ys, xs, bool(block[0].any() or block.any())))
    return out
