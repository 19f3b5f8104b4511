"""InDI applied slab by slab into a resumable output store: the out-of-core enhance (issue 18).

:func:`enhance_volume` is already lazy (slices enhanced on demand, a few groups in memory); this module walks its
output in z-slabs planned from a memory budget and writes each slab into a :class:`tomo4d._chunks.SlabStore` (one
done-marker per slab, published atomically when complete), so that a run killed mid-volume resumes from the slabs
on disk and the peak memory is set by ``chunk_budget_mb``: one output slab, the engine's groups of up-sampled
slices and the LQ slices they read.  The slabs are computed with dask's synchronous scheduler (one after the
other, in z order, so the engine's window of enhanced slices serves the next slab's z interpolation) and equal
``enhance_volume(...).compute()`` bit for bit (the same engine, the same groups of slices).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._chunks import SlabStore, budget_bytes, plan_slabs

__all__ = ["StoredEnhancement", "enhance_to_store", "engine_bytes"]

log = logging.getLogger(__name__)

#: bytes per up-sampled slice pixel of one LQ slice in the engine: the up-sampled and normalised slice, the
#: padded state, noise, prediction and blend (float32), and the window of enhanced slices kept for z interpolation
ENGINE_BYTES_PER_PIXEL = 4.0 * 10


@dataclass(frozen=True)
class StoredEnhancement:
    """Result of :func:`enhance_to_store`: the store (published or not), slabs written and resumed."""

    path: Path
    store: SlabStore
    n_slabs: int
    n_resumed: int
    shape: tuple[int, int, int]
    published: bool


def engine_bytes(lq_shape_yx, group: int) -> int:
    """Working memory of the slice engine enhancing ``group`` LQ slices of ``lq_shape_yx`` at a time (bytes)."""
    ny, nx = (int(v) for v in lq_shape_yx)
    return int(ENGINE_BYTES_PER_PIXEL * 4 * ny * nx * (int(group) + 5))


def enhance_to_store(model, volume, path, *, chunk_budget_mb=None, key: str = "", publish: bool = True,
                     steps: int | None = None, seed: int = 0, tile: int = 512, overlap: int = 64, batch: int = 4,
                     group: int = 4, z_interp: bool = True, out_dtype=None, check_voxel_size: bool = True,
                     rule: str | None = None, consistency: bool = False, slices: bool | None = None,
                     precision: str | None = None, progress=None) -> StoredEnhancement:
    """Enhance ``volume`` (:func:`tomo4d.enhance.enhance_volume`, same options) slab by slab into ``path``.

    Parameters
    ----------
    path : path-like
        The ``.ome.zarr`` output; written under a hidden progress folder beside it and published (moved into
        place atomically) when every slab is written (``publish=False``: left to the caller,
        ``result.store.publish()``).
    chunk_budget_mb : float, optional
        Memory budget (MiB, default :data:`tomo4d._chunks.DEFAULT_CHUNK_BUDGET_MB`): output slabs hold what the
        budget leaves beside the engine's groups of slices (at least one slice).
    key : str
        Identifies the computation (e.g. the input's fingerprint): a progress folder left by another key is
        started over, one left by the same key is resumed.
    progress : callable(done, total), optional
        Called after each slab with the output slices written.
    """
    from .sample import enhance_volume

    vol = enhance_volume(model, volume, steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch,
                         z_interp=z_interp, out_dtype=out_dtype, check_voxel_size=check_voxel_size, group=group,
                         rule=rule, consistency=consistency, slices=slices, precision=precision)
    shape = tuple(int(s) for s in vol.shape)
    lq = volume.data if hasattr(volume, "voxel_size_nm") and hasattr(volume, "data") else volume
    left = budget_bytes(chunk_budget_mb) - engine_bytes(lq.shape[1:], group)
    per_voxel = np.dtype(vol.dtype).itemsize + 8.0  # the slab as computed (float32, stacked) and converted
    plan = plan_slabs(shape, bytes_per_voxel=per_voxel, chunk_budget_mb=max(left, 1) / 2**20)
    full_key = f"{key}|{vol.metadata.extra['enhance']}|{vol.dtype}"
    store = SlabStore(path, shape=shape, dtype=vol.dtype, slabs=plan, voxel_size_nm=vol.voxel_size_nm,
                      name=vol.metadata.name or "enhanced", key=full_key, modality="unknown").open()
    _write_header(store, vol)
    resumed = store.n_done()
    import dask

    with dask.config.set(scheduler="synchronous"):
        for i, (z0, z1) in enumerate(plan):
            if not store.is_done(i):
                store.write(i, np.asarray(vol.data[z0:z1].compute()))
            if progress is not None:
                progress(z1, shape[0])
    log.info("enhance %s: %d slabs (%d resumed)", Path(path).name, len(plan), resumed)
    out = store.publish() if publish else Path(path)
    return StoredEnhancement(path=out, store=store, n_slabs=len(plan), n_resumed=resumed, shape=shape,
                             published=bool(publish))


def _write_header(store: SlabStore, vol) -> None:
    """The enhanced volume's full header (provenance, the enhance options) in the store being written."""
    import zarr

    root = zarr.open_group(str(store.progress / "store"), mode="r+")
    root.attrs["tomo4d"] = vol.header_json()
