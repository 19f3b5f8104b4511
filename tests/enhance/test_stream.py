"""InDI applied slab by slab into a resumable store (tomo4d.enhance.stream): equal to the in-memory result bit for
bit, whatever the slab plan; a killed run resumes from the slabs on disk; the header keeps the provenance."""

from __future__ import annotations

import numpy as np
import pytest


def _budget_mb(lq, slices: int) -> float:
    """A budget leaving ``slices`` output slices per slab beside the engine (uint16 output)."""
    from tomo4d.enhance.stream import engine_bytes

    ny, nx = lq.shape[1:]
    return (engine_bytes((ny, nx), 4) + slices * 4 * ny * nx * (2 + 8)) / 2**20


@pytest.mark.parametrize("z_interp", [True, False])
@pytest.mark.parametrize("slices", [1, 3])
def test_slab_by_slab_equals_the_in_memory_enhancement(model, synth_pair, tmp_path, z_interp, slices):
    from tomo4d.enhance import enhance_volume
    from tomo4d.enhance.stream import enhance_to_store
    from tomo4d.io import open_volume

    lq, _ = synth_pair
    ref = enhance_volume(model, lq, steps=3, seed=5, z_interp=z_interp)
    whole = ref.data.compute()
    res = enhance_to_store(model, lq, tmp_path / "e.ome.zarr", chunk_budget_mb=_budget_mb(lq, slices), steps=3,
                           seed=5, z_interp=z_interp)
    assert res.n_slabs == -(-whole.shape[0] // slices) and res.published
    got = open_volume(res.path)
    np.testing.assert_array_equal(got.numpy(), whole)
    assert got.voxel_size_nm == ref.voxel_size_nm
    assert got.metadata.extra["enhance"] == ref.metadata.extra["enhance"]
    assert not list(tmp_path.glob(".*.slabs"))


def test_a_killed_run_resumes_from_the_slabs_on_disk(model, synth_pair, tmp_path, monkeypatch):
    from tomo4d import _chunks
    from tomo4d.enhance import enhance_volume
    from tomo4d.enhance.stream import enhance_to_store
    from tomo4d.io import open_volume

    lq, _ = synth_pair
    budget = _budget_mb(lq, 4)
    orig, calls = _chunks.SlabStore.write, []

    def dying(self, i, block):
        if len(calls) >= 2:
            raise KeyboardInterrupt
        calls.append(i)
        orig(self, i, block)

    monkeypatch.setattr(_chunks.SlabStore, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        enhance_to_store(model, lq, tmp_path / "e.ome.zarr", chunk_budget_mb=budget, steps=2, key="k")
    assert not (tmp_path / "e.ome.zarr").exists()
    monkeypatch.setattr(_chunks.SlabStore, "write", orig)
    res = enhance_to_store(model, lq, tmp_path / "e.ome.zarr", chunk_budget_mb=budget, steps=2, key="k")
    assert res.n_resumed == 2 and res.n_slabs == 4
    np.testing.assert_array_equal(open_volume(res.path).numpy(), enhance_volume(model, lq, steps=2).data.compute())
