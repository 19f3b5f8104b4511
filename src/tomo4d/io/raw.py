"""Raw binary volumes and the ESRF/PyHST2/Nabu ``.vol`` + ``.vol.info`` pair.

``.vol``: float32, little-endian unless ``BYTEORDER = HIGHBYTEFIRST``, x fastest
then y then z, described by a text file ``NAME.vol.info`` (or ``NAME.info``)
with lines ``KEY = VALUE``: ``NUM_X``, ``NUM_Y``, ``NUM_Z`` (required) and
``voxelSize`` in micrometres (PyHST2/Nabu convention).

Generic raw: give ``shape`` and ``dtype`` (and optionally ``offset`` and
``byte_order``); tomo4d also writes a ``NAME.raw.json`` sidecar so its own raw
files reopen without them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .._array import iter_slabs, slab_depth
from .._validate import check_int, show
from ..errors import FormatError, InputError
from ..volume import Volume, volume_from_header
from ._common import file_token, read_sidecar, write_sidecar
from ._lazy import lazy_from_slices

BYTE_ORDERS = {"little": "<", "big": ">", "native": "="}


def info_path(vol: Path) -> Path | None:
    """The ``.info`` file belonging to a ``.vol`` file, if it exists."""
    for cand in (vol.with_name(vol.name + ".info"), vol.with_suffix(".info")):
        if cand.is_file():
            return cand
    return None


def parse_info(path: Path) -> dict[str, str]:
    """Parse a PyHST2/Nabu ``.info`` file into a dict with upper-case keys."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith(("!", "#")):
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*)$", line)
        if m:
            out[m.group(1).upper()] = m.group(2).strip()
    return out


def _memmap_dask(path: Path, shape, dtype, offset: int, chunks, *, kind: str):
    given = shape
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError(shape)
        shape = tuple(check_int("shape", s, minimum=1) for s in shape)
    except (TypeError, InputError):
        raise InputError(f"shape={show(given)} must be three positive integers (z, y, x)") from None
    if len(shape) != 3:
        raise InputError(f"shape={show(given)} must be three positive integers (z, y, x)")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise FormatError(
            f"{kind} file {str(path)!r} is truncated: {actual} bytes, but shape {shape} of {dtype.name} "
            f"(+{offset} header bytes) needs {expected}; check the shape/dtype or re-copy the file"
        )
    if actual > expected:
        raise FormatError(
            f"{kind} file {str(path)!r} has {actual} bytes but shape {shape} of {dtype.name} "
            f"(+{offset} header bytes) uses {expected}; check the shape, dtype and offset"
        )
    native = dtype.newbyteorder("=")

    def read(indices: list[int]) -> np.ndarray:
        # a fresh memmap per read: only the pages of these slices are touched
        mm = np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)
        z0, z1 = indices[0], indices[-1] + 1
        block = mm[z0:z1] if len(indices) == z1 - z0 else mm[indices]
        return np.asarray(block, dtype=native)

    # (dask's from_array on a numpy memmap touches the whole file: use the slice reader)
    return lazy_from_slices(read, shape, native, chunks, name=f"tomo4d-raw-{file_token(path)}")


def _info_int(info: dict, key: str, path: Path) -> int:
    if key not in info:
        raise FormatError(f"info file {str(path)!r} lacks the key {key}; add '{key} = <number>' to it")
    try:
        return int(float(info[key]))
    except ValueError:
        raise FormatError(f"info file {str(path)!r}: {key} = {info[key]!r} is not a number") from None


def read_vol(path: Path, *, voxel_size_nm=None, chunks="auto") -> Volume:
    """Open a PyHST ``.vol`` file (float32) with its ``.vol.info`` description lazily.

    Parameters
    ----------
    path : Path
        The ``.vol`` file; its info file is ``NAME.vol.info`` or ``NAME.info`` beside it.
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.

    Returns
    -------
    Volume
        The .vol voxels, lazily (dask), axes ``(z, y, x)``.

    Raises
    ------
    FormatError
        No info file, or one without sizes or voxel size (give ``voxel_size_nm`` then).
    """
    ipath = info_path(path)
    if ipath is None:
        raise FormatError(
            f"no info file for {str(path)!r}: expected {path.name}.info or {path.stem}.info beside it "
            "(with NUM_X, NUM_Y, NUM_Z, voxelSize)"
        )
    info = parse_info(ipath)
    nx, ny, nz = (_info_int(info, k, ipath) for k in ("NUM_X", "NUM_Y", "NUM_Z"))
    vs = None
    if "VOXELSIZE" in info:
        try:
            vs = float(info["VOXELSIZE"].split()[0]) * 1e3
        except ValueError:
            raise FormatError(f"info file {str(ipath)!r}: voxelSize = {info['VOXELSIZE']!r} is not a number") from None
    elif voxel_size_nm is None:
        raise FormatError(
            f"info file {str(ipath)!r} lacks the key voxelSize; add 'voxelSize = <um>' or give voxel_size_nm "
            "(--voxel-size)"
        )
    order = ">" if info.get("BYTEORDER", "LOWBYTEFIRST").upper().startswith("HIGH") else "<"
    data = _memmap_dask(path, (nz, ny, nx), np.dtype(order + "f4"), 0, chunks, kind=".vol")
    header = read_sidecar(path.with_name(path.name + ".json"))
    if header is None or (vs is not None and not np.isclose(header["voxel_size_nm"][2], vs, rtol=1e-6)):
        # no sidecar, or the info file was edited since: the info file is the reference
        meta = (header or {}).get("metadata") or {"name": path.stem, "modality": "xray"}
        header = {"voxel_size_nm": None if vs is None else [vs] * 3, "voxel_size_known": vs is not None,
                  "metadata": meta}
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def read_raw(path: Path, *, shape=None, dtype=None, offset: int = 0, byte_order: str = "little",
             voxel_size_nm=None, chunks="auto") -> Volume:
    """Open headerless raw voxels (C order, z slowest) lazily.

    Parameters
    ----------
    path : Path
    shape : (z, y, x) int, optional
    dtype : numpy dtype or str, optional
        Needed unless the ``NAME.json`` sidecar tomo4d writes describes the file.
    offset : int
        Bytes to skip at the start.
    byte_order : {"little", "big", "native"}
    voxel_size_nm, chunks
        As for :func:`tomo4d.io.open_volume`.

    Returns
    -------
    Volume
        The raw voxels, lazily (dask), axes ``(z, y, x)``.

    Raises
    ------
    InputError
        No shape/dtype and no sidecar, or an invalid dtype, offset or byte order.
    """
    side = read_sidecar(path.with_name(path.name + ".json"))
    raw_info = (side or {}).get("raw", {})
    shape = shape if shape is not None else raw_info.get("shape")
    dtype = dtype if dtype is not None else raw_info.get("dtype")
    if shape is None or dtype is None:
        raise InputError(
            f"raw file {str(path)!r} has no description; give shape=(z, y, x) and dtype "
            "(--shape Z,Y,X --dtype uint16 on the command line)"
        )
    if byte_order not in BYTE_ORDERS:
        raise InputError(f"byte_order={show(byte_order)} must be one of {', '.join(BYTE_ORDERS)}")
    try:
        if not isinstance(dtype, (str, np.dtype, type)):
            raise TypeError(dtype)  # numpy reads a scalar such as np.float64(2.0) as its type
        dt = np.dtype(dtype).newbyteorder(BYTE_ORDERS[raw_info.get("byte_order", byte_order)])
    except (TypeError, ValueError):
        raise InputError(f"dtype={show(dtype)} is not a numpy dtype; use e.g. 'uint16' or 'float32'") from None
    off = check_int("offset", raw_info.get("offset", offset), minimum=0)
    data = _memmap_dask(path, shape, dt, off, chunks, kind="raw")
    header = side or {"voxel_size_nm": None, "voxel_size_known": False, "metadata": {"name": path.stem}}
    return volume_from_header(data, header, source=path, voxel_size_nm=voxel_size_nm)


def _write_binary(volume: Volume, tmp: Path, dtype: np.dtype, progress) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    depth = slab_depth(volume.shape, dtype.itemsize)
    with open(tmp, "wb") as fh:
        for z0, slab in iter_slabs(volume.data, depth):
            slab = np.ascontiguousarray(slab, dtype=dtype)
            if slab.size:
                lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
            fh.write(slab.tobytes())
            if progress is not None:
                progress(z0 + len(slab), volume.shape[0])
    return lo, hi


def write_vol(volume: Volume, tmp: Path, tmp_info: Path, *, progress=None) -> None:
    """Write float32 little-endian ``.vol`` data to ``tmp`` and its info text to ``tmp_info``.

    Parameters
    ----------
    volume : Volume
        Converted to float32.
    tmp, tmp_info : Path
        The ``.vol`` and ``.vol.info`` files to create (temporaries of :func:`~tomo4d.io.atomic_output`).
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.
    """
    lo, hi = _write_binary(volume, tmp, np.dtype("<f4"), progress)
    nz, ny, nx = volume.shape
    vz, vy, vx = volume.voxel_size_nm
    lines = [
        "! PyHST_SLAVE VOLUME INFO FILE (written by tomo4d)",
        f"NUM_X = {nx}", f"NUM_Y = {ny}", f"NUM_Z = {nz}",
        f"voxelSize = {vx / 1e3:.10g}",
        "BYTEORDER = LOWBYTEFIRST",
        f"ValMin = {lo:.9g}", f"ValMax = {hi:.9g}",
        "s1 = 0", "s2 = 0", "S1 = 0", "S2 = 0",
    ]
    if not (vz == vy == vx):
        lines.append(f"! anisotropic voxel (z, y, x) nm = {vz:g}, {vy:g}, {vx:g}: see the .vol.json sidecar")
    tmp_info.write_text("\n".join(lines) + "\n")


def write_raw(volume: Volume, tmp: Path, *, progress=None) -> dict:
    """Write C-order little-endian voxels; return the sidecar content.

    Parameters
    ----------
    volume : Volume
    tmp : Path
        The file to create (the temporary of :func:`~tomo4d.io.atomic_output`).
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices written.

    Returns
    -------
    dict
        The tomo4d header plus a ``raw`` entry (shape, dtype, byte order, offset): the
        ``NAME.json`` sidecar that lets :func:`read_raw` open the file without arguments.
    """
    dt = volume.dtype.newbyteorder("<")
    _write_binary(volume, tmp, dt, progress)
    header = volume.header()
    header["raw"] = {"shape": list(volume.shape), "dtype": volume.dtype.name, "byte_order": "little", "offset": 0}
    return header


def sidecar_text(header: dict) -> str:
    return json.dumps(header, indent=2, sort_keys=True)


__all__ = ["read_vol", "read_raw", "write_vol", "write_raw", "parse_info", "info_path", "write_sidecar"]
