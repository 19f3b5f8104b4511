"""Acceptance on the real cell slice: train on one quarter, evaluate on the other three (Dice >= 0.9)."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.segment import UNetConfig, evaluate_segmentation, predict_labels, train_pixel_classifier, train_unet

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def cell(real_file):
    from tomo4d.io import open_image

    img, mask = open_image(real_file("cell_xct_slice_1.tif")), open_image(real_file("cell_xct_slice_1_mask.tif"))
    truth = np.where(mask > 0, 2, 1).astype(np.uint8)  # 2 = electrode windings (mask 255), 1 = rest
    h, w = truth.shape
    labels = np.zeros_like(truth)
    labels[: h // 2, : w // 2] = truth[: h // 2, : w // 2]  # the top-left quarter, fully labelled
    return img, truth, labels


def test_forest_on_a_quarter(cell):
    img, truth, labels = cell
    model = train_pixel_classifier(img, labels, n_trees=24, seed=0)
    pred = predict_labels(model, img)
    s = evaluate_segmentation(pred, truth, region=labels == 0)
    assert s.of(2).dice >= 0.9
    assert s.of(1).dice >= 0.9
    assert s.of(2).boundary_f1 >= 0.9


@pytest.mark.slow
@pytest.mark.heavy  # over a minute on 2 cores: not in CI's slow pass (-m heavy runs it)
@pytest.mark.usefixtures("one_torch_thread")
def test_unet_on_a_quarter(cell):
    img, truth, labels = cell
    model = train_unet(img, labels, config=UNetConfig.small(iterations=300), seed=0)
    pred = predict_labels(model, img)
    s = evaluate_segmentation(pred, truth, region=labels == 0)
    assert s.of(2).dice >= 0.9
