"""Writes are atomic: an interrupted write leaves nothing under the final name."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import OverwriteError, Volume
from tomo4d.io import open_volume, save_volume

TARGETS = ["v.tif", "slices", "v.h5", "v.ome.zarr", "v.vol", "v.raw"]


class Boom(RuntimeError):
    pass


def _failing_volume(fail_at_z: int = 20):
    """A lazy volume whose computation fails when slab containing z=fail_at_z is read."""
    import dask.array as da

    base = da.ones((40, 16, 16), dtype=np.uint16, chunks=(4, 16, 16))

    def maybe_fail(block, block_info=None):
        z0 = block_info[0]["array-location"][0][0]
        if z0 >= fail_at_z:
            raise Boom("disk full (simulated)")
        return block

    return Volume(base.map_blocks(maybe_fail, dtype=np.uint16), 50.0)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("name", TARGETS)
def test_interrupted_write_leaves_no_output(tmp_path, name, monkeypatch):
    import tomo4d._array as arr

    monkeypatch.setattr(arr, "slab_depth", lambda *a, **k: 4)  # write in several slabs
    with pytest.raises(Boom):
        save_volume(_failing_volume(), tmp_path / name)
    assert not (tmp_path / name).exists()
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / (name + ".info")).exists()


@pytest.mark.parametrize("name", TARGETS)
def test_interrupted_overwrite_keeps_previous_output(tmp_path, name):
    good = Volume(np.full((40, 16, 16), 9, np.uint16), 50.0)
    save_volume(good, tmp_path / name)
    with pytest.raises(Boom):
        save_volume(_failing_volume(), tmp_path / name, overwrite=True)
    back = open_volume(tmp_path / name)
    assert int(back.numpy().min()) == 9 and int(back.numpy().max()) == 9
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", TARGETS)
def test_existing_output_needs_overwrite(tmp_path, small_volume, name):
    save_volume(small_volume, tmp_path / name)
    with pytest.raises(OverwriteError, match="overwrite"):
        save_volume(small_volume, tmp_path / name)
    save_volume(small_volume.with_data(small_volume.numpy() // 2), tmp_path / name, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).numpy(), small_volume.numpy() // 2)


@pytest.mark.parametrize("name", TARGETS)
def test_input_is_never_overwritten(tmp_path, small_volume, name):
    save_volume(small_volume, tmp_path / name)
    vol = open_volume(tmp_path / name)
    with pytest.raises(OverwriteError, match="input"):
        save_volume(vol, tmp_path / name, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).numpy(), small_volume.numpy().astype(vol.dtype))


def test_output_inside_input_folder_is_refused(tmp_path, small_volume):
    save_volume(small_volume, tmp_path / "stack")
    vol = open_volume(tmp_path / "stack")
    with pytest.raises(OverwriteError, match="input"):
        save_volume(vol, tmp_path / "stack" / "inner.tif")
