"""Pieces shared by the format modules: units, headers, array checks, tokens."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .._array import slab_depth
from ..errors import FormatError, InputError

log = logging.getLogger("tomo4d.io")

# Length units as found in TIFF/ImageJ, OME-Zarr and NeXus files, in nm.
UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "\\u00b5m": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9, "metre": 1e9,
    "angstrom": 0.1, "a": 0.1, "å": 0.1,
}


def unit_to_nm(unit) -> float | None:
    """Factor converting a length in ``unit`` to nm (None if unknown)."""
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    return UNIT_NM.get(str(unit).strip().lower())


def file_token(path: Path) -> str:
    """Deterministic token for a file's current state (for dask task names)."""
    from dask.base import tokenize

    try:
        st = os.stat(path)
        return tokenize(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return tokenize(str(path))


def parse_header(text) -> dict | None:
    """Parse a tomo4d JSON header; None when ``text`` is not one."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        return None
    return d if isinstance(d, dict) and "tomo4d" in d else None


def require_3d(shape, path, *, hint: str = "") -> tuple[int, int, int]:
    """Squeeze singleton axes; raise a clear error unless three remain."""
    dims = tuple(int(s) for s in shape)
    squeezed = tuple(s for s in dims if s != 1)
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    if len(squeezed) == 3:
        return squeezed  # type: ignore[return-value]
    if len(squeezed) <= 2 and len(dims) >= 2:
        raise InputError(
            f"{str(path)!r} holds a 2D image of shape {dims}, but a 3D (z, y, x) volume is needed; "
            "use tomo4d.io.open_image() for 2D images, or give a folder of slices / a 3D file" + hint
        )
    raise FormatError(
        f"{str(path)!r} holds data of shape {dims}; tomo4d volumes are 3D (z, y, x). "
        "Extract one 3D volume first (e.g. one time step or one channel)" + hint
    )


def check_numeric(dtype, path) -> np.dtype:
    dt = np.dtype(dtype)
    if not (np.issubdtype(dt, np.number) or dt == np.bool_) or np.issubdtype(dt, np.complexfloating):
        raise FormatError(f"{str(path)!r} holds {dt} data; tomo4d reads real-valued numeric volumes")
    return dt


def write_sidecar(path: Path, header: dict) -> None:
    path.write_text(json.dumps(header, indent=2, sort_keys=True))


def read_sidecar(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return parse_header(path.read_text())
    except OSError:
        return None


def storage_chunks(shape, itemsize: int) -> tuple[int, int, int]:
    """Chunk shape used when tomo4d writes Zarr/HDF5: <= 64 x 256 x 256, slabs <= 128 MiB."""
    z = min(64, slab_depth(shape, itemsize, target_bytes=128 * 2**20))
    return (max(1, min(z, shape[0])), min(256, shape[1]), min(256, shape[2]))
