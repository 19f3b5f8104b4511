"""The dvc stage's Richardson-Lucy deconvolution over ``chunk_budget_mb``: box by box into the run's work folder
(:func:`tomo4d.dvc.deconvolve_chunked`), the local DVC reading the deconvolved stores lazily; the same field as the
whole-volume route, the deconvolved scans reused by a rerun."""

from __future__ import annotations

import numpy as np

EXPERIMENT = """\
name: deconvolved dvc
inputs:
  series: [series_hq/T0.tif, series_hq/T1.tif]
  time_s: [0, 60]
dvc:
  node_spacing: 4
  half_window: 6
  max_iterations: 20
  deconvolve_iterations: 5
  deconvolve_psf_sigma_px: 1.0
"""


def test_deconvolution_over_the_budget_streams_and_gives_the_in_memory_field(phantom_dir, tmp_path, caplog,
                                                                           monkeypatch):
    import importlib

    from tomo4d.dvc import DisplacementField
    from tomo4d.pipeline import load_experiment, run_experiment

    mem, ooc = tmp_path / "mem", tmp_path / "ooc"
    p = phantom_dir / "deconv_mem.yaml"
    p.write_text(EXPERIMENT)
    run_experiment(load_experiment(p), mem)
    q = phantom_dir / "deconv_ooc.yaml"
    # 32^3 x 48 bytes = 1.6 MB: the deconvolution streams (15^3 boxes, one iteration a pass); the affine start's
    # registration (20 bytes a voxel) still fits, so the fields differ only by the deconvolution's rounding
    q.write_text(EXPERIMENT + "chunk_budget_mb: 1.0\n")

    def whole_refused(*a, **k):
        raise AssertionError("the whole-volume deconvolution ran over the budget")

    monkeypatch.setattr(importlib.import_module("tomo4d.dvc.deconvolve"), "deconvolve", whole_refused)
    import tomo4d.dvc
    from tomo4d._array import is_lazy

    real, seen = tomo4d.dvc.correlate, []

    def lazy_only(ref, dfm, **kw):  # the deconvolved stores reach the DVC as lazy arrays, never whole
        seen.append(is_lazy(ref) and is_lazy(dfm))
        return real(ref, dfm, **kw)

    monkeypatch.setattr(tomo4d.dvc, "correlate", lazy_only)
    with caplog.at_level("INFO", logger="tomo4d"):
        run_experiment(load_experiment(q), ooc)
    assert caplog.text.count("deconvolved box by box") == 2  # T0, T1
    assert seen == [True]
    for step in ("T1",):
        fa, fb = (DisplacementField.load(o / "fields" / f"dvc_T0_{step}.h5") for o in (mem, ooc))
        # 25 of 125 usable: the rest out of view (58 until session 32, when a replaced node took its neighbours'
        # displacements unchanged, not carried by their F, so its window seemed to stay in view)
        assert np.array_equal(fa.status, fb.status) and fa.usable.sum() > 20
        du = np.abs(fa.displacement_zyx_px - fb.displacement_zyx_px)[fa.usable]
        assert du.max() < 1e-3, du.max()
    stores = sorted(x.name for x in (ooc / ".tomo4d" / "deconvolved").iterdir())
    assert stores == ["T0.json", "T0.zarr", "T1.json", "T1.zarr"]
    # a rerun of the DVC reuses the stores (nothing deconvolved again)
    (ooc / ".tomo4d" / "done" / "dvc.json").unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="tomo4d"):
        run_experiment(load_experiment(q), ooc)
    assert "deconvolved box by box" not in caplog.text
