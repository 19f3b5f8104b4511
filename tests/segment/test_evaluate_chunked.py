"""Segmentation scores slab by slab (tomo4d.segment.evaluate_chunked) equal the whole-volume scores."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d.errors import InputError
from tomo4d.segment import evaluate_segmentation
from tomo4d.segment.evaluate_chunked import evaluate_segmentation_chunked


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    truth = np.digitize(ndi.gaussian_filter(rng.normal(size=(37, 40, 41)), 2), [-0.05, 0.05]).astype(np.uint8)
    pred = truth.copy()
    noise = rng.random(truth.shape) < 0.05
    pred[noise] = rng.integers(0, 3, noise.sum())
    pred[30:] = np.where(pred[30:] == 2, 5, pred[30:])   # a class met only in the last slabs of the prediction
    return pred, truth, rng.random(truth.shape) > 0.3


def _same(a, b):
    assert (a.accuracy, a.n_voxels, a.boundary_tolerance_nm) == (b.accuracy, b.n_voxels, b.boundary_tolerance_nm)
    assert len(a.classes) == len(b.classes)
    for x, y in zip(a.classes, b.classes):
        np.testing.assert_array_equal(np.asarray(list(vars(x).values()), float), np.asarray(list(vars(y).values()), float))


@pytest.mark.parametrize("kw", [{}, {"ignore_label": 0}, {"classes": [1, 2, 7]},
                                {"voxel_size_nm": (100.0, 50.0, 50.0), "boundary_tolerance_nm": 120.0},
                                {"voxel_size_nm": (30.0, 50.0, 50.0)}])
@pytest.mark.parametrize("with_region", [False, True])
def test_slab_scores_equal_the_whole_volume_scores(pair, kw, with_region):
    pred, truth, region = pair
    if with_region:
        kw = {**kw, "region": region}
    whole = evaluate_segmentation(pred, truth, **kw)
    lazy = {**kw, "region": da.from_array(region, chunks=(4, 40, 41))} if with_region else kw
    for budget in (0.2, 1.0):
        _same(whole, evaluate_segmentation_chunked(da.from_array(pred, chunks=(5, 40, 41)), truth,
                                                   chunk_budget_mb=budget, **lazy))


def test_refusals_name_the_problem(pair):
    pred, truth, _ = pair
    with pytest.raises(InputError, match="shape"):
        evaluate_segmentation_chunked(pred[:-1], truth)
    with pytest.raises(InputError, match="no value in common"):
        evaluate_segmentation_chunked(pred + 10, truth, chunk_budget_mb=0.2)
    with pytest.raises(InputError, match="no voxel to evaluate"):
        evaluate_segmentation_chunked(pred, truth, region=np.zeros(truth.shape, bool))


@pytest.mark.parametrize("thr", [0.2, 0.5, 0.9])
def test_particle_matching_slab_by_slab_equals_the_whole_volume(thr):
    from tomo4d.segment import match_particles
    from tomo4d.segment.evaluate_chunked import match_particles_chunked

    rng = np.random.default_rng(2)
    true, _ = ndi.label(ndi.gaussian_filter(rng.normal(size=(30, 40, 40)), 2) > 0.1)
    pred, _ = ndi.label(ndi.binary_dilation(true > 0) & (rng.random(true.shape) > 0.05))
    pred = np.where(pred > 0, pred + 100, 0)   # other values than the truth's
    whole = match_particles(pred, true, iou_threshold=thr)
    got = match_particles_chunked(da.from_array(pred, chunks=(4, 40, 40)), true, iou_threshold=thr, chunk_budget_mb=0.05)
    assert whole.n_matched > 0 or thr == 0.9
    for f in ("n_predicted", "n_true", "n_matched", "precision", "recall", "f1", "mean_matched_iou"):
        np.testing.assert_array_equal(getattr(got, f), getattr(whole, f), err_msg=f)
