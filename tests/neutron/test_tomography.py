"""Wavelength-resolved tomography through the reconstruction stage (issue 21): ToF projections of the 5D phantom
-> wavelength bands -> FBP per band (tomo4d.reconstruct) -> per-voxel 1/cm volumes with per-voxel sigma -> 6Li map.

The projections are exact strip integrals of the phantom's per-voxel attenuation (not the engine's
back-projector), Poisson counts of sample and open beam. Accuracy against the phantom's truth is limited by the
reconstruction's resolution where the phantom has structure at the voxel scale (the anode layer on this 16^3
grid); noise propagation is checked against the truth on voxels the reconstruction resolves (3x3 in-plane
neighbourhood of one attenuation, not at the object's border) and against the noise-free reconstruction
(same route, expected counts) everywhere.
"""

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

pytest.importorskip("algotom")

from tomo4d.errors import InputError  # noqa: E402
from tomo4d.neutron import fit_isotope_map  # noqa: E402
from tomo4d.neutron.tomography import BandOptions, BandVolumes, band_bins, reconstruct_bands  # noqa: E402
from tomo4d.phantom import Phase, make_experiment  # noqa: E402
from tomo4d.phantom.neutron5d import neutron_5d  # noqa: E402

N_BANDS = 16


@pytest.fixture(scope="module")
def scan():
    exp = make_experiment(shape=(64, 64, 64), n_steps=2, seed=0)
    # 100 ToF bins of 0.05 Å (1.0-5.95 Å) at 10 m; the lithiated step (6Li exchanged towards the separator)
    d = neutron_5d(exp, steps=[1], n_bands=100, first_bin=20, bin_width_us=0.05 * 10 / 3956.034 * 1e6)
    # 48 angles over 180 degrees, 16 + 2 x 6 detector columns, 2e5 open-beam counts per pixel and ToF bin at the
    # flux peak (counts_scale 10; at 100 the resolution error of FBP on voxel-scale structure outgrows the noise)
    tp = d.tof_projections(0, n_angles=48, counts_scale=10.0)
    bv = reconstruct_bands(tp["counts"], tp["open_beam"], wavelength_angstrom=tp["wavelength_angstrom"],
                           angles_deg=tp["angles_deg"], pixel_size_nm=tp["voxel_size_nm"],
                           options=BandOptions(n_bands=N_BANDS, open_beam_exposure=tp["open_beam_exposure"]))
    return d, tp, bv


def _crop(bv, tp, a):
    m, w = tp["margin"], tp["counts"].shape[-1] - 2 * tp["margin"]
    return a[..., m:m + w, m:m + w]


def _resolved(truth_mu):
    """Voxels whose 3x3 in-plane neighbourhood has one attenuation (band mean), off the object's border."""
    t = truth_mu.mean(axis=0)
    flat = (maximum_filter(t, (1, 3, 3), mode="nearest") - minimum_filter(t, (1, 3, 3), mode="nearest")) \
        < 0.02 * np.abs(t).max()
    flat[:, [0, -1], :] = False
    flat[:, :, [0, -1]] = False
    return flat


def _known(d, bv):
    """What the user knows: the X-ray phase map's Li contents (mol/cm^3) and Li-free spectra, averaged on the bands."""
    conc = np.zeros(len(Phase))
    conc[Phase.LITHIATED_SILICON], conc[Phase.PORE] = 81.9e-3, 1.0e-3
    c = np.tensordot(conc, d.phase_fractions[0], axes=(0, 0))
    other = np.moveaxis(bv.average(d.other_mu_per_cm[0].astype(np.float64)), 0, -1)
    return c, other


def test_band_volumes_are_attenuation_per_cm_with_calibrated_per_voxel_sigma(scan):
    d, tp, bv = scan
    assert bv.mu_per_cm.shape == (N_BANDS, 16, 28, 28) and bv.mu_per_cm.dtype == np.float32
    assert abs(bv.center - tp["center"]) < 0.3          # found once on the white beam by the engine
    # the phantom's projector conserves each slice's attenuation at every angle (voxel areas inside the strips)
    mass = d._mu_true(0).sum(axis=(2, 3)) * tp["voxel_size_nm"] * 1e-7          # (bin, z)
    np.testing.assert_allclose(tp["attenuation"].sum(axis=-1), np.broadcast_to(mass, tp["attenuation"].shape[:-1]),
                               rtol=1e-4)
    # equal open-beam counts per band, contiguous bins covering the spectrum, wavelengths ascending
    spec = tp["open_beam"].sum(axis=(1, 2))
    per_band = np.array([spec[a:b].sum() for a, b in bv.bins])
    assert bv.bins[0, 0] == 0 and bv.bins[-1, 1] == 100 and np.all(bv.bins[1:, 0] == bv.bins[:-1, 1])
    assert per_band.max() / per_band.min() < 1.6
    assert np.all(np.diff(bv.wavelength_angstrom) > 0)
    truth = bv.average(d._mu_true(0))                 # (band, z, y, x), 1/cm
    mu, sig = _crop(bv, tp, bv.mu_per_cm), _crop(bv, tp, bv.sigma_per_cm)
    res = _resolved(truth)
    assert res.sum() > 1500
    z = ((mu - truth) / sig)[:, res]
    # units (1/cm, voxel length 20 um) and the per-voxel sigma (Poisson + coherent open-beam rings) together
    assert np.std(z) == pytest.approx(1.0, abs=0.15), np.std(z)
    assert abs(np.mean(z)) < 0.15
    # the sigma is not white: the open beam's noise back-projects coherently, strongest at the axis
    assert np.median(sig[:, :, 6:10, 6:10]) > 1.15 * np.median(sig[:, :, [0, -1], :])


def test_li6_map_from_reconstructed_bands_against_truth_and_noise_free_route(scan):
    d, tp, bv = scan
    c, other = _known(d, bv)
    mu, sig = (np.moveaxis(_crop(bv, tp, a), 0, -1) for a in (bv.mu_per_cm, bv.sigma_per_cm))
    r = fit_isotope_map(bv.wavelength_angstrom, mu, sig, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    truth = d.li6_fraction[0]
    has = (c > 0) & r.ok
    assert has.sum() > 0.9 * np.count_nonzero(c > 0)
    # against the truth where the reconstruction resolves the voxel: errors consistent with the sigma maps
    res = _resolved(bv.average(d._mu_true(0))) & has
    assert res.sum() > 800
    z = (r.li6_fraction - truth)[res] / r.li6_fraction_sigma[res]
    assert np.std(z) == pytest.approx(1.0, abs=0.15), np.std(z)
    assert abs(np.mean(z)) < 0.2
    # against the noise-free route (expected counts, same bands and engine): every Li voxel, z-scores std 1 and
    # within 1 percentage point where the counts allow (predicted sigma <= 0.2 pp)
    exp_counts = d.open_beam_per_band[None, :, None, None] * np.exp(-tp["attenuation"])
    ob = np.broadcast_to(d.open_beam_per_band[:, None, None] * tp["open_beam_exposure"], tp["open_beam"].shape)
    ref = reconstruct_bands(exp_counts, ob, wavelength_angstrom=tp["wavelength_angstrom"], angles_deg=tp["angles_deg"],
                            pixel_size_nm=tp["voxel_size_nm"],
                            options=BandOptions(n_bands=N_BANDS, open_beam_exposure=tp["open_beam_exposure"],
                                                noise_rows=0))
    np.testing.assert_array_equal(ref.bins, bv.bins)
    r0 = fit_isotope_map(ref.wavelength_angstrom, np.moveaxis(_crop(ref, tp, ref.mu_per_cm), 0, -1), sig,
                         li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    both = has & r0.ok
    z0 = (r.li6_fraction - r0.li6_fraction)[both] / r.li6_fraction_sigma[both]
    assert np.std(z0) == pytest.approx(1.0, abs=0.15), np.std(z0)
    allow = both & (r.li6_fraction_sigma <= 0.002)
    assert allow.sum() >= 1
    assert np.abs(r.li6_fraction - r0.li6_fraction)[allow].max() < 0.01


def test_band_volumes_save_load_and_feed_the_maps_cli(scan, tmp_path, capsys):
    from tomo4d.cli import main
    from tomo4d.neutron import VoxelMaps

    _, tp, bv = scan
    p = bv.save(tmp_path / "bands.npz")
    back = BandVolumes.load(p)
    np.testing.assert_array_equal(back.mu_per_cm, bv.mu_per_cm)
    assert back.center == bv.center and back.provenance["band_choice"] == "equal open-beam counts"
    assert main(["neutron", "maps", str(p), str(tmp_path / "maps.npz"), "--li-concentration", "0.0819"]) == 0
    assert VoxelMaps.load(tmp_path / "maps.npz").isotopes.li6_fraction.shape == bv.mu_per_cm.shape[1:]


def test_band_choice_and_bad_inputs():
    w = np.linspace(1.0, 5.95, 100)
    spec = np.exp(-((w - 2.0) / 1.0) ** 2)
    b = band_bins(w, spec, n_bands=8)
    sums = np.array([spec[x:y].sum() for x, y in b])
    assert len(b) == 8 and sums.max() / sums.min() < 2.5 and b[-1, 1] == 100
    e = band_bins(w, edges_angstrom=(1.0, 2.025, 4.025, 6.0))
    assert e.tolist() == [[0, 21], [21, 61], [61, 100]]
    with pytest.raises(InputError, match="hold no ToF bin"):
        band_bins(w, edges_angstrom=(1.0, 1.02, 1.03, 6.0))
    with pytest.raises(InputError, match="ascending"):
        BandOptions(edges_angstrom=(3.0, 2.0))
    counts, ob = np.ones((4, 10, 2, 16)), np.ones((9, 2, 16))
    with pytest.raises(InputError, match="open_beam has shape"):
        reconstruct_bands(counts, ob, wavelength_angstrom=np.linspace(1, 5, 10), angles_deg=np.arange(4) * 45.0,
                          pixel_size_nm=1e4)
    with pytest.raises(InputError, match="one wavelength per bin"):
        reconstruct_bands(counts, np.ones((10, 2, 16)), wavelength_angstrom=np.linspace(1, 5, 9),
                          angles_deg=np.arange(4) * 45.0, pixel_size_nm=1e4)


def test_cli_bands_from_per_angle_tiff_stacks_then_maps(scan, tmp_path, capsys):
    import json

    import tifffile

    from tomo4d.cli import main

    d, tp, bv = scan
    keep = slice(0, None, 2)                                      # 24 angles: a smaller run of the same route
    names = []
    for i, a in enumerate(tp["counts"][keep]):
        names.append(str(tmp_path / f"angle_{i:03d}.tif"))
        tifffile.imwrite(names[-1], a)
    tifffile.imwrite(tmp_path / "ob.tif", tp["open_beam"])
    angles = ",".join(f"{v:g}" for v in tp["angles_deg"][keep])
    out = tmp_path / "bands.npz"
    args = ["neutron", "bands", *names, "-o", str(out), "--open-beam", str(tmp_path / "ob.tif"), "--flight-path", "10",
            "--bin-width", f"{0.05 * 10 / 3956.034 * 1e6!r}", "--first-bin", "20", "--pixel-size", "20000",
            "--angles", angles, "--bands", "8", "--open-beam-exposure", "4", "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_bands"] == 8 and info["shape"] == [8, 16, 28, 28]
    back = BandVolumes.load(out)
    np.testing.assert_allclose(back.wavelength_angstrom[[0, -1]], [1.25, 4.4], atol=0.4)
    assert main(["neutron", "maps", str(out), str(tmp_path / "maps.npz"), "--li-concentration", "0.0819"]) == 0
    # bad input: one angle per stack
    assert main([*args[:-1], "--angles", "0,1", "-o", str(tmp_path / "x.npz")]) == 2
    assert "one angle per stack" in capsys.readouterr().err


def test_transmission_input_given_edges_and_dark_counts(scan):
    d, tp, bv = scan
    truth = bv.average(d._mu_true(0))
    res = _resolved(truth)
    # noise-free transmissions (no open beam): equal weights per bin, no sigma; given band edges
    edges = (1.0, 2.0, 3.0, 4.0, 6.0)
    tr = reconstruct_bands(np.exp(-tp["attenuation"]), wavelength_angstrom=tp["wavelength_angstrom"],
                           angles_deg=tp["angles_deg"], pixel_size_nm=tp["voxel_size_nm"],
                           options=BandOptions(edges_angstrom=edges))
    assert tr.sigma_per_cm is None and tr.provenance["input"] == "transmission" and len(tr.bins) == 4
    w = tp["wavelength_angstrom"]
    np.testing.assert_allclose(tr.wavelength_angstrom, [w[a:b].mean() for a, b in tr.bins])
    flat_avg = np.stack([d._mu_true(0)[a:b].mean(axis=0) for a, b in tr.bins])
    err = (_crop(tr, tp, tr.mu_per_cm) - flat_avg)[:, res]
    assert np.sqrt(np.mean(err ** 2)) < 0.1 * np.abs(flat_avg[:, res]).mean()   # FBP of exact data, 1/cm
    # dark counts (5 per bin and exposure) added to sample and open beam and given: the same volumes within noise
    dark = np.full(tp["open_beam"].shape, 5.0)
    bd = reconstruct_bands(tp["counts"] + 5.0, tp["open_beam"] + 5.0 * tp["open_beam_exposure"], dark,
                           wavelength_angstrom=w, angles_deg=tp["angles_deg"], pixel_size_nm=tp["voxel_size_nm"],
                           options=BandOptions(n_bands=N_BANDS, open_beam_exposure=tp["open_beam_exposure"],
                                               noise_rows=0))
    np.testing.assert_array_equal(bd.bins, bv.bins)
    np.testing.assert_allclose(bd.mu_per_cm, bv.mu_per_cm, atol=1e-3 * float(np.abs(bv.mu_per_cm).max()))
