"""Label files (TIFF, Zarr; napari-compatible integer volumes) and model-file detection."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from tomo4d.errors import FormatError, InputError
from tomo4d.segment import model_kind, read_image, read_labels, save_labels


@pytest.mark.parametrize("name", ["labels.tif", "labels.zarr", "labels.ome.zarr"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_label_roundtrip(tmp_path, name, dtype):
    lab = np.random.default_rng(0).integers(0, 200, size=(5, 12, 9)).astype(dtype)
    path = save_labels(lab, tmp_path / name, voxel_size_nm=(100.0, 50.0, 50.0))
    back = read_labels(path)
    np.testing.assert_array_equal(back, lab)
    assert np.issubdtype(back.dtype, np.integer)
    assert read_image(path).voxel_size_nm == (100.0, 50.0, 50.0)
    with pytest.raises(InputError, match="exists"):
        save_labels(lab, path)


def test_2d_tiff_reads_as_one_slice(tmp_path):
    p = tmp_path / "mask.tif"
    tifffile.imwrite(p, np.array([[0, 255], [255, 0]], np.uint8))
    assert read_labels(p).shape == (1, 2, 2)
    assert read_image(p).shape == (1, 2, 2)


def test_bad_label_files(tmp_path):
    p = tmp_path / "float.tif"
    tifffile.imwrite(p, np.full((5, 4, 4), 0.5, np.float32), photometric="minisblack")
    with pytest.raises(InputError, match="integer"):
        read_labels(p)
    with pytest.raises(InputError, match="integer"):
        save_labels(np.zeros((2, 2), np.float32), tmp_path / "x.tif")


def test_model_kind(tmp_path, blob_forest):
    assert model_kind(blob_forest.save(tmp_path / "m.npz")) == "rf"
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 32)
    with pytest.raises(FormatError, match="neither"):
        model_kind(tmp_path / "junk.bin")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FormatError, match="index.json"):
        model_kind(tmp_path / "folder")
    with pytest.raises(InputError, match="does not exist"):
        model_kind(tmp_path / "nope.npz")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_read_label_planes_reads_the_planes_of_the_whole_file(tmp_path, axis):
    from tomo4d.segment import read_label_planes

    lab = np.random.default_rng(0).integers(0, 4, size=(12, 10, 14)).astype(np.uint8)
    path = save_labels(lab, tmp_path / "l.ome.zarr")
    shape, planes = read_label_planes(path, axis, [7, 2])
    assert shape == lab.shape
    np.testing.assert_array_equal(planes, np.take(read_labels(path), [7, 2], axis=axis))
    save_labels(np.full((4, 5, 6), -1, np.int16), tmp_path / "neg.ome.zarr")
    with pytest.raises(InputError, match="negative"):
        read_label_planes(tmp_path / "neg.ome.zarr", axis, [1])
