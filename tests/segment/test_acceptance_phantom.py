"""Acceptance on the synthetic experiment (tomo4d.phantom): at most 4 labelled slices.

Measured (64^3 phantom, seed 0, in-situ step T0 on the HQ grid, 4 fully labelled xz planes,
3D features, 24 trees): silicon Dice 0.905 on HQ, 0.71 on LQ up-sampled x2; particle F1 0.77
(objects >= 27 voxels; the same watershed on the true silicon mask: 0.96).  The issue's targets (silicon Dice >= 0.95 on HQ, particle F1 >= 0.9) are
NOT met on this phantom: even a forest trained on every voxel of another seed reaches only 0.908,
so the limit is the HQ blur (sigma 140 nm = 2.8 voxels) against particles of a few voxels' radius,
not the number of labels.  The targets stay below as strict xfails so that reaching them shows.
"""

from __future__ import annotations

import numpy as np
import pytest

phantom = pytest.importorskip("tomo4d.phantom")

from tomo4d.segment import (FeatureSpec, compare_inputs, evaluate_segmentation, label_particles,  # noqa: E402
                            match_particles, predict_labels, remove_small_objects, train_pixel_classifier)

SPEC = FeatureSpec(sigmas=(0.7, 1.6, 3.5, 5.0), ndim=3)


@pytest.fixture(scope="module")
def case():
    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=0)
    hq = exp.series_hq[0].compute()
    truth = exp.truth.labels(0).astype(np.uint8) + 1  # phases shifted by one: 0 means "unlabelled"
    labels = np.zeros_like(truth)
    planes = [8, 24, 40, 56]
    labels[:, planes, :] = truth[:, planes, :]
    si = int(phantom.Phase.SILICON) + 1
    parts, _ = remove_small_objects(exp.truth.particle_labels(0), min_voxels=27)
    model = train_pixel_classifier(hq, labels, features=SPEC, n_trees=24, seed=0)
    pred = predict_labels(model, hq)
    return exp, hq, truth, labels, si, parts, pred


def test_hq_silicon_with_four_slices(case):
    exp, hq, truth, labels, si, parts, pred = case
    s = evaluate_segmentation(pred, truth, region=labels == 0, voxel_size_nm=hq.voxel_size_nm)
    assert s.of(si).dice >= 0.88
    assert s.of(si).boundary_f1 >= 0.95
    assert s.of(int(phantom.Phase.COLLECTOR) + 1).dice >= 0.99


def test_particles_from_the_hq_segmentation(case):
    exp, hq, truth, labels, si, parts, pred = case
    found = label_particles(pred, particle_class=si, voxel_size_nm=hq.voxel_size_nm,
                            min_volume_nm3=27 * float(np.prod(hq.voxel_size_nm)))
    s = match_particles(found.labels, parts)
    assert s.f1 >= 0.7 and s.precision >= 0.75
    # the watershed itself is not the bottleneck: on the true silicon mask it finds the particles
    exact = label_particles(truth == si, voxel_size_nm=hq.voxel_size_nm,
                            min_volume_nm3=27 * float(np.prod(hq.voxel_size_nm)))
    assert match_particles(exact.labels, parts).f1 >= 0.9


@pytest.mark.xfail(strict=True, reason="issue 7 target not reached on this phantom (measured Dice 0.905, F1 0.77)")
def test_issue_targets_on_hq(case):
    exp, hq, truth, labels, si, parts, pred = case
    s = evaluate_segmentation(pred, truth, region=labels == 0)
    found = label_particles(pred, particle_class=si, min_volume_nm3=27.0)
    assert s.of(si).dice >= 0.95 and match_particles(found.labels, parts).f1 >= 0.9


def test_hq_segments_better_than_lq(case):
    exp, hq, truth, labels, si, parts, pred = case
    lq_up = exp.lq_on_hq_grid(exp.series[0])
    res = compare_inputs({"LQ": lq_up, "HQ": hq}, labels, truth, focus_class=si, seed=0,
                         train_options={"features": SPEC, "n_trees": 12})
    assert res.ranking() == ("HQ", "LQ")
    assert res.dice("HQ") - res.dice("LQ") > 0.1
