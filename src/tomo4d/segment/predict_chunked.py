"""Segmentation of volumes larger than memory straight into a resumable OME-Zarr store.

:func:`predict_to_store` walks the (lazy) image in z-slabs planned from a memory budget and the model's
footprint (:func:`tomo4d._chunks.plan_slabs` with ``model.bytes_per_slice`` and ``model.halo``: the
feature kernels' radius, ``truncate x sigma`` per axis), predicts each slab with
``model.proba_slab`` (which reads the slab and its halo) and writes it to a
:class:`tomo4d._chunks.SlabStore` with a done-marker: a rerun after a crash predicts only the slabs not
marked, a retried slab writes the same bytes.  Every voxel's features are computed from the same
neighbourhood as on the whole volume, so the labels are bit-identical to
:func:`tomo4d.segment.predict_labels` of the whole volume (tests/segment/test_predict_chunked.py).
It also counts the voxels of each class per slab (the segment stage's class table, no second pass).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._chunks import SlabStore, plan_slabs
from ._common import image_array, label_dtype
from .predict import _check_model, _source

__all__ = ["StoredPrediction", "model_fingerprint", "plan_prediction", "predict_to_store"]


@dataclass(frozen=True, eq=False)
class StoredPrediction:
    """Labels written slab by slab (not yet published unless :attr:`published`).

    Attributes
    ----------
    store : SlabStore
    classes : (C,) int64
        Label values written (the model's classes minus ``offset``).
    counts : (C,) int64
        Voxels of each class.
    n_slabs, n_resumed : int
        Slabs of the plan, and slabs found done on disk (not predicted again).
    """

    store: SlabStore
    classes: np.ndarray
    counts: np.ndarray
    n_slabs: int
    n_resumed: int

    @property
    def path(self) -> Path:
        return self.store.path


def model_fingerprint(model) -> str:
    """A digest of what the model predicts with (forest arrays and metadata), to tell its slabs from another's."""
    h = hashlib.sha256()
    meta = model.meta() if hasattr(model, "meta") else {"type": type(model).__name__}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    forest = getattr(model, "_forest", None)
    if forest is not None:
        for name in ("left", "right", "feature", "threshold", "value", "roots"):
            h.update(np.ascontiguousarray(getattr(forest, name)).tobytes())
    return h.hexdigest()[:24]


def plan_prediction(model, shape, *, chunk_budget_mb=None) -> list[tuple[int, int]]:
    """The slabs of a prediction of a ``shape`` volume whose features with halo fit ``chunk_budget_mb``."""
    ny, nx = int(shape[1]), int(shape[2])
    per_voxel = model.bytes_per_slice(ny, nx) / max(ny * nx, 1)
    return plan_slabs(shape, bytes_per_voxel=per_voxel, chunk_budget_mb=chunk_budget_mb, halo=int(model.halo[0]))


def predict_to_store(model, image, path, *, voxel_size_nm, chunk_budget_mb=None, key: str = "",
                     offset: int = 0, name: str = "segmentation", publish: bool = True,
                     progress=None) -> StoredPrediction:
    """Labels of every voxel of ``image`` written slab by slab to the OME-Zarr ``path`` (resumable).

    Parameters
    ----------
    model : PixelClassifier (or any model with ``classes``, ``halo``, ``bytes_per_slice``, ``proba_slab``)
    image : Volume or (z, y, x) array (lazy: read slab + halo at a time)
    path : path-like
        The ``.ome.zarr`` to write (atomically when complete; the slabs go to ``.NAME.slabs`` meanwhile).
    voxel_size_nm : (3,) float
    chunk_budget_mb : float, optional
        Working memory of one slab with its halo, MiB (features + probabilities).
    key : str
        Identifies the input (e.g. its path and size); with the model's fingerprint it decides whether the
        slabs an earlier run left are reused.
    offset : int
        Subtracted from every class value (the segment stage's ``segment.slices`` shift).
    publish : bool
        Publish the store when every slab is written (else call ``result.store.publish()``).
    progress : callable(done, total), optional
    """
    data = image_array(image)
    _check_model(model, data)
    src = _source(data)
    shape = tuple(int(s) for s in src.shape)
    classes = np.asarray(model.classes, dtype=label_dtype(model.classes))
    values = (classes.astype(np.int64) - int(offset)).astype(classes.dtype)
    plan = plan_prediction(model, shape, chunk_budget_mb=chunk_budget_mb)
    store = SlabStore(path, shape=shape, dtype=classes.dtype, slabs=plan, voxel_size_nm=voxel_size_nm, name=name,
                      key=f"{model_fingerprint(model)}:{key}:{int(offset)}").open()
    counts = np.zeros(len(values), np.int64)
    resumed = 0
    for i, (z0, z1) in enumerate(plan):
        if store.is_done(i):
            lab = store.read(z0, z1)
            resumed += 1
        else:
            p = model.proba_slab(src, z0, z1)
            lab = values[np.argmax(p, axis=0)]
            del p
            store.write(i, lab)
        counts += np.array([np.count_nonzero(lab == v) for v in values], np.int64)
        if progress is not None:
            progress(z1, shape[0])
    if publish:
        store.publish()
    return StoredPrediction(store=store, classes=values.astype(np.int64), counts=counts, n_slabs=len(plan),
                            n_resumed=resumed)
