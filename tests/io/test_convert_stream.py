"""``convert`` of a slice folder streams without dask, reading the next slab while writing (issue 20)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tomo4d import Volume
from tomo4d._array import iter_slabs, prefetched_slabs
from tomo4d.errors import FormatError
from tomo4d.io import convert, open_volume, save_volume

RNG = np.random.default_rng(3)
DATA = RNG.integers(0, 60000, size=(21, 18, 20)).astype(np.uint16)


@pytest.mark.parametrize("step", [1, 4, 21, 64])
def test_prefetched_slabs_equal_iter_slabs(step):
    a = list(iter_slabs(DATA, step))
    b = list(prefetched_slabs(DATA, step))
    assert [z for z, _ in a] == [z for z, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_prefetched_slabs_raise_the_read_error():
    class Bad:
        shape = (10, 2, 2)

        def __getitem__(self, key):
            if key.start >= 4:
                raise FormatError("slab unreadable")
            return np.zeros((key.stop - key.start, 2, 2))

    with pytest.raises(FormatError, match="unreadable"):
        list(prefetched_slabs(Bad(), 4))


def test_slice_folder_to_zarr_without_dask(tmp_path):
    folder = save_volume(Volume(DATA, (200.0, 100.0, 100.0)), tmp_path / "slices")
    code = ("import sys; from tomo4d.io import convert; convert(sys.argv[1], sys.argv[2]); "
            "print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "v.ome.zarr")], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[-1] == "False"
    back = open_volume(tmp_path / "v.ome.zarr")
    np.testing.assert_array_equal(back.numpy(), DATA)
    assert back.voxel_size_nm == (200.0, 100.0, 100.0)
    same = convert(folder, tmp_path / "w.ome.zarr")  # in this process too: same voxels and header
    assert open_volume(same).header() == back.header()


def test_slice_folder_with_a_damaged_later_slice_writes_nothing(tmp_path):
    folder = save_volume(Volume(DATA, 100.0), tmp_path / "slices")
    victim = sorted(folder.glob("*.tif"))[17]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match="slice_00017"):
        convert(folder, tmp_path / "v.ome.zarr")
    assert not (tmp_path / "v.ome.zarr").exists()


@pytest.mark.parametrize("odd", ["shape", "dtype"])
def test_slice_folder_with_an_odd_later_slice_writes_nothing(tmp_path, odd):
    import tifffile

    folder = save_volume(Volume(DATA, 100.0), tmp_path / "slices")
    victim = sorted(folder.glob("*.tif"))[13]
    tifffile.imwrite(victim, DATA[13, :-1] if odd == "shape" else DATA[13].astype(np.float32))
    with pytest.raises(FormatError, match="slice_00013.*mixes shapes or dtypes|mixes shapes or dtypes.*slice_00013"):
        convert(folder, tmp_path / "v.ome.zarr")
    assert not (tmp_path / "v.ome.zarr").exists()
    with pytest.raises(FormatError, match="slice 14 of 21"):  # the lazy reader refuses it when opened
        open_volume(folder)


def test_convert_opens_each_slice_once(tmp_path, monkeypatch):
    """The streamed conversion reads a slice's header and data in one opening (the first slice: two)."""
    import tifffile

    folder = save_volume(Volume(DATA, 100.0), tmp_path / "slices")
    opened = []
    init = tifffile.TiffFile.__init__

    def counting(self, arg, *a, **kw):
        opened.append(str(arg))
        init(self, arg, *a, **kw)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", counting)
    convert(folder, tmp_path / "v.ome.zarr")
    assert len(opened) == len(DATA) + 1
    monkeypatch.undo()
    np.testing.assert_array_equal(open_volume(tmp_path / "v.ome.zarr").numpy(), DATA)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_zarr_store_equals_zarrs_own_write(tmp_path, dtype):
    """Chunks shown non-empty skip zarr's voxel-by-voxel empty check: the store is byte for byte zarr's own."""
    import zarr

    vol = RNG.integers(1, 60000, size=(5, 300, 520)).astype(dtype)   # chunks (5, 256, 256): 2 x 3 per slab
    vol[:, :256, 256:512] = 0                                         # an empty chunk (not written)
    vol[:, 256:, :256] = 0
    vol[2, 260, 3] = 7                                                # ... and one with a single voxel set
    if dtype == "float32":
        vol[:, :256, :256] = 0
        vol[1, 5, 5] = -0.0                                           # -0.0 is not the fill value 0.0
    out = save_volume(Volume(vol, 100.0), tmp_path / "v.ome.zarr")
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w", zarr_format=3)
    a = ref.create_array("0", shape=vol.shape, chunks=(5, 256, 256), dtype=vol.dtype, fill_value=0,
                         compressors=zarr.open_array(str(out / "0")).compressors, dimension_names=("z", "y", "x"))
    a[:] = vol

    def chunk_files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("c/*/*/*"))}

    mine, theirs = chunk_files(out / "0"), chunk_files(tmp_path / "ref.zarr" / "0")
    assert sorted(mine) == sorted(theirs) and len(mine) == 5                     # one of six chunks empty
    assert mine == theirs
    np.testing.assert_array_equal(open_volume(out).numpy(), vol)


@pytest.mark.parametrize("target", ["v.tif", "slices"])
def test_volume_info_reads_without_dask_and_says_the_same(tmp_path, target):
    """``tomo4d info`` of a TIFF or slice folder reads its sample slices without importing dask (issue 20: ~1 s
    of a cold start); the description equals that of the dask-backed volume."""
    from tomo4d.io import volume_info

    path = save_volume(Volume(DATA, (200.0, 100.0, 100.0)), tmp_path / target)
    code = ("import sys; from tomo4d.io import volume_info; volume_info(sys.argv[1]); "
            "print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out[-1] == "False"
    assert volume_info(path) == volume_info(path, chunks="auto")  # chunks given: the dask route
