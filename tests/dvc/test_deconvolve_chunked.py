"""Richardson-Lucy box by box (:func:`tomo4d.dvc.deconvolve_chunked`): the whole-volume result (float32 rounding
between passes) for one box, many boxes one iteration a pass, and several iterations a pass; lazy inputs whose
chunks do not divide the shape; resumed passes; bad inputs named."""

from __future__ import annotations

import importlib

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import deconvolve, deconvolve_chunked
from tomo4d.errors import InputError

dc = importlib.import_module("tomo4d.dvc.deconvolve_chunked")


def _scan(shape, seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 2) * 100 + 1000
    v[:, shape[1] // 2:, :] += 300  # an edge
    return (ndimage.gaussian_filter(v, 1.0) + rng.normal(0, 2, shape)).astype(np.float32)


@pytest.mark.parametrize("shape, sigma, iterations, budget_mb, plan", [
    ((37, 41, 45), 1.0, 6, 100.0, (6, 1)),     # one box, one pass
    ((37, 41, 45), 1.0, 4, 0.5, (1, 150)),     # 150 boxes of 10^3, one iteration a pass (halo 6)
    ((120, 70, 70), 0.3, 7, 24.0, (3, 8)),     # 68^3 boxes, three iterations a pass (halo 6)
])
def test_box_by_box_equals_the_whole_volume(tmp_path, shape, sigma, iterations, budget_mb, plan):
    v = _scan(shape)
    ref = deconvolve(v, psf_sigma_px=sigma, iterations=iterations)
    r = len(dc._kernel(sigma)) // 2
    k, inner = dc._plan(tuple(s + 4 * r for s in shape), r, iterations, int(budget_mb * 2**20))
    assert (k, len(dc._boxes(tuple(s + 4 * r for s in shape), inner, 2 * r))) == plan
    lazy = da.from_array(v, chunks=(7, 13, 11))
    got = deconvolve_chunked(lazy, tmp_path / "out.zarr", psf_sigma_px=sigma, iterations=iterations,
                             chunk_budget_mb=budget_mb)
    assert got.shape == shape and got.dtype == np.float32
    assert np.abs(np.asarray(got[:]) - ref).max() <= 2e-6 * np.ptp(ref)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]  # the passes' work folder is gone


def test_threads_do_not_change_the_result(tmp_path):
    v = _scan((37, 41, 45))
    one, two = (np.asarray(deconvolve_chunked(v, tmp_path / f"o{n}.zarr", psf_sigma_px=1.0, iterations=3,
                                              chunk_budget_mb=0.5, threads=n)[:]) for n in (1, 2))
    assert np.array_equal(one, two)


def test_an_interrupted_run_resumes_from_its_last_pass(tmp_path, monkeypatch):
    v = _scan((37, 41, 45))
    ref = deconvolve(v, psf_sigma_px=1.0, iterations=3)
    real, calls = dc._run_pass, []

    def dies_in_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(dc, "_run_pass", dies_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        deconvolve_chunked(v, tmp_path / "out.zarr", psf_sigma_px=1.0, iterations=3, chunk_budget_mb=0.5)
    assert not (tmp_path / "out.zarr").exists() and (tmp_path / ".out.zarr.rl" / "pass0.done").exists()
    monkeypatch.setattr(dc, "_run_pass", lambda *a, **k: (calls.append(2), real(*a, **k)))
    got = deconvolve_chunked(v, tmp_path / "out.zarr", psf_sigma_px=1.0, iterations=3, chunk_budget_mb=0.5)
    assert calls.count(2) == 2  # passes 1 and 2 only
    assert np.abs(np.asarray(got[:]) - ref).max() <= 2e-6 * np.ptp(ref)


@pytest.mark.parametrize("kw, match", [
    ({"chunk_budget_mb": 0.2}, "chunk_budget_mb=0.2 is too small"),
    ({"chunk_budget_mb": 0}, "chunk_budget_mb"),
    ({"psf_sigma_px": -1.0}, "psf_sigma_px"),
    ({"iterations": 0}, "iterations"),
])
def test_bad_inputs_are_named(tmp_path, kw, match):
    args = {"psf_sigma_px": 1.0, "iterations": 3, "chunk_budget_mb": 0.5, **kw}
    with pytest.raises(InputError, match=match):
        deconvolve_chunked(_scan((20, 20, 20)), tmp_path / "o.zarr", **args)


def test_nan_is_refused_as_read(tmp_path):
    v = _scan((20, 20, 20))
    v[12, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        deconvolve_chunked(da.from_array(v, chunks=5), tmp_path / "o.zarr", psf_sigma_px=1.0, iterations=2,
                           chunk_budget_mb=0.5)


@pytest.mark.slow
def test_boxes_as_tasks_of_a_local_cluster(tmp_path):
    """With a Dask distributed client each pass's boxes are tasks of the cluster (2 worker processes), each writing
    whole chunks of the shared stores: the result equals the one computed here, byte for byte."""
    distributed = pytest.importorskip("distributed")
    v = _scan((37, 41, 45))
    da.from_array(v, chunks=(16, 20, 20)).to_zarr(str(tmp_path / "scan.zarr"))
    lazy = da.from_zarr(str(tmp_path / "scan.zarr"))
    kw = dict(psf_sigma_px=1.0, iterations=3, chunk_budget_mb=0.5, threads=1)
    here = np.asarray(deconvolve_chunked(lazy, tmp_path / "here.zarr", **kw)[:])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        there = np.asarray(deconvolve_chunked(lazy, tmp_path / "there.zarr", client=client, **kw)[:])
        ran = client.run_on_scheduler(lambda dask_scheduler: "box" in dask_scheduler.task_prefixes)
    assert ran
    assert np.array_equal(here, there)
