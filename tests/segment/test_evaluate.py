"""Evaluation: Dice/IoU, boundary F1 and particle matching on hand-checked cases; input comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.segment import compare_inputs, evaluate_segmentation, match_particles


def test_dice_iou_by_hand():
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2, :2] = 1          # 4 voxels of class 1, 12 of class 0
    pred = np.zeros_like(truth)
    pred[0, :2, :1] = 1           # 2 voxels, all correct
    s = evaluate_segmentation(pred, truth)
    assert s.of(1).dice == pytest.approx(2 * 2 / (2 + 4))
    assert s.of(1).iou == pytest.approx(2 / 4)
    assert s.of(0).dice == pytest.approx(2 * 12 / (14 + 12))
    assert s.accuracy == pytest.approx(14 / 16)
    assert s.n_voxels == 16


def test_region_and_ignore_label():
    truth = np.array([[0, 1, 2, 2]])
    pred = np.array([[2, 1, 2, 1]])
    s = evaluate_segmentation(pred, truth, ignore_label=0)
    assert [c.label for c in s.classes] == [1, 2]
    assert s.accuracy == pytest.approx(2 / 3)
    s2 = evaluate_segmentation(pred, truth, region=np.array([[True, True, True, False]]))
    assert s2.accuracy == pytest.approx(2 / 3)
    with pytest.raises(InputError, match="no voxel"):
        evaluate_segmentation(pred, truth, region=np.zeros((1, 4), bool))


@pytest.mark.parametrize("shift, tol, expected", [(0, 0.0, 1.0), (1, 1.0, 1.0), (1, 2.0, 1.0), (3, 1.0, None)])
def test_boundary_f1_of_shifted_square(shift, tol, expected):
    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    pred = np.roll(truth, shift, axis=1)
    s = evaluate_segmentation(pred, truth, boundary_tolerance_nm=tol)
    if expected is not None:
        assert s.of(1).boundary_f1 == pytest.approx(expected)
    else:  # a 3-voxel shift with a 1-voxel tolerance: only the horizontal edges (minus corners) match
        assert 0.3 < s.of(1).boundary_f1 < 0.7
    assert s.of(1).dice == pytest.approx(1 - shift / 20)


def test_boundary_tolerance_in_nm_with_voxel_size():
    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    pred = np.roll(truth, 2, axis=1)
    tight = evaluate_segmentation(pred, truth, voxel_size_nm=100.0, boundary_tolerance_nm=150.0)
    loose = evaluate_segmentation(pred, truth, voxel_size_nm=100.0, boundary_tolerance_nm=200.0)
    assert tight.of(1).boundary_f1 < 0.8 and loose.of(1).boundary_f1 == pytest.approx(1.0)


def test_absent_class_gives_nan():
    s = evaluate_segmentation(np.ones((3, 3), np.uint8), np.ones((3, 3), np.uint8), classes=[1, 5])
    assert math.isnan(s.of(5).dice) and s.of(1).dice == 1.0
    assert s.mean_dice == 1.0


def test_particle_matching():
    true = np.zeros((20, 20), np.int32)
    true[1:5, 1:5] = 1
    true[8:12, 8:12] = 2
    true[14:18, 14:18] = 3
    pred = np.zeros_like(true)
    pred[1:5, 1:5] = 10           # perfect
    pred[8:12, 8:10] = 11         # half of particle 2: IoU 0.5 -> matched at the threshold
    pred[8:12, 10:12] = 12        # the other half: no second match
    pred[0, 19] = 13              # a false positive
    s = match_particles(pred, true)
    assert (s.n_predicted, s.n_true, s.n_matched) == (4, 3, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 2 / 7)
    strict = match_particles(pred, true, iou_threshold=0.6)
    assert strict.n_matched == 1
    empty = match_particles(np.zeros_like(true), true)
    assert empty.recall == 0.0 and empty.f1 == 0.0 and math.isnan(empty.precision)


def test_shape_mismatch_and_bad_threshold():
    with pytest.raises(InputError, match="shape"):
        evaluate_segmentation(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(InputError, match="iou_threshold"):
        match_particles(np.zeros((3, 3), int), np.zeros((3, 3), int), iou_threshold=0)


def test_compare_inputs_prefers_the_cleaner_image(blobs, blob_scribbles):
    """Same scribbles, same forest: the less noisy image must segment better."""
    rng = np.random.default_rng(5)
    noisy = blobs.clean + rng.normal(0, 0.3, blobs.clean.shape).astype(np.float32)
    res = compare_inputs({"noisy": noisy, "clean": blobs.image}, blob_scribbles, blobs.phases, focus_class=2,
                         true_particles=blobs.particles, particle_class=2,
                         train_options={"n_trees": 8}, particle_options={"min_volume_nm3": 30.0})
    assert res.ranking() == ("clean", "noisy")
    assert res.dice("clean") - res.dice("noisy") > 0.03
    clean = res.inputs[1]
    assert clean.name == "clean" and clean.particles is not None and clean.particles.f1 > 0.75
    with pytest.raises(InputError, match="method"):
        compare_inputs({"a": noisy}, blob_scribbles, blobs.phases, method="svm")
