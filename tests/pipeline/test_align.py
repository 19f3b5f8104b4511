"""The align stage: a rigidly moved copy of T0 is aligned back (known Phi), and dvc reads the aligned volume."""

from __future__ import annotations

import json

import numpy as np
import pytest

ALIGN_EXPERIMENT = """\
name: align
inputs:
  series: [series_hq/T0.tif, moved/T0_moved.tif]
  time_s: [0, 60]
align: {{collector_z: [0, 4]{extra}}}
dvc:
  node_spacing: 4
  half_window: 6
  smooth_sigma_px: 1.0
  max_iterations: 20
"""


def _known_phi(angle_deg=2.0, shift=(0.8, 1.5, -1.2)):
    a = np.deg2rad(angle_deg)
    phi = np.eye(4)
    phi[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]  # about z, in the (y, x) plane
    phi[:3, 3] = shift
    return phi


@pytest.fixture(scope="module")
def moved_experiment(phantom_dir):
    from tomo4d.io import open_volume, save_volume
    from tomo4d.register import apply_phi
    from tomo4d.volume import Volume

    t0 = open_volume(phantom_dir / "series_hq" / "T0.tif")
    moved = apply_phi(t0.numpy(), _known_phi(), order=3)
    (phantom_dir / "moved").mkdir(exist_ok=True)
    save_volume(Volume(moved.astype(t0.dtype), t0.voxel_size_nm), phantom_dir / "moved" / "T0_moved.tif",
                overwrite=True)

    def make(extra="", name="align.yaml"):
        p = phantom_dir / name
        p.write_text(ALIGN_EXPERIMENT.format(extra=extra))
        return p

    return make


def test_detect_collector_finds_the_brightest_slab():
    from tomo4d.pipeline.stages_align import detect_collector

    img = np.full((40, 8, 8), 0.2, np.float32)
    img[5:11] = 1.0
    img[20:30] = 0.5
    assert detect_collector(img) == (5, 11)


def test_align_recovers_a_known_rigid_phi_and_dvc_reads_the_aligned_volume(moved_experiment, tmp_path):
    from tomo4d.dvc import DisplacementField
    from tomo4d.pipeline import load_experiment, run_experiment

    exp = load_experiment(moved_experiment())
    out = tmp_path / "run"
    res = run_experiment(exp, out)
    assert [s.name for s in res.stages][:2] == ["align", "dvc"]
    info = json.loads((out / "fields" / "align_T1.json").read_text())
    assert info["reference_slab_z_px"] == [0, 8]  # collector [0, 4) widened by margin_px 4
    expected = np.linalg.inv(_known_phi())  # fixed T0 -> moving coordinates
    phi = np.asarray(info["phi"])
    assert np.allclose(phi[:3, 3], expected[:3, 3], atol=0.15), phi
    assert np.allclose(phi[:3, :3], expected[:3, :3], atol=0.005), phi
    assert (out / "volumes" / "aligned_T1.ome.zarr").is_dir()
    c = np.asarray(info["reference_centre_zyx_px"])  # (3.5, 15.5, 15.5): the slab's centre, moved by expected
    assert np.allclose(info["reference_displacement_zyx_px"], expected[:3, :3] @ (c - 15.5) + 15.5 + expected[:3, 3]
                       - c, atol=0.15)
    # dvc correlated T0 with the aligned volume: (almost) no displacement left, not the ~2 px shift
    field = DisplacementField.load(out / "fields" / "dvc_T0_T1.h5")
    u = np.linalg.norm(field.displacement_zyx_px[field.usable], axis=1)
    assert np.median(u) < 0.3, np.median(u)
    marker = json.loads((out / ".tomo4d" / "done" / "dvc" / "T1.json").read_text())
    assert "align" in marker["basis"]["needs"]
    assert "Alignment" in (out / "report.html").read_text(encoding="utf-8")


def test_align_option_change_recomputes_align_and_dvc(moved_experiment, tmp_path):
    from tomo4d.pipeline import load_experiment, run_experiment

    out = tmp_path / "run"
    run_experiment(load_experiment(moved_experiment(name="a1.yaml")), out)
    res = run_experiment(load_experiment(moved_experiment(extra=", margin_px: 6", name="a2.yaml")), out)
    by = {s.name: s for s in res.stages}
    assert by["align"].status == "computed"
    assert any("align.margin_px changed 4 -> 6" in r for r in by["align"].reasons)
    assert by["dvc"].status == "computed"
    assert json.loads((out / "fields" / "align_T1.json").read_text())["reference_slab_z_px"] == [0, 10]


def test_align_collector_outside_the_volume_is_refused(phantom_dir, moved_experiment, tmp_path):
    from tomo4d.errors import InputError
    from tomo4d.pipeline import load_experiment, plan_experiment, run_experiment

    p = phantom_dir / "bad_align.yaml"
    p.write_text(ALIGN_EXPERIMENT.format(extra="").replace("[0, 4]", "[10, 40]"))
    with pytest.raises(InputError, match="collector_z"):
        run_experiment(load_experiment(p), tmp_path / "run")
    with pytest.raises(InputError, match="collector_z"):  # refused by --check too (plan_experiment)
        plan_experiment(load_experiment(p))
    p.write_text(ALIGN_EXPERIMENT.format(extra="").replace("[0, 4]", "[4, 2]"))
    with pytest.raises(InputError, match="align.collector_z"):
        load_experiment(p)


def _corner_error(p, q, shape) -> float:
    c = (np.asarray(shape, float) - 1) / 2
    cs = np.array([[z, y, x] for z in (0, shape[0] - 1) for y in (0, shape[1] - 1) for x in (0, shape[2] - 1)], float)
    return float(np.abs(((cs - c) @ p[:3, :3].T + p[:3, 3]) - ((cs - c) @ q[:3, :3].T + q[:3, 3])).max())


@pytest.mark.slow
def test_align_and_the_dvc_affine_start_out_of_core_match_the_in_memory_run(phantom_dir, moved_experiment, tmp_path,
                                                                             caplog):
    """``chunk_budget_mb`` below the registration's working set (32^3 x 20 bytes = 0.66 MB): align registers out of
    core (binned levels streamed, the finest on a sampled box: at this size one box holds the whole reference slab)
    and resamples slab by slab; dvc's affine start registers out of core.  Same Phi (corners within 0.05 px), same
    aligned voxels (+-1 grey level), same DVC field (0.02 px).  Sampled boxes that do not cover the volume:
    tests/register/test_register_out_of_core.py."""
    from tomo4d.dvc import DisplacementField
    from tomo4d.io import open_volume
    from tomo4d.pipeline import load_experiment, run_experiment

    ref_out, out = tmp_path / "mem", tmp_path / "ooc"
    run_experiment(load_experiment(moved_experiment(name="mem.yaml")), ref_out)
    p = phantom_dir / "ooc.yaml"
    p.write_text(ALIGN_EXPERIMENT.format(extra="") + "chunk_budget_mb: 0.6\n")
    with caplog.at_level("INFO", logger="tomo4d"):
        run_experiment(load_experiment(p), out)
    assert "resampled in" in caplog.text
    mem, ooc = (json.loads((o / "fields" / "align_T1.json").read_text()) for o in (ref_out, out))
    assert "out_of_core" in ooc and ooc["out_of_core"]["levels"][-1]["route"] == "sampled"
    assert _corner_error(np.asarray(ooc["phi"]), np.asarray(mem["phi"]), (32, 32, 32)) < 0.05
    assert _corner_error(np.asarray(ooc["phi"]), np.linalg.inv(_known_phi()), (32, 32, 32)) < 0.3
    a, b = (open_volume(o / "volumes" / "aligned_T1.ome.zarr").numpy().astype(np.float64) for o in (ref_out, out))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1.0 + 1e-3 * np.abs(a).max()
    fa, fb = (DisplacementField.load(o / "fields" / "dvc_T0_T1.h5") for o in (ref_out, out))
    both = fa.usable & fb.usable
    assert both.mean() > 0.9
    du = np.abs(fa.displacement_zyx_px[both] - fb.displacement_zyx_px[both])
    assert np.median(du) < 0.02, np.median(du)
