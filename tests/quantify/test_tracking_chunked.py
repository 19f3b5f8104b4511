"""Tracking of label volumes larger than memory: read slab by slab, the same tracks as in memory."""

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.quantify import track_particles

SHAPE = (70, 48, 52)          # chunks of 16 x 20 x 20 do not divide it
STRETCH = 0.12                # z -> (1 + STRETCH) z between steps: up to ~8 px of axial motion


def _balls(centres, radii, shape, values):
    lab = np.zeros(shape, np.int32)
    g = np.indices(shape, dtype=np.float64)
    for c, r, v in zip(centres, radii, values):
        lab[((g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + (g[2] - c[2]) ** 2) <= r * r] = v
    return lab


def _series(seed=3, n_steps=3):
    """Well separated balls, stretched along z from step to step; label values scrambled per step."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < 30:
        c = rng.uniform((5, 6, 6), (48, SHAPE[1] - 6, SHAPE[2] - 6))
        if all(np.linalg.norm(c - d) > 9.5 for d in centres):
            centres.append(c)
    centres = np.array(centres)
    radii = rng.uniform(2.5, 3.6, len(centres))
    labs, truth = [], []
    for s in range(n_steps):
        moved = centres * [(1 + STRETCH) ** s, 1, 1]
        values = rng.permutation(np.arange(1, len(centres) + 1)) * 7 + 1000 * s   # sparse, step-specific
        labs.append(_balls(moved, radii, SHAPE, values))
        truth.append(values)
    return labs, np.array(truth)


def _stretch(step, pts):
    return np.asarray(pts, float) * [(1 + STRETCH) ** step - 1, 0, 0]


def _zarr(tmp_path, name, a):
    import zarr

    z = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="w", shape=a.shape, chunks=(16, 20, 20), dtype=a.dtype)
    z[:] = a
    return zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="r")


def _same(a, b):
    for k in ("label", "centroid_um", "volume_um3", "cost", "first_step"):
        assert np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True), k


@pytest.mark.parametrize("displacement", [None, _stretch])
def test_streamed_tracks_equal_in_memory(tmp_path, displacement):
    labs, truth = _series()
    ref = track_particles(labs, displacement=displacement, voxel_size_nm=50.0)
    lazy = [_zarr(tmp_path, f"s{i}", a) for i, a in enumerate(labs)]
    # budget of a few slices: several source slabs and destination windows shorter than the motion
    budget = 8 * 64 * SHAPE[1] * SHAPE[2] / 2**20
    got = track_particles(lazy, displacement=displacement, voxel_size_nm=50.0, chunk_budget_mb=budget)
    _same(ref, got)
    if displacement is not None:  # the field drives the links: every ball is followed to the end
        done = ref.label[ref.complete]
        assert len(done) == truth.shape[1]
        order = [np.flatnonzero(truth[0] == v)[0] for v in done[:, 0]]
        assert np.array_equal(done, truth[:, order].T)


def test_streamed_reads_stay_within_the_budget(counting_array):
    labs, _ = _series(seed=5)
    counting = [counting_array(a) for a in labs]
    budget = 8 * 64 * SHAPE[1] * SHAPE[2] / 2**20          # slabs of 8 slices, windows of 32
    got = track_particles(counting, displacement=_stretch, voxel_size_nm=50.0, chunk_budget_mb=budget)
    assert max(r for c in counting for r in c.reads) <= 32
    assert sum(r for r in counting[0].reads) >= 2 * SHAPE[0]   # read more than once, never whole
    _same(track_particles(labs, displacement=_stretch, voxel_size_nm=50.0), got)


def test_dask_and_volume_inputs(tmp_path):
    import dask.array as da

    from tomo4d.volume import Volume

    labs, _ = _series(seed=7, n_steps=2)
    ref = track_particles(labs, voxel_size_nm=50.0)
    lazy = [Volume(da.from_array(labs[0], chunks=(9, 48, 52)), (50.0,) * 3), da.from_array(labs[1], chunks=(9, 48, 52))]
    _same(ref, track_particles(lazy, chunk_budget_mb=0.2))


def test_streamed_bad_labels(tmp_path):
    labs, _ = _series(n_steps=2)
    neg = labs[1].copy()
    neg[60, 5, 5] = -4
    with pytest.raises(InputError, match=r"label_series\[1\] has negative values \(slices"):
        track_particles([_zarr(tmp_path, "a", labs[0]), _zarr(tmp_path, "b", neg)], voxel_size_nm=50.0,
                        chunk_budget_mb=0.1)
    with pytest.raises(InputError, match=r"label_series\[0\] has dtype float32"):
        track_particles([_zarr(tmp_path, "c", labs[0].astype(np.float32)), labs[1]], voxel_size_nm=50.0,
                        chunk_budget_mb=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_assignment_equals_the_dense_one(seed, monkeypatch):
    """A component too large for the dense cost matrix is matched on the sparse graph: the same links and
    costs as the dense assignment, unmatched rows included."""
    from tomo4d.quantify import _linking

    rng = np.random.default_rng(seed)
    n_r, n_d = 60, 70
    cr = np.repeat(np.arange(n_r), 4)
    cd = (cr + rng.integers(-3, 4, cr.size)) % n_d   # a chain: one connected component
    key = np.unique(cr * n_d + cd)
    cr, cd = key // n_d, key % n_d
    cost = rng.uniform(0.05, 3.0, cr.size)
    src_ids = np.arange(100, 100 + n_r)
    dense = _linking._assign(cr, cd, cost, src_ids, n_d)
    monkeypatch.setattr(_linking, "DENSE_MAX", 0)
    sparse = _linking._assign(cr, cd, cost, src_ids, n_d)
    assert 0 < dense[0].size < n_r  # some rows stay unmatched
    for a, b in zip(dense, sparse):
        np.testing.assert_array_equal(a, b)


def test_sparse_assignment_memory_is_set_by_the_pairs(monkeypatch):
    import tracemalloc

    from tomo4d.quantify import _linking

    n = 4000
    cr = np.repeat(np.arange(n), 3)
    cd = cr + np.tile([0, 1, 2], n)
    cost = np.random.default_rng(0).uniform(0.1, 2.0, cr.size)
    tracemalloc.start()
    _linking._assign(cr, cd, cost, np.arange(n), n + 2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # the dense matrix would be 4000 x 8002 x 8 bytes = 256 MB
