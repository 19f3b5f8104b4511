"""Raw time-of-flight route: bins to wavelength, Poisson normalisation, overlap correction, event lists, CLI."""

import json

import numpy as np
import pytest

from tomo4d import InputError
from tomo4d.cli import main
from tomo4d.neutron import (
    cubic_d_spacing,
    fit_bragg_edge,
    histogram_events,
    normalize_tof_counts,
    overlap_correction,
    raw_transmission_spectrum,
    read_spectrum_csv,
    tof_bin_wavelengths,
    tof_to_wavelength,
)


def test_bin_wavelengths_match_the_beamline_numbers():
    # the nbragg data: L = 9.0 m, 10 us bins: bin k at 0.0043956 k Å (h / m_n = 3956.03 Å m/s)
    w = tof_bin_wavelengths(np.arange(1, 2401), flight_path_m=9.0, bin_width_us=10.0)
    assert w[0] == pytest.approx(0.0043956, rel=1e-4) and w[-1] == pytest.approx(2400 * 0.0043956, rel=1e-4)
    assert np.allclose(tof_bin_wavelengths(5, flight_path_m=9.0, bin_width_us=10.0), w[:5])
    # the delay shifts every bin by the same time; tof_to_wavelength agrees
    wd = tof_bin_wavelengths([100, 200], flight_path_m=9.0, bin_width_us=10.0, delay_us=150.0)
    assert np.allclose(wd, tof_to_wavelength(np.array([1000e-6, 2000e-6]), flight_path_m=9.0, delay_us=150.0))
    assert np.allclose(wd, w[[99, 199]] - 3956.034 * 150e-6 / 9.0, rtol=1e-5)
    with pytest.raises(InputError, match="delay"):
        tof_bin_wavelengths([1, 2], flight_path_m=9.0, bin_width_us=10.0, delay_us=10.0)
    with pytest.raises(InputError, match="--flight-path"):
        tof_bin_wavelengths([1, 2], flight_path_m=0, bin_width_us=10.0)


def test_poisson_errors_of_the_transmission_match_the_scatter():
    rng = np.random.default_rng(3)
    t_true = np.linspace(0.2, 0.9, 50)
    i0_mean, dark = 400.0, 20.0
    s = rng.poisson(i0_mean * t_true + dark, size=(4000, 50)).astype(float)
    o = rng.poisson(i0_mean + dark, size=(4000, 50)).astype(float)
    r = normalize_tof_counts(s, o, np.full(50, dark))
    assert r.n_masked == 0 and r.valid.all()
    scatter = r.transmission.std(axis=0)
    ratio = np.median(r.sigma, axis=0) / scatter
    assert np.all(np.abs(ratio - 1) < 0.1), ratio  # 4000 draws: the scatter is known to ~2 %
    assert np.allclose(r.transmission.mean(axis=0), t_true, atol=0.01)


def test_zero_open_beam_bins_are_masked_and_counted_and_bin_counts_must_match():
    s = np.full(10, 50.0)
    o = np.full(10, 100.0)
    o[[2, 7]] = 0.0
    r = normalize_tof_counts(s, o)
    assert r.n_masked == 2 and np.isnan(r.transmission[[2, 7]]).all() and np.allclose(r.transmission[r.valid], 0.5)
    assert "2 of 10" in r.warnings[0]
    with pytest.raises(InputError, match="11 ToF bins but the open beam 10"):
        normalize_tof_counts(np.ones(11), np.ones(10))
    # a stack (n_tof, y, x) against one open-beam spectrum per pixel
    st = normalize_tof_counts(np.full((10, 2, 3), 30.0), np.full((10, 2, 3), 60.0), tof_axis=0)
    assert st.transmission.shape == (10, 2, 3) and np.allclose(st.transmission, 0.5)


def test_overlap_correction_recovers_the_lost_events():
    """Event-mode detector recording only the first event per pixel and pulse (Timepix shutter)."""
    rng = np.random.default_rng(7)
    n_pulses, n_bins = 20000, 40
    rate = np.linspace(0.005, 0.03, n_bins)  # mean events per bin and pulse
    hits = rng.random((n_pulses, n_bins)) < 1 - np.exp(-rate)  # >= 1 event in the bin
    first = np.argmax(hits, axis=1)[hits.any(axis=1)]
    recorded = np.bincount(first, minlength=n_bins).astype(float)
    expected = n_pulses * (1 - np.exp(-rate))  # pulses with an event in the bin
    assert recorded[-1] < 0.7 * expected[-1]  # the loss is large late in the frame
    corrected = overlap_correction(recorded, n_triggers=n_pulses)
    assert np.all(np.abs(corrected - expected) < 4 * np.sqrt(expected) + 1), corrected / expected
    with pytest.raises(InputError, match="n_triggers"):
        overlap_correction(recorded, n_triggers=100)


@pytest.mark.parametrize("layout", ["nxevent", "xytof"])
def test_event_lists_histogram_to_a_tof_stack(tmp_path, layout):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    n, ny, nx = 5000, 4, 6
    x, y = rng.integers(0, nx, n), rng.integers(0, ny, n)
    tof_us = rng.uniform(0, 300, n)
    p = tmp_path / "events.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("entry/detector/events")
        if layout == "nxevent":
            g.attrs["NX_class"] = "NXevent_data"
            g["event_id"] = y * nx + x
            g["event_time_offset"] = tof_us * 1000.0
            g["event_time_offset"].attrs["units"] = "ns"
        else:
            g["x"], g["y"], g["tof"] = x, y, tof_us * 1e-6
            g["tof"].attrs["units"] = "s"
    stack = histogram_events(p, shape=(ny, nx), bin_width_us=10.0, n_bins=30)
    ref, _ = np.histogramdd(np.stack([tof_us, y, x], 1), bins=(np.arange(31) * 10.0, np.arange(ny + 1) - 0.5,
                                                               np.arange(nx + 1) - 0.5))
    assert stack.shape == (30, ny, nx) and np.array_equal(stack, ref.astype(np.uint32))


def _write_counts(path, counts):
    path.write_text(",stack,counts,err\n" + "".join(f"{i},{i},{c:.1f},{np.sqrt(max(c, 1)):.3f}\n"
                                                    for i, c in enumerate(counts, start=1)))


def semi_real_iron_counts(tmp_path, real_file, seed=0):
    """Raw counts of the measured iron powder: its measured transmission times the measured open beam, Poisson."""
    fe = read_spectrum_csv(real_file("iron_powder_transmission.csv"))
    ob_path = real_file("openbeam_tof_counts.csv")
    ob = np.genfromtxt(ob_path, delimiter=",", skip_header=1)[:, 2]
    wl = tof_bin_wavelengths(ob.size, flight_path_m=9.0, bin_width_us=10.0)
    t = np.interp(wl, fe.wavelength_angstrom, fe.values, left=np.nan)
    keep = np.isfinite(t)
    counts = np.random.default_rng(seed).poisson(ob[keep] * t[keep]).astype(float)
    bins = np.flatnonzero(keep) + 1
    s_path, o_path = tmp_path / "iron_counts.csv", tmp_path / "ob_counts.csv"
    s_path.write_text(",stack,counts\n" + "".join(f"{k},{k},{c:.0f}\n" for k, c in zip(bins, counts)))
    o_path.write_text(",stack,counts\n" + "".join(f"{k},{k},{c:.0f}\n" for k, c in zip(bins, ob[keep])))
    return s_path, o_path


def test_raw_counts_to_the_iron_110_edge(tmp_path, real_file):
    """Acceptance (issue 21) through the raw route: measured iron transmission x measured open beam as counts."""
    s_path, o_path = semi_real_iron_counts(tmp_path, real_file)
    sp, warns = raw_transmission_spectrum(s_path, o_path, flight_path_m=9.0, bin_width_us=10.0)
    assert warns == ()
    expected = 2 * cubic_d_spacing(2.8665, "110")
    fit = fit_bragg_edge(sp.wavelength_angstrom, sp.values, sp.sigma, window_angstrom=(3.8, 4.4))
    assert fit.ok and abs(float(fit.edge_angstrom) - expected) < 0.002
    for hkl, win in (("200", (2.6, 3.1)), ("211", (2.15, 2.55))):
        f = fit_bragg_edge(sp.wavelength_angstrom, sp.values, sp.sigma, window_angstrom=win)
        assert f.ok and abs(float(f.edge_angstrom) - 2 * cubic_d_spacing(2.8665, hkl)) < 0.008


def test_raw_route_bad_input(tmp_path):
    _write_counts(tmp_path / "s.csv", np.full(300, 50.0))
    _write_counts(tmp_path / "o.csv", np.full(299, 100.0))
    with pytest.raises(InputError, match="300 ToF bins"):
        raw_transmission_spectrum(tmp_path / "s.csv", tmp_path / "o.csv", flight_path_m=9, bin_width_us=10)
    ob = np.full(300, 100.0)
    ob[10:20] = 0
    _write_counts(tmp_path / "o.csv", ob)
    sp, warns = raw_transmission_spectrum(tmp_path / "s.csv", tmp_path / "o.csv", flight_path_m=9, bin_width_us=100)
    # bins 1, 2 lie below 0.1 Å (dropped without a warning: under 5 % of the bins), 10 masked
    assert sp.values.size == 288 and any("10 of 300 bins: masked" in w for w in warns)
    # 0.5 m with 100 us bins: up to 237 Å
    _, warns = raw_transmission_spectrum(tmp_path / "s.csv", tmp_path / "o.csv", flight_path_m=0.5, bin_width_us=100)
    assert any("outside 0.1..20 Å" in w and "237" in w for w in warns)


def test_cli_raw_counts_normalize_and_bragg(tmp_path, capsys):
    from tomo4d.neutron import bragg_edge_model

    rng = np.random.default_rng(1)
    k = np.arange(1, 1201)
    wl = tof_bin_wavelengths(k, flight_path_m=9.0, bin_width_us=10.0)
    t = bragg_edge_model(wl, edge_angstrom=4.0538, width_angstrom=0.008, tail_angstrom=0.0, a0=0.6,
                         b0_per_angstrom=0.02, a_hkl=0.3, b_hkl_per_angstrom=0.01)
    ob = rng.poisson(2e4, k.size).astype(float)
    ob[500] = 0  # one dead open-beam bin: masked and counted
    _write_counts(tmp_path / "s.csv", rng.poisson(2e4 * t))
    _write_counts(tmp_path / "o.csv", ob)
    rc = main(["neutron", "normalize", str(tmp_path / "s.csv"), str(tmp_path / "o.csv"), str(tmp_path / "T.csv"),
               "--flight-path", "9", "--bin-width", "10"])
    err = capsys.readouterr().err
    assert rc == 0 and "1 of 1200 bins: masked" in err, err
    back = read_spectrum_csv(tmp_path / "T.csv")
    keep = (np.arange(1200) != 500) & (wl >= 0.1)  # the 22 bins below 0.1 Å are dropped too
    assert back.values.size == keep.sum() == 1177
    assert np.allclose(back.wavelength_angstrom, wl[keep], rtol=1e-6)
    assert np.all(np.abs(back.values - t[keep]) < 5 * back.sigma)
    rc = main(["neutron", "bragg", str(tmp_path / "s.csv"), "--open-beam", str(tmp_path / "o.csv"), "--flight-path",
               "9", "--bin-width", "10", "--window", "3.8,4.4", "--lattice", "2.8665", "--hkl", "110", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and abs(d["edge_minus_expected_angstrom"]) < 3 * d["edge_sigma_angstrom"] + 1e-4
    rc = main(["neutron", "bragg", str(tmp_path / "s.csv"), "--open-beam", str(tmp_path / "o.csv")])
    assert rc == 2 and "--flight-path" in capsys.readouterr().err
    # a window without an edge: flagged, never a value
    rc = main(["neutron", "bragg", str(tmp_path / "s.csv"), "--open-beam", str(tmp_path / "o.csv"), "--flight-path",
               "9", "--bin-width", "10", "--window", "4.5,5.0", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["ok"] is False and np.isnan(d["edge_angstrom"])


def test_cli_normalize_tof_stack_folders(tmp_path, capsys):
    """Histogrammed ToF stacks as folders of one TIFF per bin; dead open-beam pixels masked and counted."""
    import tifffile

    rng = np.random.default_rng(0)
    for name, n in (("s", 12), ("o", 12), ("o_short", 11)):
        (tmp_path / name).mkdir()
        for i in range(n):
            img = rng.poisson(50 if name == "s" else 100, (6, 7)).astype(np.float32)
            if name == "o":
                img[0, 0] = 0
            tifffile.imwrite(tmp_path / name / f"tof_{i:05d}.tif", img)
    rc = main(["neutron", "normalize", str(tmp_path / "s"), str(tmp_path / "o"), str(tmp_path / "t.tif")])
    err = capsys.readouterr().err
    assert rc == 0 and "12 of 504 pixels: masked" in err, err
    t = tifffile.imread(tmp_path / "t.tif")
    assert t.shape == (12, 6, 7) and np.isnan(t[:, 0, 0]).all() and abs(np.nanmean(t) - 0.5) < 0.02
    rc = main(["neutron", "normalize", str(tmp_path / "s"), str(tmp_path / "o_short"), str(tmp_path / "t2.tif")])
    assert rc == 2 and "12 images (ToF bins) but OPEN_BEAM 11" in capsys.readouterr().err


def test_cli_isotopes_from_raw_counts(tmp_path, capsys):
    from tomo4d.neutron import (
        li_attenuation_per_cm,
        li_concentration_from_composition,
        non_lithium_attenuation_per_cm,
    )

    rng = np.random.default_rng(5)
    k = np.arange(1, 1201)
    wl = tof_bin_wavelengths(k, flight_path_m=9.0, bin_width_us=10.0)
    c = li_concentration_from_composition("Li7La3Zr2O12", density_g_per_cm3=5.1)
    mu = li_attenuation_per_cm(wl, li_concentration_mol_per_cm3=c, li6_fraction=0.30) + \
        non_lithium_attenuation_per_cm("Li7La3Zr2O12", density_g_per_cm3=5.1, wavelength_angstrom=wl)
    ob = rng.poisson(5e4, k.size).astype(float)
    _write_counts(tmp_path / "s.csv", rng.poisson(5e4 * np.exp(-mu * 0.05)))
    _write_counts(tmp_path / "o.csv", ob)
    rc = main(["neutron", "isotopes", str(tmp_path / "s.csv"), "--open-beam", str(tmp_path / "o.csv"),
               "--flight-path", "9", "--bin-width", "10", "--thickness-cm", "0.05", "--composition", "Li7La3Zr2O12",
               "--density", "5.1", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["ok"] and abs(d["li6_fraction"] - 0.30) < 3 * d["li6_fraction_sigma"] + 0.005, d
    rc = main(["neutron", "isotopes", str(tmp_path / "s.csv"), "--open-beam", str(tmp_path / "o.csv"),
               "--flight-path", "9", "--bin-width", "10", "--composition", "Li", "--density", "0.534"])
    assert rc == 2 and "--thickness-cm" in capsys.readouterr().err
