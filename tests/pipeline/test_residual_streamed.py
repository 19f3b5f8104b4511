"""The residual stage above the chunk budget: each step's map computed in slabs of the budget and written slab
by slab into its store (never held whole), equal to the in-memory run's maps and summary."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.pipeline import load_experiment, run_experiment

from .conftest import EXPERIMENT

# the DVC's own budget fixed and no affine start (over the budget it would be registered out of core, on sampled
# boxes: a slightly different start): only the residual stage streams
EXTRA = "  chunk_budget_mb: 512\n  affine_start: false\n  search_radius_px: 2\nresidual: {{}}\n"


def _maps(out):
    from tomo4d.io import open_volume

    return {p.name: open_volume(p).numpy() for p in sorted((out / "volumes").glob("residual_T0_*.ome.zarr"))}


@pytest.mark.slow  # two runs of a DVC experiment (~1 min idle, 3 min at load)
def test_residual_maps_streamed_above_the_budget_equal_the_in_memory_maps(phantom_dir, tmp_path, monkeypatch):
    from tomo4d import _chunks
    from tomo4d.dvc import _noise_chunked
    from tomo4d.pipeline.stage_io import read_table_of

    floors, chunked = [], _noise_chunked.noise_floor_chunked  # the repeat scan's noise floor, slab by slab
    monkeypatch.setattr(_noise_chunked, "noise_floor_chunked", lambda *a, **k: floors.append(1) or chunked(*a, **k))
    seen = []  # the slabs written through the store
    real = _chunks.SlabStore.__setitem__
    monkeypatch.setattr(_chunks.SlabStore, "__setitem__",
                        lambda self, key, block: (seen.append(key), real(self, key, block))[1])
    runs = {}
    for name, budget in (("memory", ""), ("streamed", "chunk_budget_mb: 0.02\n")):
        p = phantom_dir / f"residual_{name}.yaml"
        text = EXPERIMENT.format(iterations=20).replace("  time_s: [0, 3600, 7200]\n",
                                                        "  time_s: [0, 3600, 7200]\n  repeat: repeat_hq.tif\n")
        p.write_text(text + EXTRA.format() + budget + "truth:\n  labels: truth/labels_hq_T*.tif\n")
        runs[name] = tmp_path / name
        run_experiment(load_experiment(p), runs[name], source=p)
        assert (len(seen) > 4) == (name == "streamed") == bool(floors)  # 0.02 MiB: slabs of a few slices
    mem, streamed = _maps(runs["memory"]), _maps(runs["streamed"])
    assert mem.keys() == streamed.keys() and len(mem) >= 1  # (T2: no usable node with 20 iterations)
    for k in mem:  # the slabs' blur halo makes every value the whole-volume value
        np.testing.assert_allclose(streamed[k], mem[k], rtol=0, atol=1e-5, err_msg=k)
    assert not list((runs["streamed"] / "volumes").glob(".*slabs"))  # published: no progress folder left
    a, b = (read_table_of(runs[n], "residual_summary") for n in ("memory", "streamed"))
    assert float(a["noise_floor"][0]) > 0
    for col in ("noise_floor", "residual_mean", "residual_max", "mean_before_floor", "fraction_above_floor",
                "true_lithiated_fraction", "residual_mean_true_lithiated", "residual_mean_elsewhere"):
        np.testing.assert_allclose(np.asarray(b[col], float), np.asarray(a[col], float), rtol=1e-5, err_msg=col)
