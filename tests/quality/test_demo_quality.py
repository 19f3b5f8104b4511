from types import SimpleNamespace

import numpy as np
import pytest
from quality_synth import FWHM, erf_disc

from tomo4d import Volume
from tomo4d.pipeline.demo import DemoContext
from tomo4d.pipeline.demo_quality import stage_quality
from tomo4d.report import Report


def test_stage_skips_without_experiment(tmp_path):
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"))
    assert "skipped" in stage_quality(ctx)
    assert "Skipped" in ctx.report.html()


def test_stage_with_synthetic_pair(tmp_path):
    # stand-in for the phantom: HQ 50 nm voxels, LQ at 100 nm voxels (half the grid), known blur
    hq = np.stack([erf_disc(1.5, n=128, radius=35) * 1000 + np.random.default_rng(k).normal(0, 20, (128, 128))
                   for k in range(8)]).astype(np.float32)
    lq = np.stack([erf_disc(2.0, n=64, radius=17.5, centre=(0.15, -0.1)) * 1000 for _ in range(4)])
    lq = (lq + np.random.default_rng(9).normal(0, 60, lq.shape)).astype(np.float32)
    exp = SimpleNamespace(hq=Volume(hq, (50.0,) * 3), lq=Volume(lq, (100.0,) * 3), truth=None)
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"), store={"experiment": exp})
    summary = stage_quality(ctx)
    t = ctx.store["quality_table"]
    hq_row, lq_row = t.rows
    assert hq_row.fwhm_mean_nm == pytest.approx(FWHM * 1.5 * 50, rel=0.1)
    assert lq_row.fwhm_mean_nm > 1.5 * hq_row.fwhm_mean_nm  # LQ blur 2 px of 100 nm = 200 nm sigma
    assert lq_row.cnr < hq_row.cnr and "edge FWHM" in summary
    assert "Image quality" in ctx.report.html()
