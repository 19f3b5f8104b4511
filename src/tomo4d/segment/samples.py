"""The training samples of a pixel classifier: which labelled voxels, and their features.

The samples are drawn before any feature is computed: one pass counts every class in every z-plane
(:meth:`~tomo4d.segment.training_labels.LabelPlanes.counts_by_z`), the seeded draw picks at most
``max_per_class`` voxels per class by their rank in raster order, and a second pass computes features only on
the z-slabs holding a drawn voxel and keeps only those rows.  Memory is one feature slab plus the samples,
whatever the size of the label volume; the draw equals drawing from every labelled voxel's features pooled in
raster order (image by image), so the model is the one the whole-volume route trained.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_finite, show
from ..errors import InputError
from ._common import image_array, voxel_size_of
from .features import FeatureSpec, feature_halo, features_of_slab
from .training_labels import label_source

_SLAB_BYTES = 256 * 2**20  # features of one slab


def _check_pair(pairs, k: int) -> tuple[np.ndarray, object, str]:
    image, labels = pairs[k]
    key, lkey = ("image", "labels") if len(pairs) == 1 else (f"image[{k}]", f"labels[{k}]")
    data = image_array(image)
    check_finite(key, data)
    vs, vs0 = voxel_size_of(image, None), voxel_size_of(pairs[0][0], None)
    if vs is not None and vs0 is not None and not np.allclose(vs, vs0, rtol=1e-6):
        raise InputError(f"{key} has voxel size {show(list(vs))} nm but image[0] has {show(list(vs0))}; the "
                         "training images must share the voxel size")
    return data, label_source(labels, data.shape, name=lkey), lkey


def _check_classes(counts: np.ndarray, name: str, need: int) -> None:
    classes = np.flatnonzero(counts.sum(axis=0))
    if classes.size == 0:
        raise InputError(f"{name} contain no labelled voxels (all are 0 = unlabelled); label some voxels of "
                         "each class with 1, 2, ...")
    if classes.size < need:
        raise InputError(f"{name} contain only class {int(classes[0])}; label voxels of at least two classes "
                         "(e.g. particles = 1 and background = 2) so the classifier can tell them apart")


def _runs(zs: np.ndarray, gap: int, max_depth: int) -> list[tuple[int, int]]:
    """Slabs covering planes ``zs``: planes closer than ``gap`` share a slab of at most ``max_depth`` planes."""
    runs: list[tuple[int, int]] = []
    for z in zs:
        if runs and z - runs[-1][1] < gap and z + 1 - runs[-1][0] <= max_depth:
            runs[-1] = (runs[-1][0], int(z) + 1)
        else:
            runs.append((int(z), int(z) + 1))
    return runs


def _draw(totals: np.ndarray, classes: np.ndarray, max_per_class: int | None, rng) -> dict[int, np.ndarray | None]:
    """Sorted ranks drawn per class (None: every voxel of the class), as ``rng.choice`` draws from the
    class's voxels in raster order."""
    out: dict[int, np.ndarray | None] = {}
    for c in classes:
        n = int(totals[c])
        out[int(c)] = (np.sort(rng.choice(n, size=max_per_class, replace=False))
                       if max_per_class is not None and n > max_per_class else None)
    return out


def _slab_rows(lab, feats, c, first, drawn, out_x) -> None:
    """Append the feature rows of the drawn voxels of class ``c`` in one slab (its class-``c`` voxels have
    ranks ``first ...`` in raster order)."""
    pos = np.flatnonzero(lab == c)
    if drawn is not None:
        lo, hi = np.searchsorted(drawn, [first, first + pos.size])
        pos = pos[drawn[lo:hi] - first]
    if pos.size:
        out_x.append(feats[np.unravel_index(pos, lab.shape)])


def _collect(data, src, spec, counts, base, ranks, classes, stack, progress, out) -> None:
    """Features of the drawn voxels of one image (their class ranks start at ``base``), appended per class."""
    three = data if data.ndim == 3 else data[None]
    stack = stack if stack is None or data.ndim == 3 else stack[None]
    before = base[None, :] + np.concatenate([np.zeros((1, counts.shape[1]), np.int64), np.cumsum(counts, 0)])
    need = np.zeros(counts.shape[0], bool)
    for c in classes:
        if counts[:, c].any():
            d = ranks[int(c)]
            hit = (counts[:, c] > 0) if d is None else \
                np.searchsorted(d, before[1:, c]) > np.searchsorted(d, before[:-1, c])
            need |= hit
    per_slice = int(np.prod(three.shape[1:])) * 4 * (spec.n_features + 2)
    gap = 1 + (2 * feature_halo(spec)[0] if spec.ndim == 3 and data.ndim == 3 else 0)
    runs = _runs(np.flatnonzero(need), gap, max(1, _SLAB_BYTES // max(per_slice, 1)))
    for i, (z0, z1) in enumerate(runs):
        feats = stack[z0:z1] if stack is not None else features_of_slab(three, z0, z1, spec)
        lab = src.read(z0, z1)
        for c in classes:
            _slab_rows(lab, feats, c, int(before[z0, c]), ranks[int(c)], out[int(c)])
        if progress is not None:
            progress(i + 1, len(runs))


def training_samples(pairs, spec: FeatureSpec, *, max_per_class: int | None, rng=None, progress=None,
                     stacks=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (N, F) float32, y (N,), classes)``: features and classes of at most ``max_per_class`` labelled voxels
    per class (None: all) of every ``(image, labels)`` pair, pooled, grouped by class (ascending) and in raster
    order within a class, drawn with ``rng`` (``numpy.random.Generator``); ``stacks`` (where given and not None)
    is each image's whole feature stack.

    Raises
    ------
    InputError
        Labels of another shape or with values that are not classes, no labelled voxel, a single class.
    """
    checked = [_check_pair(pairs, k) for k in range(len(pairs))]
    counts = [src.counts_by_z() for _, src, _ in checked]
    width = max(c.shape[1] for c in counts)
    counts = [np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in counts]
    for k, c in enumerate(counts):
        _check_classes(c, checked[k][2], 2 if len(pairs) == 1 else 1)
    totals = sum(c.sum(axis=0) for c in counts)
    classes = np.flatnonzero(totals)
    if classes.size < 2:
        raise InputError(f"labels hold a single class ({show(classes.tolist())}) over all training images; label "
                         "at least two classes")
    ranks = _draw(totals, classes, max_per_class, rng)
    out: dict[int, list] = {int(c): [] for c in classes}
    base = np.zeros(width, np.int64)
    for k, (data, src, _) in enumerate(checked):
        _collect(data, src, spec, counts[k], base, ranks, classes, None if stacks is None else stacks[k],
                 progress, out)
        base = base + counts[k].sum(axis=0)
    xs = [np.concatenate(out[int(c)]) for c in classes]
    y = np.concatenate([np.full(len(x), c, np.int64) for x, c in zip(xs, classes)])
    return np.concatenate(xs), y, classes


def labelled_samples(image, labels, spec: FeatureSpec, *, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, F)`` and labels ``(N,)`` of every labelled voxel of one image (grouped by class), computed
    only on the z-slabs that hold labels (plus their halo): scribbles on a few slices of a large lazy volume are
    cheap."""
    x, y, _ = training_samples([(image, labels)], spec, max_per_class=None, progress=progress)
    return x, y


__all__ = ["training_samples", "labelled_samples"]
