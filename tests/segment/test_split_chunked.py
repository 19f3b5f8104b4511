"""The distance-watershed split out of core (tomo4d.segment.split_chunked): the in-memory labels, voxel for voxel."""

import numpy as np
import pytest

from tomo4d.segment import label_particles

SHAPE = (46, 50, 58)


def _touching(seed=2, n=70, shape=SHAPE, vs=(1.0, 1.0, 1.0)):
    """Phase labels: balls (class 2) that touch in pairs and chains, a second phase (class 1) around them."""
    rng = np.random.default_rng(seed)
    g = np.indices(shape, dtype=np.float64) * np.asarray(vs)[:, None, None, None]
    seg = np.ones(shape, np.uint8)
    seg[:, :4] = 0
    for _ in range(n):
        c = rng.uniform(0, np.asarray(shape) * vs)
        r = rng.uniform(2.0, 4.5)
        seg[((g - c[:, None, None, None]) ** 2).sum(0) <= r * r] = 2
    return seg


@pytest.mark.parametrize("vs, budget_mb, min_voxels, conn, h_nm", [
    ((1.0, 1.0, 1.0), 0.05, 0, 1, None),
    ((2.0, 1.0, 1.0), 0.08, 10, 1, None),      # anisotropic voxels: distances in nm
    ((1.0, 1.0, 1.0), 0.05, 5, 3, None),
    ((1.0, 1.0, 1.0), 0.05, 0, 1, 3.2),        # small balls too flat for a marker: markerless pieces, numbered last
])
def test_chunked_split_equals_the_in_memory_split(vs, budget_mb, min_voxels, conn, h_nm):
    from tomo4d.segment.split_chunked import split_particles_chunked

    seg = _touching(vs=vs)
    ref = label_particles(seg, particle_class=2, voxel_size_nm=vs, split=True, connectivity=conn, h_nm=h_nm,
                          min_volume_nm3=min_voxels * float(np.prod(vs)))
    got = split_particles_chunked(seg, particle_class=2, voxel_size_nm=vs, min_voxels=min_voxels, h_nm=h_nm,
                                  connectivity=conn, chunk_budget_mb=budget_mb)
    assert got.n_batches > 3 and got.n_clusters < ref.n_particles      # several batches; clusters were split
    assert got.n_particles == ref.n_particles and got.n_removed == ref.n_removed
    np.testing.assert_array_equal(got.labels, ref.labels)


def test_chunked_split_writes_a_store_from_a_lazy_volume(tmp_path):
    import dask.array as da

    from tomo4d._chunks import SlabStore, plan_slabs
    from tomo4d.io import open_volume
    from tomo4d.segment.split_chunked import split_particles_chunked

    seg = _touching(seed=5)
    ref = label_particles(seg, particle_class=2, split=True).labels
    plan = plan_slabs(SHAPE, bytes_per_voxel=48, chunk_budget_mb=0.5)
    store = SlabStore(tmp_path / "p.ome.zarr", shape=SHAPE, dtype=np.int32, slabs=plan, voxel_size_nm=(1.0,) * 3)
    got = split_particles_chunked(da.from_array(seg, chunks=(7, 50, 58)), particle_class=2, voxel_size_nm=1.0,
                                  out=store, chunk_budget_mb=0.1)
    assert got.labels is None and len(plan) > 1
    np.testing.assert_array_equal(open_volume(tmp_path / "p.ome.zarr").numpy(), ref)
    assert not list(tmp_path.glob(".*"))   # scratch and progress removed


@pytest.mark.parametrize("h_nm", [None, 3.2])
def test_cluster_by_cluster_numbering_is_that_of_one_global_watershed(h_nm):
    """The split floods each cluster on its own (tie-breaking of the queue); its labels are numbered as one
    watershed of the whole volume numbers them: markers by their first voxel, then the markerless pieces."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from tomo4d.segment import split_touching

    m = _touching(seed=9) == 2
    got = split_touching(m, h_nm=h_nm)
    h = 0.5 if h_nm is None else h_nm
    dist = ndi.distance_transform_edt(m).astype(np.float32)
    full, face = ndi.generate_binary_structure(3, 3), ndi.generate_binary_structure(3, 1)
    clusters, n = ndi.label(m, structure=full)
    flat = np.asarray(ndi.maximum(dist, clusters, np.arange(1, n + 1))) < h          # too flat: no marker
    peaks = h_maxima(dist, h, footprint=full).astype(bool) & m & ~np.r_[False, flat][clusters]
    ref = watershed(-dist, ndi.label(peaks, structure=full)[0], mask=m, connectivity=face)
    rest, _ = ndi.label(m & (ref == 0), structure=face)
    ref = np.where(rest > 0, rest + ref.max(), ref)
    assert got.max() == ref.max() and (rest.max() > 0) == (h_nm is not None)
    # the same particles under the same numbers (a few voxels of equal distance may flood the other way)
    pairs, count = np.unique(np.stack([got[m], ref[m]]), axis=1, return_counts=True)
    best = {}
    for (a, b), c in zip(pairs.T, count):
        if c > best.get(a, (0, 0))[1]:
            best[a] = (b, c)
    assert all(a == b for a, (b, _) in best.items())
    assert np.mean(got[m] == ref[m]) > 0.995
