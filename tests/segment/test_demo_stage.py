"""The demo stage runs on its stand-in volume, fills the report and stores its results."""

from __future__ import annotations

import re

import numpy as np


def test_stage_segment_without_phantom(tmp_path):
    from tomo4d.pipeline.demo import DEMO_STAGES, DemoContext
    from tomo4d.pipeline.demo_segment import stage_segment
    from tomo4d.report import Report

    assert ("segment", "demo_segment:stage_segment") in DEMO_STAGES
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"), seed=0)
    summary = stage_segment(ctx)
    assert "Dice" in summary
    seg = ctx.store["segmentation"]
    assert seg.shape == (20, 80, 80) and seg.dtype == np.uint8 and set(np.unique(seg.numpy())) <= {1, 2, 3}
    assert ctx.store["particles"].n_particles > 15
    html = ctx.report.html()
    assert html.count("<img") >= 3
    dice = float(re.search(r"particles Dice ([0-9.]+)", summary).group(1))
    assert dice > 0.9
    assert (tmp_path / "segment" / "segmentation.zarr").is_dir()
    assert (tmp_path / "segment" / "pixel_classifier.npz").is_file()
