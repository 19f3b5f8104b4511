"""ToF stacks: the FITS reader (own, no astropy), folders of one image per bin, per-pixel attenuation."""

import math

import numpy as np
import pytest

from tomo4d.errors import FormatError, InputError
from tomo4d.neutron import read_fits_image, read_tof_stack, tof_stack_attenuation, write_fits_image


def _card(key, value):
    return f"{key:<8}= {value:>20}".ljust(80)


def _fits(cards, data: bytes) -> bytes:
    head = "".join(_card(k, v) for k, v in cards) + "END".ljust(80)
    head = head.ljust(math.ceil(len(head) / 2880) * 2880).encode()
    return head + data + b"\0" * (-len(data) % 2880)


def test_float_and_uint16_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    np.testing.assert_array_equal(read_fits_image(write_fits_image(tmp_path / "a.fits", a)), a)
    c = np.array([[0, 1, 65535], [40000, 7, 3]], np.uint16)
    np.testing.assert_array_equal(read_fits_image(write_fits_image(tmp_path / "c.fits", c)), c)


def test_bscale_bzero_and_image_extension(tmp_path):
    raw = np.array([[1, -2], [3, 4], [5, 6]], ">i2")
    (tmp_path / "s.fits").write_bytes(_fits([("SIMPLE", "T"), ("BITPIX", "16"), ("NAXIS", "2"), ("NAXIS1", "2"),
                                              ("NAXIS2", "3"), ("BSCALE", "0.5"), ("BZERO", "10")], raw.tobytes()))
    np.testing.assert_array_equal(read_fits_image(tmp_path / "s.fits"), raw * 0.5 + 10)
    img = np.arange(6, dtype=">f8").reshape(2, 3)
    prim = _fits([("SIMPLE", "T"), ("BITPIX", "8"), ("NAXIS", "0"), ("EXTEND", "T")], b"")
    ext = _fits([("XTENSION", "'IMAGE   '"), ("BITPIX", "-64"), ("NAXIS", "2"), ("NAXIS1", "3"), ("NAXIS2", "2"),
                 ("PCOUNT", "0"), ("GCOUNT", "1")], img.tobytes())
    (tmp_path / "e.fits").write_bytes(prim + ext)
    np.testing.assert_array_equal(read_fits_image(tmp_path / "e.fits"), img)


def test_broken_fits_files_are_refused(tmp_path):
    good = write_fits_image(tmp_path / "g.fits", np.ones((8, 8), np.float32)).read_bytes()
    (tmp_path / "t.fits").write_bytes(good[:2880 + 10])
    with pytest.raises(FormatError, match="truncated"):
        read_fits_image(tmp_path / "t.fits")
    (tmp_path / "n.fits").write_bytes(b"hello" * 600)
    with pytest.raises(FormatError, match="not a FITS"):
        read_fits_image(tmp_path / "n.fits")
    with pytest.raises(InputError, match="does not exist"):
        read_fits_image(tmp_path / "missing.fits")


def _stack_folder(folder, stack):
    folder.mkdir()
    for i, im in enumerate(stack):
        write_fits_image(folder / f"run_{i:05d}.fits", im.astype(np.uint16))
    return folder


def test_folder_is_ordered_by_name_and_attenuation_has_poisson_errors(tmp_path):
    rng = np.random.default_rng(0)
    n, L, bw = 40, 10.0, 200.0
    ob_mean = np.full((n, 6, 5), 5000.0)
    mu_true, th = 2.0, 0.2
    sample = rng.poisson(ob_mean * np.exp(-mu_true * th))
    ob = rng.poisson(ob_mean)
    s_dir, o_dir = _stack_folder(tmp_path / "s", sample), _stack_folder(tmp_path / "o", ob)
    np.testing.assert_array_equal(read_tof_stack(s_dir), sample)
    w, mu, sig, warns = tof_stack_attenuation(s_dir, o_dir, flight_path_m=L, bin_width_us=bw, thickness_cm=th,
                                              first_bin=5)
    assert mu.shape == (6, 5, n) and w.size == n and warns == ()
    assert w[0] == pytest.approx(3956.034 * 5 * bw * 1e-6 / L, rel=1e-4)
    z = (mu - mu_true) / sig
    assert abs(z.mean()) < 0.1 and np.std(z) == pytest.approx(1.0, abs=0.1)


def test_bin_count_and_detector_mismatch_are_refused(tmp_path):
    a = np.ones((10, 4, 4)) * 100
    with pytest.raises(InputError, match="10 ToF bins but the open beam 9"):
        tof_stack_attenuation(a, a[:9], flight_path_m=10, bin_width_us=200, thickness_cm=0.1)
    with pytest.raises(InputError, match="pixels"):
        tof_stack_attenuation(a, a[:, :3], flight_path_m=10, bin_width_us=200, thickness_cm=0.1)
    b = a.copy()
    b[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        tof_stack_attenuation(b, a, flight_path_m=10, bin_width_us=200, thickness_cm=0.1)
    d = tmp_path / "mixed"
    d.mkdir()
    write_fits_image(d / "a.fits", np.ones((4, 4), np.float32))
    write_fits_image(d / "b.fits", np.ones((4, 5), np.float32))
    with pytest.raises(FormatError, match="different shapes"):
        read_tof_stack(d)


def test_zero_open_beam_bins_are_masked_and_counted():
    ob = np.full((20, 3, 3), 1000.0)
    ob[3, 1, 1] = 0
    w, mu, sig, warns = tof_stack_attenuation(ob * 0.5, ob, flight_path_m=10, bin_width_us=200, thickness_cm=1.0,
                                              first_bin=5)
    assert np.isnan(mu[1, 1, 3]) and np.isfinite(mu).sum() == mu.size - 1
    assert any("1 of 180" in m for m in warns)
