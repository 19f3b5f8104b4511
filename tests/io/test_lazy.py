"""Reading is lazy: opening reads headers only; a slice read touches only its chunk."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from tomo4d import Volume
from tomo4d.io import open_volume, save_volume

psutil = pytest.importorskip("psutil")


def _rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def test_multipage_tiff_reads_only_requested_pages(tmp_path, monkeypatch):
    data = np.arange(40 * 8 * 9, dtype=np.uint16).reshape(40, 8, 9)
    save_volume(Volume(data, 50.0), tmp_path / "v.tif")
    vol = open_volume(tmp_path / "v.tif", chunks=(1, -1, -1))
    asked: list = []
    real = tifffile.TiffFile.asarray

    def spy(self, *args, key=None, **kw):
        asked.append(list(key) if key is not None else "all")
        return real(self, *args, key=key, **kw)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    np.testing.assert_array_equal(np.asarray(vol[17]), data[17])
    assert asked == [[17]]
    np.testing.assert_array_equal(np.asarray(vol[5:7, 2:4]), data[5:7, 2:4])
    assert sorted(sum(asked[1:], [])) == [5, 6]


def test_slice_folder_reads_only_requested_files(tmp_path):
    data = np.arange(30 * 6 * 7, dtype=np.uint16).reshape(30, 6, 7)
    save_volume(Volume(data, 50.0), tmp_path / "stack")
    vol = open_volume(tmp_path / "stack", chunks=(1, -1, -1))
    files = sorted(p for p in (tmp_path / "stack").glob("*.tif"))
    for i, f in enumerate(files):
        if i != 21:
            f.unlink()  # nothing but slice 21 can be read any more
    np.testing.assert_array_equal(np.asarray(vol[21]), data[21])


@pytest.mark.parametrize("fmt", ["raw", "h5", "zarr"])
def test_16_gib_volume_opens_and_reads_one_slice_in_small_memory(tmp_path, fmt):
    """A 2048^3 uint16 (16 GiB) volume: opening and reading a slice stays far below its size."""
    import h5py
    import zarr

    shape = (2048, 2048, 2048)
    path = tmp_path / f"big.{fmt}"
    slice_1000 = np.full(shape[1:], 1234, np.uint16)
    if fmt == "raw":
        with open(path, "wb") as fh:  # sparse file: no disk space used
            fh.truncate(int(np.prod(shape)) * 2)
        kw = {"shape": shape, "dtype": "uint16"}
        expected = np.zeros(shape[1:], np.uint16)
    elif fmt == "h5":
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("/entry/data/data", shape=shape, dtype="uint16", chunks=(16, 256, 256))
            ds[1000] = slice_1000
        kw, expected = {}, slice_1000
    else:
        arr = zarr.create_array(str(path), shape=shape, dtype="uint16", chunks=(16, 256, 256), fill_value=0)
        arr[1000] = slice_1000
        kw, expected = {}, slice_1000
    before = _rss()
    vol = open_volume(path, **kw)
    assert vol.nbytes == 16 * 2**30
    got = np.asarray(vol[1000])
    grown = _rss() - before
    np.testing.assert_array_equal(got, expected)
    assert grown < 512 * 2**20, f"reading one slice grew RSS by {grown / 2**20:.0f} MiB"
