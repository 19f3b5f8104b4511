"""The enhance_hallucination stage (issue 19): InDI's false / missed particles and size error against the
phantom's true particles on the HQ grid, and the spread/error rank correlation, in the tables and the report;
without true particles the report says that hallucination was not measured."""

from __future__ import annotations

import shutil

import numpy as np

from tomo4d.pipeline import load_experiment, run_experiment


def test_without_true_particles_the_report_says_hallucination_was_not_measured(enhance_run):
    out, res, _ = enhance_run
    assert "enhance_hallucination" not in {s.name for s in res.stages}
    html = (out / "report.html").read_text()
    assert "Hallucination not measured: this run has no true particles" in html


def test_true_particles_give_the_hallucination_table_and_the_spread_correlation(enhance_run, phantom_dir, tmp_path):
    from tomo4d.io import open_volume
    from tomo4d.pipeline.units import UNKNOWN, column_unit
    from tomo4d.quantify import read_table

    from .conftest import ENHANCE

    out0, _, _ = enhance_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    p = phantom_dir / "enhance_hallu.yaml"
    p.write_text(ENHANCE.format(steps=6, hq="hq.tif") + "  truth_particles: truth/particles_hq_T*.tif\n")
    res = run_experiment(load_experiment(p), out)
    st = {s.name: s.status for s in res.stages}
    assert st["train"] == st["enhance"] == "cached" and st["enhance_hallucination"] == "computed"
    h = read_table(out / "tables" / "enhance_hallucination.csv")
    assert list(h["step"]) == [s for s in ("T0", "T1", "T2") for _ in range(3)]
    assert list(h["image"][:3]) == ["InDI", "bicubic", "HQ"]
    n_true = int((np.unique(open_volume(phantom_dir / "truth" / "particles_hq_T0.tif").numpy()) > 0).sum())
    assert 0 < h["n_true"][0] <= n_true                       # the truth's particles (small ones removed)
    assert np.all((h["false_rate"] >= 0) & (h["false_rate"] <= 1)) and np.all(h["missed_rate"] <= 1)
    hq = h["image"] == "HQ"
    assert np.all(h["dice"][hq] > 0.5)                          # the band reproduces the truth on HQ
    assert np.all(h["false_rate"][hq] <= h["false_rate"][~hq].max() + 1e-9)
    sp = read_table(out / "tables" / "enhance_spread_error.csv")
    assert list(sp["step"]) == ["T0"] and -1 <= sp["rho"][0] <= 1 and sp["n_blocks"][0] >= 1
    for table in (h, sp):
        assert [c for c in table if column_unit(c) == UNKNOWN and c not in ("step", "image")] == []
    html = (out / "report.html").read_text()
    assert "Hallucination control against the true particles" in html and "Spread against error (T0" in html
    assert "Hallucination not measured" not in html
