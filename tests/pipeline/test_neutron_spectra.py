"""The neutron_spectra stage on spectra of the 32^3 phantom: Cu Bragg edges and the anode's 6Li fraction vs truth.

Spectra from :func:`tomo4d.phantom.neutron.transmission_spectra` (its own forward model: Cu edges at
``2 d_hkl`` of a = 3.615 Å, no lattice strain; natural lithium 0.0759 unless enriched), with Poisson
noise of 1e5 open-beam counts per bin (sample) and 4e5 (open beam), fixed seed, saved as CSV.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tomo4d.errors import InputError
from tomo4d.pipeline import load_experiment, plan_experiment, run_experiment
from tomo4d.pipeline.units import column_unit

LAM = np.linspace(1.0, 7.0, 600)
N0 = 1e5
CU = 3.615


@pytest.fixture(scope="module")
def spectra(phantom_dir):
    """``{"collector": [csv per step], "anode": [...], "li_mol_l": [...], "li_free": [...], "li6": ...}``."""
    from tomo4d.phantom import make_experiment
    from tomo4d.phantom.neutron import li_free_attenuation_spectra, transmission_spectra

    exp = make_experiment(shape=(32, 32, 32), n_steps=3, seed=0)
    rng = np.random.default_rng(0)
    d = phantom_dir / "spectra"
    d.mkdir(exist_ok=True)
    out = {"collector": [], "anode": [], "li_mol_l": [], "li_free": [], "anode_enriched": []}
    for step in range(3):
        for region, li6, key in (("collector", None, "collector"), ("anode", None, "anode"),
                                 ("anode", 0.30, "anode_enriched")):
            sp = transmission_spectra(exp, step, wavelengths_a=LAM, path_length_mm=3.0, li6_fraction=li6)
            i = sp.region_names.index(region)
            ob = rng.poisson(4 * N0, size=LAM.size) / 4.0
            counts = np.maximum(rng.poisson(N0 * sp.transmission[i]), 1)
            t = counts / ob
            sigma = t * np.sqrt(1.0 / counts + 1.0 / (4 * N0))
            p = d / f"{key}_T{step}.csv"
            np.savetxt(p, np.column_stack([LAM, t, sigma]), delimiter=",", header="wavelength,transmission,sigma",
                       comments="")
            out[key].append(p)
            if key == "anode":
                out["li_mol_l"].append(float(sp.li_mol_l[i]))
                out["li_free"].append(float(sp.phase_fractions[i] @ li_free_attenuation_spectra([1.798])[:, 0]))
    return out


def _write(phantom_dir: Path, name: str, files: str, section: dict, truth: dict | None = None) -> Path:
    doc = {"name": "spectra", "inputs": {"series": "series_hq/T*.tif", "time_s": [0, 3600, 7200],
                                         "neutron_spectra": files},
           "neutron_spectra": section}
    if truth is not None:
        doc["truth"] = truth
    p = phantom_dir / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _bragg_section(window=None):
    refl = [{"name": "Cu111", "lattice_parameter_angstrom": CU, "hkl": [1, 1, 1], "profile": "gaussian"},
            {"name": "Cu200", "lattice_parameter_angstrom": CU, "hkl": [2, 0, 0], "profile": "gaussian"}]
    if window is not None:
        refl[1]["window_angstrom"] = window
    return {"bragg": refl}


@pytest.fixture(scope="module")
def bragg_run(phantom_dir, spectra, tmp_path_factory):
    p = _write(phantom_dir, "spectra_bragg.yaml", "spectra/collector_T*.csv", _bragg_section(),
               {"lattice_strain": {"Cu111": 0.0, "Cu200": [0.0, 0.0, 0.0]}})
    out = tmp_path_factory.mktemp("spectra") / "run"
    return out, run_experiment(load_experiment(p), out), p


def test_cu_edges_at_twice_d_hkl_and_no_strain(bragg_run):
    from tomo4d.pipeline.stage_io import read_table_of

    out, _, _ = bragg_run
    t = read_table_of(out, "neutron_bragg")
    assert list(t["step"]) == ["T0", "T0", "T1", "T1", "T2", "T2"]
    for i, refl in enumerate(t["reflection"]):
        hkl = (1, 1, 1) if refl == "Cu111" else (2, 0, 0)
        edge = 2 * CU / math.sqrt(sum(h * h for h in hkl))   # 4.174 and 3.615 Å
        assert abs(t["edge_angstrom"][i] / edge - 1) < 2e-3, (refl, t["edge_angstrom"][i], edge)
        assert 0 < t["edge_sigma_angstrom"][i] < 0.01
        # the phantom's copper is unstrained: 0 within 4 sigma (sigma ~ 5e-4)
        assert abs(t["strain"][i]) < 4 * t["strain_sigma"][i] + 2e-4, (refl, t["strain"][i], t["strain_sigma"][i])
        assert t["true_strain"][i] == 0.0
    with np.load(out / "tables" / "neutron_spectra.npz") as z:
        assert z["T2__wavelength"].shape == (600,)
        assert np.isfinite(z["T2__Cu111__model"]).all()
    html = (out / "report.html").read_text()
    assert "Neutron: spectra" in html and (out / "figures" / "neutron_spectrum.png").exists()
    assert [c for c in t if column_unit(c) == "unit?" and c not in ("step", "reflection", "hkl")] == []


def test_editing_a_window_recomputes_only_this_stage(bragg_run, phantom_dir, tmp_path):
    out0, _, _ = bragg_run
    out = tmp_path / "run"
    shutil.copytree(out0, out)
    p = _write(phantom_dir, "spectra_bragg2.yaml", "spectra/collector_T*.csv", _bragg_section([3.3, 3.9]),
               {"lattice_strain": {"Cu111": 0.0, "Cu200": [0.0, 0.0, 0.0]}})
    res = run_experiment(load_experiment(p), out)
    assert {s.name: s.status for s in res.stages} == {"neutron_spectra": "computed"}
    res = run_experiment(load_experiment(p), out)
    assert {s.name: s.status for s in res.stages} == {"neutron_spectra": "cached"}
    plan_experiment(load_experiment(p))  # tomo4d run --check


@pytest.mark.parametrize("key,li6", [("anode", 0.0759), ("anode_enriched", 0.30)])
def test_li6_fraction_of_the_anode_within_one_percentage_point(phantom_dir, spectra, tmp_path, key, li6):
    from tomo4d.pipeline.stage_io import read_table_of

    # what the user knows: the layer's Li (e.g. from the neutron stage) and its Li-free attenuation at 1.798 Å
    sec = {"li6": {"li_concentration_mol_l": spectra["li_mol_l"], "li_free_mu_per_cm": spectra["li_free"],
                   "path_length_mm": 3.0}}
    p = _write(phantom_dir, f"spectra_{key}.yaml", f"spectra/{key}_T*.csv", sec, {"li6_fraction": li6})
    out = tmp_path / "run"
    run_experiment(load_experiment(p), out)
    t = read_table_of(out, "neutron_li6")
    # pristine T0: 0.2 mol/L of Li in the electrolyte, and Si (not lithiated Si) beside it: far less precise
    assert np.isnan(t["li6_fraction"][0]) or t["li6_fraction_sigma"][0] > 5 * t["li6_fraction_sigma"][1]
    for i in (1, 2):  # lithiated: 17 and 25 mol/L
        assert abs(t["li6_fraction"][i] - li6) < 0.01, (i, t["li6_fraction"][i], li6)
        assert t["li6_fraction_sigma"][i] < 0.005
        assert t["true_li6_fraction"][i] == li6 and abs(t["error_pp"][i]) < 1.0


def test_bad_inputs_are_refused_with_the_key(phantom_dir, spectra):
    def refused(files, section, match, truth=None):
        with pytest.raises(InputError, match=match):
            run_experiment(load_experiment(_write(phantom_dir, "bad.yaml", files, section, truth)),
                           phantom_dir / "bad_run")

    refused("spectra/collector_T*.csv", {}, "nothing to compute")
    refused("spectra/collector_T[01].csv", _bragg_section(), r"inputs.neutron_spectra has 2 files")
    refused("spectra/collector_T*.csv", _bragg_section([7.5, 8.0]), r"bragg\[1\] \(Cu200\) window")
    refused("spectra/collector_T*.csv", _bragg_section(), r"truth.lattice_strain names.*Fe110",
            {"lattice_strain": {"Fe110": 0.0}})
    refused("spectra/collector_T*.csv", {"li6": {"path_length_mm": 1.0}}, "exactly one Li concentration source")
    refused("spectra/collector_T*.csv", {"li6": {"path_length_mm": 1.0, "from_neutron_layer": True}},
            "from_neutron_layer needs the neutron section")
    refused("spectra/collector_T*.csv", {"li6": {"path_length_mm": 1.0, "li_concentration_mol_l": [1.0, 2.0]}},
            r"li_concentration_mol_l has 2 values")
    bad = phantom_dir / "spectra" / "bad_T2.csv"
    bad.write_text("wavelength,transmission\n1.0,0.9\n0.9,0.8\n")
    for i in range(2):
        shutil.copy(spectra["collector"][i], phantom_dir / "spectra" / f"bad_T{i}.csv")
    refused("spectra/bad_T*.csv", _bragg_section(), r"inputs.neutron_spectra\[2\] \(T2\).*not strictly increasing")
    doc = yaml.safe_load(_write(phantom_dir, "bad.yaml", "x", _bragg_section()).read_text())
    del doc["inputs"]["neutron_spectra"]
    (phantom_dir / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="needs inputs.neutron_spectra"):
        load_experiment(phantom_dir / "bad.yaml")
    doc["inputs"]["neutron_spectra"] = "spectra/collector_T*.csv"
    del doc["neutron_spectra"]
    (phantom_dir / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="no neutron_spectra section"):
        load_experiment(phantom_dir / "bad.yaml")


def test_li6_with_the_neutron_stage_layer_li(phantom_dir, spectra, tmp_path):
    """``from_neutron_layer``: each step's Li from the neutron stage's layer table; spectra of those layer rows."""
    from tomo4d.phantom import make_experiment
    from tomo4d.phantom.neutron import li_free_attenuation_spectra, transmission_spectra
    from tomo4d.pipeline.stage_io import read_table_of

    from .test_neutron_stage import _section

    doc = {"name": "spectra-layer",
           "inputs": {"series": "series/T*.tif", "time_s": [0, 3600, 7200], "labels": "truth/labels_lq_T*.tif",
                      "neutron": "neutron/T*.tif"},
           "neutron": {**_section(phantom_dir), "joint_phases": 0}}
    p = phantom_dir / "spectra_layer.yaml"
    p.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    run_experiment(load_experiment(p), out)
    layer = read_table_of(out, "neutron_layer")
    exp, rng, li_free = make_experiment(shape=(32, 32, 32), n_steps=3, seed=0), np.random.default_rng(1), []
    for step in range(3):  # the spectra cross the layer's z slabs (4 LQ voxels per neutron voxel)
        z0, n = 4 * int(layer["first_slab"][step]), 4 * int(layer["n_slabs"][step])
        mask = np.zeros((32, 32, 32), bool)
        mask[z0:z0 + n] = True
        sp = transmission_spectra(exp, step, regions={"layer": mask}, wavelengths_a=LAM, path_length_mm=3.0)
        counts = np.maximum(rng.poisson(N0 * sp.transmission[0]), 1)
        t = counts / (rng.poisson(4 * N0, size=LAM.size) / 4.0)
        np.savetxt(phantom_dir / "spectra" / f"layer_T{step}.csv", np.column_stack([LAM, t]), delimiter=",")
        # the user's reference of the Li-free layer in the fitted range: its 1/v part (a constant is fitted)
        w = LAM[(LAM >= 4.4) & (LAM <= 6.1)]
        ref = sp.phase_fractions[0] @ li_free_attenuation_spectra(w)
        li_free.append(float(np.linalg.lstsq(np.column_stack([w / 1.798, np.ones_like(w)]), ref, rcond=None)[0][0]))
    doc["inputs"]["neutron_spectra"] = "spectra/layer_T*.csv"
    # the layer with its margin holds the copper collector: fit beyond its last Bragg edge (4.17 Å), below Si's (6.27)
    doc["neutron_spectra"] = {"li6": {"from_neutron_layer": True, "li_free_mu_per_cm": li_free,
                                      "path_length_mm": 3.0, "wavelength_range_angstrom": [4.4, 6.1]}}
    doc["truth"] = {"li6_fraction": 0.0759}
    p.write_text(yaml.safe_dump(doc))
    res = run_experiment(load_experiment(p), out)
    assert {s.name: s.status for s in res.stages} == {"neutron": "cached", "neutron_layer": "cached",
                                                       "neutron_spectra": "computed"}
    t = read_table_of(out, "neutron_li6")
    np.testing.assert_allclose(t["li_mol_l"], layer["li_mol_l"])
    for i in (1, 2):  # the layer's Li within 5 % of the truth: the 6Li fraction within 1 pp
        assert abs(t["li6_fraction"][i] - 0.0759) < 0.01, (i, t["li6_fraction"][i], t["li_mol_l"][i])
