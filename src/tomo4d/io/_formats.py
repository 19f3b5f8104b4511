"""The format registry of :mod:`tomo4d.io`: one :class:`Format` entry per volume format.

:func:`tomo4d.io.detect_format`, :func:`tomo4d.io.open_volume` and :func:`tomo4d.io.save_volume`
know no format by name: they look up the entry (suffixes, content sniffing, folder markers,
compressions, the options its reader and writer take, sidecar files) and call the reader and
writer it names.  A new format is one module with a reader and a writer (numpydoc'd like those of
:mod:`tomo4d.io.tiff`) plus one entry in :data:`REGISTRY`; the module is imported only when a
file of that format is read or written.

Reader protocol: ``read(path, *, <read_options>, voxel_size_nm=None, chunks="auto") -> Volume``.
Writer protocol: ``write(volume, tmp, *sidecar_tmps, <write_options>, progress=None)`` writing
``tmp`` (and the temporaries of its own sidecars, in :attr:`Format.sidecars` order less
``".json"``); the tomo4d JSON header sidecar ``NAME.json``, where a format has one, is written by
:func:`~tomo4d.io.save_volume` from the writer's return value (or ``volume.header()``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: the sidecar suffix of the tomo4d JSON header (always replaced: it describes the volume written with it)
HEADER_SIDECAR = ".json"


@dataclass(frozen=True)
class Format:
    """One volume format.

    Attributes
    ----------
    name : str
        Name used by ``format=`` and reported by :func:`~tomo4d.io.detect_format`.
    label : str
        Name in messages ("HDF5").
    module, reader, writer : str
        Submodule of :mod:`tomo4d.io` and the names of its reader and writer functions.
    suffixes : tuple of str
        Lower-case file suffixes (with the dot) of the format.
    compressions : tuple of str
        Compressions the writer accepts; the first is the default.
    magic : tuple of bytes
        Starts of files of this format (content sniffing); empty: not recognisable by content.
    folder : bool
        Stored as a folder.
    folder_markers : tuple of str
        Names inside a folder that make it this format (a marker-less folder is a slice folder).
    read_options, write_options : tuple of str
        Keywords of :func:`~tomo4d.io.open_volume` / :func:`~tomo4d.io.save_volume` passed on to
        the reader / writer (``voxel_size_nm``, ``chunks`` and ``progress`` always are).
    sidecars : tuple of str
        Suffixes appended to the file name of the files written with it (``".info"``: passed to
        the writer; :data:`HEADER_SIDECAR`: the tomo4d header written by ``save_volume``).
    storage_dtype : str, optional
        The one dtype the format stores (other data is converted, with a log message).
    """

    name: str
    label: str
    module: str
    reader: str
    writer: str
    suffixes: tuple[str, ...] = ()
    compressions: tuple[str, ...] = ("none",)
    magic: tuple[bytes, ...] = ()
    folder: bool = False
    folder_markers: tuple[str, ...] = ()
    read_options: tuple[str, ...] = ()
    write_options: tuple[str, ...] = ()
    sidecars: tuple[str, ...] = ()
    storage_dtype: str | None = None

    def _function(self, name: str) -> Callable:
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), name)

    @property
    def read(self) -> Callable:
        """The reader function (imports its module)."""
        return self._function(self.reader)

    @property
    def write(self) -> Callable:
        """The writer function (imports its module)."""
        return self._function(self.writer)

    def sidecar_paths(self, path: Path) -> tuple[Path, ...]:
        """The sidecar files of the volume ``path`` in this format."""
        return tuple(path.with_name(path.name + s) for s in self.sidecars)


REGISTRY: tuple[Format, ...] = (
    Format("tiff", "TIFF", "tiff", "read_tiff", "write_tiff", suffixes=(".tif", ".tiff", ".btf", ".tf8"),
           compressions=("none", "zlib", "zstd", "lzw"),
           magic=(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), write_options=("compression",)),
    Format("slices", "slice folder", "slices", "read_slice_folder", "write_slice_folder",
           compressions=("none", "zlib", "zstd", "lzw"), folder=True, write_options=("compression",)),
    Format("hdf5", "HDF5", "hdf5", "read_hdf5", "write_hdf5",
           suffixes=(".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".he5"), compressions=("gzip", "lzf", "none"),
           magic=(b"\x89HDF\r\n\x1a\n",), read_options=("dataset",), write_options=("dataset", "compression")),
    Format("zarr", "Zarr", "zarrio", "read_zarr", "write_zarr", suffixes=(".zarr",),
           compressions=("zstd", "lz4", "gzip", "none"), folder=True,
           folder_markers=("zarr.json", ".zgroup", ".zarray"), read_options=("dataset",),
           write_options=("dataset", "compression", "levels")),
    Format("vol", "vol", "raw", "read_vol", "write_vol", suffixes=(".vol",), sidecars=(".info", HEADER_SIDECAR),
           storage_dtype="float32"),
    Format("raw", "raw", "raw", "read_raw", "write_raw", suffixes=(".raw", ".bin", ".dat"),
           read_options=("shape", "dtype", "offset", "byte_order"), sidecars=(HEADER_SIDECAR,)),
)

_BY_NAME = {f.name: f for f in REGISTRY}
#: lower-case suffix -> format name
SUFFIXES = {s: f.name for f in REGISTRY for s in f.suffixes}


def get_format(name: str) -> Format:
    """The registry entry named ``name`` (one of :data:`tomo4d.io.FORMATS`)."""
    return _BY_NAME[name]


def formats_with(option: str, *, reading: bool) -> tuple[Format, ...]:
    """The formats whose reader (``reading``) or writer takes ``option``."""
    return tuple(f for f in REGISTRY if option in (f.read_options if reading else f.write_options))


def labels(formats) -> str:
    """'A and B' (or 'A, B and C') of the formats' labels, for messages."""
    names = [f.label for f in formats]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def sniff(path: Path) -> str | None:
    """Name of the format whose magic bytes start the file ``path``; None if none does (or unreadable)."""
    n = max(len(m) for f in REGISTRY for m in f.magic)
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except OSError:
        return None
    for f in REGISTRY:
        if any(head.startswith(m) for m in f.magic):
            return f.name
    return None


def folder_format(path: Path) -> str | None:
    """Name of the folder format whose marker file lies inside ``path``; None for a plain folder."""
    for f in REGISTRY:
        if any((path / m).exists() for m in f.folder_markers):
            return f.name
    return None


def plain_folder_format() -> str:
    """Name of the format of a folder with no markers and no suffix (the slice folder)."""
    return next(f.name for f in REGISTRY if f.folder and not f.folder_markers and not f.suffixes)
