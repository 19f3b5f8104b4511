"""Out-of-core thickness, phase volumes and particles equal their in-memory versions (slabs that do not
divide the volume; particles spanning slab faces, 3+ slabs, U shapes joined only in a later slab)."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest

from tomo4d._chunks import SlabStore, plan_slabs
from tomo4d.io import open_volume
from tomo4d.quantify import electrode_thickness, particle_properties, phase_volumes
from tomo4d.quantify.chunked import electrode_thickness_chunked, phase_volumes_chunked
from tomo4d.quantify.particles_chunked import (
    BYTES_PER_VOXEL,
    label_particles_chunked,
    particle_properties_chunked,
)
from tomo4d.segment import label_particles

VS = (60.0, 50.0, 50.0)


def _electrode(shape=(53, 37, 41), seed=0):
    """Collector / porous anode / porous separator with wavy interfaces and a few columns without collector."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    zc = (6 + 2 * np.sin(y / 5.0) + np.cos(x / 7.0)).astype(int)
    zs = (38 + 3 * np.sin(x / 6.0) + 2 * np.cos(y / 4.0)).astype(int)
    z = np.arange(nz)[:, None, None]
    r = rng.random(shape)
    lab = np.where(r < 0.45, 5, 0).astype(np.uint8)
    anode = (z >= zc) & (z < zs)
    lab[anode] = np.where(r < 0.35, 1, np.where(r < 0.6, 2, np.where(r < 0.7, 3, 0)))[anode]
    lab[z < zc] = 4
    lab[:, :3, :2] = np.where(z[:, :, 0] < 20, 0, 5)[:, :, None]  # no collector in these columns
    return lab


def _lazy(a, cz=7):
    return da.from_array(a, chunks=(cz, a.shape[1], a.shape[2]))


@pytest.mark.parametrize("budget_mb", [0.05, 0.3, 1000.0])
def test_thickness_chunked_is_bit_identical(budget_mb):
    lab = _electrode()
    ref = electrode_thickness(lab, voxel_size_nm=VS)
    got = electrode_thickness_chunked(_lazy(lab), voxel_size_nm=VS, chunk_budget_mb=budget_mb)
    assert len(plan_slabs(lab.shape, bytes_per_voxel=32, chunk_budget_mb=budget_mb)) > (1 if budget_mb < 1 else 0)
    np.testing.assert_array_equal(got.collector_z_nm, ref.collector_z_nm)
    np.testing.assert_array_equal(got.separator_z_nm, ref.separator_z_nm)
    assert (got.mean_um, got.std_um, got.median_um, got.valid_fraction) == \
        (ref.mean_um, ref.std_um, ref.median_um, ref.valid_fraction)
    assert 0 < ref.valid_fraction < 1


@pytest.mark.parametrize("region", [None, "electrode", "mask"])
def test_phase_volumes_chunked_exact(region):
    lab = _electrode(seed=1)
    reg = (np.random.default_rng(2).random(lab.shape) < 0.5) if region == "mask" else region
    ref = phase_volumes(lab, voxel_size_nm=VS, region=reg)
    got = phase_volumes_chunked(_lazy(lab), voxel_size_nm=VS, region=reg if region != "mask" else _lazy(reg),
                                chunk_budget_mb=0.05)
    np.testing.assert_array_equal(got.volume_um3, ref.volume_um3)
    np.testing.assert_array_equal(got.fraction, ref.fraction)
    assert got.region_volume_um3 == ref.region_volume_um3


def _particles(shape=(47, 33, 29), seed=3):
    """Random blobs plus shapes made for slab faces: a column through 3+ slabs, a U joined only at its bottom
    (high z, a later slab), an N zig-zag, diagonal-only contacts (connectivity matters), specks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, np.uint8)
    blobs = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.53
    seg[blobs] = 2
    seg[rng.random(shape) < 0.02] = 3  # specks of another class (a particle class too in some tests)
    seg[2:45, 3, 3] = 2  # a column through every slab
    seg[5:40, 10, 2] = 2  # U: two arms along z ...
    seg[5:40, 10, 8] = 2
    seg[39, 10, 2:9] = 2  # ... joined only at z = 39
    seg[4:20, 20, 20] = 2  # N: up, across at the bottom, down, across at the top
    seg[19, 20, 20:24] = 2
    seg[4:20, 20, 24] = 2
    seg[4, 20, 24:27] = 2
    seg[4:30, 20, 27] = 2
    seg[10, 30, 10] = seg[11, 31, 11] = seg[12, 30, 12] = 2  # diagonal contacts only
    return seg


@pytest.mark.parametrize("connectivity", [1, 3])
@pytest.mark.parametrize("budget_mb", [0.03, 0.14, 0.31])  # slabs of 1, 3 and 7 slices
def test_label_particles_chunked_equals_in_memory(connectivity, budget_mb):
    seg = _particles()
    ref = label_particles(seg, particle_class=2, voxel_size_nm=VS, split=False, connectivity=connectivity,
                          min_volume_nm3=5 * float(np.prod(VS)))
    got = label_particles_chunked(_lazy(seg, 5), particle_class=2, voxel_size_nm=VS, min_voxels=5,
                                  connectivity=connectivity, chunk_budget_mb=budget_mb)
    depth = plan_slabs(seg.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=budget_mb)[0][1]
    assert got.n_slabs >= 7 and (depth == 1 or seg.shape[0] % depth != 0)
    np.testing.assert_array_equal(got.labels, ref.labels)  # the same values, not only up to relabelling
    assert (got.n_particles, got.n_removed) == (ref.n_particles, ref.n_removed)
    # the shapes made to cross slab faces are one particle each
    assert got.labels[2, 3, 3] == got.labels[44, 3, 3] > 0
    assert got.labels[5, 10, 2] == got.labels[5, 10, 8] > 0
    assert got.labels[4, 20, 20] == got.labels[29, 20, 27] > 0
    _same_table(got.table, particle_properties(ref.labels, voxel_size_nm=VS))


def test_label_particles_chunked_several_classes():
    seg = _particles(seed=4)
    ref = label_particles(np.isin(seg, [2, 3]), voxel_size_nm=VS, split=False)
    got = label_particles_chunked(seg, particle_class=[2, 3], voxel_size_nm=VS, chunk_budget_mb=0.03)
    np.testing.assert_array_equal(got.labels, ref.labels)


def _same_table(got, ref):
    a, b = got.to_columns(), ref.to_columns()
    assert a.keys() == b.keys()
    for k in a:
        if k in ("surface_area_um2", "sphericity"):  # per-axis face areas summed in another order
            np.testing.assert_allclose(a[k], b[k], rtol=1e-13, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_particle_properties_chunked_of_sparse_labels():
    lab = label_particles(_particles(seed=5), particle_class=2, voxel_size_nm=VS, split=False).labels
    lab = np.where(lab > 0, lab * 3 + 1, 0)  # values with gaps
    got = particle_properties_chunked(_lazy(lab, 4), voxel_size_nm=VS, chunk_budget_mb=0.03)
    _same_table(got, particle_properties(lab, voxel_size_nm=VS))


def test_chunked_labels_to_store_resume_and_memory(tmp_path):
    """Written slab by slab to an OME-Zarr store; a rerun after a crash resumes; the peak memory follows the
    budget, not the volume (tracemalloc, numpy allocations)."""
    seg = _particles(shape=(96, 64, 64), seed=6)
    src = tmp_path / "seg.ome.zarr"
    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    save_volume(Volume(seg, VS), src)
    lazy = open_volume(src, chunks=(8, 64, 64))
    ref = label_particles(seg, particle_class=2, voxel_size_nm=VS, split=False)
    budget = 0.5  # MiB: slabs of ~10 slices of 64 x 64 at 48 B/voxel
    plan = plan_slabs(seg.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=budget, multiple=8)
    out = tmp_path / "particles.ome.zarr"

    def store():
        return SlabStore(out, shape=seg.shape, dtype=np.int32, slabs=plan, voxel_size_nm=VS, key="k1")

    class Crash(Exception):
        pass

    s = store()
    orig = s.write
    calls = []

    def write(i, block):
        if len(calls) == 3:
            raise Crash
        calls.append(i)
        orig(i, block)

    s.write = write
    with pytest.raises(Crash):
        label_particles_chunked(lazy, particle_class=2, out=s)
    assert not out.exists() and store().n_done() == 3
    tracemalloc.start()
    got = label_particles_chunked(lazy, particle_class=2, out=store())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(open_volume(out).numpy(), ref.labels)
    assert not (tmp_path / ".particles.ome.zarr.slabs").exists()
    assert open_volume(out).voxel_size_nm == VS
    volume_bytes = seg.size * BYTES_PER_VOXEL
    assert peak < 0.5 * volume_bytes, (peak, volume_bytes)  # far below the in-memory working set
    assert peak < 3 * budget * 2**20, peak  # set by the budget
    _same_table(got.table, particle_properties(ref.labels, voxel_size_nm=VS))


def test_thickness_chunked_memory_set_by_budget(tmp_path):
    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    lab = np.concatenate([_electrode(shape=(53, 64, 64))] * 4)  # 212 x 64 x 64
    save_volume(Volume(lab, VS), tmp_path / "lab.ome.zarr")
    lazy = open_volume(tmp_path / "lab.ome.zarr", chunks=(4, 64, 64))  # read slab by slab from the store
    tracemalloc.start()
    electrode_thickness(lab, voxel_size_nm=VS)
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    got = electrode_thickness_chunked(lazy, voxel_size_nm=VS, chunk_budget_mb=0.5)
    chunked = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chunked < 2.5 * 2**20 < 0.25 * whole, (chunked, whole)  # budget 0.5 MiB + the store reads
    np.testing.assert_array_equal(got.separator_z_nm, electrode_thickness(lab, voxel_size_nm=VS).separator_z_nm)
