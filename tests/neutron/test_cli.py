"""``tomo4d neutron ...``: plan, normalize, bragg, isotopes, lithium; user errors exit 2 with one line."""

import json

import numpy as np
import pytest
import tifffile
from neutron_synth import LLZO, LLZO_DENSITY, isotope_spectra, li_phantom

from tomo4d.cli import main


def _run(capsys, args):
    rc = main(["neutron", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_plan_table_and_json(capsys):
    rc, out, err = _run(capsys, ["plan", "--target-um", "5", "--pixel-um", "50", "--so-mm", "20", "--sd-mm", "100",
                                 "--min-so-mm", "20", "--ld", "500", "--sample-detector-mm", "20",
                                 "--min-sample-detector-mm", "5"])
    assert rc == 0, err
    assert "binding constraint" in out and "detector pixel" in out and "collimation ratio" in out
    assert "25" in out  # the pixel must be under 25 um at M = 5
    rc, out, _ = _run(capsys, ["plan", "--target-um", "5", "--pixel-um", "50", "--so-mm", "20", "--sd-mm", "100",
                               "--json"])
    d = json.loads(out)
    assert rc == 0 and d["xray"]["max_detector_pixel_um"] == pytest.approx(25.0) and d["neutron"] is None


def test_bragg_on_the_iron_csv(capsys, real_file, tmp_path):
    p = real_file("iron_powder_transmission.csv")
    fig = tmp_path / "edge.png"
    rc, out, err = _run(capsys, ["bragg", str(p), "--window", "3.7,4.5", "--lattice", "2.8665", "--hkl", "1,1,0",
                                 "--figure", str(fig), "--json"])
    assert rc == 0, err
    d = json.loads(out)
    assert d["ok"] is True and abs(d["midpoint_minus_expected_angstrom"]) < 0.01
    assert fig.stat().st_size > 1000
    rc, out, _ = _run(capsys, ["bragg", str(p), "--window", "3.7,4.5"])
    assert rc == 0 and "edge midpoint" in out and "d spacing" in out


@pytest.mark.parametrize("baseline, bias", [("auto", False), ("linear", True)])
def test_bragg_default_gives_the_unstrained_powder_zero_strain(capsys, real_file, baseline, bias):
    """The README's command (window 3.8-4.4 Å, Fe 110): by default (auto: curved baselines where the edge fit is ok)
    the unstrained powder's strain is within 3e-4 of zero and its bias within 1.5 sigma (measured +1.5e-4); straight
    baselines read +3.4e-4 (issue 21)."""
    p = real_file("iron_powder_transmission.csv")
    rc, out, err = _run(capsys, ["bragg", str(p), "--window", "3.8,4.4", "--lattice", "2.8665", "--hkl", "110",
                                 "--baseline", baseline, "--json"])
    assert rc == 0, err
    d = json.loads(out)
    assert d["baseline"] == ("quadratic" if baseline == "auto" else "linear")
    assert (abs(d["strain"]) > 3e-4) is bias
    if not bias:
        assert abs(d["strain"]) < 1.5 * d["strain_sigma"] and abs(d["edge_minus_expected_angstrom"]) < 0.002


def test_isotopes_from_csv(capsys, tmp_path):
    rng = np.random.default_rng(0)
    wl, mu, sig, c, other = isotope_spectra(rng, [0.30], counts=5e4)
    p = tmp_path / "mu.csv"
    np.savetxt(p, np.column_stack([wl, mu[0], sig[0]]), delimiter=",", header="wavelength,mu,sigma", comments="")
    rc, out, err = _run(capsys, ["isotopes", str(p), "--composition", LLZO, "--density", str(LLZO_DENSITY), "--json"])
    assert rc == 0, err
    d = json.loads(out)
    assert d["ok"] is True and abs(d["li6_fraction"] - 0.30) < 0.005
    # transmission input through a thickness
    t = np.exp(-mu[0] * 0.05)
    q = tmp_path / "t.csv"
    np.savetxt(q, np.column_stack([wl, t, sig[0] * t * 0.05]), delimiter=",", header="wl,trans,err", comments="")
    rc, out, _ = _run(capsys, ["isotopes", str(q), "--composition", LLZO, "--density", "5.1", "--thickness-cm", "0.05"])
    assert rc == 0 and "6Li fraction" in out


def test_normalize_and_lithium(capsys, tmp_path):
    rng = np.random.default_rng(1)
    mu, lab, conc = li_phantom(rng)
    tifffile.imwrite(tmp_path / "mu.tif", mu)
    tifffile.imwrite(tmp_path / "lab.tif", lab.astype(np.uint16))
    out = tmp_path / "li.tif"
    rc, o, err = _run(capsys, ["lithium", str(tmp_path / "mu.tif"), str(out), "--labels", str(tmp_path / "lab.tif"),
                               "--ref", "1=0", "--ref", f"2={conc[2]}", "--sigma-output", str(tmp_path / "s.tif"),
                               "--json"])
    assert rc == 0, err
    d = json.loads(o)
    reg = {r["label"]: r["mean_mol_per_cm3"] for r in d["regions"]}
    assert reg[3] == pytest.approx(conc[3], rel=0.05)
    assert tifffile.imread(out).shape == mu.shape and (tmp_path / "s.tif").exists()
    # refuses to overwrite without --overwrite, and never the input
    rc, _, err = _run(capsys, ["lithium", str(tmp_path / "mu.tif"), str(out)])
    assert rc == 2 and err.startswith("tomo4d: error:") and "already exists" in err
    rc, _, err = _run(capsys, ["lithium", str(tmp_path / "mu.tif"), str(tmp_path / "mu.tif"), "--overwrite"])
    assert rc == 2 and "input" in err
    # normalisation of a stack with a 2D open beam
    ob = np.full((16, 20), 1000.0, np.float32)
    s = np.stack([ob * 0.5, ob * 0.25]).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tiff", s)
    tifffile.imwrite(tmp_path / "ob.tif", ob)
    rc, o, err = _run(capsys, ["normalize", str(tmp_path / "s.tiff"), str(tmp_path / "ob.tif"),
                               str(tmp_path / "mu_out.tif"), "--thickness-cm", "1", "--json"])
    assert rc == 0, err
    got = tifffile.imread(tmp_path / "mu_out.tif")
    assert np.allclose(got[0], np.log(2), atol=1e-5) and np.allclose(got[1], np.log(4), atol=1e-5)


def test_plan_without_geometry_uses_the_stated_beamline_preset(capsys):
    from tomo4d.neutron import BEAMLINES, NeutronSetup, neutron_resolution_um

    rc, out, err = _run(capsys, ["plan", "--target-um", "5"])
    assert rc == 0, err
    assert "nominal next preset" in out and "neutron" in out and "x-ray" in out
    rc, out, err = _run(capsys, ["plan", "--target-um", "5", "--beamline", "odin", "--json"])
    d = json.loads(out)
    assert rc == 0 and d["beamline_preset"] == "odin" and d["xray"] is None
    g = NeutronSetup(**BEAMLINES["odin"][0])
    assert d["neutron"]["current_resolution_um"] == pytest.approx(neutron_resolution_um(
        sample_detector_distance_mm=g.sample_detector_distance_mm, collimation_ratio=g.collimation_ratio,
        detector_resolution_um=g.detector_resolution_um))
    # an explicit neutron geometry replaces the preset's neutron part only
    rc, out, _ = _run(capsys, ["plan", "--target-um", "50", "--beamline", "next", "--ld", "500",
                               "--sample-detector-mm", "10", "--json"])
    d = json.loads(out)
    assert d["neutron"]["current_resolution_um"] == pytest.approx(20.0) and d["xray"] is not None


@pytest.mark.parametrize("hkl", ["110", "1,1,0", "1 1 0", "(1, 1, 0)"])
def test_bragg_hkl_forms(capsys, tmp_path, hkl):
    from tomo4d.neutron import bragg_edge_model

    w = np.linspace(3.6, 4.5, 300)
    t = bragg_edge_model(w, edge_angstrom=4.0538, width_angstrom=0.01, tail_angstrom=0.01, a0=0.5,
                         b0_per_angstrom=0.02, a_hkl=0.3, b_hkl_per_angstrom=0.01)
    p = tmp_path / "s.csv"
    p.write_text("wl,trans,err\n" + "\n".join(f"{a},{b},0.002" for a, b in zip(w, t)))
    rc, out, err = _run(capsys, ["bragg", str(p), "--window", "3.8,4.4", "--lattice", "2.8665", "--hkl", hkl,
                                 "--json"])
    assert rc == 0, err
    assert json.loads(out)["expected_edge_angstrom"] == pytest.approx(4.0538, abs=1e-4)
    rc, _, err = _run(capsys, ["bragg", str(p), "--lattice", "2.8665", "--hkl", "11"])
    assert rc == 2 and "--hkl" in err and "three integers" in err


@pytest.mark.parametrize("args,match", [
    (["plan", "--target-um", "5", "--pixel-um", "50"], "--so-mm"),
    (["bragg", "missing.csv"], "does not exist"),
    (["bragg", "__REV__"], "not strictly increasing"),
    (["normalize", "__S__", "__ZERO__", "__OUT__"], "zero open beam"),
    (["normalize", "__S__", "__BADSHAPE__", "__OUT__"], "does not match"),
])
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, args, match):
    rev = tmp_path / "rev.csv"
    rev.write_text("wl,trans\n" + "\n".join(f"{5 - 0.1 * i},0.5" for i in range(20)))
    tifffile.imwrite(tmp_path / "s.tif", np.ones((6, 6), np.float32))
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((6, 6), np.float32))
    tifffile.imwrite(tmp_path / "bad.tif", np.ones((5, 7), np.float32))
    subs = {"__REV__": str(rev), "__S__": str(tmp_path / "s.tif"), "__ZERO__": str(tmp_path / "zero.tif"),
            "__BADSHAPE__": str(tmp_path / "bad.tif"), "__OUT__": str(tmp_path / "o.tif")}
    rc, _, err = _run(capsys, [subs.get(a, a) for a in args])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tomo4d: error:") and match in lines[0], err
