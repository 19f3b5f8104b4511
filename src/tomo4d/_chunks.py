"""Out-of-core slab processing: slab plans from a memory budget, halo reads, resumable chunked Zarr writes.

Every out-of-core operator in tomo4d walks the volume in z-slabs (all of y and x at once), so a
slab is a contiguous run of whole storage chunks and the operators that reduce along z (interface
step fits, z faces of particles) need only a carry between consecutive slabs:

* :func:`plan_slabs` turns a memory budget (``chunk_budget_mb``) and the operator's working bytes per
  voxel and halo (filter truncation, feature footprint, 1 slice for face neighbours) into
  ``[(z0, z1), ...]``, so the peak memory is set by the budget, not by the volume;
* :func:`read_slab` reads ``data[z0 - halo : z1 + halo]`` (clipped) from a numpy, dask or Zarr source
  (a lazy :class:`~tomo4d.volume.Volume` from :func:`tomo4d.io.open_volume` reads only those slices);
* :class:`SlabStore` is an OME-Zarr label/float volume filled slab by slab under a hidden progress name
  (``.NAME.slabs``) with one done-marker per slab, published atomically (:func:`tomo4d.io.atomic_output`)
  when every slab is there.  A rerun after a crash resumes from the slabs marked done; a slab rewritten
  (a retried task) writes whole storage chunks with the same bytes, so a retry never corrupts an output.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from ._array import read_box
from ._validate import check_number, show
from .errors import InputError

__all__ = ["DEFAULT_CHUNK_BUDGET_MB", "SlabStore", "budget_bytes", "fits_budget", "plan_slabs", "read_slab",
           "volume_data"]

#: working memory of one slab when the caller gives none, MiB
DEFAULT_CHUNK_BUDGET_MB = 512.0


def budget_bytes(chunk_budget_mb) -> int:
    """``chunk_budget_mb`` (MiB, > 0; None: :data:`DEFAULT_CHUNK_BUDGET_MB`) in bytes."""
    mb = DEFAULT_CHUNK_BUDGET_MB if chunk_budget_mb is None else chunk_budget_mb
    mb = check_number("chunk_budget_mb", mb, minimum=0.0, exclusive_minimum=True)
    return int(mb * 2**20)


def fits_budget(shape, bytes_per_voxel: float, chunk_budget_mb) -> bool:
    """The whole volume's working memory (``bytes_per_voxel`` per voxel) fits the budget: no need to stream."""
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    return n * float(bytes_per_voxel) <= budget_bytes(chunk_budget_mb)


def plan_slabs(shape, *, bytes_per_voxel: float, chunk_budget_mb=None, halo: int = 0,
               multiple: int = 1) -> list[tuple[int, int]]:
    """``[(z0, z1), ...]`` covering ``[0, nz)``: slabs whose working memory with halo fits the budget.

    Parameters
    ----------
    shape : (nz, ny, nx)
    bytes_per_voxel : float
        Working memory of the operator per voxel of a slab (input, temporaries, output).
    chunk_budget_mb : float, optional
        Memory budget of one slab, MiB (default :data:`DEFAULT_CHUNK_BUDGET_MB`).
    halo : int
        Slices of context read on each side of a slab (they count against the budget).
    multiple : int
        Slab depth rounded down to a multiple of this (storage chunk depth) when it is larger.
    """
    nz, ny, nx = (int(s) for s in shape)
    per_slice = max(float(bytes_per_voxel) * ny * nx, 1.0)
    depth = int(budget_bytes(chunk_budget_mb) // per_slice) - 2 * int(halo)
    if depth < 1:  # one slice and its halo exceed the budget: the smallest slab possible
        depth = 1
    if multiple > 1 and depth >= multiple:
        depth = depth // multiple * multiple
    depth = min(depth, max(nz, 1))
    return [(z0, min(z0 + depth, nz)) for z0 in range(0, nz, depth)]


def volume_data(obj):
    """The array of a Volume (lazy or not), or ``obj`` itself."""
    from .volume import Volume

    return obj.data if isinstance(obj, Volume) else obj


def read_slab(data, z0: int, z1: int, halo: int = 0) -> tuple[np.ndarray, int]:
    """``(block, lo)``: numpy ``data[max(z0 - halo, 0) : min(z1 + halo, nz)]`` and the offset of ``z0`` in it."""
    nz = int(data.shape[0])
    a, b = max(int(z0) - int(halo), 0), min(int(z1) + int(halo), nz)
    return read_box(data, slice(a, b)), int(z0) - a


def _store_chunks(shape, itemsize: int, depth: int) -> tuple[int, int, int]:
    """Storage chunks whose z edge divides every slab but the last (whole-chunk, idempotent writes)."""
    cz = math.gcd(int(depth), 64) if depth > 0 else 1
    return (max(1, min(cz, shape[0])), min(256, shape[1]), min(256, shape[2]))


class SlabStore:
    """An OME-Zarr volume ``path`` written slab by slab, resumable, published when complete.

    Parameters
    ----------
    path : path-like
        Final ``.ome.zarr`` path (written atomically by :meth:`publish`).
    shape, dtype
        Of the volume.
    slabs : list of (z0, z1)
        The slab plan (:func:`plan_slabs`); slab ``i`` is written by :meth:`write`.
    voxel_size_nm : (3,) float
    name : str
        Title stored in the metadata.
    key : str
        Identifies the computation (e.g. a cache key): a progress folder left by another key is discarded.
    modality : str
        ``"label"`` for labels.
    """

    def __init__(self, path, *, shape, dtype, slabs, voxel_size_nm, name: str = "volume", key: str = "",
                 modality: str = "label"):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.slabs = [(int(a), int(b)) for a, b in slabs]
        if not self.slabs or self.slabs[0][0] != 0 or self.slabs[-1][1] != self.shape[0]:
            raise InputError(f"slabs={show(self.slabs)} must cover z in [0, {self.shape[0]}) in order")
        self.progress = self.path.parent / f".{self.path.name}.slabs"
        self._meta = {"shape": list(self.shape), "dtype": self.dtype.str, "slabs": self.slabs, "key": str(key),
                      "voxel_size_nm": [float(v) for v in voxel_size_nm]}
        self._name, self._modality = name, modality
        self._array = None

    # -- state -----------------------------------------------------------------------------
    def _marker(self, i: int) -> Path:
        z0, z1 = self.slabs[i]
        return self.progress / "done" / f"{z0:09d}-{z1:09d}"

    def is_done(self, i: int) -> bool:
        """Slab ``i`` was written completely (by this or an earlier, interrupted run)."""
        return self._marker(i).exists()

    def n_done(self) -> int:
        return sum(self.is_done(i) for i in range(len(self.slabs)))

    def open(self):
        """Create the progress store, or reuse the one an interrupted run of the same computation left."""
        import zarr

        meta_path = self.progress / "slabs.json"
        if self.progress.exists():
            try:
                same = json.loads(meta_path.read_text(encoding="utf-8")) == json.loads(json.dumps(self._meta))
            except (OSError, ValueError):
                same = False
            if same:
                try:
                    self._array = zarr.open_group(str(self.progress / "store"), mode="r+")["0"]
                    return self
                except Exception:  # noqa: BLE001 - a damaged leftover is discarded, the slabs written again
                    pass
            shutil.rmtree(self.progress)
        (self.progress / "done").mkdir(parents=True)
        root = zarr.open_group(str(self.progress / "store"), mode="w", zarr_format=3)
        self._array = self._create(root)
        _write_text(meta_path, json.dumps(self._meta))
        return self

    def _create(self, root):
        from zarr.codecs import BloscCodec

        from .volume import Volume, VolumeMetadata

        depth = self.slabs[0][1] - self.slabs[0][0]
        arr = root.create_array("0", shape=self.shape, chunks=_store_chunks(self.shape, self.dtype.itemsize, depth),
                                dtype=self.dtype, fill_value=0, dimension_names=("z", "y", "x"),
                                compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")])
        vs = self._meta["voxel_size_nm"]
        header = Volume(np.zeros((1, 1, 1), self.dtype), vs, VolumeMetadata(name=self._name, modality=self._modality))
        root.attrs["ome"] = {"version": "0.5", "multiscales": [{
            "name": self._name, "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": vs}]}]}]}
        root.attrs["tomo4d"] = header.header_json()
        return arr

    # -- writing ---------------------------------------------------------------------------
    def write(self, i: int, block: np.ndarray) -> None:
        """Write slab ``i`` (shape ``(z1 - z0, ny, nx)``) and mark it done (a rewrite writes the same chunks)."""
        z0, z1 = self.slabs[i]
        block = np.asarray(block)
        if block.shape != (z1 - z0,) + self.shape[1:]:
            raise InputError(f"slab {i} has shape {block.shape}; expected {(z1 - z0,) + self.shape[1:]}")
        self._array[z0:z1] = block.astype(self.dtype, copy=False)
        _write_text(self._marker(i), "")

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Voxels ``[z0, z1)`` of the store being written (slabs already written)."""
        return np.asarray(self._array[z0:z1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        """Voxels of the store being written, e.g. ``store[z0:z1]`` (a lazy array to readers such as
        :func:`read_slab`)."""
        return np.asarray(self._array[key])

    def __setitem__(self, key, block) -> None:
        """``store[z0:z1] = block`` of exactly one planned slab: :meth:`write` of that slab (writers such as
        :func:`tomo4d.dvc.residual_map` that fill an ``out`` array slab by slab)."""
        z0, z1, _ = key.indices(self.shape[0]) if isinstance(key, slice) else (None, None, None)
        if (z0, z1) not in self.slabs:
            raise InputError(f"{self.path}: store[{key}] is not one of the planned slabs; write whole slabs")
        self.write(self.slabs.index((z0, z1)), block)

    def publish(self, *, overwrite: bool = True) -> Path:
        """Move the complete store to :attr:`path` (atomically); refuses while a slab is missing."""
        from .io import atomic_output

        missing = [i for i in range(len(self.slabs)) if not self.is_done(i)]
        if missing:
            raise InputError(f"{self.path}: {len(missing)} of {len(self.slabs)} slabs are not written yet "
                             f"(first: z {self.slabs[missing[0]]}); write them before publishing")
        with atomic_output(self.path, overwrite=overwrite) as tmp:
            os.replace(self.progress / "store", tmp)
        shutil.rmtree(self.progress, ignore_errors=True)
        return self.path


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` by rename (a marker is either absent or complete)."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
