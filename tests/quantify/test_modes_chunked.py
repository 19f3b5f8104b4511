"""Lithiation modes slab by slab (tomo4d.quantify.modes_chunked) equal the whole-volume modes, bit for bit."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d.quantify import lithiation_modes
from tomo4d.quantify.modes_chunked import lithiation_modes_chunked

FIELDS = ("label", "changed_fraction", "shell_score", "mean_depth", "step_mode", "mode")


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(1)
    lab, _ = ndi.label(ndi.gaussian_filter(rng.normal(size=(40, 48, 48)), 2.5) > 0.05)
    touching = lab.copy()
    touching[lab > 0] = 1 + (np.indices(lab.shape)[0][lab > 0] // 6)   # particles cut into touching z-bands
    maps = [np.abs(ndi.gaussian_filter(rng.normal(size=lab.shape), 1.5)).astype(np.float32) * (1 + s) for s in range(3)]
    return lab, touching, maps


@pytest.mark.parametrize("kind", ["profile", "masks", "threshold", "otsu-threshold", "no-border", "touching"])
@pytest.mark.parametrize("budget", [0.3, 1.0])
def test_slab_modes_equal_the_whole_volume_modes(case, kind, budget):
    lab, touching, maps = case
    changes = [m > 0.08 for m in maps] if kind == "masks" else maps
    kw = {"threshold": {"method": "threshold", "threshold": 0.1}, "otsu-threshold": {"method": "threshold"},
          "no-border": {"exclude_border": False, "min_residual": 0.01},
          "touching": {"exclude_border": False}}.get(kind, {})
    labels = touching if kind == "touching" else lab
    whole = lithiation_modes(labels, changes, voxel_size_nm=(60, 50, 50), **kw)
    got = lithiation_modes_chunked(da.from_array(labels, chunks=(5, 48, 48)),
                                   [da.from_array(c, chunks=(7, 48, 48)) for c in changes], voxel_size_nm=(60, 50, 50),
                                   chunk_budget_mb=budget, **kw)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(got, f), getattr(whole, f), err_msg=f)
    assert got.threshold == whole.threshold or (np.isnan(got.threshold) and np.isnan(whole.threshold))
    assert (whole.mode > 0).sum() >= 3  # some particles are decided


def test_shapes_are_checked(case):
    from tomo4d.errors import InputError

    lab, _, maps = case
    with pytest.raises(InputError, match="changes\\[0\\]"):
        lithiation_modes_chunked(lab, [maps[0][:-1]])
