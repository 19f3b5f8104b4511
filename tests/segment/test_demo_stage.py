"""The demo stage runs on its stand-in volume, fills the report and stores its results."""

from __future__ import annotations

import numpy as np


def test_stage_segment_without_phantom(tmp_path):
    from tomo4d.pipeline.demo import DEMO_STAGES, DemoContext
    from tomo4d.pipeline.demo_segment import _standin, stage_segment
    from tomo4d.report import Report
    from tomo4d.segment import evaluate_segmentation

    assert ("segment", "demo_segment:stage_segment") in DEMO_STAGES
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"), seed=0)
    summary = stage_segment(ctx)
    assert "Dice" in summary
    seg = ctx.store["segmentation"]
    assert seg.shape == (20, 80, 80) and seg.dtype == np.uint8 and set(np.unique(seg.numpy())) <= {1, 2, 3}
    assert ctx.store["particles"].n_particles > 15
    html = ctx.report.html()
    assert html.count("<img") >= 3
    # the stored segmentation scored against the stand-in's truth on the planes not labelled for training
    truth = _standin(ctx)[1]
    region = np.ones(truth.shape, bool)
    region[:, [10, 30, 50, 70], :] = False  # the stage's four labelled xz planes (y = 80 * 1/8, 3/8, 5/8, 7/8)
    assert evaluate_segmentation(seg.numpy(), truth, region=region).of(2).dice > 0.9  # 2 = particles
    assert (tmp_path / "segment" / "segmentation.zarr").is_dir()
    assert (tmp_path / "segment" / "pixel_classifier.npz").is_file()
