"""Every format keeps values, dtype, voxel size and metadata through a write/read cycle."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import Volume
from tomo4d.io import detect_format, open_volume, save_volume

# (file name, dtypes that the format keeps exactly)
FORMATS = [
    ("vol.tif", ["uint8", "uint16", "float32", "int16", "float64"]),
    ("slices", ["uint8", "uint16", "float32", "int32"]),
    ("vol.h5", ["uint8", "uint16", "float32", "int16", "float64"]),
    ("vol.zarr", ["uint8", "uint16", "float32", "int16", "float64"]),
    ("vol.ome.zarr", ["uint16", "float32"]),
    ("vol.raw", ["uint8", "uint16", "float32", "int16", "float64"]),
]
CASES = [(name, dt) for name, dts in FORMATS for dt in dts]


@pytest.mark.parametrize("name,dtype", CASES)
def test_roundtrip_values_dtype_voxel_metadata(tmp_path, small_volume, name, dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        data = rng.integers(info.min, info.max, size=small_volume.shape, dtype=dtype, endpoint=True)
    else:
        data = rng.normal(0, 1e3, size=small_volume.shape).astype(dtype)
    vol = small_volume.with_data(data)
    out = save_volume(vol, tmp_path / name)
    back = open_volume(out)
    assert back.is_lazy
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.numpy(), data)
    assert back.voxel_size_nm == pytest.approx(vol.voxel_size_nm, rel=1e-9)
    assert back.metadata.time_step == "T2"
    assert back.metadata.state_of_charge == 0.5
    assert back.metadata.modality == "xray"
    assert back.metadata.time_s == 3600.0


@pytest.mark.parametrize("nz", [1, 3, 4])
def test_tiff_with_three_or_four_slices_is_not_colour(tmp_path, nz):
    """Three or four z-slices must not be mistaken for RGB(A) planes."""
    data = np.arange(nz * 6 * 7, dtype=np.uint16).reshape(nz, 6, 7)
    save_volume(Volume(data, 50.0), tmp_path / "thin.tif")
    np.testing.assert_array_equal(open_volume(tmp_path / "thin.tif").numpy(), data)


def test_vol_roundtrip_is_float32_with_info(tmp_path, small_volume):
    vol = small_volume.with_data(small_volume.numpy().astype(np.float32) / 7)
    vol = Volume(vol.data, 650.0, vol.metadata)
    save_volume(vol, tmp_path / "scan.vol")
    info = (tmp_path / "scan.vol.info").read_text()
    assert "NUM_X = 24" in info and "NUM_Y = 20" in info and "NUM_Z = 12" in info
    assert "voxelSize = 0.65" in info  # micrometres, PyHST2 convention
    back = open_volume(tmp_path / "scan.vol")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.numpy(), vol.numpy())
    assert back.voxel_size_nm == pytest.approx((650.0,) * 3)


def test_vol_written_by_another_program(tmp_path):
    """A .vol with only the info file (no tomo4d sidecar), big-endian, voxelSize in um."""
    data = np.arange(3 * 4 * 5, dtype=">f4").reshape(3, 4, 5)
    (tmp_path / "rec.vol").write_bytes(data.tobytes())
    (tmp_path / "rec.vol.info").write_text(
        "! PyHST_SLAVE VOLUME INFO FILE\nNUM_X =  5\nNUM_Y =  4\nNUM_Z =  3\nvoxelSize =  0.1\n"
        "BYTEORDER = HIGHBYTEFIRST\nValMin = 0\nValMax = 59\n"
    )
    vol = open_volume(tmp_path / "rec.vol")
    np.testing.assert_array_equal(vol.numpy(), data.astype(np.float32))
    assert vol.voxel_size_nm == pytest.approx((100.0,) * 3)


def test_ome_zarr_multiscale_metadata(tmp_path, small_volume):
    import zarr

    save_volume(small_volume, tmp_path / "v.ome.zarr", levels=3)
    g = zarr.open_group(str(tmp_path / "v.ome.zarr"), mode="r")
    ms = g.attrs["ome"]["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[1] == pytest.approx([200.0, 100.0, 100.0])
    assert [a["unit"] for a in ms["axes"]] == ["nanometer"] * 3
    level1 = open_volume(tmp_path / "v.ome.zarr", dataset="1")
    assert level1.shape == (6, 10, 12)
    assert level1.voxel_size_nm == pytest.approx((200.0, 100.0, 100.0))
    # level 1 is the 2x2x2 mean of level 0 (rounded back to uint16 by truncation)
    full = small_volume.numpy().astype(np.float64)
    mean = full.reshape(6, 2, 10, 2, 12, 2).mean(axis=(1, 3, 5))
    assert np.abs(level1.numpy() - mean).max() <= 1.0


def test_ome_zarr_04_layout_is_read(tmp_path):
    """NGFF 0.4 attributes (top-level 'multiscales', units in micrometres)."""
    import zarr

    g = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    a = g.create_array("s0", shape=(4, 5, 6), dtype="uint16", chunks=(4, 5, 6))
    a[:] = 7
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"}
                                                           for n in "zyx"],
                               "datasets": [{"path": "s0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [0.2, 0.1, 0.1]}]}]}]
    vol = open_volume(tmp_path / "old.zarr")
    assert vol.voxel_size_nm == pytest.approx((200.0, 100.0, 100.0))
    assert int(vol.numpy().max()) == 7


def test_imagej_tiff_from_fiji_conventions(tmp_path):
    """A TIFF as ImageJ writes it (spacing + unit 'micron'), without the tomo4d tag."""
    import tifffile

    data = np.zeros((5, 6, 7), np.uint16)
    tifffile.imwrite(tmp_path / "fiji.tif", data, imagej=True, resolution=(1 / 0.05, 1 / 0.05),
                     metadata={"spacing": 0.1, "unit": "micron", "axes": "ZYX"})
    vol = open_volume(tmp_path / "fiji.tif")
    assert vol.shape == (5, 6, 7)
    assert vol.voxel_size_nm == pytest.approx((100.0, 50.0, 50.0), rel=1e-6)
    assert vol.voxel_size_known


def test_tiff_without_any_resolution_marks_voxel_size_unknown(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.ones((3, 4, 5), np.float32), photometric="minisblack")
    vol = open_volume(tmp_path / "plain.tif")
    assert not vol.voxel_size_known
    vol2 = open_volume(tmp_path / "plain.tif", voxel_size_nm=30)
    assert vol2.voxel_size_known and vol2.voxel_size_nm == (30.0, 30.0, 30.0)


def test_hdf5_fiji_element_size_and_explicit_dataset(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        d = f.create_dataset("recon/volume", data=np.arange(60, dtype=np.int16).reshape(3, 4, 5))
        d.attrs["element_size_um"] = [0.2, 0.1, 0.1]
        f.create_dataset("other/thing", data=np.zeros(4))
    vol = open_volume(tmp_path / "x.h5")  # the only 3D dataset
    assert vol.voxel_size_nm == pytest.approx((200.0, 100.0, 100.0))
    vol2 = open_volume(tmp_path / "x.h5", dataset="/recon/volume")
    np.testing.assert_array_equal(vol2.numpy(), np.arange(60).reshape(3, 4, 5))


def test_nxtomo_default_dataset(tmp_path, small_volume):
    import h5py

    save_volume(small_volume, tmp_path / "scan.nxs")
    with h5py.File(tmp_path / "scan.nxs", "r") as f:
        assert "/entry/data/data" in f
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/data"].attrs["signal"] == "data"


def test_slice_folder_natural_sort(tmp_path):
    import tifffile

    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(12):  # written in an order that lexical sorting would break
        tifffile.imwrite(folder / f"slice_{i}.tif", np.full((4, 5), i, np.uint16))
    vol = open_volume(folder)
    assert vol.shape == (12, 4, 5)
    assert [int(vol.numpy()[z, 0, 0]) for z in range(12)] == list(range(12))


@pytest.mark.parametrize("path,fmt", [("a.tif", "tiff"), ("a.TIFF", "tiff"), ("a.h5", "hdf5"), ("a.nxs", "hdf5"),
                                      ("a.zarr", "zarr"), ("a.ome.zarr", "zarr"), ("a.vol", "vol"),
                                      ("a.raw", "raw"), ("out_folder", "slices")])
def test_output_format_from_suffix(path, fmt):
    assert detect_format(path, for_writing=True) == fmt


def test_content_sniffing_without_suffix(tmp_path, small_volume):
    save_volume(small_volume, tmp_path / "a.h5")
    save_volume(small_volume, tmp_path / "b.tif")
    (tmp_path / "a.h5").rename(tmp_path / "noext_h5")
    (tmp_path / "b.tif").rename(tmp_path / "noext_tif")
    assert detect_format(tmp_path / "noext_h5") == "hdf5"
    assert detect_format(tmp_path / "noext_tif") == "tiff"
    np.testing.assert_array_equal(open_volume(tmp_path / "noext_h5").numpy(), small_volume.numpy())


@pytest.mark.realdata
@pytest.mark.parametrize("target", ["snow.tif", "snow_slices", "snow.h5", "snow.ome.zarr", "snow.vol", "snow.raw"])
def test_real_snow_through_every_format(tmp_path, target, real_file):
    from tomo4d.io import convert

    src = real_file("snow_xct_100.tif")
    ref = open_volume(src)
    assert ref.shape == (100, 100, 100) and ref.dtype == np.uint16
    out = convert(src, tmp_path / target, voxel_size_nm=15000.0)
    back = open_volume(out)
    np.testing.assert_array_equal(back.numpy(), ref.numpy().astype(back.dtype))
    assert back.voxel_size_nm == pytest.approx((15000.0,) * 3, rel=1e-6)
    assert any("converted from" in p for p in back.metadata.provenance)
