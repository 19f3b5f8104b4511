"""``tomo4d reconstruct`` end to end: NXtomo and TIFF projections to a volume file with provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("algotom")

from tomo4d.cli import main  # noqa: E402
from tomo4d.io import open_volume  # noqa: E402
from tomo4d.reconstruct import ReconstructOptions, reconstruct, simulate_scan  # noqa: E402


@pytest.fixture(scope="module")
def scan():
    return simulate_scan((2, 48), n_angles=90, center_offset=-2.25, photons=2e4, margin=12, seed=4)


def test_cli_nxtomo_to_tiff_with_found_centre(tmp_path, scan, capsys, write_nxtomo):
    write_nxtomo(tmp_path / "scan.nxs", scan)
    out = tmp_path / "rec.tif"
    assert main(["reconstruct", str(tmp_path / "scan.nxs"), str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["center"] - scan.center) < 0.5 and info["center_found"]
    vol = open_volume(out)
    assert vol.shape == (2, 72, 72) and vol.voxel_size_nm == pytest.approx((1000.0,) * 3)
    ref = reconstruct(scan.as_projections(), options=ReconstructOptions(center=info["center"]))
    np.testing.assert_allclose(vol.numpy(), ref.volume.data, atol=1e-6)
    assert "algotom" in " ".join(vol.metadata.provenance)
    # the output exists: refused without --overwrite, nothing replaced
    assert main(["reconstruct", str(tmp_path / "scan.nxs"), str(out)]) == 2
    # 16-bit with a stated range
    u16 = tmp_path / "rec16.tif"
    assert main(["reconstruct", str(tmp_path / "scan.nxs"), str(u16), "--center", str(info["center"]),
                 "--uint16=-0.05,0.15", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_out_of_range"] == 0
    v16 = open_volume(u16).numpy()
    assert v16.dtype == np.uint16
    np.testing.assert_allclose(-0.05 + v16 * 0.2 / 65535, ref.volume.data, atol=0.2 / 65535)


def test_cli_tiff_with_flats_darks_angles_rings_and_paganin(tmp_path, scan, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "proj.tif", scan.projections.astype(np.uint16))
    tifffile.imwrite(tmp_path / "flats.tif", scan.flats.astype(np.uint16))
    tifffile.imwrite(tmp_path / "darks.tif", scan.darks.astype(np.uint16))
    (tmp_path / "angles.txt").write_text(" ".join(map(str, scan.angles_deg)))
    out = tmp_path / "rec.h5"
    rc = main(["reconstruct", str(tmp_path / "proj.tif"), str(out), "--flats", str(tmp_path / "flats.tif"),
               "--darks", str(tmp_path / "darks.tif"), "--angles", str(tmp_path / "angles.txt"),
               "--pixel-size", "1000", "--center", str(scan.center), "--rings", "sorting", "--ring-size", "5",
               "--paganin", "170", "--energy-kev", "20", "--distance-m", "0.01", "--json"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert info["center_found"] is False
    vol = open_volume(out)
    extra = vol.metadata.extra["reconstruction"]["parameters"]
    assert extra["paganin"] == {"delta_beta": 170.0, "energy_kev": 20.0, "distance_m": 0.01}
    assert extra["rings"] == "sorting"
    assert np.isfinite(vol.numpy()).all()
