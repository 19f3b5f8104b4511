"""ESRF EDF projections: a small reader (no fabio needed) and a writer for tests.

An EDF file is one or more frames, each an ASCII header ``{ key = value ; ... }`` padded with spaces to a
multiple of 512 bytes, followed by the raw pixels: ``Dim_1`` columns (fast axis) by ``Dim_2`` rows of
``DataType`` in ``ByteOrder`` (``LowByteFirst``/``HighByteFirst``), ``Size`` bytes.  Compressed frames
(a ``Compression`` key other than none) are refused: decompress them first (e.g. with fabio).

Projections are read lazily with memory maps: a slab of detector rows reads only those rows of each file.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError

__all__ = ["EdfFrame", "EdfStack", "edf_files", "is_edf", "read_edf", "read_edf_frames", "read_edf_projections",
           "write_edf"]

#: EDF DataType -> numpy kind and size
DATA_TYPES = {
    "unsignedbyte": "u1", "unsignedchar": "u1", "signedbyte": "i1", "signedchar": "i1",
    "unsignedshort": "u2", "signedshort": "i2", "unsignedinteger": "u4", "signedinteger": "i4",
    "unsignedint": "u4", "signedint": "i4", "unsignedlong": "u4", "signedlong": "i4",
    "unsigned64": "u8", "signed64": "i8", "floatvalue": "f4", "float": "f4", "real": "f4",
    "doublevalue": "f8", "double": "f8",
}
_NUMPY_TO_EDF = {"u1": "UnsignedByte", "i1": "SignedByte", "u2": "UnsignedShort", "i2": "SignedShort",
                 "u4": "UnsignedInteger", "i4": "SignedInteger", "f4": "FloatValue", "f8": "DoubleValue"}
_BLOCK = 512


@dataclass(frozen=True)
class EdfFrame:
    """One frame of an EDF file: where its pixels start, their shape ``(rows, cols)`` and dtype; the header."""

    path: Path
    offset: int
    shape: tuple[int, int]
    dtype: np.dtype
    header: dict

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (memory-mapped: only those bytes are read)."""
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        return np.array(mm[start:stop])


def _bad(path: Path, why: str) -> FormatError:
    return FormatError(f"{str(path)!r} is not a readable EDF file: {why}; check the file (ESRF EDF: a {{...}} "
                       "header padded to 512 bytes, then raw pixels)")


def _parse(text: str, path: Path) -> dict:
    header = {}
    for item in text.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            header[k.strip()] = v.strip()
    return header


def read_edf_frames(path) -> list[EdfFrame]:
    """Every frame of the EDF file ``path`` (headers read, pixels not)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"EDF file {str(p)!r} does not exist; check the path")
    size = p.stat().st_size
    frames, pos = [], 0
    with open(p, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = b""
            while b"}" not in head:
                chunk = f.read(_BLOCK)
                if not chunk:
                    raise _bad(p, f"a header at byte {pos} has no closing brace")
                head += chunk
            if not head.lstrip().startswith(b"{"):
                raise _bad(p, f"no '{{' header at byte {pos}")
            end = head.index(b"}")
            hlen = -(-(end + 1) // _BLOCK) * _BLOCK  # the header ("{ ... }\n", padded) fills whole 512-byte blocks
            frames.append(_frame(p, _parse(head[head.index(b"{") + 1:end].decode("latin-1"), p), pos + hlen))
            pos = frames[-1].offset + int(frames[-1].header.get("Size", frames[-1].dtype.itemsize
                                                                 * frames[-1].shape[0] * frames[-1].shape[1]))
    if not frames:
        raise _bad(p, "it is empty")
    return frames


def _frame(p: Path, h: dict, offset: int) -> EdfFrame:
    comp = h.get("Compression", "None").lower()
    if comp not in ("none", "no", ""):
        raise _bad(p, f"Compression={h['Compression']} is not supported by tomo4d's reader (uncompressed only)")
    try:
        cols, rows = int(h["Dim_1"]), int(h.get("Dim_2", 1))
    except (KeyError, ValueError):
        raise _bad(p, "the header has no integer Dim_1/Dim_2") from None
    if int(h.get("Dim_3", 1)) != 1:
        raise _bad(p, f"Dim_3={h['Dim_3']}: 3D frames are not projections")
    kind = DATA_TYPES.get(re.sub(r"[\s_]", "", h.get("DataType", "")).lower())
    if kind is None:
        raise _bad(p, f"DataType={h.get('DataType')!r} is not one of {sorted(set(_NUMPY_TO_EDF.values()))}")
    order = h.get("ByteOrder", "LowByteFirst").lower()
    if order not in ("lowbytefirst", "highbytefirst"):
        raise _bad(p, f"ByteOrder={h.get('ByteOrder')!r} must be LowByteFirst or HighByteFirst")
    dtype = np.dtype(("<" if order == "lowbytefirst" else ">") + kind)
    need = rows * cols * dtype.itemsize
    if int(h.get("Size", need)) < need or offset + need > p.stat().st_size:
        raise _bad(p, f"the frame needs {need} bytes of {rows} x {cols} {h['DataType']} after its header but the "
                      "file is shorter (truncated)")
    return EdfFrame(p, offset, (rows, cols), dtype, h)


def read_edf(path) -> np.ndarray:
    """All frames of an EDF file: ``(frames, rows, cols)`` in the file's dtype (native byte order)."""
    frames = read_edf_frames(path)
    if len({f.shape for f in frames}) != 1:
        raise _bad(Path(path), f"its frames differ in shape {[f.shape for f in frames]}")
    return np.stack([f.rows(0, f.shape[0]).astype(f.dtype.newbyteorder("="), copy=False) for f in frames])


def write_edf(path, frames, *, header: dict | None = None, byte_order: str = "LowByteFirst") -> Path:
    """Write ``frames`` (2D, or 3D: one EDF frame each) to ``path`` as EDF (for tests and exports)."""
    a = np.asarray(frames)
    a = a[None] if a.ndim == 2 else a
    kind = a.dtype.str[1:]
    if kind not in _NUMPY_TO_EDF:
        raise InputError(f"write_edf: dtype {a.dtype} has no EDF DataType; use one of {sorted(_NUMPY_TO_EDF)}")
    dt = a.dtype.newbyteorder("<" if byte_order == "LowByteFirst" else ">")
    with open(path, "wb") as f:
        for i, img in enumerate(a):
            items = {"HeaderID": f"EH:{i + 1:06d}:000000:000000", "Image": str(i + 1), "ByteOrder": byte_order,
                     "DataType": _NUMPY_TO_EDF[kind], "Dim_1": str(img.shape[1]), "Dim_2": str(img.shape[0]),
                     "Size": str(img.size * a.dtype.itemsize), **(header or {})}
            text = "{\n" + "".join(f"{k} = {v} ;\n" for k, v in items.items())
            n = -(-(len(text) + 2) // _BLOCK) * _BLOCK
            f.write((text + " " * (n - len(text) - 2) + "}\n").encode("latin-1"))
            f.write(np.ascontiguousarray(img, dtype=dt).tobytes())
    return Path(path)


def edf_files(spec, name: str = "projections") -> list[Path]:
    """EDF files of a folder, a glob or one file, in natural order (``p2`` before ``p10``)."""
    from ..io.slices import natural_key

    p = Path(spec)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix.lower() == ".edf"]
    elif glob.has_magic(str(spec)):
        files = [Path(f) for f in glob.glob(str(spec))]
    else:
        files = [p] if p.is_file() else []
    if not files:
        raise InputError(f"{name}={str(spec)!r} holds no EDF file (.edf); give a folder, a glob or a file")
    return sorted(files, key=lambda f: natural_key(str(f)))


class EdfStack:
    """Lazy ``(n, rows, cols)`` array of the frames of EDF files, read by rows (``data[i, r0:r1, :]``)."""

    def __init__(self, files):
        self.frames = [fr for f in files for fr in read_edf_frames(f)]
        shapes = {fr.shape for fr in self.frames}
        if len(shapes) != 1:
            first = self.frames[0]
            odd = next(fr for fr in self.frames if fr.shape != first.shape)
            raise InputError(f"EDF projections differ in detector size: {str(odd.path)!r} is {odd.shape}, "
                             f"{str(first.path)!r} {first.shape}; give projections of one detector region")
        self.shape = (len(self.frames), *self.frames[0].shape)
        self.dtype = self.frames[0].dtype.newbyteorder("=")

    def __getitem__(self, key):
        k0, k1, k2 = key
        idx = np.arange(self.shape[0])[k0]
        rows = range(self.shape[1])[k1]
        out = np.empty((len(idx), len(rows), self.shape[2]), self.dtype)
        for j, i in enumerate(np.atleast_1d(idx)):
            out[j] = self.frames[int(i)].rows(rows.start, rows.stop)
        return out[:, :, k2]


def _mean_frames(spec, name: str) -> np.ndarray | None:
    if spec is None:
        return None
    stack = EdfStack(edf_files(spec, name))
    total = np.zeros(stack.shape[1:], np.float64)
    for fr in stack.frames:
        total += fr.rows(0, fr.shape[0])
    return (total / stack.shape[0]).astype(np.float32)


def read_edf_projections(projections, *, flats=None, darks=None, angles=None, angle_range_deg: float = 180.0,
                         pixel_size_nm: float | None = None):
    """Projections from EDF files (a folder, a glob or a multi-frame file), flats and darks from others (averaged).

    ``angles`` is a text file or a sequence in degrees; None spreads the projections evenly over
    ``[0, angle_range_deg)``.  EDF carries no standard pixel size: give ``pixel_size_nm`` when it matters.
    """
    from .readers import Projections, read_angles

    data = EdfStack(edf_files(projections))
    n = data.shape[0]
    ang = read_angles(angles) if angles is not None else np.linspace(0.0, angle_range_deg, n, endpoint=False)
    return Projections(data=data, index=None, flat=_mean_frames(flats, "flats"), dark=_mean_frames(darks, "darks"),
                       angles_deg=ang, pixel_size_nm=None if pixel_size_nm is None else float(pixel_size_nm),
                       source=str(projections))


def is_edf(spec) -> bool:
    """``spec`` names EDF projections: an ``.edf`` file or glob, or a folder holding ``.edf`` files."""
    p = Path(spec)
    if str(spec).lower().endswith(".edf"):
        return True
    return p.is_dir() and any(f.suffix.lower() == ".edf" for f in p.iterdir())
