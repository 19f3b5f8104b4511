"""The experiment file refuses bad keys, types, values and inputs with the key, the value and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.pipeline import (
    experiment_schema,
    load_experiment,
    parse_experiment,
    plan_experiment,
)

GOOD = {"inputs": {"series": ["a.tif", "b.tif"], "time_s": [0, 10]}}


def _refused(data) -> str:
    with pytest.raises(InputError) as exc:
        parse_experiment(data)
    return str(exc.value)


def test_unknown_key_names_the_path_and_the_closest_key():
    msg = _refused({**GOOD, "dvc": {"node_spacng": 4}})
    assert "dvc.node_spacng is not a known key" in msg and "did you mean 'node_spacing'" in msg
    msg = _refused({**GOOD, "quantfy": {}})
    assert "quantfy" in msg and "did you mean 'quantify'" in msg


@pytest.mark.parametrize("key, value", [("node_spacing", "8"), ("node_spacing", 8.5), ("node_spacing", True),
                                        ("smooth_sigma_px", "1"), ("replace", 1)])
def test_wrong_types_are_refused_not_coerced(key, value):
    msg = _refused({**GOOD, "dvc": {key: value}})
    assert f"dvc.{key}=" in msg and ("valid" in msg), msg


def test_out_of_range_values_use_the_library_checks():
    assert "dvc.node_spacing=1" in _refused({**GOOD, "dvc": {"node_spacing": 1}})
    msg = _refused({**GOOD, "dvc": {"max_iterations": 0}})
    assert "dvc.max_iterations" in msg and "max_iterations=0 is out of range" in msg  # CorrelationOptions' own words
    assert "grey_model='zncc'" in _refused({**GOOD, "dvc": {"grey_model": "zncc"}})
    msg = _refused({"inputs": {**GOOD["inputs"], "state_of_charge": [0, 1.5]}})
    assert "state_of_charge[1]=1.5 is out of range" in msg
    assert "not after" in _refused({"inputs": {"series": ["a", "b"], "time_s": [5, 1]}})


def test_dvc_section_embeds_correlation_options():
    from tomo4d.dvc import CorrelationOptions

    exp = parse_experiment({**GOOD, "dvc": {"grey_model": "znssd", "smooth_sigma_px": 1}})
    assert exp.dvc.correlation_options() == CorrelationOptions(grey_model="znssd", smooth_sigma_px=1.0)
    props = experiment_schema()["$defs"]["DvcSection"]["properties"]
    import dataclasses
    assert {f.name for f in dataclasses.fields(CorrelationOptions)} <= set(props)


def test_todo_and_missing_keys_are_named():
    assert "inputs.time_s is still 'TODO'" in _refused({"inputs": {"series": "a", "time_s": "TODO"}})
    assert "inputs.time_s is missing" in _refused({"inputs": {"series": "a"}})
    assert "needs inputs.labels" in _refused({**GOOD, "quantify": {}})


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("inputs:\n  series: [a\n")
    with pytest.raises(InputError, match=r"e.yaml' is not valid YAML at line"):
        load_experiment(p)
    with pytest.raises(InputError, match="does not exist"):
        load_experiment(tmp_path / "none.yaml")


def _exp(tmp_path, phantom_dir, inputs: dict):
    p = tmp_path / "e.yaml"
    p.write_text(json.dumps({"inputs": inputs}))
    return load_experiment(p)


def test_inputs_checks_name_the_step(tmp_path, phantom_dir):
    from tomo4d.io import open_volume, save_volume

    s = [str(phantom_dir / "series_hq" / f"T{i}.tif") for i in range(3)]
    with pytest.raises(InputError, match=r"inputs.series\[1\] \(T1\).*does not exist"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": [s[0], str(tmp_path / "x.tif"), s[2]],
                                                     "time_s": [0, 1, 2]}))
    v = open_volume(s[2])
    small = save_volume(v.with_data(v.numpy()[:, :30]), tmp_path / "small.tif")
    with pytest.raises(InputError, match=r"inputs.series\[2\] \(T2, .*small.tif'\) has shape \(32, 30, 32\) but T0"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": [s[0], s[1], str(small)], "time_s": [0, 1, 2]}))
    other = save_volume(v.with_data(v.numpy(), voxel_size_nm=70), tmp_path / "vs.tif")
    with pytest.raises(InputError, match=r"inputs.series\[1\] \(T1.*voxel size"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": [s[0], str(other)], "time_s": [0, 1]}))
    with pytest.raises(InputError, match=r"inputs.time_s has 2 entries but inputs.series has 3 steps"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": s, "time_s": [0, 1]}))
    lab = save_volume(np.zeros((32, 32, 30), np.uint8), tmp_path / "lab.tif")
    with pytest.raises(InputError, match=r"inputs.labels\[0\] \(T0, .*lab.tif'\) has shape \(32, 32, 30\)"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": s, "time_s": [0, 1, 2], "labels": str(lab)}))


def test_glob_is_ordered_naturally(tmp_path):
    from tomo4d.io import save_volume

    for i in (10, 2, 1):
        save_volume(np.full((8, 8, 8), i, np.float32), tmp_path / f"scan_{i}.tif")
    (tmp_path / "e.yaml").write_text("inputs:\n  series: scan_*.tif\n  time_s: [0, 1, 2]\n")
    plan = plan_experiment(load_experiment(tmp_path / "e.yaml"))
    assert [p.name for p in plan.inputs.series] == ["scan_1.tif", "scan_2.tif", "scan_10.tif"]


def test_new_sections_name_what_they_need():
    assert "segment section needs training labels" in _refused({**GOOD, "segment": {}})
    assert "particles section needs the segment section" in _refused({**GOOD, "particles": {}})
    assert "residual section needs the dvc section" in _refused({**GOOD, "residual": {}})
    assert "segment.n_trees=0" in _refused({**GOOD, "segment": {"labels": "s.tif", "n_trees": 0}})
    assert "segment.slice_axis=3" in _refused({**GOOD, "segment": {"labels": "s.tif", "slice_axis": 3}})
    assert "sigmas[1]=-1.0 must be a positive number" in _refused({**GOOD, "segment": {"labels": "s.tif", "sigmas": [1, -1]}})
    assert "did you mean 'statistic'" in _refused({**GOOD, "dvc": {}, "residual": {"statistics": "mean"}})
    exp = parse_experiment({**GOOD, "dvc": {}, "segment": {"labels": "s.tif"}, "particles": {}, "residual": {}})
    assert exp.segment.n_trees == 24 and exp.particles.particle_class == 2 and exp.residual.sigma_px == 2.0
    assert {"segment", "particles", "residual", "truth"} <= set(experiment_schema()["properties"])


def test_truth_and_repeat_inputs_are_checked(tmp_path, phantom_dir):
    from tomo4d.io import save_volume

    s = [str(phantom_dir / "series_hq" / f"T{i}.tif") for i in range(3)]
    small = save_volume(np.zeros((32, 32, 30), np.float32), tmp_path / "rep.tif")
    with pytest.raises(InputError, match=r"inputs.repeat \(.*rep.tif'\) has shape \(32, 32, 30\)"):
        plan_experiment(_exp(tmp_path, phantom_dir, {"series": s, "time_s": [0, 1, 2], "repeat": str(small)}))
    p = tmp_path / "t.yaml"
    p.write_text(json.dumps({"inputs": {"series": s, "time_s": [0, 1, 2]},
                             "truth": {"labels": [str(phantom_dir / "truth" / "labels_hq_T0.tif")]}}))
    with pytest.raises(InputError, match="truth.labels has 1 files but inputs.series has 3 steps"):
        plan_experiment(load_experiment(p))


def test_dvc_global_method_and_its_options():
    from tomo4d.dvc import GlobalOptions

    exp = parse_experiment({**GOOD, "dvc": {"method": "global", "node_spacing": 6,
                                            "global_options": {"levels": 2, "regularisation": 0.1}}})
    assert exp.dvc.global_dvc_options() == GlobalOptions(node_spacing=6, levels=2, regularisation=0.1, solver="auto",
                                                         interpolation="cubic", interface_grey_stiffness=10.0,
                                                         max_iterations=1000, hold_without_data=True, restarts=5)
    msg = _refused({**GOOD, "dvc": {"method": "global", "global_options": {"regularization": 0.1}}})
    assert "regularization= is not an option of dvc.global_options" in msg and "did you mean 'regularisation'" in msg
    msg = _refused({**GOOD, "dvc": {"method": "global", "global_options": {"levels": 0}}})
    assert "dvc.global_options: levels=0" in msg  # the key the user wrote
    assert "method" in _refused({**GOOD, "dvc": {"method": "fem"}})


def test_local_dvc_pyramid_defaults_to_the_studys_levels_that_fit(monkeypatch):
    """dvc.pyramid auto: the (100, 70, 35) levels coarser than node_spacing whose windows fit run before it when a
    pair starts without a previous field; a pair from a previous field, or a small volume, runs one level."""
    import tomo4d.dvc
    from tomo4d.pipeline import stages

    exp = parse_experiment({**GOOD, "dvc": {"node_spacing": 20}})
    assert exp.dvc.pyramid == "auto" and exp.dvc.pyramid_levels((96, 64, 64)) == []
    assert exp.dvc.pyramid_levels((400, 300, 300)) == [100, 70, 35]
    assert exp.dvc.pyramid_levels((400, 150, 300)) == [70, 35]  # 201 voxels needed along every axis for 100
    calls = []
    monkeypatch.setattr(tomo4d.dvc, "correlate", lambda r, d, **kw: calls.append(("one level", kw)))
    monkeypatch.setattr(tomo4d.dvc, "correlate_pyramid", lambda r, d, **kw: calls.append(("pyramid", kw)))
    big = np.zeros((1, 1, 1), np.float32)
    big = np.broadcast_to(big, (400, 300, 300))
    for initial in (None, "previous"):
        stages._local(big, big, exp.dvc, initial=initial, phi0=None, mask=None, **exp.dvc.correlate_kwargs())
    assert calls[0][0] == "pyramid" and calls[0][1]["pyramid"] == [100, 70, 35, 20]
    assert calls[0][1]["half_windows"] == [100, 70, 35, 20] and calls[1][0] == "one level"
    one = parse_experiment({**GOOD, "dvc": {"node_spacing": 20, "pyramid": []}})
    assert one.dvc.pyramid_levels((400, 300, 300)) == []
    for bad in ([35, 70], [100, 10]):
        assert "dvc.pyramid" in _refused({**GOOD, "dvc": {"node_spacing": 20, "pyramid": bad}})


def test_global_method_defaults_to_the_converged_route_and_the_axial_start_to_one_level():
    """method: global defaults to the converged route (solver auto: Gauss-Newton on the CPU; cubic, grey band 10:
    sessions 26-27; 1000 iterations, which L-BFGS needs to converge: session 28; the Laplacian 0.2 on deconvolved
    scans, 0.05 as scanned: session 29), with axial_start: true to one level (coarse levels would undo the start);
    what the file's global_options give wins."""
    from tomo4d.dvc import GlobalOptions

    tied = {"method": "global", "node_spacing": 4, "mask": "above_collector", "interfaces": True}
    quantified = {**GOOD, "inputs": {**GOOD["inputs"], "labels": ["a_labels.tif", "b_labels.tif"]}, "quantify": {}}
    opts = parse_experiment({**quantified, "dvc": tied}).dvc.global_dvc_options()
    assert (opts.solver, opts.interpolation, opts.regularisation, opts.interface_grey_stiffness, opts.levels) == (
        "auto", "cubic", 0.05, 10.0, GlobalOptions().levels)
    deconvolved = {**tied, "deconvolve_iterations": 20, "deconvolve_psf_sigma_px": 2.0}
    sec = parse_experiment({**quantified, "dvc": deconvolved}).dvc
    assert sec.global_dvc_options().regularisation == 0.2  # noise unknown: the full weight
    # session 38: on deconvolved scans the weight follows the scans' noise ratio (HQ phantom 0.0175, LQ 0.175)
    assert sec.global_dvc_options(0.0175).regularisation == 0.05
    assert sec.global_dvc_options(0.175).regularisation == 0.2
    assert sec.global_dvc_options(0.075).regularisation == pytest.approx(0.1)
    assert parse_experiment({**quantified, "dvc": tied}).dvc.global_dvc_options(0.175).regularisation == 0.05
    opts = parse_experiment({**quantified, "dvc": {**tied, "axial_start": True,
                                                   "global_options": {"regularisation": 0.1, "solver": "lbfgs"}}}
                            ).dvc.global_dvc_options()
    assert (opts.solver, opts.regularisation, opts.levels) == ("lbfgs", 0.1, 1)
    plain = parse_experiment({**GOOD, "dvc": {"method": "global", "node_spacing": 4}}).dvc.global_dvc_options()
    assert plain == GlobalOptions(node_spacing=4, solver="auto", interpolation="cubic", regularisation=0.05,
                                  interface_grey_stiffness=10.0, max_iterations=1000, hold_without_data=True,
                                  restarts=5)


def test_enhanced_series_and_align_together_are_refused():
    data = {"inputs": {**GOOD["inputs"], "training_pair": {"lq": "lq.tif", "hq": "hq.tif"}},
            "enhance": {"preset": "tiny"}, "align": {}, "dvc": {}}
    msg = _refused(data)
    assert "enhance.apply_to_series and align together are not supported yet" in msg
