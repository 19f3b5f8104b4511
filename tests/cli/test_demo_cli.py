"""`tomo4d demo`: the phantom writes an experiment file beside its scans and the runner runs it."""

from __future__ import annotations

import pytest

from tomo4d.cli import main

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The demo on a small phantom (48 x 32 x 32, 3 steps, InDI trained 10 steps): the same code path."""
    from tomo4d.pipeline import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(out, shape=(48, 32, 32), n_steps=3, train_steps=10)


def test_demo_is_an_ordinary_experiment(small_demo):
    from tomo4d.pipeline import load_experiment
    from tomo4d.pipeline.inputs import resolve_inputs

    res = small_demo
    exp = load_experiment(res.experiment_file)  # the file a user would edit, valid as written
    inp = resolve_inputs(exp)
    # the series mixes formats, as a real one may
    assert [p.name for p in inp.series] == ["T0.tif", "T1.h5", "T2.ome.zarr"]
    ran = {s.name: s.status for s in res.run.stages}
    assert set(ran) == {"register_pair", "train", "enhance", "enhance_quality", "enhance_hallucination", "segment", "quantify", "dvc",
                        "strain", "residual", "particles", "lithiation", "neutron", "neutron_layer",
                        "neutron_spectra", "reconstruct"}
    assert set(ran.values()) == {"computed"}
    html = res.report_path.read_text()
    for section in ("InDI enhancement", "Segmentation", "Quantification", "finite strain", "Residual maps",
                    "Particles and tracks", "Lithiation modes", "Neutron", "Neutron: spectra",
                    "Reconstruction from projections", "All numbers"):
        assert section in html, section
    # every stage with a truth shows it beside the measurement
    for truth in ("true volume mean (same part)", "CNR HQ (truth)", "true particles"):
        assert truth in html, truth
    # issue 19: InDI's hallucination audit against the phantom's true particles, and its validation curve
    assert "Hallucination control against the true particles" in html and "Spread against error" in html
    assert "Validation during training (every" in html


def test_demo_truth_numbers_are_the_phantoms(small_demo):
    """The demo's truth entries come from the phantom, not from the run: the strain truth grows with the
    phantom's swelling, and the anode's true Li concentration rises with the state of charge."""
    import json

    import numpy as np

    from tomo4d.pipeline import load_experiment
    from tomo4d.quantify import read_table

    res = small_demo
    doc = json.loads((res.out_dir / "data" / "experiment.json").read_text())
    exp = load_experiment(res.experiment_file)
    li = exp.truth.li_concentration_mol_l
    assert li[0] < 0.5 * li[1] < li[2]
    reg = read_table(res.run.out / "tables" / "regional_strain_truth.csv")
    hz = {(str(st), str(r)): v for st, r, c, v in zip(reg["step"], reg["region"], reg["component"],
                                                       reg["strain_mean"]) if c == "hencky_zz"}
    # the phantom's anode swells with the state of charge (on this small phantom the anode is 3 node planes
    # thick: node differences straddle the interfaces, so the two sides are not compared here)
    for side in ("collector side", "separator side"):
        assert 0.05 < hz["T1", side] < hz["T2", side]
    # the layers' volume means (the fields' interpolant over the whole layer) see what the node means cannot:
    # the separator side stretches more, as the phantom generates it
    vm = {(str(st), str(r)): v for st, r, c, v in zip(reg["step"], reg["region"], reg["component"],
                                                       reg["strain_volume_mean"]) if c == "hencky_zz"}
    for step in ("T1", "T2"):
        assert vm[step, "separator side"] > vm[step, "collector side"] > 0.05
    measured = read_table(res.run.out / "tables" / "regional_strain.csv")
    # (this 32-px-wide phantom loses a quarter of each lateral axis at both faces to the deconvolution's margin)
    assert np.all(np.isfinite(measured["strain_volume_mean"])) and np.all(measured["volume_covered"] > 0.02)
    mean_t2 = (hz["T2", "collector side"] + hz["T2", "separator side"]) / 2
    assert mean_t2 == pytest.approx(np.log1p(doc["truth"]["mean_axial_strain"][2]), rel=0.3)
    # the LQ separator's fibres are blurred away: its nodes are LOW_TEXTURE (the repeat scan's noise), not reported
    from tomo4d.dvc import DisplacementField, NodeStatus

    f = DisplacementField.load(res.run.out / "fields" / "dvc_T0_T1.h5")
    th = read_table(res.run.out / "tables" / "thickness.csv")
    low = f.status == NodeStatus.LOW_TEXTURE
    above = f.positions_zyx_px[:, 0] > th["separator_z_um"][0] * 1e3 / doc["params"]["lq_voxel_nm"]
    assert f.notes["low_texture"] == low.sum() > 0 and low[above].sum() > 0.8 * low.sum()
    assert f.notes["low_texture_noise"]["source"] == "repeat scan"
    # the Laplacian's weight from T0's noise ratio in the electrode band (session 38), in the field and the report
    from tomo4d.pipeline.sections import route_regularisation

    assert f.notes["options"]["regularisation"] == pytest.approx(
        route_regularisation(deconvolved=True, noise_ratio=f.notes["route_noise_ratio"]))
    import html

    page = html.unescape(res.report_path.read_text())
    assert "The Laplacian's weight: " in page
    # the demo's electrode is as few PSF widths thick as the phantom's LQ series': the split of ln U_zz between the
    # layers is flagged as uncertain (sessions 39, 41)
    widths = (th["separator_z_um"][0] - th["collector_z_um"][0]) * 1e3 / doc["params"]["lq_voxel_nm"]
    widths /= exp.dvc.deconvolve_psf_sigma_px
    spacings = widths * exp.dvc.deconvolve_psf_sigma_px / exp.dvc.node_spacing
    assert f.notes["electrode_psf_sigmas"] == pytest.approx(widths, abs=1e-3) and widths < 8
    assert f.notes["electrode_node_spacings"] == pytest.approx(spacings, abs=1e-3) and spacings < 6
    assert f"Caution: the electrode is {spacings:.3g} node spacings and {widths:.3g} PSF widths (sigma) thick" in page
    # the node rows where the field covers most of the electrode's collector half (dvc.node_grid: cover, session 40)
    from tomo4d.dvc import covering_node_plane_px, interior_axes

    o = f.notes["options"]
    band = (th["collector_z_um"][0] * 1e3 / doc["params"]["lq_voxel_nm"],
            th["separator_z_um"][0] * 1e3 / doc["params"]["lq_voxel_nm"])
    shape = f.notes["volume_shape_zyx"]
    axes = interior_axes(shape, exp.dvc.deconvolve_psf_sigma_px, band=band)
    axes = ((np.arange(shape[0]) >= band[0]) & axes[0],) + axes[1:]
    half = (band[0], (band[0] + band[1]) / 2)  # the collector half
    assert f.notes["node_plane_z_px"] == covering_node_plane_px(axes, o["node_spacing"], cover_z_px=half,
                                                                mask_fraction=o["mask_fraction"])
    assert "dvc.node_grid: cover" in page and "this run places them by the rule" in page


def test_demo_rerun_through_tomo4d_run_is_cached(small_demo, capsys):
    res = small_demo
    assert main(["run", str(res.experiment_file), "-o", str(res.run.out), "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(("report:", " "))]
    assert lines and all(" cached " in ln for ln in lines), out


def test_demo_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("data")
    assert main(["demo", str(tmp_path), "--overwrite", "--quiet"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "data"


def test_demo_refuses_an_existing_folder_without_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "x").write_text("y")
    assert main(["demo", str(out), "--quiet"]) == 2
    assert (out / "x").read_text() == "y"


def test_demo_bad_seed(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "d"), "--seed", "-1", "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_phantom_and_demo_follow_one_folder_rule(tmp_path, capsys):
    """Both replace, with --overwrite, only a folder tomo4d wrote; never a folder of user files."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for args in (["phantom", str(user), "--shape", "24", "--steps", "2", "--fields", "none", "--overwrite"],
                 ["demo", str(user), "--overwrite", "--quiet"]):
        assert main(args) == 2
        assert "did not write" in capsys.readouterr().err
        assert (user / "notes.txt").read_text() == "mine"
