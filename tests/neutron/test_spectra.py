"""Time of flight to wavelength, rebinning, region/macro-pixel spectra, CSV reading."""

import numpy as np
import pytest

from tomo4d import InputError
from tomo4d.errors import FormatError
from tomo4d.neutron import (
    H_OVER_MN_ANGSTROM_M_PER_S,
    macro_pixel_spectra,
    read_spectrum_csv,
    rebin_spectra,
    region_spectra,
    tof_to_wavelength,
    wavelength_to_tof,
)


def test_thermal_neutrons_are_1798_angstrom():
    assert H_OVER_MN_ANGSTROM_M_PER_S == pytest.approx(3956.03, abs=0.01)
    # 2200 m/s over 10 m take 4.545 ms: 1.798 Å
    assert float(tof_to_wavelength(10.0 / 2200.0, flight_path_m=10.0)) == pytest.approx(1.798, abs=1e-3)
    # an offset is subtracted first
    assert float(tof_to_wavelength(10.0 / 2200.0 + 1e-4, flight_path_m=10.0, offset_s=1e-4)) == pytest.approx(1.798,
                                                                                                              abs=1e-3)


@pytest.mark.parametrize("L,t0", [(10.0, 0.0), (60.5, 2.5e-5)])
def test_tof_roundtrip(L, t0):
    wl = np.linspace(0.8, 9.0, 50)
    t = wavelength_to_tof(wl, flight_path_m=L, offset_s=t0)
    assert np.allclose(tof_to_wavelength(t, flight_path_m=L, offset_s=t0), wl)


def test_tof_errors():
    with pytest.raises(InputError, match="offset"):
        tof_to_wavelength([1e-3, 2e-3], flight_path_m=10, offset_s=1.5e-3)
    with pytest.raises(InputError, match="flight_path_m"):
        tof_to_wavelength([1e-3], flight_path_m=0)


def test_rebin_by_factor_and_edges():
    wl = np.arange(1.0, 2.0, 0.1)  # 10 bins
    v = np.arange(20.0).reshape(2, 10)
    s = np.ones((2, 10))
    r = rebin_spectra(wl, v, s, factor=3)
    assert r.values.shape == (2, 3)
    assert r.wavelength_angstrom == pytest.approx([1.1, 1.4, 1.7])
    assert r.values[0] == pytest.approx([1.0, 4.0, 7.0])
    assert r.sigma[0] == pytest.approx(np.full(3, 1 / np.sqrt(3)))
    c = rebin_spectra(wl, v, factor=5, mode="sum")
    assert c.values[1] == pytest.approx([60.0, 85.0]) and c.sigma is None
    e = rebin_spectra(wl, v, edges_angstrom=[0.95, 1.25, 1.55])
    assert e.values[0] == pytest.approx([1.0, 4.0])
    with pytest.raises(InputError, match="exactly one"):
        rebin_spectra(wl, v)
    with pytest.raises(InputError, match="not strictly increasing"):
        rebin_spectra(wl[::-1], v, factor=2)


def test_region_and_macro_pixel_spectra():
    rng = np.random.default_rng(3)
    cube = rng.poisson(100, (8, 12, 7)).astype(float)
    lab = np.zeros((8, 12), int)
    lab[:4] = 1
    lab[4:, :6] = 2
    ids, sp = region_spectra(cube, lab)
    assert list(ids) == [1, 2] and sp.shape == (2, 7)
    assert sp[1] == pytest.approx(cube[4:, :6].reshape(-1, 7).mean(0))
    ids2, sp2 = region_spectra(np.moveaxis(cube, -1, 0), lab, wavelength_axis=0, statistic="sum")
    assert sp2[0] == pytest.approx(cube[:4].reshape(-1, 7).sum(0))
    mp = macro_pixel_spectra(cube, size=4)
    assert mp.shape == (2, 3, 7) and mp[1, 2] == pytest.approx(cube[4:8, 8:12].sum((0, 1)))
    with pytest.raises(InputError, match="spatial shape"):
        region_spectra(cube, lab[:, :5])
    with pytest.raises(InputError, match="larger than the image"):
        macro_pixel_spectra(cube, size=20)


def test_read_the_iron_csv(real_file):
    sp = read_spectrum_csv(real_file("iron_powder_transmission.csv"))
    assert sp.wavelength_angstrom.size == 2161 and sp.sigma is not None
    assert sp.wavelength_angstrom[0] == pytest.approx(0.5011, abs=1e-4)
    assert sp.values[0] == pytest.approx(0.14832, abs=1e-4)


def test_read_csv_variants_and_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("wavelength,transmission\n1.0,0.5\n2.0,0.6\n3.0,0.7\n")
    sp = read_spectrum_csv(p)
    assert sp.values == pytest.approx([0.5, 0.6, 0.7]) and sp.sigma is None
    q = tmp_path / "b.txt"
    q.write_text("# no header\n1 0.5 0.01\n2 0.6 0.01\n")
    assert read_spectrum_csv(q).sigma == pytest.approx([0.01, 0.01])
    bad = tmp_path / "c.csv"
    bad.write_text("wl,trans\n2.0,0.5\n1.0,0.6\n")
    with pytest.raises(InputError, match="not strictly increasing"):
        read_spectrum_csv(bad)
    odd = tmp_path / "d.csv"
    odd.write_text("foo,bar\n1,2\n")
    with pytest.raises(FormatError, match="no column named"):
        read_spectrum_csv(odd)
    with pytest.raises(InputError, match="does not exist"):
        read_spectrum_csv(tmp_path / "missing.csv")
