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
