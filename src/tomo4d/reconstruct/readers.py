"""Projection data sets: NXtomo HDF5 and TIFF stacks with flats, darks and an angle list.

A :class:`Projections` keeps the projections lazy (an h5py dataset or a dask array): the
reconstruction reads one slab of detector rows at a time.  Flats and darks are averaged when read
(they are few).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import show
from ..errors import InputError

#: NXtomo image_key values
KEY_PROJECTION, KEY_FLAT, KEY_DARK = 0, 1, 2

_DATA_PATHS = ("entry/instrument/detector/data", "entry/data/data", "entry/data")
_KEY_PATHS = ("entry/instrument/detector/image_key", "entry/data/image_key")
_ANGLE_PATHS = ("entry/sample/rotation_angle", "entry/data/rotation_angle")
_PIXEL_PATHS = ("entry/instrument/detector/x_pixel_size",)
_LENGTH_NM = {"m": 1e9, "mm": 1e6, "um": 1e3, "micron": 1e3, "µm": 1e3, "nm": 1.0}


@dataclass(frozen=True, eq=False)
class Drift:
    """Flats (or darks) taken before and after the projections, for a linear drift correction.

    ``before``/``after`` are the averaged images ``(rows, cols)``; ``weight`` is, per projection, its position
    between the two acquisitions (0 at the ``before`` images, 1 at the ``after`` ones).
    """

    before: np.ndarray
    after: np.ndarray
    weight: np.ndarray

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The interpolated image of every projection for rows ``[start, stop)``: ``(n, stop - start, cols)``."""
        b, a = self.before[start:stop], self.after[start:stop]
        return (b[None] + self.weight[:, None, None].astype(np.float32) * (a - b)[None]).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Projections:
    """Projections ``(angle, row, column)`` with their flats, darks and angles.

    Attributes
    ----------
    data : array-like
        Lazy ``(n, rows, cols)`` (h5py dataset with ``index``, or dask/numpy array).
    index : numpy.ndarray or None
        Positions of the projections along ``data``'s first axis (NXtomo), None for all.
    flat, dark : numpy.ndarray or None
        Averaged flat and dark images ``(rows, cols)``, float32.
    angles_deg : numpy.ndarray
        One angle per projection, degrees.
    pixel_size_nm : float or None
    source : str
        Where they were read from (for provenance).
    flat_drift, dark_drift : Drift or None
        Flats/darks taken before and after the projections (NXtomo), for ``ReconstructOptions(drift=True)``.
    opener : dict or None
        The keyword arguments of :func:`open_projections` that opened them (set by it): a worker process opens
        its own copy with them (:func:`reopen`) instead of receiving the data.
    """

    data: Any
    index: np.ndarray | None
    flat: np.ndarray | None
    dark: np.ndarray | None
    angles_deg: np.ndarray
    pixel_size_nm: float | None = None
    source: str = ""
    flat_drift: Drift | None = None
    dark_drift: Drift | None = None
    opener: dict | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        n = len(self.index) if self.index is not None else int(self.data.shape[0])
        return n, int(self.data.shape[1]), int(self.data.shape[2])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Projections of detector rows ``[start, stop)`` as a new float32 array ``(n, stop - start, cols)``.

        Always a copy (never a view of in-memory projections): the reconstruction normalises it in place.
        """
        idx = self.index
        if idx is None:
            block = self.data[:, start:stop, :]
        elif len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
            block = self.data[int(idx[0]):int(idx[0]) + len(idx), start:stop, :]  # one hyperslab, not a point list
        else:
            block = self.data[idx, start:stop, :]
        return np.array(block, dtype=np.float32)  # a copy even of float32 arrays


def check_projections(proj: Projections, *, allow_missing_flats: bool) -> None:
    """Refuse inconsistent projection data (see the issue's bad-input list)."""
    n, rows, cols = proj.shape
    where = f" in {proj.source}" if proj.source else ""
    if n < 2 or rows < 1 or cols < 8:
        raise InputError(f"projections{where} have shape {(n, rows, cols)}; need >= 2 projections of >= 8 columns")
    if len(proj.angles_deg) != n:
        raise InputError(f"{len(proj.angles_deg)} angles for {n} projections{where}; give one angle per "
                         "projection (the angle list or rotation_angle must match)")
    if not np.all(np.isfinite(proj.angles_deg)):
        raise InputError(f"the rotation angles{where} contain non-finite values; fix the angle list")
    for name, img in (("flats", proj.flat), ("darks", proj.dark)):
        if img is None:
            if not allow_missing_flats:
                raise InputError(f"no {name}{where}; give them (--flats/--darks or image_key 1/2 in NXtomo), or "
                                 "pass allow_missing_flats=True (--no-flats) if the projections are already "
                                 "flat-corrected transmissions")
        elif img.shape != (rows, cols):
            raise InputError(f"{name} have detector size {img.shape} but the projections {(rows, cols)}{where}; "
                             "use flats and darks of the same detector region and binning")


def _first(h5, paths):
    for p in paths:
        if p in h5:
            return p
    return None


def _length_nm(ds) -> float | None:
    value = float(np.asarray(ds[()]).ravel()[0])
    units = ds.attrs.get("units", "m")
    units = units.decode() if isinstance(units, bytes) else str(units)
    factor = _LENGTH_NM.get(units.strip())
    return value * factor if factor and value > 0 else None


def _mean_images(ds, idx) -> np.ndarray | None:
    if len(idx) == 0:
        return None
    out = np.zeros(ds.shape[1:], np.float64)
    for i in idx:
        out += ds[int(i)]
    return (out / len(idx)).astype(np.float32)


def _drift(ds, idx, proj_idx) -> Drift | None:
    """Images ``idx`` split at the middle projection into before/after groups; None unless both exist."""
    if len(proj_idx) < 2:
        return None
    mid = np.median(proj_idx)
    before, after = idx[idx < mid], idx[idx > mid]
    if len(before) == 0 or len(after) == 0:
        return None
    pb, pa = float(before.mean()), float(after.mean())
    weight = np.clip((proj_idx - pb) / (pa - pb), 0.0, 1.0)
    return Drift(_mean_images(ds, before), _mean_images(ds, after), weight)


def read_nxtomo(path, *, data_path: str | None = None) -> Projections:
    """Open an NXtomo file: projections, flats and darks by ``image_key``, ``rotation_angle`` in degrees.

    The file stays open while the returned projections are used (h5py dataset, read slab by slab).
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"projections file {str(p)!r} does not exist; check the path")
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"{str(p)!r} is not a readable HDF5/NXtomo file ({exc})") from None
    dpath = data_path or _first(h5, _DATA_PATHS)
    if dpath is None or not isinstance(h5.get(dpath), h5py.Dataset) or h5[dpath].ndim != 3:
        h5.close()
        raise InputError(f"{str(p)!r} has no 3D projection dataset at {data_path or ' or '.join(_DATA_PATHS)}; "
                         "give data_path (--dataset)")
    ds = h5[dpath]
    kpath = _first(h5, _KEY_PATHS)
    keys = np.asarray(h5[kpath][()]).astype(int) if kpath else np.zeros(ds.shape[0], int)
    if len(keys) != ds.shape[0]:
        h5.close()
        raise InputError(f"image_key in {str(p)!r} has {len(keys)} entries for {ds.shape[0]} images; fix the file")
    proj_idx = np.flatnonzero(keys == KEY_PROJECTION)
    apath = _first(h5, _ANGLE_PATHS)
    if apath is None:
        h5.close()
        raise InputError(f"{str(p)!r} has no rotation angles ({' or '.join(_ANGLE_PATHS)}); add them")
    angles = np.asarray(h5[apath][()], dtype=np.float64)
    units = str(h5[apath].attrs.get("units", "degrees"))
    if len(angles) == len(keys):
        angles = angles[proj_idx]
    if units.startswith("rad"):
        angles = np.rad2deg(angles)
    ppath = _first(h5, _PIXEL_PATHS)
    flats, darks = np.flatnonzero(keys == KEY_FLAT), np.flatnonzero(keys == KEY_DARK)
    return Projections(data=ds, index=proj_idx, flat=_mean_images(ds, flats), dark=_mean_images(ds, darks),
                       angles_deg=angles, pixel_size_nm=_length_nm(h5[ppath]) if ppath else None, source=str(p),
                       flat_drift=_drift(ds, flats, proj_idx), dark_drift=_drift(ds, darks, proj_idx))


def read_angles(path_or_values, n: int | None = None) -> np.ndarray:
    """Angles in degrees from a text file (one a line, or whitespace/comma separated) or a sequence."""
    if isinstance(path_or_values, (str, Path)):
        p = Path(path_or_values)
        if not p.is_file():
            raise InputError(f"angle list {str(p)!r} does not exist; give a text file of angles in degrees")
        try:
            values = np.array(p.read_text().replace(",", " ").split(), dtype=np.float64)
        except ValueError:
            raise InputError(f"angle list {str(p)!r} holds something else than numbers; one angle (degrees) "
                             "a line") from None
    else:
        values = np.asarray(path_or_values, dtype=np.float64).ravel()
    return values


def read_tiff_projections(projections, *, flats=None, darks=None, angles=None, angle_range_deg: float = 180.0,
                          pixel_size_nm: float | None = None) -> Projections:
    """Projections from a TIFF stack or slice folder, flats/darks from others (averaged), angles.

    ``angles`` is a text file or a sequence in degrees; None spreads the projections evenly over
    ``[0, angle_range_deg)``.
    """
    from ..io import open_image, open_volume

    vol = open_volume(projections)
    data = vol.data
    n = int(data.shape[0])

    def mean_of(src, name):
        if src is None:
            return None
        try:
            img = np.asarray(open_volume(src).data, dtype=np.float64)
        except InputError:
            img = np.asarray(open_image(src), dtype=np.float64)[None]
        if img.ndim == 2:
            img = img[None]
        if img.ndim != 3:
            raise InputError(f"{name}={show(str(src))} is not a stack of 2D images")
        return img.mean(axis=0).astype(np.float32)

    ang = read_angles(angles) if angles is not None else np.linspace(0.0, angle_range_deg, n, endpoint=False)
    vs = pixel_size_nm if pixel_size_nm is not None else (vol.voxel_size_nm[2] if vol.voxel_size_known else None)
    return Projections(data=data, index=None, flat=mean_of(flats, "flats"), dark=mean_of(darks, "darks"),
                       angles_deg=ang, pixel_size_nm=vs, source=str(projections))


def open_projections(path, *, flats=None, darks=None, angles=None, angle_range_deg: float = 180.0,
                     pixel_size_nm: float | None = None, data_path: str | None = None) -> Projections:
    """NXtomo (``.nxs``, ``.h5``, ``.hdf5``), ESRF EDF (``.edf`` files, a glob or a folder of them) or TIFF
    (stack or slice folder), by the path.

    NXtomo files carry their flats, darks and angles (``image_key``, ``rotation_angle``): giving them again is
    refused.  ``pixel_size_nm`` overrides the file's.
    """
    from .edf import is_edf, read_edf_projections

    opener = {"path": str(path), "flats": flats, "darks": darks, "angles": angles, "angle_range_deg": angle_range_deg,
              "pixel_size_nm": pixel_size_nm, "data_path": data_path}
    opener = {k: (str(v) if isinstance(v, Path) else v) for k, v in opener.items()}
    suffix = Path(path).suffix.lower()
    if suffix in (".nxs", ".h5", ".hdf5", ".hdf", ".nx"):
        given = [name for name, v in (("flats", flats), ("darks", darks), ("angles", angles)) if v is not None]
        if given:
            raise InputError(f"{str(path)!r} is NXtomo: its flats, darks and angles come from the file (image_key, "
                             f"rotation_angle); drop {', '.join(given)}")
        proj = read_nxtomo(path, data_path=data_path)
        if pixel_size_nm is not None:
            proj = dataclasses.replace(proj, pixel_size_nm=float(pixel_size_nm))
    elif is_edf(path):
        proj = read_edf_projections(path, flats=flats, darks=darks, angles=angles, angle_range_deg=angle_range_deg,
                                    pixel_size_nm=pixel_size_nm)
    else:
        proj = read_tiff_projections(path, flats=flats, darks=darks, angles=angles, angle_range_deg=angle_range_deg,
                                     pixel_size_nm=pixel_size_nm)
    return dataclasses.replace(proj, opener=opener)


def portable(proj: Projections):
    """What a slab task in another process receives: the opener (reopened there by :func:`reopen`), or the
    projections themselves when they were not read by :func:`open_projections` (in-memory arrays)."""
    return dict(proj.opener) if proj.opener is not None else proj


def reopen(spec) -> Projections:
    """The projections of :func:`portable`'s ``spec`` (opened again from the files, or ``spec`` itself)."""
    return open_projections(**spec) if isinstance(spec, dict) else spec
