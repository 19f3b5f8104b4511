"""With ``enhance.apply_to_series`` every analysis stage reads the InDI-enhanced series (twice finer).

On the 32^3 phantom's LQ series (100 nm voxels; ``truth/labels_lq_T*``) with the tiny InDI model of
``conftest.enhance_run`` (its run folder copied, so that register_pair / train / enhance are cached):
segment, quantify, dvc, strain, residual (noise floor on the enhanced repeat scan), particles and lithiation run on
the 64^3 enhanced grid (50 nm voxels); the same experiment with ``apply_to_series: false`` runs them on
the 32^3 LQ grid.  Thickness in um agrees between the two within one LQ voxel, and with the phantom's
truth at T0; Dice is scored against the truth repeated onto the enhanced grid; editing ``enhance.steps``
invalidates enhance and every stage that reads it, not register_pair / train; the neutron stage gives
the same Li maps from label files on either grid.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tomo4d.pipeline import load_experiment, plan_experiment, run_experiment

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow

ANALYSIS = """\
quantify: {}
dvc: {node_spacing: 8, half_window: 6, smooth_sigma_px: 1.0, max_iterations: 20, tolerance_px: 0.02}
segment:
  labels: truth/labels_lq_T0.tif
  slices: [4, 12, 20, 28]
  slice_axis: 1
  n_trees: 4
particles: {}
residual: {}
lithiation: {n_frames: 2, truth_modes: truth/particles.csv}
truth:
  labels: truth/labels_lq_T*.tif
  particles: truth/particles_lq_T*.tif
"""

LQ_VOXEL_UM = 0.1


def _experiment(base: str, *, apply: bool, steps: int = 2, extra: str = ANALYSIS) -> str:
    text = base.replace("  time_s: [0, 3600, 7200]\n", "  time_s: [0, 3600, 7200]\n  repeat: repeat.tif\n")
    text = text.replace("  steps: 2\n", f"  steps: {steps}\n  apply_to_series: {str(apply).lower()}\n")
    return text + extra


def _statuses(res) -> dict:
    return {s.name: s.status for s in res.stages}


@pytest.fixture(scope="module")
def analysis_runs(enhance_run, phantom_dir, tmp_path_factory):
    """``{True: (out, result, file), False: ...}``: the analysis on the enhanced series and on the LQ series."""
    out0, _, exp = enhance_run
    runs = {}
    for apply in (True, False):
        out = tmp_path_factory.mktemp("analysis") / "run"
        shutil.copytree(out0, out)
        p = phantom_dir / f"enhanced_analysis_{apply}.yaml"
        p.write_text(_experiment(exp.read_text(), apply=apply))
        runs[apply] = out, run_experiment(load_experiment(p), out), p
    return runs


def test_nearest_neighbour_of_the_enhanced_grid_is_a_repeat():
    from tomo4d.pipeline.series import to_analysis_grid

    lab = np.random.default_rng(0).integers(0, 5, (3, 4, 5))
    up = to_analysis_grid(lab, 2)
    j = [np.arange(2 * n) for n in lab.shape]
    nearest = [np.rint(jj / 2 - 0.25 + 1e-9).astype(int) for jj in j]  # enhanced j at series j/2 - 0.25: no ties
    assert all(np.all(np.abs(jj / 2 - 0.25 - n) == 0.25) for jj, n in zip(j, nearest))
    np.testing.assert_array_equal(up, lab[np.ix_(*nearest)])
    assert to_analysis_grid(lab, 1) is lab or np.array_equal(to_analysis_grid(lab, 1), lab)


def test_analysis_stages_run_on_the_enhanced_grid(analysis_runs):
    from tomo4d.dvc import DisplacementField
    from tomo4d.io import open_volume
    from tomo4d.quantify import read_table

    out, res, _ = analysis_runs[True]
    st = _statuses(res)
    assert all(st[s] == "cached" for s in ("register_pair", "train", "enhance")), st
    assert all(st[s] == "computed" for s in ("enhance_repeat", "segment", "quantify", "dvc", "strain", "residual",
                                             "particles", "lithiation")), st
    for name in ("segment_T1", "particles_T2", "repeat_enhanced"):
        v = open_volume(out / "volumes" / f"{name}.ome.zarr")
        assert v.shape == (64, 64, 64) and v.voxel_size_nm == (50.0, 50.0, 50.0), name
    maps = sorted(p.name for p in (out / "volumes").glob("residual_T0_*.ome.zarr"))
    assert maps, "no residual map: no DVC field with a usable node"
    assert open_volume(out / "volumes" / maps[0]).shape == (64, 64, 64)
    field = DisplacementField.load(out / "fields" / "dvc_T0_T1.h5")
    assert field.positions_zyx_px.max() > 40 and field.usable.any()
    assert field.voxel_size_nm == (50.0, 50.0, 50.0)         # the enhanced (analysis) grid's, not the LQ scans'
    rs = read_table(out / "tables" / "residual_summary.csv")
    assert np.all(rs["repeat_scan"]) and np.all(rs["noise_floor"] > 0)
    with np.load(out / "volumes" / "particle_frames.npz") as z:  # cut out of the enhanced series
        assert tuple(z["voxel_size_nm"]) == (50.0, 50.0, 50.0) and z["grey"].shape[:2] == (2, 3)
    assert read_table(out / "tables" / "lithiation_mode_counts.csv") is not None
    for stage, step in (("segment", "/T0"), ("dvc", "/T1"), ("residual", ""), ("lithiation", "")):
        marker = json.loads((out / ".tomo4d" / "done" / f"{stage}{step}.json").read_text())
        assert "enhance" in marker["basis"]["needs"], stage
    lq_out = analysis_runs[False][0]
    assert open_volume(lq_out / "volumes" / "segment_T1.ome.zarr").shape == (32, 32, 32)
    assert not (lq_out / "volumes" / "repeat_enhanced.ome.zarr").exists()
    marker = json.loads((lq_out / ".tomo4d" / "done" / "segment" / "T0.json").read_text())
    assert "enhance" not in marker["basis"]["needs"]


def test_thickness_agrees_with_the_lq_run_and_the_truth(analysis_runs, phantom_dir):
    from tomo4d.quantify import read_table

    th = {a: read_table(analysis_runs[a][0] / "tables" / "thickness.csv") for a in (True, False)}
    true_um = np.asarray(json.loads((phantom_dir / "experiment.json").read_text())["truth"]["thickness_nm"]) / 1e3
    enh, lq = th[True]["thickness_mean_um"], th[False]["thickness_mean_um"]
    assert np.all(np.abs(enh - lq) < LQ_VOXEL_UM), (enh, lq)  # the same physical thickness, nm units right
    assert abs(enh[0] - true_um[0]) < LQ_VOXEL_UM, (enh, true_um)  # T0: segmentation of the pristine anode
    # the truth labels repeated onto the enhanced grid measure the true thickness as on the LQ grid
    np.testing.assert_allclose(th[True]["true_thickness_mean_um"], th[False]["true_thickness_mean_um"],
                               atol=LQ_VOXEL_UM / 2)
    assert np.all(np.abs(th[True]["true_thickness_mean_um"] - true_um) < 1.5 * LQ_VOXEL_UM)


def test_dice_is_scored_against_the_truth_on_the_enhanced_grid(analysis_runs, phantom_dir):
    from tomo4d.io import open_volume
    from tomo4d.quantify import read_table

    out = analysis_runs[True][0]
    seg = read_table(out / "tables" / "segment_T2.csv")
    pred = open_volume(out / "volumes" / "segment_T2.ome.zarr").numpy()
    truth = open_volume(phantom_dir / "truth" / "labels_lq_T2.tif").numpy()
    truth = truth.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    for c, dice in zip(seg["class"], seg["dice"]):
        a, b = pred == c, truth == c
        assert dice == pytest.approx(2 * np.count_nonzero(a & b) / (a.sum() + b.sum()), abs=1e-6), c
    mean = {a: np.mean([np.nanmean(read_table(analysis_runs[a][0] / "tables" / f"segment_T{i}.csv")["dice"])
                        for i in range(3)]) for a in (True, False)}
    assert mean[True] > mean[False] - 0.05, mean  # the tiny 6-step model: no worse than LQ


def test_editing_enhance_steps_invalidates_the_stages_that_read_it(analysis_runs):
    for apply, reading in ((True, {"enhance", "enhance_repeat", "enhance_quality", "segment", "quantify", "dvc",
                                   "strain", "residual", "particles", "lithiation"}),
                           (False, {"enhance", "enhance_quality"})):
        out, _, p = analysis_runs[apply]
        edited = p.with_name(f"enhanced_analysis_{apply}_edited.yaml")
        edited.write_text(p.read_text().replace("  steps: 2\n", "  steps: 3\n"))
        plan = plan_experiment(load_experiment(edited), out)
        todo = {s.name for s in plan.stages if s.enabled and not s.done}
        assert todo == reading, (apply, todo)
        why = {s.name: s.reasons for s in plan.stages}
        assert "enhance.steps changed 2 -> 3" in why["enhance"]
        if apply:
            assert "needed stage enhance was recomputed" in why["segment"]
            assert "needed stage enhance was recomputed" in why["dvc"]


def test_neutron_gives_the_same_li_maps_from_label_files_on_either_grid(enhance_run, phantom_dir, tmp_path):
    """Label files repeated x2 and a bin factor doubled (8 enhanced voxels per 400 nm neutron voxel, 4 LQ ones)
    give the same block fractions: the same Li maps.  The joint phases bin the enhanced series."""
    import yaml

    from tomo4d.io import open_volume
    from tomo4d.quantify import read_table

    from .test_neutron_stage import _section

    out0, _, exp = enhance_run
    sec = yaml.safe_dump({"neutron": {**_section(phantom_dir), "joint_phases": 3}})
    outs = {}
    for apply in (True, False):
        text = _experiment(exp.read_text(), apply=apply, extra=sec).replace(
            "  repeat: repeat.tif\n", "  labels: truth/labels_lq_T*.tif\n  neutron: neutron/T*.tif\n")
        p = phantom_dir / f"enhanced_neutron_{apply}.yaml"
        p.write_text(text)
        outs[apply] = out = tmp_path / f"run_{apply}"
        shutil.copytree(out0, out)
        st = _statuses(run_experiment(load_experiment(p), out))
        assert st["train"] == "cached" and st["neutron"] == st["neutron_layer"] == "computed", st
    for name in ("T0", "T2"):
        a, b = (open_volume(outs[x] / "volumes" / f"li_concentration_{name}.ome.zarr") for x in (True, False))
        assert a.shape == b.shape == (8, 8, 8) and a.voxel_size_nm == (400.0, 400.0, 400.0)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)
    la, lb = (read_table(outs[x] / "tables" / "neutron_layer.csv") for x in (True, False))
    np.testing.assert_allclose(la["li_mol_l"], lb["li_mol_l"], rtol=1e-5)
    j = read_table(outs[True] / "tables" / "neutron_joint_T2.csv")
    assert sum(j["voxel_fraction"]) == pytest.approx(1.0)
    with np.load(outs[True] / "tables" / "neutron_joint_hist_T2.npz") as z:
        assert z["counts"].sum() >= 0.99 * 512
    marker = json.loads((outs[True] / ".tomo4d" / "done" / "neutron" / "T1.json").read_text())
    assert "enhance" in marker["basis"]["needs"]  # the joint phases read the enhanced series
