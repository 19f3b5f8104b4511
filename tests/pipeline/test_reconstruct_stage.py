"""The reconstruct stage: NXtomo projections of a simulated scan -> volume, table against truth, report, cache."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("algotom")

from tomo4d.errors import InputError  # noqa: E402
from tomo4d.pipeline import load_experiment, run_experiment  # noqa: E402

M = 12


@pytest.fixture(scope="module")
def proj_dir(phantom_dir):
    from tomo4d.io import save_volume
    from tomo4d.reconstruct import save_nxtomo, simulate_scan

    d = phantom_dir / "proj"
    d.mkdir(exist_ok=True)
    scan = simulate_scan((2, 48), n_angles=90, center_offset=-3.5, photons=2e4, margin=M, seed=5)
    save_nxtomo(scan, d / "scanA.nxs", overwrite=True)
    truth = np.pad(scan.truth, ((0, 0), (M, M), (M, M))).astype(np.float32)
    save_volume(truth, d / "truth_scanA.tif", overwrite=True)
    return d, scan


def _write(phantom_dir, name, section, projections="proj/scan*.nxs"):
    doc = {"name": "rec", "inputs": {"series": "series_hq/T*.tif", "time_s": [0, 3600, 7200],
                                     "projections": projections}, "reconstruct": section}
    p = phantom_dir / name
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture(scope="module")
def rec_run(phantom_dir, proj_dir, tmp_path_factory):
    p = _write(phantom_dir, "rec.yaml", {"truth": "proj/truth_scan*.tif"})
    out = tmp_path_factory.mktemp("rec") / "run"
    return out, run_experiment(load_experiment(p), out), p


def test_stage_reconstructs_against_truth(rec_run, proj_dir):
    from tomo4d.io import open_volume
    from tomo4d.pipeline.stage_io import read_table_of
    from tomo4d.pipeline.units import column_unit

    out, res, _ = rec_run
    _, scan = proj_dir
    assert {s.name: s.status for s in res.stages} == {"reconstruct": "computed"}
    t = read_table_of(out, "reconstruct")
    assert list(t["scan"]) == ["scanA"]
    assert abs(t["center_px"][0] - scan.center) < 0.5 and t["center_found"][0] == 1
    assert t["n_clipped"][0] == 0 and t["coverage_deg"][0] == pytest.approx(180.0)
    assert t["psnr_db"][0] > 20.0 and abs(t["mean_relative_error"][0]) < 0.05
    assert [c for c in t if column_unit(c) == "unit?" and c != "scan"] == []
    vol = open_volume(out / "volumes" / "reconstructed_scanA.ome.zarr")
    assert vol.shape == (2, 72, 72) and vol.voxel_size_nm == pytest.approx((1000.0,) * 3)
    assert "algotom" in " ".join(vol.metadata.provenance)
    html = (out / "report.html").read_text()
    assert "Reconstruction from projections" in html and "PSNR vs truth" in html


def test_stage_is_cached_and_rerun_on_option_change(rec_run, phantom_dir):
    out, _, p = rec_run
    again = run_experiment(load_experiment(p), out)
    assert {s.name: s.status for s in again.stages} == {"reconstruct": "cached"}
    p2 = _write(phantom_dir, "rec2.yaml", {"truth": "proj/truth_scan*.tif", "center": 20.5})
    third = run_experiment(load_experiment(p2), out)
    assert {s.name: s.status for s in third.stages} == {"reconstruct": "computed"}


def test_bad_experiments_are_refused(phantom_dir, proj_dir):
    from tomo4d.pipeline import parse_experiment
    from tomo4d.pipeline.inputs import resolve_inputs

    base = {"series": "series_hq/T*.tif", "time_s": [0, 3600, 7200]}
    with pytest.raises(InputError, match="needs inputs.projections"):
        parse_experiment({"inputs": base, "reconstruct": {}}, base_dir=phantom_dir)
    with pytest.raises(InputError, match="ring_size=20 must be odd"):
        parse_experiment({"inputs": {**base, "projections": "proj/scanA.nxs"}, "reconstruct": {"ring_size": 20}},
                         base_dir=phantom_dir)
    exp = parse_experiment({"inputs": {**base, "projections": "proj/missing.nxs"}, "reconstruct": {}},
                           base_dir=phantom_dir)
    with pytest.raises(InputError, match=r"inputs.projections\[0\].*does not exist"):
        resolve_inputs(exp)
    exp = parse_experiment({"inputs": {**base, "projections": "series_hq/T0.tif"}, "reconstruct": {}},
                           base_dir=phantom_dir)
    with pytest.raises(InputError, match=r"inputs.projections\[0\].*no flats"):
        resolve_inputs(exp)
