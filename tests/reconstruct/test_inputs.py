"""Projection readers (NXtomo, TIFF) and the bad inputs of issue 22: each a clear error or a counted warning."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

pytest.importorskip("algotom")

from tomo4d.errors import InputError  # noqa: E402
from tomo4d.reconstruct import (  # noqa: E402
    Projections,
    ReconstructOptions,
    open_projections,
    reconstruct,
    simulate_scan,
    transmission,
)


@pytest.fixture(scope="module")
def scan():
    return simulate_scan((2, 48), n_angles=90, center_offset=1.5, photons=2e4, margin=12, seed=3)


@pytest.fixture(scope="module")
def direct(scan):
    return reconstruct(scan.as_projections(), options=ReconstructOptions(center=scan.center))


def test_nxtomo_reads_flats_darks_angles_by_image_key(tmp_path, scan, direct, write_nxtomo):
    write_nxtomo(tmp_path / "scan.nxs", scan)
    proj = open_projections(tmp_path / "scan.nxs")
    assert proj.shape == scan.projections.shape
    assert proj.pixel_size_nm == pytest.approx(1000.0)
    np.testing.assert_allclose(proj.flat, scan.flats.mean(0), rtol=1e-6)
    rec = reconstruct(proj, options=ReconstructOptions(center=scan.center))
    np.testing.assert_allclose(rec.volume.data, direct.volume.data, atol=1e-6)
    assert rec.volume.voxel_size_nm == (1000.0,) * 3
    assert "scan.nxs" in rec.volume.metadata.provenance[0]


def test_tiff_stack_with_flats_darks_and_angle_list(tmp_path, scan, direct):
    import tifffile

    tifffile.imwrite(tmp_path / "proj.tif", scan.projections.astype(np.uint16))
    tifffile.imwrite(tmp_path / "flats.tif", scan.flats.astype(np.uint16))
    tifffile.imwrite(tmp_path / "darks.tif", scan.darks.astype(np.uint16))
    (tmp_path / "angles.txt").write_text("\n".join(f"{a:.6f}" for a in scan.angles_deg))
    proj = open_projections(tmp_path / "proj.tif", flats=tmp_path / "flats.tif", darks=tmp_path / "darks.tif",
                            angles=tmp_path / "angles.txt", pixel_size_nm=1000.0)
    rec = reconstruct(proj, options=ReconstructOptions(center=scan.center, slab_rows=1))
    np.testing.assert_allclose(rec.volume.data, direct.volume.data, atol=1e-5)


def test_missing_flats_refused_unless_asked(scan):
    proj = dataclasses.replace(scan.as_projections(), flat=None)
    with pytest.raises(InputError, match="no flats.*allow_missing_flats"):
        reconstruct(proj, options=ReconstructOptions(center=scan.center))
    proj = dataclasses.replace(scan.as_projections(), dark=None)
    with pytest.raises(InputError, match="no darks"):
        reconstruct(proj, options=ReconstructOptions(center=scan.center))
    ok = reconstruct(scan.as_projections(clean=True), options=ReconstructOptions(center=scan.center,
                                                                                  allow_missing_flats=True))
    assert np.isfinite(ok.volume.data).all()


def test_angle_count_must_match(scan, tmp_path, write_nxtomo):
    proj = dataclasses.replace(scan.as_projections(), angles_deg=scan.angles_deg[:-3])
    with pytest.raises(InputError, match="87 angles for 90 projections"):
        reconstruct(proj)
    write_nxtomo(tmp_path / "bad.nxs", scan, angles=scan.angles_deg[:-1])
    with pytest.raises(InputError, match="angles for 90 projections"):
        reconstruct(open_projections(tmp_path / "bad.nxs"))


def test_detector_size_mismatch_refused(scan):
    proj = dataclasses.replace(scan.as_projections(), flat=scan.flats.mean(0)[:, :-2])
    with pytest.raises(InputError, match="flats have detector size"):
        reconstruct(proj)


def test_short_coverage_warns_with_the_coverage(scan):
    keep = scan.angles_deg < 150
    proj = Projections(scan.projections[keep], None, scan.flats.mean(0), scan.darks.mean(0),
                       scan.angles_deg[keep], 1000.0, "short")
    with pytest.warns(UserWarning, match=r"cover 150\.0 degrees"):
        rec = reconstruct(proj, options=ReconstructOptions(center=scan.center))
    assert rec.coverage_deg == pytest.approx(150.0)
    assert any("150.0" in w for w in rec.warnings)


def test_non_finite_after_log_clipped_and_counted(scan):
    counts = scan.projections.copy()
    counts[3, 0, 20] = np.nan
    counts[5, 1, 30] = 0.0  # below the dark: negative transmission
    flat = scan.flats.mean(0).copy()
    dark = scan.darks.mean(0)
    flat[0, 40] = dark[0, 40]  # a dead pixel: flat == dark, 0/0 in every projection
    proj = Projections(counts, None, flat, dark, scan.angles_deg, 1000.0, "dead")
    with pytest.warns(UserWarning, match=r"92 transmissions were not finite"):
        rec = reconstruct(proj, options=ReconstructOptions(center=scan.center))
    assert rec.n_clipped == 92  # 90 projections of the dead pixel + the NaN + the zero
    assert np.isfinite(rec.volume.data).all()
    assert rec.volume.metadata.extra["reconstruction"]["n_clipped"] == 92


def test_transmission_counts_what_it_clips():
    raw = np.array([[[10.0, 0.0, np.nan, 5.0]]], np.float32)
    t, n = transmission(raw, np.full((1, 4), 10.0, np.float32), np.zeros((1, 4), np.float32), 1e-6)
    assert n == 2
    np.testing.assert_allclose(t, [[[1.0, 1e-6, 1e-6, 0.5]]])
    mine = raw.copy()  # overwrite: the same values, computed in the caller's array
    t2, n2 = transmission(mine, np.full((1, 4), 10.0, np.float32), np.zeros((1, 4), np.float32), 1e-6, overwrite=True)
    assert t2 is mine and n2 == n and np.array_equal(t2, t)


def test_reconstruction_leaves_in_memory_projections_unchanged(scan):
    """Slabs are normalised in place: on a copy of the rows, never on the caller's float32 arrays."""
    clean = scan.as_projections(clean=True)
    f32 = dataclasses.replace(scan.as_projections(), data=scan.projections.astype(np.float32),
                              flat=scan.flats.mean(0).astype(np.float32), dark=scan.darks.mean(0).astype(np.float32))
    for proj, opts in ((clean, ReconstructOptions(center=scan.center, allow_missing_flats=True)),
                       (f32, ReconstructOptions(center=scan.center))):
        before = proj.data.copy()
        reconstruct(proj, options=opts)
        assert np.array_equal(proj.data, before)


def test_no_warning_on_good_data(scan):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reconstruct(scan.as_projections(), options=ReconstructOptions(center=scan.center, rows=(0, 1)))


def test_engine_missing_is_a_clear_error(monkeypatch, scan):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("algotom"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(InputError, match=r"tomo4d\[reconstruct\]"):
        reconstruct(scan.as_projections())


def test_nxtomo_with_flats_between_projections(tmp_path, scan, direct):
    # flats taken half-way through the scan: the projections are not one contiguous block of the dataset
    import h5py

    h = len(scan.projections) // 2
    parts = [(scan.darks, 2), (scan.flats[:5], 1), (scan.projections[:h], 0), (scan.flats[5:], 1),
             (scan.projections[h:], 0)]
    with h5py.File(tmp_path / "mid.nxs", "w") as f:
        f["entry/instrument/detector/data"] = np.concatenate([p for p, _ in parts]).astype(np.uint16)
        f["entry/instrument/detector/image_key"] = np.concatenate([np.full(len(p), k) for p, k in parts])
        f["entry/sample/rotation_angle"] = np.concatenate(
            [np.zeros(len(scan.darks) + 5), scan.angles_deg[:h], np.zeros(len(scan.flats) - 5), scan.angles_deg[h:]])
    proj = open_projections(tmp_path / "mid.nxs", pixel_size_nm=1000.0)
    rec = reconstruct(proj, options=ReconstructOptions(center=scan.center))
    np.testing.assert_allclose(rec.volume.data, direct.volume.data, atol=1e-6)
    with pytest.raises(InputError, match="drop flats"):
        open_projections(tmp_path / "mid.nxs", flats="f.tif")


def test_uint16_output_with_stated_range(scan, direct):
    ref = np.asarray(direct.volume.data)
    lo, hi = float(ref.min()), float(ref.max())
    rec = reconstruct(scan.as_projections(), options=ReconstructOptions(center=scan.center, uint16_range=(lo, hi)))
    u = np.asarray(rec.volume.data)
    assert u.dtype == np.uint16 and rec.n_out_of_range == 0
    np.testing.assert_allclose(lo + u * (hi - lo) / 65535, ref, atol=(hi - lo) / 65535)
    assert rec.volume.metadata.extra["reconstruction"]["parameters"]["uint16_range"] == [lo, hi]
    with pytest.warns(UserWarning, match="outside uint16_range"):
        tight = reconstruct(scan.as_projections(), options=ReconstructOptions(center=scan.center,
                                                                              uint16_range=(0.0, 0.5 * hi)))
    assert tight.n_out_of_range == int(np.count_nonzero((ref < 0) | (ref > 0.5 * hi)))
    with pytest.raises(InputError, match="lo < hi"):
        ReconstructOptions(uint16_range=(1.0, 0.0))


def test_flat_drift_interpolated_between_flats_before_and_after(tmp_path, scan, direct):
    # the beam brightens linearly by 10 % over the scan; flats taken before (x1.0) and after (x1.1)
    import h5py

    n = len(scan.projections)
    gain = 1.0 + 0.1 * np.arange(n) / (n - 1)
    dark = scan.darks.mean(0)
    counts = (scan.projections - dark) * gain[:, None, None] + dark
    after = (scan.flats - dark) * 1.1 + dark
    parts = [(scan.darks, 2), (scan.flats, 1), (counts, 0), (after, 1)]
    with h5py.File(tmp_path / "drift.nxs", "w") as f:
        f["entry/instrument/detector/data"] = np.concatenate([p for p, _ in parts]).astype(np.float32)
        f["entry/instrument/detector/image_key"] = np.concatenate([np.full(len(p), k) for p, k in parts])
        f["entry/sample/rotation_angle"] = np.concatenate([np.zeros(len(scan.darks) + len(scan.flats)),
                                                           scan.angles_deg, np.zeros(len(after))])
    proj = open_projections(tmp_path / "drift.nxs", pixel_size_nm=1000.0)
    assert proj.flat_drift is not None and proj.dark_drift is None
    ref = np.asarray(direct.volume.data)
    err = {}
    for drift in (False, True):
        rec = reconstruct(proj, options=ReconstructOptions(center=scan.center, drift=drift))
        err[drift] = float(np.abs(np.asarray(rec.volume.data) - ref).mean())
    # without the correction the averaged flat is 5 % off at both ends of the scan; with it, noise only
    assert err[True] < 0.2 * err[False], err
    with pytest.raises(InputError, match="drift=True needs flats or darks"):
        reconstruct(scan.as_projections(), options=ReconstructOptions(center=scan.center, drift=True))


def test_cone_beam_refused_naming_the_engine_and_alternatives():
    from tomo4d.reconstruct import ReconstructOptions

    with pytest.raises(InputError) as err:
        ReconstructOptions(geometry="cone")
    assert "algotom" in str(err.value) and "itk-rtk" in str(err.value) and "astra" in str(err.value)
    with pytest.raises(InputError, match="geometry"):
        ReconstructOptions(geometry="fan")
