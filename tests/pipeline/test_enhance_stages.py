"""The enhance stages (register_pair, train, enhance, enhance_quality) on the 32^3 phantom's LQ/HQ pair.

The ``tiny`` preset with a few training steps: the stages run and their outputs load, a second run is
cached, an edited training option recomputes train and what follows but not register_pair, a SIGKILL
during training resumes from the Trainer's checkpoint, --check refuses a pair whose fields cannot overlap.
enhance_quality measures the five metrics (edge FWHM NaN with its reason where the 32^3 phantom has no
isolated edges; on a 48^3 phantom with large particles bicubic and InDI are blurrier than HQ, as the
phantom's true blur says) and saves the LQ / InDI / HQ regions of interest that the report draws.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.pipeline import (
    load_experiment,
    parse_experiment,
    plan_experiment,
    run_experiment,
)

STAGES = ("register_pair", "train", "enhance", "enhance_quality")


def _write(phantom_dir: Path, name: str, steps: int = 6, hq: str = "hq.tif") -> Path:
    from .conftest import ENHANCE

    p = phantom_dir / name
    p.write_text(ENHANCE.format(steps=steps, hq=hq))
    return p


def _statuses(res) -> dict:
    return {s.name: s.status for s in res.stages}


def test_enhance_stages_write_outputs_that_load(enhance_run):
    from tomo4d.enhance import load_model
    from tomo4d.io import open_volume
    from tomo4d.quantify import read_table

    out, res, _ = enhance_run
    assert _statuses(res) == dict.fromkeys(STAGES, "computed")
    tr = json.loads((out / "models" / "enhance_pair_transform.json").read_text())
    assert np.asarray(tr["phi_hq_to_lq_up"]).shape == (4, 4)
    pq = json.loads((out / "models" / "enhance_pair_quality.json").read_text())
    assert pq["ncc"] > 0.5 and 0 < pq["covered_fraction"] <= 1
    model = load_model(out / "models" / "indi")
    assert model.objective == "indi"
    assert not (out / "models" / "indi" / "checkpoints").exists()  # removed once the model is saved
    for name in ("T0", "T1", "T2"):
        v = open_volume(out / "volumes" / f"enhanced_{name}.ome.zarr")
        assert v.shape == (64, 64, 64) and v.voxel_size_nm == (50.0, 50.0, 50.0)
        assert np.isfinite(v.numpy()).all()
        # enhance.steps: 2 is given here; without it the stage uses the sweep's N (model.sweep, issue 19)
        assert v.metadata.extra["enhance"]["steps"] == 2 and model.sweep is not None
    q = read_table(out / "tables" / "enhance_quality.csv")
    assert list(q["step"]) == ["pair", "T0", "T1", "T2"]
    assert np.isfinite(q["psnr_db_InDI"]).all() and np.isfinite(q["ssim_InDI"][1:]).all()
    html = (out / "report.html").read_text()
    assert "InDI enhancement" in html and "CNR HQ (truth)" in html and "edge FWHM HQ (nm, truth)" in html
    assert (out / "figures" / "enhanced_slices.png").exists()
    assert "Validation sweep on the held-out slices" in html and (out / "figures" / "enhance_step_sweep.png").exists()
    # issue 19: validation PSNR/SSIM against the training step (val_every 2 of 6 steps), beside the sweep
    assert "Validation during training (every 2 training steps" in html
    assert (out / "figures" / "enhance_validation_curve.png").exists()
    assert json.loads((out / "models" / "indi" / "validation_curve.json").read_text())["steps"] == [2, 4, 6]


def test_enhance_quality_has_the_five_metrics_and_nan_with_a_reason(enhance_run):
    from tomo4d.quantify import read_table

    out, _, _ = enhance_run
    q = read_table(out / "tables" / "enhance_quality.csv")
    for name in ("bicubic", "InDI"):
        for col in ("psnr_db", "ssim", "sift_matches"):
            assert f"{col}_{name}" in q
    for name in ("bicubic", "InDI", "HQ"):
        for col in ("edge_fwhm_nm", "edge_fwhm_std_nm", "edge_count", "cnr", "edge_note"):
            assert f"{col}_{name}" in q
        fwhm, note = q[f"edge_fwhm_nm_{name}"][1:], q[f"edge_note_{name}"][1:]
        # 32^3 phantom: particles hardly larger than the blur, no isolated edges -> NaN with the reason, never a number
        assert all(np.isfinite(f) == (str(n) == "measured") for f, n in zip(fwhm, note))
        assert all("passed the checks" in str(n) or "remain after" in str(n) for f, n in zip(fwhm, note)
                   if not np.isfinite(f))
        assert np.all(q[f"cnr_{name}"][1:] > 0.5)
    sift = np.concatenate([q["sift_matches_bicubic"][1:], q["sift_matches_InDI"][1:]])
    assert np.all((sift >= 0) & (sift == np.round(sift)) & (sift < 500))
    assert list(q["slices"][1:]) == ["6 12 18 24"] * 3  # 4 slices in the central 60 % of 32


def test_enhance_quality_saves_regions_of_interest_that_the_report_draws(enhance_run, tmp_path):
    from tomo4d.io import open_volume
    from tomo4d.pipeline.run_report import render_report
    from tomo4d.pipeline.stages_enhance import read_rois

    out0, _, exp = enhance_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    rois = read_rois(out)
    assert list(rois) == ["pair", "T0", "T1", "T2"]
    for step, r in rois.items():
        assert r["HQ"].shape == r["bicubic"].shape == r["InDI"].shape == (32, 32)  # 64 px, at most the slice
        assert all(np.isfinite(r[k]).all() for k in ("HQ", "bicubic", "InDI"))
        z, y0, x0 = r["origin_zyx"]
        hq = open_volume(exp.parent / ("hq.tif" if step == "pair" else f"series_hq/{step}.tif")).numpy()
        np.testing.assert_array_equal(r["HQ"], hq[z, y0:y0 + 32, x0:x0 + 32])  # on the HQ grid, HQ's own voxels
        corr = np.corrcoef([r["InDI"].ravel(), r["bicubic"].ravel(), r["HQ"].ravel()])
        assert corr[0, 1] > 0.3, (step, corr)  # InDI of the same place as bicubic (the pair's: an LQ crop)
        assert corr[0, 2] > corr[1, 2], (step, corr)  # and closer to HQ than bicubic
    (out / "figures" / "enhance_roi.png").unlink()
    (out / "report.html").unlink()
    render_report(out)  # from the saved outputs alone
    assert (out / "figures" / "enhance_roi.png").stat().st_size > 1000
    assert "Regions of interest on the HQ grid" in (out / "report.html").read_text()


def test_edge_fwhm_of_bicubic_and_indi_is_larger_than_hq(enhance_run, phantom_dir, tmp_path):
    """48^3 phantom, one step, large particles and a light blur (true FWHM HQ 141 nm, LQ 330 nm): edges measurable;
    the fixture's model (same 50/100 nm voxels) enhances it."""
    from tomo4d.phantom import make_experiment
    from tomo4d.quantify import read_table

    from .conftest import ENHANCE

    out0, _, _ = enhance_run
    big = tmp_path / "big"
    make_experiment(shape=(48, 48, 48), n_steps=1, seed=0, particle_radius_nm=500.0, anode_thickness_nm=1368.0,
                    hq_blur_sigma_nm=60.0, lq_blur_sigma_nm=140.0).save(big, fields="none")
    text = (ENHANCE.format(steps=6, hq="hq.tif").replace("series/T*.tif", f"{big}/series/T*.tif")
            .replace("series_hq/T*.tif", f"{big}/series_hq/T*.tif").replace("[0, 3600, 7200]", "[0]")
            .replace("  steps: 2\n", "  steps: 1\n"))
    p = phantom_dir / "enhance_edges.yaml"
    p.write_text(text)
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    res = run_experiment(load_experiment(p), out)
    assert _statuses(res)["train"] == "cached" and _statuses(res)["enhance_quality"] == "computed"
    q = read_table(out / "tables" / "enhance_quality.csv")
    fwhm = {n: float(q[f"edge_fwhm_nm_{n}"][1]) for n in ("HQ", "bicubic", "InDI")}
    assert all(q[f"edge_count_{n}"][1] >= 3 for n in fwhm), fwhm
    truth = json.loads((big / "experiment.json").read_text())["params"]
    true_hq = 2.3548 * truth["hq_blur_sigma_nm"]  # FWHM of the Gaussian PSF
    assert 0.6 * true_hq < fwhm["HQ"] < 1.6 * true_hq, fwhm
    assert fwhm["bicubic"] > 1.3 * fwhm["HQ"] and fwhm["InDI"] > 1.3 * fwhm["HQ"], fwhm  # LQ is blurrier
    assert fwhm["bicubic"] < 1.5 * 2.3548 * truth["lq_blur_sigma_nm"], fwhm


def test_second_run_is_cached_and_an_edited_training_option_recomputes_downstream(enhance_run, phantom_dir,
                                                                                  tmp_path):
    out0, _, exp = enhance_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    res = run_experiment(load_experiment(exp), out)
    assert _statuses(res) == dict.fromkeys(STAGES, "cached")
    edited = _write(phantom_dir, "enhance_edited.yaml", steps=7)
    res = run_experiment(load_experiment(edited), out)
    st = _statuses(res)
    assert st["register_pair"] == "cached"
    assert st["train"] == st["enhance"] == st["enhance_quality"] == "computed"
    why = {s.name: s.reasons for s in res.stages}
    assert "enhance.train.steps changed 6 -> 7" in why["train"]
    assert json.loads((out / "models" / "indi" / "metrics.json").read_text())["steps"] == 7


@pytest.mark.slow
def test_sigkill_during_training_resumes_from_the_checkpoint(enhance_run, tmp_path):
    from safetensors.numpy import load_file

    out0, _, exp = enhance_run
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    code = "import sys; from tomo4d.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(exp), "-o", str(out), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = out / "models" / "indi" / "checkpoints" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / ".tomo4d" / "done" / "train.json").exists()
    res = run_experiment(load_experiment(exp), out)
    assert _statuses(res)["register_pair"] == "cached" and _statuses(res)["train"] == "computed"
    metrics = json.loads((out / "models" / "indi" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 2 and metrics["steps"] == 6  # resumed, not restarted
    a, b = (load_file(d / "models" / "indi" / "weights.safetensors") for d in (out, out0))
    for k in a:  # the resumed weights are those of the uninterrupted run (up to thread-order rounding)
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_check_refuses_a_pair_whose_fields_cannot_overlap(phantom_dir, capsys):
    from tomo4d.cli import main
    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    big = phantom_dir / "hq_big.tif"
    save_volume(Volume(np.zeros((80, 80, 80), np.float32), (50.0, 50.0, 50.0)), big, overwrite=True)
    exp = _write(phantom_dir, "enhance_bad.yaml", hq="hq_big.tif")
    with pytest.raises(InputError, match=r"lq\.tif.*hq_big\.tif.*do not overlap"):
        plan_experiment(load_experiment(exp))
    assert main(["run", str(exp), "--check"]) != 0
    assert "do not overlap" in capsys.readouterr().err


def test_experiment_file_checks_of_the_enhance_section(phantom_dir):
    base = {"inputs": {"series": "series/T*.tif", "time_s": [0, 1, 2]}}
    with pytest.raises(InputError, match="enhance section needs inputs.training_pair"):
        parse_experiment({**base, "enhance": {}}, base_dir=phantom_dir)
    pair = {"inputs": {**base["inputs"], "training_pair": {"lq": "lq.tif", "hq": "hq.tif"}}}
    with pytest.raises(InputError, match="stepz is not a field"):
        parse_experiment({**pair, "enhance": {"train": {"stepz": 3}}}, base_dir=phantom_dir)
    exp = parse_experiment({**pair, "enhance": {}, "dvc": {}, "residual": {}}, base_dir=phantom_dir)
    assert exp.residual is not None  # the residual stage works on the enhanced series (enhance_repeat)
    with pytest.raises(InputError, match="apply_to_series and align together"):
        parse_experiment({**pair, "enhance": {}, "align": {}}, base_dir=phantom_dir)
    exp = parse_experiment({**pair, "enhance": {"preset": "tiny", "train": {"steps": 3}}}, base_dir=phantom_dir)
    assert exp.enhance.train_config().steps == 3


def test_dvc_reads_the_enhanced_series_with_apply_to_series(enhance_run, phantom_dir, tmp_path):
    out0, _, exp = enhance_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    dvc = "dvc: {node_spacing: 12, half_window: 6, max_iterations: 3, tolerance_px: 0.1}\n"
    p = phantom_dir / "enhance_dvc.yaml"
    p.write_text(exp.read_text() + dvc)
    res = run_experiment(load_experiment(p), out)
    st = _statuses(res)
    assert all(st[s] == "cached" for s in STAGES) and st["dvc"] == "computed"
    from tomo4d.dvc import DisplacementField

    field = DisplacementField.load(out / "fields" / "dvc_T0_T1.h5")
    assert field.positions_zyx_px.max() > 40  # nodes on the 64^3 enhanced grid, not the 32^3 series
    marker = json.loads((out / ".tomo4d" / "done" / "dvc" / "T1.json").read_text())
    assert "enhance" in marker["basis"]["needs"]
    p.write_text(exp.read_text().replace("  steps: 2\n", "  steps: 2\n  apply_to_series: false\n") + dvc)
    res = run_experiment(load_experiment(p), out)
    st = _statuses(res)
    assert st["train"] == "cached" and st["dvc"] == "computed"  # the series read changed: dvc again
    assert DisplacementField.load(out / "fields" / "dvc_T0_T1.h5").positions_zyx_px.max() < 32


@pytest.mark.slow
def test_enhance_over_the_budget_streams_slab_by_slab_with_the_same_voxels(enhance_run, phantom_dir, tmp_path,
                                                                            caplog):
    """``chunk_budget_mb`` below an enhanced step (64^3 float32 + working set = 3.1 MB): the enhance stage writes it
    slab by slab (6 slabs of at most 12 slices) into a resumable store (tomo4d.enhance.stream): the in-memory run's
    voxels, bit for bit."""
    from tomo4d.io import open_volume

    out0, _, _ = enhance_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    for p in (out / "volumes").glob("enhanced_*.ome.zarr"):
        shutil.rmtree(p)
    shutil.rmtree(out / ".tomo4d" / "done" / "enhance")
    p = _write(phantom_dir, "enhance_budget.yaml")
    p.write_text(p.read_text() + "chunk_budget_mb: 2.0\n")
    with caplog.at_level("INFO", logger="tomo4d"):
        res = run_experiment(load_experiment(p), out)
    assert _statuses(res)["enhance"] == "computed" and "streamed in 6 slabs" in caplog.text
    for name in ("T0", "T1", "T2"):
        a, b = (open_volume(o / "volumes" / f"enhanced_{name}.ome.zarr") for o in (out0, out))
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        ea, eb = (dict(v.metadata.extra["enhance"], model=None) for v in (a, b))  # the model folder was copied
        assert ea == eb and a.voxel_size_nm == b.voxel_size_nm
    assert not list((out / "volumes").glob(".*.slabs"))
