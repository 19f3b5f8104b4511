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
