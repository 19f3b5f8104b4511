"""Acceptance on the synthetic experiment (tomo4d.phantom), at most 4 labelled slices (issue 7).

The phantom has realistic particles: ``make_experiment(shape=(128,)*3, particle_radius_nm=800,
seed=0)``, median silicon particle radius 800 nm = 16 HQ voxels (diameter 1.6 um) against the HQ
blur of 140 nm = 2.8 voxels (the default 64^3 phantom has radius ~6 voxels, where even a forest
trained on every voxel reaches only silicon Dice 0.91: the blur, not the labels, limits it there).

Setup: in-situ step T0 on the HQ grid (50 nm), 4 fully labelled xz planes (y = 16, 48, 80, 112)
taken from the truth, 3D features (intensity, gradient, Hessian eigenvalues at sigma 1, 3, 6
voxels), 16 trees, at most 5000 samples per class.  Scores on the unlabelled voxels; particles
from :func:`label_particles` (distance watershed, objects >= 27 voxels) matched one-to-one to the
true particles (>= 27 voxels) at IoU >= 0.5.

Measured (2 shared cores, 2026-11): silicon Dice 0.979, silicon boundary F1 0.996, collector
Dice 1.000; particle F1 0.947 (18 of 19 matched); the same watershed on the true silicon mask
F1 0.973.  On LQ bicubic-upsampled x2 the same labels and forest give silicon Dice 0.930 and
particle F1 0.70 (benchmark, ``enhance.bicubic_volume``; the slow test below uses the phantom's own
cubic resampling and asserts HQ > LQ by > 0.02 and LQ >= 0.85).  Targets: silicon Dice >= 0.95, particle F1 >= 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest

phantom = pytest.importorskip("tomo4d.phantom")

from tomo4d.segment import (  # noqa: E402
    FeatureSpec,
    compare_inputs,
    evaluate_segmentation,
    label_particles,
    match_particles,
    predict_labels,
    remove_small_objects,
    train_pixel_classifier,
)

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow

SPEC = FeatureSpec(sigmas=(1.0, 3.0, 6.0), kinds=("intensity", "gradient", "hessian"), ndim=3)
TRAIN = {"features": SPEC, "n_trees": 16, "max_samples_per_class": 5000}
MIN_VOXELS = 27


@pytest.fixture(scope="module")
def case():
    exp = phantom.make_experiment(shape=(128, 128, 128), n_steps=1, particle_radius_nm=800.0, seed=0)
    hq = exp.series_hq[0].compute()
    truth = exp.truth.labels(0, grid="hq").astype(np.uint8) + 1  # phases shifted by one: 0 = "unlabelled"
    labels = np.zeros_like(truth)
    planes = [16, 48, 80, 112]
    labels[:, planes, :] = truth[:, planes, :]
    si = int(phantom.Phase.SILICON) + 1
    parts, _ = remove_small_objects(exp.truth.particle_labels(0, grid="hq"), min_voxels=MIN_VOXELS)
    model = train_pixel_classifier(hq, labels, seed=0, **TRAIN)
    pred = predict_labels(model, hq)
    scores = evaluate_segmentation(pred, truth, region=labels == 0, voxel_size_nm=hq.voxel_size_nm)
    return exp, hq, truth, labels, si, parts, pred, scores


def _particles(seg, hq, **kw):
    return label_particles(seg, voxel_size_nm=hq.voxel_size_nm,
                           min_volume_nm3=MIN_VOXELS * float(np.prod(hq.voxel_size_nm)), **kw)


def test_issue_targets_on_hq(case):
    """Issue 7: silicon Dice >= 0.95 and particle F1 >= 0.9 with 4 labelled slices (measured 0.979, 0.947)."""
    exp, hq, truth, labels, si, parts, pred, scores = case
    assert int(np.count_nonzero(labels.any(axis=(0, 2)))) <= 4
    assert scores.of(si).dice >= 0.95
    found = _particles(pred, hq, particle_class=si)
    ps = match_particles(found.labels, parts, iou_threshold=0.5)
    assert ps.n_true >= 15  # enough particles for F1 to mean something
    assert ps.f1 >= 0.9


def test_other_phases_and_boundaries(case):
    """Boundary F1 of silicon >= 0.98 (measured 0.996), collector Dice >= 0.99 (1.000)."""
    exp, hq, truth, labels, si, parts, pred, scores = case
    assert scores.of(si).boundary_f1 >= 0.98
    assert scores.of(int(phantom.Phase.COLLECTOR) + 1).dice >= 0.99


@pytest.mark.slow
def test_watershed_on_the_true_mask(case):
    """The particle step alone: on the exact silicon mask F1 >= 0.95 (measured 0.973)."""
    exp, hq, truth, labels, si, parts, pred, scores = case
    exact = _particles(truth == si, hq)
    assert match_particles(exact.labels, parts).f1 >= 0.95


@pytest.mark.slow
@pytest.mark.heavy  # over a minute on 2 cores: not in CI's slow pass (-m heavy runs it)
def test_hq_segments_better_than_bicubic_lq(case):
    """Same labels and forest on LQ (cubic x2 on the HQ grid): silicon Dice ~0.93 vs HQ 0.98.

    The InDI-enhanced comparison needs a trained InDI model (minutes on CPU): see
    ``benchmarks/bench_segment.py --mode inputs`` and ``benchmarks/RESULTS.md``.
    """
    exp, hq, truth, labels, si, parts, pred, scores = case
    lq_up = exp.lq_on_hq_grid(exp.series[0], order=3)
    res = compare_inputs({"LQ": lq_up, "HQ": hq}, labels, truth, focus_class=si, seed=0,
                         voxel_size_nm=hq.voxel_size_nm, train_options=TRAIN)
    assert res.ranking() == ("HQ", "LQ")
    assert res.dice("HQ") - res.dice("LQ") > 0.02
    assert res.dice("LQ") >= 0.85
