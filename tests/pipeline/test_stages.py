"""The segment, particles and residual stages on the phantom, against its truth; provenance; why a stage reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.pipeline import load_experiment, run_experiment


def _table(out: Path, name: str) -> dict:
    from tomo4d.quantify import read_table

    return read_table(out / "tables" / f"{name}.csv")


def _statuses(res) -> dict:
    return {s.name: s.status for s in res.stages}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, phantom_dir):
    from .conftest import FULL_EXPERIMENT

    exp_file = phantom_dir / "full_ref.yaml"
    exp_file.write_text(FULL_EXPERIMENT.format(iterations=30, trees=8))
    out = tmp_path_factory.mktemp("full") / "run"
    return out, run_experiment(load_experiment(exp_file), out, source=exp_file)


def test_segment_stage_against_truth(full_run, phantom_dir):
    from tomo4d.io import open_volume

    out, res = full_run
    assert _statuses(res) == {"segment": "computed", "quantify": "computed", "dvc": "computed",
                              "strain": "computed", "residual": "computed", "particles": "computed"}
    assert res.stages[0].computed_steps == ("T0", "T1", "T2")
    assert (out / "models" / "segment_pixel_classifier.npz").is_file()
    truth0 = open_volume(phantom_dir / "truth" / "labels_hq_T0.tif").numpy()
    for step in ("T0", "T1", "T2"):
        seg = open_volume(out / "volumes" / f"segment_{step}.ome.zarr").numpy()
        assert seg.shape == (32, 32, 32) and set(np.unique(seg)) <= set(np.unique(truth0)).union({3})
    t0 = _table(out, "segment_T0")
    by = {int(c): i for i, c in enumerate(t0["class"])}
    # scored on the voxels not used for training: the collector is exact, silicon well found
    assert t0["dice"][by[4]] > 0.99 and t0["dice"][by[2]] > 0.6 and t0["accuracy"][0] > 0.7
    np.testing.assert_allclose(t0["volume_fraction"], t0["true_volume_fraction"], atol=0.03)
    assert (out / "tables" / "segment_T0.parquet").is_file()  # pyarrow is installed here


def test_quantify_from_the_segmentation_beside_truth(full_run, phantom_dir):
    from tomo4d.io import open_volume
    from tomo4d.quantify import thickness_series

    out, _ = full_run
    th = _table(out, "thickness")
    truth = [open_volume(phantom_dir / "truth" / f"labels_hq_T{i}.tif").numpy() for i in range(3)]
    tt = thickness_series(truth, voxel_size_nm=(50.0,) * 3, smooth_nm=400.0)
    np.testing.assert_allclose(th["true_thickness_mean_um"], tt.mean_um)  # the truth, beside
    np.testing.assert_allclose(th["thickness_mean_um"][0], tt.mean_um[0], rtol=0.1)  # T0 measured: within 10 %
    assert th["thickness_mean_um"][2] > th["thickness_mean_um"][0]  # the anode swells
    assert "true thickness (um)" in (out / "report.html").read_text()
    assert (out / "tables" / "regional_strain.csv").is_file()  # strain's layers from the segmented T0 anode


def test_particles_stage_against_truth(full_run, phantom_dir):
    from tomo4d.io import open_volume
    from tomo4d.segment import remove_small_objects

    out, _ = full_run
    s = _table(out, "particles_summary")
    assert list(s["step"]) == ["T0", "T1", "T2"] and np.all(s["n_particles"] > 0)
    for i, step in enumerate(("T0", "T1", "T2")):
        truth, _ = remove_small_objects(open_volume(phantom_dir / "truth" / f"particles_hq_{step}.tif").numpy()
                                        .astype(np.int64), min_voxels=8)
        assert s["n_true"][i] == len(np.unique(truth)) - 1  # the true count, measured beside it
        lab = open_volume(out / "volumes" / f"particles_{step}.ome.zarr").numpy()
        assert s["n_particles"][i] == len(np.unique(lab)) - 1
    # a 32^3 phantom: particles ~2-4 voxels across, about the HQ blur, so detection is modest
    assert s["precision"][0] > 0.2 and s["recall"][0] > 0.05
    tr = _table(out, "tracks")
    truth = [open_volume(phantom_dir / "truth" / f"particles_hq_{n}.tif").numpy() for n in ("T0", "T1")]
    parts = [open_volume(out / "volumes" / f"particles_{n}.ome.zarr").numpy() for n in ("T0", "T1")]

    def true_id(step, label):  # the true particle covering most of a measured one
        ids, counts = np.unique(truth[step][parts[step] == label], return_counts=True)
        return ids[np.argmax(counts)]

    at = {(int(t), str(n)): int(lab) for t, n, lab in zip(tr["track"], tr["step"], tr["label"])}
    links = [(at[t, "T0"], at[t, "T1"]) for (t, n) in at if n == "T0" and (t, "T1") in at]
    ok = [true_id(0, a) == true_id(1, b) != 0 for a, b in links]
    assert s["n_links"][1] == len(links) > 0 and s["link_accuracy"][1] == pytest.approx(np.mean(ok))
    p = _table(out, "particles")
    assert len(p["step"]) == int(s["n_particles"].sum()) and np.all(p["volume_um3"] > 0)
    assert set(tr["step"]) <= {"T0", "T1", "T2"}


def test_residual_stage_noise_floor_and_truth(full_run, phantom_dir):
    from tomo4d.dvc import DisplacementField, noise_floor
    from tomo4d.io import open_volume

    out, _ = full_run
    r = _table(out, "residual_summary")
    t0 = open_volume(phantom_dir / "series_hq" / "T0.tif").numpy().astype(np.float32)
    rep = open_volume(phantom_dir / "repeat_hq.tif").numpy().astype(np.float32)
    np.testing.assert_allclose(r["noise_floor"], noise_floor(t0, rep, sigma_px=2.0), rtol=1e-6)
    assert r["noise_floor"][0] > 0
    for i, step in enumerate(r["step"]):
        usable = int(np.count_nonzero(DisplacementField.load(out / "fields" / f"dvc_T0_{step}.h5").usable))
        assert r["n_usable_nodes"][i] == usable
        assert (out / "volumes" / f"residual_T0_{step}.ome.zarr").exists() == (usable > 0)
    # where the field is usable, lithiating silicon stands out of the residual
    assert r["residual_mean_true_lithiated"][0] > r["residual_mean_elsewhere"][0]
    res = open_volume(out / "volumes" / "residual_T0_T1.ome.zarr").numpy()
    assert res.dtype == np.float32 and res.min() >= 0 and np.isclose(res.mean(), r["residual_mean"][0], rtol=1e-5)


def test_provenance_memory_seeds_versions_and_report(full_run):
    out, _ = full_run
    prov = json.loads((out / "provenance.json").read_text())
    assert "process-wide" in prov["memory"] and ("VmHWM" in prov["memory"] or "ru_maxrss" in prov["memory"])
    assert all(st["peak_rss_mib"] > 10 for st in prov["stages"].values())
    assert prov["seeds"] == {"segment.seed": 0}
    assert prov["versions"]["scikit-learn"] and prov["versions"]["numpy"]
    assert prov["stages"]["segment"]["recomputed_because"] == ["not computed before"]
    html = (out / "report.html").read_text()
    for title in ("Segmentation", "Particles and tracks", "Residual maps", "true volume (%)", "true particles",
                  "mean in true lithiated Si", "peak RSS (MiB)", "segment.seed=0"):
        assert title in html, title
    assert {"segment_slices.png", "particles_count.png"} <= {p.name for p in (out / "figures").iterdir()}


def test_report_reads_only_the_slices_it_shows(full_run, monkeypatch):
    """The report's slice figures read one plane of each stored volume, never a whole volume (a 1024^3 run's
    report held two 1 GiB segmentations: 3.4 GiB)."""
    from tomo4d.pipeline.run_report import render_report
    from tomo4d.volume import Volume

    out, _ = full_run
    (out / "figures" / "segment_slices.png").unlink()

    def whole(self):
        raise AssertionError("the report loaded a whole volume")

    monkeypatch.setattr(Volume, "numpy", whole)
    render_report(out)
    assert {"segment_slices.png", "residual_slices.png"} <= {p.name for p in (out / "figures").iterdir()}


def test_bad_segment_labels_are_refused_by_check(tmp_path, phantom_dir, capsys):
    from tomo4d.io import save_volume

    bad = save_volume(np.zeros((32, 32, 30), np.uint8), tmp_path / "scribbles.tif")
    from .conftest import FULL_EXPERIMENT

    text = FULL_EXPERIMENT.format(iterations=30, trees=8).replace("truth/labels_hq_T0.tif", str(bad))
    exp = phantom_dir / "bad_labels.yaml"
    exp.write_text(text)
    assert main(["run", str(exp), "--check"]) == 2
    err = capsys.readouterr().err
    assert "segment.labels" in err and "scribbles.tif" in err and "(32, 32, 30)" in err and "T0.tif" in err
    exp.write_text(FULL_EXPERIMENT.format(iterations=30, trees=8).replace("[4, 12, 20, 28]", "[4, 40]"))
    assert main(["run", str(exp), "--check"]) == 2
    assert "segment.slices has 40, outside 0..31" in capsys.readouterr().err


def test_edited_option_names_what_changed_and_never_mixes(tmp_path, full_run, full_experiment_file, capsys):
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    exp = full_experiment_file(iterations=12)
    assert main(["run", str(exp), "--check", "-o", str(out)]) == 0
    assert "to run because dvc.max_iterations changed 30 -> 12" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in (out / "fields").iterdir()}
    res = run_experiment(load_experiment(exp), out)
    st = {s.name: s for s in res.stages}
    assert _statuses(res) == {"segment": "cached", "quantify": "cached", "dvc": "computed", "strain": "computed",
                              "residual": "computed", "particles": "computed"}
    assert st["dvc"].reasons == ("dvc.max_iterations changed 30 -> 12",)
    assert st["residual"].reasons == ("needed stage dvc was recomputed",)
    log = (out / "log.txt").read_text()
    assert "stage dvc: running because dvc.max_iterations changed 30 -> 12" in log
    assert "step T2 computed in" in log and "because dvc.max_iterations changed 30 -> 12" in log
    # every result downstream of the edit is new: fields rewritten, residual and particles read the new fields
    assert all(p.stat().st_mtime_ns > before[p] for p in before if p.name.startswith("dvc_"))
    from tomo4d.dvc import DisplacementField

    r = _table(out, "residual_summary")
    for i, step in enumerate(r["step"]):
        f = DisplacementField.load(out / "fields" / f"dvc_T0_{step}.h5")
        assert r["n_usable_nodes"][i] == np.count_nonzero(f.usable)
    done = out / ".tomo4d" / "done"
    marker = {n: json.loads((done / f"{n}.json").read_text()) for n in ("dvc", "residual", "particles", "strain")}
    for n in ("residual", "particles", "strain"):  # built on the new dvc result
        assert marker[n]["basis"]["needs"]["dvc"] == marker["dvc"]["key"], n
    for step in ("T1", "T2"):
        assert json.loads((done / "dvc" / f"{step}.json").read_text())["basis"]["options"]["dvc.max_iterations"] == 12
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stages"]["dvc"]["recomputed_because"] == ["dvc.max_iterations changed 30 -> 12"]
    assert prov["stages"]["segment"]["status"] == "cached"


def test_fewer_steps_and_a_removed_stage_leave_no_stale_results(tmp_path, full_run, full_experiment_file):
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    exp = full_experiment_file(name="two.yaml")
    text = exp.read_text().replace("series_hq/T*.tif", "[series_hq/T0.tif, series_hq/T1.tif]").replace(
        "[0, 3600, 7200]", "[0, 3600]").replace("[0.0, 0.5, 0.85]", "[0.0, 0.5]").replace(
        "truth/labels_hq_T*.tif", "[truth/labels_hq_T0.tif, truth/labels_hq_T1.tif]").replace(
        "truth/particles_hq_T*.tif", "[truth/particles_hq_T0.tif, truth/particles_hq_T1.tif]").replace(
        "residual: {}\n", "")
    exp.write_text(text)
    res = run_experiment(load_experiment(exp), out)
    st = {s.name: s for s in res.stages}
    assert "residual" not in st
    assert any("inputs.names" in r or "inputs.time_s" in r for r in st["particles"].reasons), st["particles"].reasons
    assert not (out / "fields" / "dvc_T0_T2.h5").exists() and not (out / "volumes" / "segment_T2.ome.zarr").exists()
    assert not (out / ".tomo4d" / "done" / "dvc" / "T2.json").exists()
    assert list(_table(out, "particles_summary")["step"]) == ["T0", "T1"]
    html = (out / "report.html").read_text()
    assert "Residual maps" not in html and "Segmentation" in html
    assert "stage residual: off in this experiment file" in (out / "log.txt").read_text()


def test_tables_without_pyarrow_are_csv_only(tmp_path, monkeypatch):
    from tomo4d.pipeline import stage_io

    monkeypatch.setattr(stage_io, "has_parquet", lambda: False)
    paths = stage_io.write_tables({"step": np.array(["T0", "T1"]), "x_um": np.array([1.0, 2.5])}, tmp_path, "t")
    assert paths == ("tables/t.csv",)
    np.testing.assert_array_equal(stage_io.read_table_of(tmp_path, "t")["x_um"], [1.0, 2.5])


def test_segment_from_scribbles_zero_is_unlabelled(tmp_path, phantom_dir):
    """Without ``slices``, 0 means unlabelled and the predicted values are the scribbles' classes."""
    from tomo4d.io import open_volume, save_volume

    truth = open_volume(phantom_dir / "truth" / "labels_hq_T0.tif").numpy()
    scribbles = np.zeros_like(truth)
    scribbles[:, ::8] = truth[:, ::8] + 1  # classes 1..6 on every 8th xz plane
    save_volume(scribbles, tmp_path / "scribbles.tif")
    (tmp_path / "e.yaml").write_text(json.dumps({
        "inputs": {"series": [str(phantom_dir / "series_hq" / f"T{i}.tif") for i in range(2)], "time_s": [0, 1]},
        "segment": {"labels": "scribbles.tif", "n_trees": 4, "feature_ndim": 2}}))
    out = tmp_path / "run"
    res = run_experiment(load_experiment(tmp_path / "e.yaml"), out)
    assert _statuses(res) == {"segment": "computed"}
    seg = open_volume(out / "volumes" / "segment_T1.ome.zarr").numpy()
    assert set(np.unique(seg)) <= set(np.unique(scribbles)) - {0}
    t = _table(out, "segment_T0")
    assert "dice" not in t and sorted(t["class"]) == sorted(set(np.unique(scribbles)) - {0})
    assert "No truth given" in (out / "report.html").read_text()


def test_a_deleted_output_is_named_and_only_its_stage_reruns(tmp_path, full_run, full_experiment_file, capsys):
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    (out / "tables" / "particles_summary.csv").unlink()
    assert main(["run", str(full_experiment_file(name="full_cli.yaml")), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "particles computed" in text and "recomputed because outputs missing: " in text
    assert "tables/particles_summary.csv" in text and "segment   cached" in text and "dvc       cached" in text
    assert (out / "tables" / "particles_summary.csv").is_file()


def test_a_particle_class_the_segmentation_lacks_is_named(tmp_path, full_run, full_experiment_file):
    from tomo4d.errors import InputError

    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    exp = full_experiment_file(name="cls.yaml", extra="")
    exp.write_text(exp.read_text().replace("particles: {}", "particles: {particle_class: 9}"))
    with pytest.raises(InputError, match=r"particles.particle_class=9 is not in the T0 segmentation \(its classes: "
                                         r"0, 1, 2, 4, 5\)"):
        run_experiment(load_experiment(exp), out)
    assert not (out / ".tomo4d" / "done" / "particles.json").exists()  # the old result is not kept as if valid
    html = render_report_text(out)
    assert "Particles and tracks" not in html and "Not finished" in html
    assert "<td>particles</td>" not in html  # nor in the run table (provenance.json is of the last finished run)


def render_report_text(out: Path) -> str:
    from tomo4d.pipeline import render_report

    return render_report(out).read_text()


def test_global_dvc_match_leaves_the_deconvolved_faces_out():
    """With deconvolution the global DVC's mask leaves boundary_margin_px out at every face (static in every scan;
    tomo4d.dvc.boundary_margin_px), at the z faces only outside the electrode band; the local method's mask is the
    band alone, and without a band or a deconvolution there is none."""
    from tomo4d.dvc import boundary_margin_px
    from tomo4d.pipeline.sections import DvcSection
    from tomo4d.pipeline.stages import _lazy_mask, _mask_axes

    def mask(band, shape, **kw):
        sec = DvcSection(**{"method": "global", "deconvolve_iterations": 20, "deconvolve_psf_sigma_px": 2.0,
                            "mask": "above_collector", **kw})
        return np.asarray(_lazy_mask(_mask_axes(sec, band, shape)))

    m = boundary_margin_px(2.0)  # the PSF's half-width, 3 sigma
    shape = (40, 30, 32)
    box = mask(None, shape)
    assert box.shape == shape and m == 6
    assert box[m:-m, m:-m, m:-m].all() and box.sum() == (40 - 2 * m) * (30 - 2 * m) * (32 - 2 * m)
    # the electrode 3.5 .. 20 px above the collector: the bottom margin stops at the collector, the top one is whole
    kept = mask((3.5, 20.0), shape)[:, m, m]
    np.testing.assert_array_equal(np.flatnonzero(kept), np.arange(4, 40 - m))
    kept = mask((10.0, 37.0), shape, mask="electrode")[:, m, m]  # the separator near the top: no top margin
    np.testing.assert_array_equal(np.flatnonzero(kept), np.arange(10, 37))
    local = mask((5.0, 20.0), shape, method="local")
    np.testing.assert_array_equal(local, np.broadcast_to((np.arange(40) >= 5)[:, None, None], shape))
    assert _mask_axes(DvcSection(method="global"), None, shape) is None
    small = mask(None, (40, 16, 12))  # at most a quarter of an axis at each face
    assert small[20, 4:12, 3:9].all() and small[20].sum() == 8 * 6


def test_a_capped_solve_flags_every_step_composed_on_it():
    """tables/strain_summary's solver_capped: a step's own global solve stopped at max_iterations, or, with reference
    updating, any earlier pair its composed field rests on; a step correlated from T0 (no increment) stands alone."""
    from types import SimpleNamespace as Field

    from tomo4d.pipeline.stages_strain import _capped

    direct = Field(notes={"method": "global", "converged": True})
    capped = Field(notes={"method": "global", "converged": False})
    settled_pair = Field(notes={"composed_from": [], "increment": {"method": "global", "converged": True}})
    capped_pair = Field(notes={"composed_from": [], "increment": {"method": "global", "converged": False}})
    assert not _capped(direct, False) and not _capped(direct, True)  # T0 -> Tn: its own solve only
    assert _capped(capped, False)
    assert not _capped(settled_pair, False) and _capped(settled_pair, True)  # composed onto a capped T0 -> T(n-1)
    assert _capped(capped_pair, False)


def test_report_describes_the_dvc_route_that_ran():
    """The report's DVC section says how the fields were measured, from the run's recorded dvc options: the demo's
    global, incremental, deconvolved, interface-tied route is not described as "each step against T0"."""
    from tomo4d.pipeline.run_report import _dvc_route

    demo = {"method": "global", "node_spacing": 4, "incremental": True, "deconvolve_iterations": 20,
            "deconvolve_psf_sigma_px": 3.13, "axial_start": True, "axial_lateral": True, "mask": "above_collector",
            "interfaces": True}
    text = _dvc_route(demo)
    for part in ("Global DVC", "nodes 4 px apart", "T(n-1) -> Tn", "20 iterations", "PSF sigma 3.13 px",
                 "in-plane expansion", "collector left out", "InterfaceMotion", "LOW_TEXTURE",
                 "The 10 px at each face"):  # the PSF's half-width, ceil(3 x 3.13) px (boundary_margin_px)
        assert part in text, part
    assert "LOW_TEXTURE" not in _dvc_route({**demo, "flag_textureless": False})
    assert "against T0" not in text
    assert "node_grid" not in text  # recorded before session 40: centred
    assert "dvc.node_grid: cover" in _dvc_route({**demo, "node_grid": "cover"})
    assert "node_grid" not in _dvc_route({**demo, "node_grid": "centred"})
    plain = _dvc_route({"method": "local", "node_spacing": 10, "from_previous": True, "mask": "none"})
    assert plain.startswith("Local DVC") and "against T0, started from the previous step's field" in plain
    assert "deconvolved" not in plain and "InterfaceMotion" not in plain and "LOW_TEXTURE" not in plain


def test_node_grid_cover_places_the_rows_by_the_pairs_band_and_mask():
    """dvc.node_grid: cover (the default) gives the global pair the node plane of covering_node_plane_px for its band
    and mask: on the HQ phantom's geometry the lowest usable row 1.8 px above the collector interface, the same rows
    against the collector wherever the field of view was cut; centred, or no band, gives none (centred rows)."""
    from tomo4d.dvc import GlobalOptions
    from tomo4d.pipeline.sections import DvcSection
    from tomo4d.pipeline.stages import _mask_axes, _node_plane

    def plane(sec, band, shape):
        return _node_plane(sec, band, _mask_axes(sec, band, shape), opts)

    opts = GlobalOptions(node_spacing=4)
    sec = DvcSection(method="global", mask="above_collector", node_spacing=4, deconvolve_iterations=20,
                     deconvolve_psf_sigma_px=2.8)
    assert sec.node_grid == "cover"
    assert plane(sec, (7.18, 50.38), (96, 96, 96)) == 1.0  # rows at 9: 6 of 9 voxels at z >= 8
    assert plane(sec, (4.18, 47.38), (93, 96, 96)) == 2.0  # cut 3 voxels lower: the rows move with it
    assert _node_plane(sec, None, None, opts) is None
    # mask: electrode (both faces of the band in the mask): still the rows next to the collector, by its half (the
    # whole band's two strips trade against each other: the LQ phantom's geometry would take phase 2 by rounding)
    lq = DvcSection(method="global", mask="electrode", node_spacing=4, deconvolve_iterations=20,
                    deconvolve_psf_sigma_px=3.13)
    assert plane(lq, (27.34, 48.94), (96, 96, 96)) == 1.0  # rows at 29: 1.66 px above the collector
    centred = DvcSection(method="global", mask="above_collector", node_grid="centred")
    assert plane(centred, (7.18, 50.38), (96, 96, 96)) is None
    # quantify found no separator: the rows by the collector alone; no collector: centred (the mask's check reports)
    assert plane(sec, (7.18, float("nan")), (96, 96, 96)) == 1.0
    assert _node_plane(sec, (float("nan"), 50.0), [np.zeros(96, bool), np.ones(96, bool), np.ones(96, bool)],
                       opts) is None


def test_report_says_whether_the_run_placed_its_node_rows_by_the_rule_the_collector_side_was_measured_with():
    """The det F - 1 caution's collector-side sentence: a run with dvc.node_grid: cover placed its rows by the rule
    under which the collector side read within 0.02; any other run is told how to."""
    from tomo4d.pipeline.run_report import _volumetric_caution

    assert "this run places them by the rule under which it read within 0.02 (dvc.node_grid: cover" in \
        _volumetric_caution(True)
    assert "this run did not place them" in _volumetric_caution(False)
    assert "set dvc.node_grid: cover" in _volumetric_caution(False)


def test_report_cautions_beyond_the_validated_range_by_the_runs_method():
    """Steps beyond the validated axial strain are cautioned with what the run's own method read on the phantom
    there: the global route's figures for method: global, and for the local method (the section's default) that it
    is not the validated route, with its far worse figures and the route to use instead (until session 42 every run
    was told the global route's figures)."""
    from tomo4d.pipeline.run_report import _beyond_caution

    local = _beyond_caution("T3, T4", method="local", placed=False)
    assert local.startswith("Caution: at T3, T4 the axial strain exceeds 0.12")
    assert "local DVC (one window per node, this run's dvc.method)" in local and "1.1-2.6 px" in local
    assert "Do not use these steps' figures" in local and "dvc.method: global with axial_start" in local
    assert "within 0.02" not in local
    glob = _beyond_caution("T3", method="global", placed=True)
    assert "within 0.023 of the truth" in glob and "local DVC" not in glob and ", as in this run" not in glob
    assert ", as in this run" in _beyond_caution("T3", method="global", placed=False)


def test_report_states_the_weight_and_cautions_on_the_split_for_coarse_scans():
    """The report's DVC section states the Laplacian's weight from the field's notes, and where the electrode is
    fewer node spacings or PSF widths thick than on the validated high-resolution scans, or the scans were not
    deconvolved, cautions that the split of ln U_zz between the layers is uncertain, whatever the noise (session 41:
    noise-free low-resolution scans read the split as wrongly, noisy high-resolution ones right); on HQ-like scans
    only the note that the split reads compressed there too (session 42); nothing where nothing is known.  Fields from
    before the resolution was recorded fall back on T0's noise ratio."""
    from tomo4d.pipeline.run_report import (
        SPLIT_CAUTION_NODE_SPACINGS,
        SPLIT_CAUTION_NOISE_RATIO,
        SPLIT_CAUTION_PSF_SIGMAS,
        SPLIT_NOTE_RESOLVED,
        _route_weight,
        _split_caution,
    )

    lq = {"options": {"regularisation": 0.2}, "route_noise_ratio": 0.187, "electrode_psf_sigmas": 6.87,
          "electrode_node_spacings": 5.37}
    hq = {"options": {"regularisation": 0.05}, "route_noise_ratio": 0.018, "electrode_psf_sigmas": 15.1,
          "electrode_node_spacings": 10.6}
    assert _route_weight(lq).startswith(" The Laplacian's weight: 0.2, from T0's noise") and "(0.187;" in _route_weight(lq)
    assert _route_weight({"options": {"regularisation": 0.1}}) == " The Laplacian's weight: 0.1."
    assert _route_weight({}) == ""
    caution = _split_caution(lq)
    assert caution.startswith("Caution: the electrode is 5.37 node spacings and 6.87 PSF widths (sigma) thick")
    assert "up to 0.06 above" in caution
    # as finely resolved as the validated scans: no caution, but the note that the split reads compressed there too
    assert _split_caution(hq) == SPLIT_NOTE_RESOLVED and "compressed" in SPLIT_NOTE_RESOLVED
    assert _split_caution({"options": {"regularisation": 0.2}}) == ""
    # the resolution decides, not the noise: a noisy fine scan is not cautioned, a noise-free coarse one is
    assert _split_caution({**hq, "route_noise_ratio": 0.16}) == SPLIT_NOTE_RESOLVED
    assert _split_caution({**lq, "route_noise_ratio": 1e-7}).startswith("Caution")
    # either figure short is enough (LQ voxels with a sharp PSF read the collector side 0.03 high)
    sharp = _split_caution({**hq, "electrode_node_spacings": 5.4})
    assert sharp.startswith("Caution: the electrode is 5.4 node spacings thick")
    assert _split_caution({**hq, "electrode_psf_sigmas": 0.99 * SPLIT_CAUTION_PSF_SIGMAS})
    assert _split_caution({**hq, "electrode_node_spacings": 0.99 * SPLIT_CAUTION_NODE_SPACINGS})
    assert _split_caution({**hq, "electrode_node_spacings": SPLIT_CAUTION_NODE_SPACINGS,
                           "electrode_psf_sigmas": SPLIT_CAUTION_PSF_SIGMAS}) == SPLIT_NOTE_RESOLVED
    # scans not deconvolved: no PSF figure, and the split was validated on deconvolved scans only
    raw = _split_caution({"electrode_node_spacings": 10.6}, deconvolved=False)
    assert raw.startswith("Caution: the scans were not deconvolved")
    assert _split_caution({"electrode_node_spacings": 5.0, "electrode_psf_sigmas": 20.0}, deconvolved=False).startswith(
        "Caution: the electrode is 5 node spacings thick at T0 and the scans were not deconvolved")
    # fields without the figures: T0's noise ratio
    assert _split_caution({"route_noise_ratio": SPLIT_CAUTION_NOISE_RATIO}) == ""
    old = _split_caution({"route_noise_ratio": 1.01 * SPLIT_CAUTION_NOISE_RATIO})
    assert old.startswith("Caution: T0's noise variance") and "do not record" in old


def test_texture_flag_noise_sources(tmp_path, monkeypatch):
    """dvc.flag_textureless's noise: the repeat scan's difference, else T0's wavelet band, and on the enhanced series
    without a repeat scan none (InDI's output has no white noise to estimate)."""
    from types import SimpleNamespace

    import tifffile

    from tomo4d import Volume
    from tomo4d.pipeline import stages_dvc_checks as checks

    rng = np.random.default_rng(0)
    clean = np.cumsum(rng.standard_normal((24, 24, 24)), axis=2).astype(np.float32) * 0.05  # smooth-ish rows
    t0 = clean + rng.standard_normal(clean.shape).astype(np.float32) * 0.1
    rep = clean + rng.standard_normal(clean.shape).astype(np.float32) * 0.1
    tifffile.imwrite(tmp_path / "rep.tif", rep)
    monkeypatch.setattr(checks, "read_series", lambda ctx, step: Volume(t0, 50.0))

    def ctx(repeat, enhance=None):
        exp = SimpleNamespace(enhance=enhance, inputs=SimpleNamespace(voxel_size_nm=(50.0, 50.0, 50.0)),
                              dvc=SimpleNamespace(deconvolve_iterations=0, global_options=None))
        return SimpleNamespace(inputs=SimpleNamespace(repeat=repeat), experiment=exp, out=tmp_path)

    noise = checks.t0_noise(ctx(tmp_path / "rep.tif"))
    assert noise.source == "repeat scan" and noise.sigma == pytest.approx(0.1, rel=0.05)
    noise = checks.t0_noise(ctx(None))
    assert noise.source.startswith("T0's finest wavelet band") and noise.sigma == pytest.approx(0.1, rel=0.1)
    noise = checks.t0_noise(ctx(None, enhance=SimpleNamespace(apply_to_series=True)))
    assert (noise.sigma, noise.source) == (None, "")
    field = SimpleNamespace(notes={})
    assert checks.flag_textureless(ctx(None), field, noise) is field  # nothing to flag by


def test_route_noise_ratio_from_t0_in_the_electrode_band(monkeypatch):
    """The converged route's Laplacian weight on deconvolved scans follows T0's noise variance over its grey variance
    in the electrode band (session 38: HQ phantom 0.0175 -> 0.05, LQ 0.175 -> 0.2); none when the scans are not
    deconvolved, the file sets the weight, or the enhanced series has no noise to estimate."""
    from types import SimpleNamespace

    from scipy import ndimage

    from tomo4d import Volume
    from tomo4d.pipeline import stages_dvc_checks as checks

    rng = np.random.default_rng(1)
    t0 = rng.standard_normal((32, 24, 24)).astype(np.float32) * 0.1  # noise everywhere, texture in z 8..20 only
    texture = ndimage.gaussian_filter(rng.standard_normal((12, 24, 24)), 1.5).astype(np.float32)
    t0[8:20] += texture * (0.3 / texture.std())
    monkeypatch.setattr(checks, "read_series", lambda ctx, step: Volume(t0, 50.0))

    def ctx(deconvolve=20, global_options=None, enhance=None):
        exp = SimpleNamespace(dvc=SimpleNamespace(deconvolve_iterations=deconvolve, global_options=global_options),
                              enhance=enhance, inputs=SimpleNamespace(voxel_size_nm=(50.0, 50.0, 50.0)))
        return SimpleNamespace(inputs=SimpleNamespace(repeat=None), experiment=exp)

    def ratio(band, **kw):
        return checks.t0_noise(ctx(**kw), band).ratio

    band = ratio((7.6, 20.0))
    assert band == pytest.approx(0.01 / float(t0[8:20].var()), rel=0.1)
    assert ratio((7.6, np.inf)) == pytest.approx(0.01 / float(t0[8:].var()), rel=0.1)
    assert ratio(None) > 1.5 * band  # the flat slabs' variance left in
    assert ratio((7.6, 20.0), deconvolve=0) is None
    assert ratio((7.6, 20.0), global_options={"regularisation": 0.1}) is None
    assert ratio((7.6, 20.0), enhance=SimpleNamespace(apply_to_series=True)) is None
