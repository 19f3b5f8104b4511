"""The :class:`Volume`: a 3D array with its voxel size and acquisition metadata.

Axes are always ``(z, y, x)``; z is the electrode-thickness / rotation axis.
Lengths are nanometres.  The array may be a numpy array (in memory) or a dask
array (lazy, chunked); readers in :mod:`tomo4d.io` return lazy volumes so that
a 16 GiB scan is never loaded by accident.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._array import is_lazy, to_numpy
from ._validate import check_number, show
from .errors import InputError

AXES = "zyx"
MODALITIES = ("xray", "neutron", "synthetic", "label", "unknown")


@dataclass(frozen=True)
class VolumeMetadata:
    """What is known about a scan besides its voxels.

    Attributes
    ----------
    name : str
        Human-readable name (e.g. ``"T3 LQ"``).
    time_step : str or None
        Label of the time step (``"T0"``, ``"T1"``, ...).
    time_s : float or None
        Acquisition time in seconds from the start of the experiment.
    state_of_charge : float or None
        State of charge as a fraction in [0, 1].
    modality : str
        One of ``"xray"``, ``"neutron"``, ``"synthetic"``, ``"label"``, ``"unknown"``.
    provenance : tuple of str
        Processing history, oldest first (``"read tiff /path"``, ...).
    extra : mapping
        Any further JSON-serialisable key/value pairs.
    """

    name: str = ""
    time_step: str | None = None
    time_s: float | None = None
    state_of_charge: float | None = None
    modality: str = "unknown"
    provenance: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise InputError(
                f"modality={show(self.modality)} is not known; use one of {', '.join(MODALITIES)}"
            )
        if self.state_of_charge is not None:
            soc = check_number("state_of_charge", self.state_of_charge)
            if not (0.0 <= soc <= 1.0):
                raise InputError(
                    f"state_of_charge={show(self.state_of_charge)} must be a fraction in [0, 1]"
                )
        object.__setattr__(self, "provenance", tuple(str(p) for p in self.provenance))
        object.__setattr__(self, "extra", dict(self.extra))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["provenance"] = list(self.provenance)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> VolumeMetadata:
        """Build from a dictionary, ignoring unknown keys (they go to ``extra``)."""
        if not d:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        unknown = {k: v for k, v in d.items() if k not in names}
        if unknown:
            known["extra"] = {**dict(known.get("extra") or {}), **unknown}
        if known.get("modality") not in MODALITIES:
            known["modality"] = "unknown"
        known["provenance"] = tuple(known.get("provenance") or ())
        return cls(**known)

    def with_step(self, text: str) -> VolumeMetadata:
        """Copy with ``text`` appended to the provenance."""
        return dataclasses.replace(self, provenance=self.provenance + (text,))


def _check_voxel_size(voxel_size_nm) -> tuple[float, float, float]:
    if voxel_size_nm is None:
        return (1.0, 1.0, 1.0)
    try:
        if np.isscalar(voxel_size_nm):
            vs = (float(voxel_size_nm),) * 3
        else:
            vs = tuple(float(v) for v in voxel_size_nm)
    except (TypeError, ValueError):
        raise InputError(
            f"voxel_size_nm={show(voxel_size_nm)} is not understood; give one number or three (z, y, x) in nm"
        ) from None
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(
            f"voxel_size_nm={show(voxel_size_nm)} must be one positive number or three (z, y, x), in nm"
        )
    return vs  # type: ignore[return-value]


def _describe(value) -> str:
    """``value`` for a message: short values as written, anything else by its type."""
    if value is None or isinstance(value, (str, bytes, bool, int, float, np.generic)):
        text = show(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"<{type(value).__name__}>"


def _check_data(data, name: str):
    """``data`` as an array (numpy unless it already is array-like); refuse what holds no numbers."""
    if data is None or isinstance(data, (str, bytes, Path, Mapping)):
        raise InputError(
            f"{name}={_describe(data)} is not an image; give a 3D (z, y, x) numpy or dask array of numbers "
            "(or a Volume; read files with tomo4d.io.open_volume)"
        )
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        try:
            data = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"{name}={_describe(data)} cannot be read as an array ({exc}); give a 3D (z, y, x) numpy or "
                "dask array of numbers"
            ) from None
    kind = np.dtype(data.dtype).kind
    if kind not in "biufc":
        raise InputError(
            f"{name} is an array of dtype {np.dtype(data.dtype)}, not of numbers; give a 3D (z, y, x) numpy "
            "or dask array of numbers"
        )
    return data


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scan: ``data`` of shape ``(z, y, x)``, voxel size in nm, metadata.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The voxels, 3D, axes ``(z, y, x)``.
    voxel_size_nm : float or (float, float, float)
        Voxel edge lengths along (z, y, x) in nanometres.  ``None`` means
        unknown and is stored as 1 nm (flagged by :attr:`voxel_size_known`).
    metadata : VolumeMetadata
        Name, time step, time, state of charge, modality, provenance.
    source : pathlib.Path or None
        File or folder the volume was read from, if any.  Writers refuse to
        overwrite it.
    """

    data: Any
    voxel_size_nm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    metadata: VolumeMetadata = field(default_factory=VolumeMetadata)
    source: Path | None = None
    voxel_size_known: bool = True

    def __post_init__(self):
        data = _check_data(self.data, "data")
        if data is not self.data:
            object.__setattr__(self, "data", data)
        if data.ndim != 3:
            raise InputError(
                f"a Volume needs a 3D (z, y, x) array, got shape {tuple(data.shape)}; "
                "for a single 2D slice add an axis with array[None]"
            )
        if any(s == 0 for s in data.shape):
            raise InputError(f"a Volume cannot be empty, got shape {tuple(data.shape)}")
        if self.voxel_size_nm is None:
            object.__setattr__(self, "voxel_size_known", False)
        object.__setattr__(self, "voxel_size_nm", _check_voxel_size(self.voxel_size_nm))
        if not isinstance(self.metadata, VolumeMetadata):
            object.__setattr__(self, "metadata", VolumeMetadata.from_dict(self.metadata))
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    # -- array-like -----------------------------------------------------
    axes = AXES

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def is_lazy(self) -> bool:
        return is_lazy(self.data)

    @property
    def chunks(self) -> tuple[int, int, int] | None:
        """Size of the first chunk along each axis (``None`` for numpy data)."""
        if self.is_lazy:
            return tuple(int(c[0]) for c in self.data.chunks)  # type: ignore[return-value]
        return None

    @property
    def extent_nm(self) -> tuple[float, float, float]:
        """Physical size along (z, y, x) in nm."""
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size_nm))  # type: ignore[return-value]

    def __array__(self, dtype=None, copy=None):
        a = to_numpy(self.data)
        return a.astype(dtype) if dtype is not None else a

    def __getitem__(self, key) -> Any:
        """Index the voxels (returns an array, not a Volume)."""
        return self.data[key]

    def __repr__(self) -> str:
        kind = "dask" if self.is_lazy else "numpy"
        vs = ", ".join(f"{v:g}" for v in self.voxel_size_nm)
        name = f" {self.metadata.name!r}" if self.metadata.name else ""
        return f"<Volume{name} {self.shape} {self.dtype} ({kind}) voxel=({vs}) nm>"

    # -- derived volumes --------------------------------------------------
    def compute(self) -> Volume:
        """The same volume with the data loaded into memory as numpy."""
        if not self.is_lazy:
            return self
        return dataclasses.replace(self, data=to_numpy(self.data))

    def numpy(self) -> np.ndarray:
        """The voxels as a numpy array (loads a lazy volume)."""
        return to_numpy(self.data)

    def with_data(self, data, *, step: str | None = None, voxel_size_nm=None) -> Volume:
        """A new Volume with other voxels (same metadata, provenance extended by ``step``)."""
        meta = self.metadata.with_step(step) if step else self.metadata
        vs = self.voxel_size_nm if voxel_size_nm is None else voxel_size_nm
        return Volume(data, vs, meta, source=None, voxel_size_known=self.voxel_size_known)

    def with_metadata(self, **changes) -> Volume:
        """A new Volume whose metadata fields are replaced by ``changes``."""
        return dataclasses.replace(self, metadata=dataclasses.replace(self.metadata, **changes))

    def crop(self, z=slice(None), y=slice(None), x=slice(None)) -> Volume:
        """Sub-volume by slices along (z, y, x); voxel size unchanged."""
        return self.with_data(self.data[z, y, x], step=f"crop z={z} y={y} x={x}")

    def header(self) -> dict[str, Any]:
        """JSON-serialisable description stored next to the voxels by writers."""
        return {
            "tomo4d": 1,
            "axes": AXES,
            "voxel_size_nm": list(self.voxel_size_nm),
            "voxel_size_known": self.voxel_size_known,
            "metadata": self.metadata.to_dict(),
        }

    def header_json(self) -> str:
        return json.dumps(self.header(), sort_keys=True)


def volume_from_header(data, header: Mapping[str, Any] | None, *, source=None,
                       voxel_size_nm=None) -> Volume:
    """Rebuild a :class:`Volume` from ``data`` and a header written by :meth:`Volume.header`.

    An explicit ``voxel_size_nm`` wins over the header.
    """
    header = dict(header or {})
    vs = voxel_size_nm if voxel_size_nm is not None else header.get("voxel_size_nm")
    known = voxel_size_nm is not None or (vs is not None and header.get("voxel_size_known", True))
    meta = VolumeMetadata.from_dict(header.get("metadata"))
    vol = Volume(data, vs, meta, source=source)
    if not known:
        object.__setattr__(vol, "voxel_size_known", False)
    return vol


def as_volume(obj, *, voxel_size_nm=None, name: str = "", param: str = "volume") -> Volume:
    """Accept a Volume or an array (numpy/dask) and return a Volume.

    ``param`` names the argument in error messages (e.g. ``"lq"``).
    """
    if isinstance(obj, Volume):
        if voxel_size_nm is not None:
            return dataclasses.replace(obj, voxel_size_nm=_check_voxel_size(voxel_size_nm),
                                       voxel_size_known=True)
        return obj
    return Volume(_check_data(obj, param), voxel_size_nm, VolumeMetadata(name=name))


def normalise_voxel_size(voxel_size_nm: float | Sequence[float] | None):
    """Public helper: validate and expand a voxel size to ``(z, y, x)`` nm."""
    return _check_voxel_size(voxel_size_nm)
