"""Slab-wise prediction into a resumable store is bit-identical to the whole-volume prediction."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tomo4d.io import open_volume, save_volume
from tomo4d.segment import FeatureSpec, predict_labels, train_pixel_classifier
from tomo4d.segment import synthetic as syn
from tomo4d.segment.predict_chunked import plan_prediction, predict_to_store
from tomo4d.volume import Volume

VS = (50.0, 50.0, 50.0)


@pytest.fixture(scope="module")
def case():
    b = syn.spheres((45, 48, 40), n_particles=12, radius=(4.0, 7.0), seed=3)
    s = syn.scribbles(b.phases, fraction=0.08, slices=[3, 20, 40], seed=4)
    model = train_pixel_classifier(b.image, s, n_trees=4, seed=1, features=FeatureSpec(sigmas=(0.7, 1.6), ndim=3))
    return b.image.astype(np.float32), model


@pytest.mark.parametrize("budget_mb", [4.0, 6.0])
def test_store_prediction_bit_identical(case, tmp_path, budget_mb):
    image, model = case
    full = predict_labels(model, image, slab_depth=image.shape[0])  # the whole volume at once
    src = tmp_path / "img.ome.zarr"
    save_volume(Volume(image, VS), src)
    plan = plan_prediction(model, image.shape, chunk_budget_mb=budget_mb)
    assert len(plan) >= 3 and image.shape[0] % (plan[0][1] - plan[0][0]) != 0 and model.halo[0] > 0
    res = predict_to_store(model, open_volume(src, chunks=(4, 48, 40)), tmp_path / "seg.ome.zarr", voxel_size_nm=VS,
                           chunk_budget_mb=budget_mb, offset=1)
    got = open_volume(res.path).numpy()
    np.testing.assert_array_equal(got, full - 1)
    assert got.dtype == full.dtype
    np.testing.assert_array_equal(res.counts, [np.count_nonzero(full == c) for c in model.classes])


def test_store_prediction_resumes(case, tmp_path):
    image, model = case
    out = tmp_path / "seg.ome.zarr"
    res = predict_to_store(model, image, out, voxel_size_nm=VS, chunk_budget_mb=4.0, publish=False)
    # a crash after two slabs: forget the others' markers, spoil their voxels (they will be predicted again)
    for i in range(2, res.n_slabs):
        res.store._marker(i).unlink()
        z0, z1 = res.store.slabs[i]
        res.store._array[z0:z1] = 9
    again = predict_to_store(model, image, out, voxel_size_nm=VS, chunk_budget_mb=4.0)
    assert again.n_resumed == 2
    np.testing.assert_array_equal(open_volume(out).numpy(), predict_labels(model, image))
    # another model's leftovers are not reused
    other = train_pixel_classifier(image, predict_labels(model, image) * (np.arange(image.shape[1]) % 7 == 0)[:, None],
                                   n_trees=2, seed=2, features=model.features)
    c = tmp_path / "c.ome.zarr"
    predict_to_store(model, image, c, voxel_size_nm=VS, chunk_budget_mb=4.0, publish=False)
    third = predict_to_store(other, image, c, voxel_size_nm=VS, chunk_budget_mb=4.0)
    assert third.n_resumed == 0
    np.testing.assert_array_equal(open_volume(c).numpy(), predict_labels(other, image))


def test_store_prediction_memory_set_by_budget(case, tmp_path):
    image, model = case
    big = np.concatenate([image] * 3)  # 135 slices
    tracemalloc.start()
    predict_labels(model, big, slab_depth=big.shape[0])
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    predict_to_store(model, big, tmp_path / "s.ome.zarr", voxel_size_nm=VS, chunk_budget_mb=12.0)
    chunked = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chunked < 16 * 2**20 < whole, (chunked, whole)
