"""Training labels as slab sources (tomo4d.segment.training_labels) and the samples drawn from them
(tomo4d.segment.samples): the same model as from the dense label volume, never the volume in memory."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.segment import (
    FeatureSpec,
    LabelPlanes,
    LabelSlabs,
    compute_features,
    label_source,
    train_pixel_classifier,
    training_samples,
)


def _dense(planes, shape, axis, idx, shift=0):
    out = np.zeros(shape, np.int64)
    key = [slice(None)] * 3
    key[axis] = idx
    out[tuple(key)] = planes.astype(np.int64) + shift
    return out


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("scale", [1, 2])
def test_label_planes_read_and_count_as_the_dense_volume(axis, scale):
    rng = np.random.default_rng(axis)
    shape, idx = (9, 10, 11), [2, 7]
    pshape = list(shape)
    pshape[axis] = len(idx)
    planes = rng.integers(0, 4, size=pshape).astype(np.uint8)
    src = LabelPlanes(shape, axis, idx, planes, shift=1, scale=scale)
    dense = _dense(planes, shape, axis, idx, shift=1)
    for a in range(3):
        dense = np.repeat(dense, scale, axis=a)
    assert src.shape == dense.shape and src.dtype == np.uint8
    np.testing.assert_array_equal(src.read(0, dense.shape[0]), dense)
    np.testing.assert_array_equal(src.read(3, 2 * scale + 4), dense[3:2 * scale + 4])
    counts = src.counts_by_z()
    for z in range(dense.shape[0]):
        want = np.bincount(dense[z].ravel(), minlength=counts.shape[1])
        want[0] = 0
        np.testing.assert_array_equal(counts[z], want)


def test_label_slabs_read_lazily_a_slab_at_a_time_and_check_values():
    lab = np.random.default_rng(1).integers(0, 3, size=(40, 16, 16)).astype(np.uint16)

    class Recording:  # an array that records the boxes read from it
        shape, dtype, ndim = lab.shape, lab.dtype, 3

        def __init__(self):
            self.depths = []

        def __getitem__(self, key):
            self.depths.append(len(range(*key[0].indices(lab.shape[0]))))
            return lab[key]

    rec = Recording()
    src = LabelSlabs(rec, scale=1)
    np.testing.assert_array_equal(src.read(4, 9), lab[4:9])
    assert rec.depths == [5]
    lazy = label_source(da.from_array(lab, chunks=(7, 16, 16)), lab.shape)
    counts = lazy.counts_by_z()
    np.testing.assert_array_equal(counts[:, 1:], np.stack([np.bincount(p.ravel(), minlength=3)[1:] for p in lab]))
    bad = lab.astype(np.int32)
    bad[30, 2, 2] = -1
    with pytest.raises(InputError, match="my labels"):
        label_source(bad, bad.shape, name="my labels").counts_by_z()
    with pytest.raises(InputError, match=r"shape \(40, 16, 16\)"):
        label_source(lab, (40, 16, 17))
    with pytest.raises(InputError, match="LabelPlanes"):
        LabelPlanes((4, 5, 6), 0, [1, 1], np.zeros((2, 5, 6), np.uint8))


def _old_draw(image, lab, spec, max_per_class, seed):
    """The whole-volume route the samples replace: every labelled voxel's features in raster order, then
    ``rng.choice`` of each class's positions."""
    feats = compute_features(image, spec)
    sel = lab > 0
    x, y = feats[sel], lab[sel]
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        keep.append(idx)
    keep = np.concatenate(keep)
    return x[keep], y[keep]


@pytest.mark.parametrize("ndim", [2, 3])
def test_samples_are_those_of_the_whole_volume_route(ndim):
    """The draw before the features equals drawing from every labelled voxel's features (the trained model is
    therefore the one the dense route trained)."""
    rng = np.random.default_rng(2)
    image = rng.normal(size=(30, 40, 40)).astype(np.float32)
    lab = np.zeros(image.shape, np.uint8)
    lab[4] = rng.integers(0, 4, size=(40, 40))
    lab[5, :8] = 1
    lab[22, 10:30] = 2
    spec = FeatureSpec(sigmas=(1.0, 2.0), ndim=ndim)
    x, y, classes = training_samples([(image, lab)], spec, max_per_class=150, rng=np.random.default_rng(7))
    x0, y0 = _old_draw(image, lab, spec, 150, 7)
    assert list(classes) == [1, 2, 3]
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_allclose(x, x0, rtol=1e-5, atol=1e-5)  # slab vs whole-volume filters: float rounding


def test_planes_train_the_model_of_their_dense_volume():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(20, 32, 32)).astype(np.float32)
    planes = rng.integers(0, 3, size=(20, 2, 32)).astype(np.uint8)
    dense = _dense(planes, image.shape, 1, [5, 17], shift=1).astype(np.uint8)
    a = train_pixel_classifier(image, LabelPlanes(image.shape, 1, [5, 17], planes, shift=1), n_trees=3,
                               max_samples_per_class=200)
    b = train_pixel_classifier(image, dense, n_trees=3, max_samples_per_class=200)
    np.testing.assert_array_equal(a.predict_proba(image), b.predict_proba(image))
    assert a.training["samples_per_class"] == b.training["samples_per_class"] == {"1": 200, "2": 200, "3": 200}
