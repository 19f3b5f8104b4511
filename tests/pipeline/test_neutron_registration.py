"""The neutron stage's X-ray/neutron registration (``neutron.registration``) through the runner on the phantom.

64^3 phantom (LQ series 100 nm voxels, neutron 16^3 voxels of 400 nm, 500 nm PSF, both fields from the same
corner: the true transform is the identity). The lithiated step T1 is the test case: on the pristine T0 the
neutron image has almost no in-plane structure (its rotation about z is unobservable, the sigma says so).
The X-ray side is the segment stage's phase map when the segment stage runs (a random forest trained on four
labelled planes of T0), the label files when given, else the grey values; the table says which.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tomo4d.pipeline import load_experiment, run_experiment
from tomo4d.quantify import read_table


@pytest.fixture(scope="module")
def ph(tmp_path_factory):
    from tomo4d.phantom import make_experiment

    d = tmp_path_factory.mktemp("nreg") / "ph"
    make_experiment(shape=(64, 64, 64), n_steps=2, seed=0).save(d, fields="none")
    return d


def _run(ph, tmp_path, name, **inputs_extra):
    extra = inputs_extra.pop("sections", {})
    doc = {"name": name, "inputs": {"series": "series/T*.tif", "time_s": [0, 3600], "neutron": "neutron/T*.tif",
                                    **inputs_extra},
           "neutron": {"joint_phases": 0, "registration": "rigid", "psf_sigma_nm": 500.0}, **extra}
    p = ph / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    out = tmp_path / name
    res = run_experiment(load_experiment(p), out, source=p)
    return out, res


def _row(out, step):
    t = read_table(out / "tables" / f"neutron_registration_{step}.csv")
    return {k: (v[0] if len(v) else None) for k, v in t.items()}


def _errors(r):
    rot = np.array([r[f"rotation_{a}_deg"] for a in "zyx"])
    t_px = np.array([r[f"translation_{a}_nm"] for a in "zyx"]) / 400.0
    return rot, t_px


def _rot_sigma(r):
    return np.array([r[f"rotation_sigma_{a}_deg"] for a in "zyx"])


@pytest.mark.slow  # three runs of the runner on the 64^3 phantom: ~80 s on 2 loaded cores
def test_registration_uses_the_segment_stages_labels_and_records_it(ph, tmp_path):
    # label files (the phase map the neutron volumes were rendered from): translation within a quarter of a
    # neutron voxel, rotation within 3 sigma (+0.1 degree; sigma ~0.4 degree about z on a 16^3 neutron field)
    out_l, _ = _run(ph, tmp_path, "files", labels="truth/labels_lq_T*.tif")
    r_l = _row(out_l, "T1")
    assert "label files" in (out_l / "report.html").read_text()
    assert r_l["xray_input"] == "label files" and r_l["transform"] == "rigid"
    rot_l, t_l = _errors(r_l)
    assert np.all(np.abs(t_l) < 0.25), t_l
    assert np.all(np.abs(rot_l) < 3 * _rot_sigma(r_l) + 0.1), (rot_l, _rot_sigma(r_l))
    # a known misalignment: the neutron volumes without their first x slab (the neutron field then starts one
    # neutron voxel, 400 nm, further along x: X_xray = X_neutron + 400 nm)
    from tomo4d.io import open_volume, save_volume
    from tomo4d.volume import Volume

    (ph / "neutron_shift").mkdir(exist_ok=True)
    for s in ("T0", "T1"):
        v = open_volume(ph / "neutron" / f"{s}.tif")
        save_volume(Volume(v.numpy()[:, :, 1:], voxel_size_nm=v.voxel_size_nm), ph / "neutron_shift" / f"{s}.tif",
                    overwrite=True)
    out_x, _ = _run(ph, tmp_path, "shifted", labels="truth/labels_lq_T*.tif", neutron="neutron_shift/T*.tif")
    rot_x, t_x = _errors(_row(out_x, "T1"))
    assert np.all(np.abs(t_x - [0.0, 0.0, 1.0]) < 0.25), t_x
    assert np.all(np.abs(rot_x) < 3 * _rot_sigma(_row(out_x, "T1")) + 0.1), rot_x
    # the segment stage's own labels when it runs (random forest on four labelled xz planes of T0 and of T1:
    # lithiated silicon appears only after T0): recorded, and better than the grey values alone
    seg = {"segment": {"labels": ["truth/labels_lq_T0.tif", "truth/labels_lq_T1.tif"], "label_steps": [0, 1],
                       "slices": [8, 24, 40, 56], "slice_axis": 1, "n_trees": 16}}
    out_s, res = _run(ph, tmp_path, "seg", sections=seg)
    status = {s.name: s.status for s in res.stages}
    assert status["segment"] == "computed" and status["neutron"] == "computed"
    r_s = _row(out_s, "T1")
    assert r_s["xray_input"] == "segment labels"
    rot_s, t_s = _errors(r_s)
    out_g, _ = _run(ph, tmp_path, "grey")
    r_g = _row(out_g, "T1")
    assert r_g["xray_input"] == "grey values"
    rot_g, t_g = _errors(r_g)
    # measured (benchmarks/RESULTS.md, neutron session 10): files 0.05 px / 0.8 deg (sigma 0.44 about z), segment
    # labels (71 % voxel accuracy on the noisy LQ scan) 0.72 px / 2.3 deg, grey values several degrees off
    assert np.abs(rot_s).max() < np.abs(rot_g).max()
    assert np.abs(t_s).max() < 1.0


def test_registration_option_is_checked_and_counts_as_work():
    from tomo4d.errors import InputError
    from tomo4d.pipeline import parse_experiment

    good = {"series": ["a.tif", "b.tif"], "time_s": [0, 1], "neutron": "n*.tif"}
    exp = parse_experiment({"inputs": good, "neutron": {"joint_phases": 0, "registration": "rigid"}})
    assert exp.neutron.registration == "rigid" and exp.neutron.registration_search_px == 0.0
    with pytest.raises(InputError, match="registration"):
        parse_experiment({"inputs": good, "neutron": {"registration": "elastic"}})
    with pytest.raises(InputError, match="neutron.registration"):
        parse_experiment({"inputs": good, "neutron": {"joint_phases": 0}})
