"""Slab plans from a memory budget and the resumable slab store (tomo4d._chunks)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tomo4d._chunks import SlabStore, fits_budget, plan_slabs, read_slab
from tomo4d.errors import InputError
from tomo4d.io import open_volume


@pytest.mark.parametrize("budget", [0.01, 0.5, 3.0, 1e6])
def test_plan_covers_the_volume_within_the_budget(budget):
    shape, bpv, halo = (101, 40, 30), 24.0, 3
    plan = plan_slabs(shape, bytes_per_voxel=bpv, chunk_budget_mb=budget, halo=halo, multiple=4)
    assert plan[0][0] == 0 and plan[-1][1] == shape[0]
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    depth = plan[0][1] - plan[0][0]
    if depth > 1:  # a slab and its halo fit (a single slice is the floor)
        assert (depth + 2 * halo) * 40 * 30 * bpv <= budget * 2**20
    if 4 <= depth < shape[0]:
        assert depth % 4 == 0
    assert fits_budget(shape, bpv, 1e6) and not fits_budget(shape, bpv, 0.01)
    with pytest.raises(InputError, match="chunk_budget_mb"):
        plan_slabs(shape, bytes_per_voxel=1, chunk_budget_mb=0)


def test_read_slab_clips_the_halo():
    a = np.arange(10 * 2 * 2).reshape(10, 2, 2)
    block, lo = read_slab(a, 0, 3, halo=2)
    assert block.shape[0] == 5 and lo == 0
    block, lo = read_slab(a, 8, 10, halo=2)
    np.testing.assert_array_equal(block, a[6:10])
    assert lo == 2


def test_slab_store_resume_key_and_damage(tmp_path):
    shape, plan = (20, 6, 5), [(0, 8), (8, 16), (16, 20)]
    data = np.random.default_rng(0).integers(0, 9, shape).astype(np.int32)
    path = tmp_path / "v.ome.zarr"

    def store(key="a"):
        return SlabStore(path, shape=shape, dtype=np.int32, slabs=plan, voxel_size_nm=(2.0, 1.0, 1.0), key=key).open()

    s = store()
    s.write(0, data[0:8])
    s.write(1, data[8:16])
    with pytest.raises(InputError, match="1 of 3 slabs"):
        s.publish()
    assert store().n_done() == 2  # the same computation: resumed
    assert store("b").n_done() == 0  # another key: leftovers discarded
    s = store("b")
    for i, (z0, z1) in enumerate(plan):
        s.write(i, data[z0:z1])
    s.write(1, data[8:16])  # a retried slab: the same bytes
    shutil.rmtree(s.progress / "store" / "0")  # damaged after the markers: reopened from scratch
    s = store("b")
    assert s.n_done() == 0
    for i, (z0, z1) in enumerate(plan):
        s.write(i, data[z0:z1])
    s.publish()
    v = open_volume(path)
    np.testing.assert_array_equal(v.numpy(), data)
    assert v.voxel_size_nm == (2.0, 1.0, 1.0) and not s.progress.exists()
