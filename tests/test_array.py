"""tomo4d._array: materialising dask arrays without dask importing dask.distributed (issue 20, cold start)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from tomo4d._array import local_scheduler, to_numpy


def test_to_numpy_of_dask_does_not_import_distributed():
    code = ("import sys, numpy as np, dask.array as da; from tomo4d._array import to_numpy; "
            "a = to_numpy(da.from_array(np.arange(24).reshape(2, 3, 4), chunks=2) + 1); "
            "assert np.array_equal(a, np.arange(24).reshape(2, 3, 4) + 1); print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out[-1] == "False"


def test_local_scheduler_leaves_a_configured_or_distributed_choice_to_dask(monkeypatch):
    import dask
    import dask.array as da

    with dask.config.set(scheduler="sync"):
        assert local_scheduler() is None
    monkeypatch.setitem(sys.modules, "distributed", sys.modules.get("distributed") or object())
    assert local_scheduler() is None                      # a client may exist: dask looks for it
    monkeypatch.delitem(sys.modules, "distributed")
    if "distributed" not in sys.modules:
        from dask.threaded import get

        assert local_scheduler() is get
    np.testing.assert_array_equal(to_numpy(da.ones((3, 4), chunks=2)), np.ones((3, 4)))


def test_read_box_reads_a_stored_volume_from_its_store(tmp_path, monkeypatch):
    """A box of a lazy Zarr volume comes from the store itself (no dask graph), equal to dask's read; an
    array derived from it (a dask expression) still goes through dask."""
    import tomo4d._array as arr_mod
    from tomo4d._array import read_box
    from tomo4d.io import open_volume, save_volume
    from tomo4d.volume import Volume

    vol = np.random.default_rng(0).integers(0, 9, size=(20, 30, 40)).astype(np.uint16)
    save_volume(Volume(vol, (1.0, 1.0, 1.0)), tmp_path / "v.ome.zarr")
    lazy = open_volume(tmp_path / "v.ome.zarr").data
    keys = [(slice(3, 17), slice(5, 29), slice(0, 40)), slice(2, 5), 7, (slice(0, 20), slice(29, 30))]
    through_dask = [np.asarray(lazy[k].compute()) for k in keys]
    calls = []
    monkeypatch.setattr(arr_mod, "to_numpy", lambda a: calls.append(a) or np.asarray(a.compute()))
    for k, want in zip(keys, through_dask):
        got = read_box(lazy, k)
        assert isinstance(got, np.ndarray) and got.dtype == np.uint16
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, vol[k])
    assert not calls  # straight from the store
    np.testing.assert_array_equal(read_box(lazy + 1, (slice(0, 4),)), vol[:4] + 1)
    assert len(calls) == 1  # a derived array: through dask
    np.testing.assert_array_equal(read_box(vol, slice(2, 5)), vol[2:5])  # numpy as it is
