"""Node batches: a correlation cut into boxes within a memory budget equals the whole-volume one,
reads lazy (dask) volumes box by box, and its peak memory follows the budget, not the volume."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import NodeStatus, correlate

da = pytest.importorskip("dask.array")

SHAPE = (70, 58, 50)  # chunks of the lazy tests below do not divide it


@pytest.fixture(scope="module")
def pair(warp):
    """A textured volume and its image under a 6 % axial stretch + shear + translation (smooth field)."""
    rng = np.random.default_rng(5)
    a = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.2)
    ref = ((a - a.mean()) / a.std() * 1000 + 5000).astype(np.float32)

    def u(x):
        return np.stack([0.06 * (x[0] - 20) + 0.8, 0.02 * (x[0] - 35) - 0.4, 0.3 + 0 * x[2]])

    return ref, warp(ref, u)


KW = dict(node_spacing=8, half_window=6, smooth_sigma_px=1.0, replace=False, curvature_correction=False)


@pytest.mark.parametrize("order", [1, 3])
def test_batches_equal_the_whole_volume(pair, order):
    ref, dfm = pair
    whole = correlate(ref, dfm, order=order, **KW)
    cut = correlate(ref, dfm, order=order, chunk_budget_mb=2, **KW)
    assert whole.notes["batches"] == 1 and cut.notes["batches"] >= 3, cut.notes["batches"]
    if order == 1:  # (a cubic node's box, with the spline's margin, is larger than 2 MiB: one node per batch)
        assert cut.notes["batch_box_mib"] <= 2
    np.testing.assert_array_equal(cut.status, whole.status)
    assert (whole.status == NodeStatus.CONVERGED).mean() > 0.7  # the rest: out of view (top and bottom rows)
    # every value the kernel reads is the same (the B-spline coefficients thanks to the box's spline margin:
    # without it 9e-7); its coordinates, offset by the box corner, round differently: measured 5e-15
    assert np.abs(cut.phi - whole.phi).max() < 1e-9


@pytest.mark.slow
def test_lazy_volumes_and_mask_read_box_by_box(pair):
    """dask volumes (chunks that do not divide the shape) and a dask mask give the numpy result exactly,
    with the integer search on."""
    ref, dfm = pair
    mask = np.zeros(SHAPE, bool)
    mask[5:65, 4:54, 3:47] = True
    kw = dict(KW, chunk_budget_mb=2, search_radius_px=2)
    eager = correlate(ref, dfm, mask=mask, **kw)
    lazy = correlate(da.from_array(ref, chunks=(17, 23, 19)), da.from_array(dfm, chunks=(13, 29, 21)),
                     mask=da.from_array(mask, chunks=(31, 31, 31)), **kw)
    np.testing.assert_array_equal(lazy.status, eager.status)
    np.testing.assert_array_equal(lazy.phi, eager.phi)
    assert (eager.status == NodeStatus.OUTSIDE_MASK).any()


def test_lazy_volume_with_nan_is_refused_when_read(pair):
    from tomo4d.errors import InputError

    ref, dfm = pair
    bad = dfm.copy()
    bad[40, 10, 10] = np.nan
    with pytest.raises(InputError, match="deformed holds 1 non-finite"):
        correlate(da.from_array(ref, chunks=32), da.from_array(bad, chunks=32), **KW)


def _lazy_texture(shape, chunks, shift=0.0):
    """A textured volume computed chunk by chunk (never whole in memory): a sum of sines, shifted along z."""
    def block(block_info=None):
        loc = block_info[None]["array-location"]
        z, y, x = np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in loc], indexing="ij")
        z = z - np.float32(shift)
        return (np.sin(0.9 * z + 0.5 * y) + np.sin(0.7 * y - 0.8 * x) + np.sin(1.1 * x + 0.6 * z)
                + np.sin(0.45 * z * 1.3 + 0.3 * x)).astype(np.float32)

    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=np.float32)


def test_peak_memory_follows_the_budget_not_the_volume():
    """A lazily generated 96^3 pair: with a 6 MiB budget the traced peak stays well below what the
    whole-volume working set (~40 bytes per voxel, 34 MiB) would be, and the field is right."""
    shape = (96, 96, 96)
    ref, dfm = _lazy_texture(shape, 32), _lazy_texture(shape, 32, shift=0.7)
    tracemalloc.start()
    try:
        field = correlate(ref, dfm, node_spacing=16, half_window=6, chunk_budget_mb=6, replace=False, order=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = 40 * np.prod(shape)
    assert field.notes["batches"] > 1
    assert peak < 0.45 * whole, (peak / 2**20, whole / 2**20)
    ok = field.status == NodeStatus.CONVERGED
    assert ok.mean() > 0.9
    assert np.abs(field.displacement_zyx_px[ok] - [0.7, 0.0, 0.0]).max() < 0.05


@pytest.mark.slow
def test_node_batches_as_tasks_of_a_local_cluster(pair, tmp_path):
    """With a Dask distributed client and volumes in Zarr, each batch is a task of the cluster (2 worker
    processes) reading its own box: the field equals the one solved here."""
    distributed = pytest.importorskip("distributed")
    ref, dfm = pair
    paths = []
    for name, v in (("ref", ref), ("dfm", dfm)):
        da.from_array(v, chunks=(16, 29, 25)).to_zarr(str(tmp_path / f"{name}.zarr"))
        paths.append(str(tmp_path / f"{name}.zarr"))
    lazy = [da.from_zarr(p) for p in paths]
    kw = dict(KW, chunk_budget_mb=2, threads=1)
    here = correlate(*lazy, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        there = correlate(*lazy, client=client, **kw)
        ran = client.run_on_scheduler(lambda dask_scheduler: "batch_task" in dask_scheduler.task_prefixes)
    assert here.notes["batches"] > 1 and ran
    np.testing.assert_array_equal(there.status, here.status)
    np.testing.assert_array_equal(there.phi, here.phi)


def test_a_node_whose_window_leaves_its_box_is_solved_again(pair, monkeypatch):
    """With batch boxes deliberately too tight (the reach cut to the spline's support + 1 px), nodes whose
    final windows cross their box's edge are found and solved again in a box of their own: the field
    equals the whole-volume one.  Without the re-solve it does not (checked below on the raw batches)."""
    from tomo4d.dvc import _solve

    ref, dfm = pair
    whole = correlate(ref, dfm, **KW)
    monkeypatch.setattr(_solve, "_reach", lambda options, half_window, search_radius: 3.0)
    cut = correlate(ref, dfm, chunk_budget_mb=2, **KW)
    assert cut.notes["batch_resolved_nodes"] > 0
    ok = whole.status == NodeStatus.CONVERGED
    np.testing.assert_array_equal(cut.status[ok], whole.status[ok])
    assert np.abs(cut.phi[ok] - whole.phi[ok]).max() < 1e-6
    monkeypatch.setattr(_solve, "_resolve_edge_nodes", lambda *a, **k: None)
    raw = correlate(ref, dfm, chunk_budget_mb=2, **KW)
    good = ok & (raw.status == NodeStatus.CONVERGED)
    assert np.abs(raw.phi[good] - whole.phi[good]).max() > 1e-4
