"""Pre-cracked particles in windows of whole particles (tomo4d.quantify.cracks_chunked) equal the whole-volume
report."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d.quantify import detect_cracks
from tomo4d.quantify.cracks_chunked import detect_cracks_chunked


@pytest.mark.parametrize("budget", [0.05, 0.2, 10.0])
def test_windowed_cracks_equal_the_whole_volume(budget):
    rng = np.random.default_rng(3)
    lab, n = ndi.label(ndi.gaussian_filter(rng.normal(size=(48, 56, 56)), 3) > 0.03)
    for i in range(1, n + 1, 2):   # a planar crack across the middle plane of every other particle
        zs = np.argwhere(lab == i)[:, 0]
        if zs.size > 200:
            plane = np.zeros(lab.shape, bool)
            plane[int(np.median(zs))] = True
            lab[(lab == i) & plane] = 0
    lab = np.where(lab > 0, lab * 3 + 7, 0)   # sparse label values
    whole = detect_cracks(lab, voxel_size_nm=(50, 50, 50), closing_nm=60)
    got = detect_cracks_chunked(da.from_array(lab, chunks=(6, 56, 56)), voxel_size_nm=(50, 50, 50), closing_nm=60,
                                chunk_budget_mb=budget)
    assert (whole.crack_volume_fraction > 0).sum() >= 3
    for f in ("label", "crack_volume_fraction", "planarity", "cracked"):
        np.testing.assert_array_equal(getattr(got, f), getattr(whole, f), err_msg=f)

