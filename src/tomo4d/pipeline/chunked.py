"""Out-of-core stages: when the segment, quantify and particles stages stream, and their lazy inputs.

A stage streams a volume when its in-memory working set (voxels x the operator's bytes per voxel) exceeds the
experiment's ``chunk_budget_mb`` (:func:`streams`); it then reads the volume slab by slab from its store
(:func:`lazy_segment`, :func:`lazy_labels`: dask arrays, nothing loaded) and writes its label volumes slab by
slab into a resumable :class:`tomo4d._chunks.SlabStore` under the final name's hidden progress folder, published
by the stage's save.  The results are those of the in-memory path (tests/pipeline/test_chunked_stages.py);
``chunk_budget_mb`` is therefore not in any cache key.
"""

from __future__ import annotations

from pathlib import Path

from .._chunks import fits_budget
from .series import analysis_scale

__all__ = ["budget_mb", "lazy_labels", "lazy_segment", "segment_path", "streams"]


def budget_mb(ctx) -> float:
    """The experiment's ``chunk_budget_mb``."""
    return float(ctx.experiment.chunk_budget_mb)


def streams(ctx, shape, bytes_per_voxel: float) -> bool:
    """A volume of ``shape`` needs more than the budget in memory (``bytes_per_voxel`` of working set)."""
    return not fits_budget(shape, bytes_per_voxel, budget_mb(ctx))


def segment_path(out: Path, name: str) -> Path:
    """``volumes/segment_<step>.ome.zarr`` of the segment stage."""
    return Path(out) / "volumes" / f"segment_{name}.ome.zarr"


def lazy_segment(ctx, step: int):
    """The segment stage's labels of ``step`` as a lazy dask array (read slab by slab)."""
    from ..io import open_volume

    return open_volume(segment_path(ctx.out, ctx.inputs.names[step])).data


def lazy_labels(ctx, path):
    """A label file on the ``inputs.series`` grid as a lazy dask array on the analysis grid (repeated x scale)."""
    from ..io import open_volume

    data = open_volume(path, voxel_size_nm=ctx.experiment.inputs.voxel_size_nm).data
    scale = analysis_scale(ctx.experiment)
    if scale > 1:
        import dask.array as da

        data = da.asarray(data)
        for axis in range(3):
            data = da.repeat(data, scale, axis=axis)
    return data
