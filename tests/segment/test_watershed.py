"""One cluster's distance watershed (tomo4d.segment._watershed): the closed-form paths for clusters with one
regional maximum and one marker equal scikit-image's reconstruction and watershed voxel for voxel."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d.segment._watershed import _one_regional_maximum, cluster_split


def _reference(mine, dist, h, connectivity):
    """The split with scikit-image only: h-maxima by reconstruction, watershed from every marker."""
    from skimage.morphology import reconstruction
    from skimage.segmentation import watershed

    full = ndi.generate_binary_structure(3, 3)
    fp = ndi.generate_binary_structure(3, connectivity)
    markers = np.zeros(mine.shape, np.int32)
    if float(dist[mine].max(initial=0.0)) >= h:
        res = 2 * np.finfo(dist.dtype).resolution * np.abs(dist)
        rec = reconstruction(dist - h - res, dist, method="dilation", footprint=full)
        markers, _ = ndi.label(((dist - rec) >= h) & mine, structure=full, output=np.int32)
    lab = watershed(-dist, markers, mask=mine, connectivity=fp) if markers.any() else markers
    rest, _ = ndi.label(mine & (lab == 0), structure=fp, output=np.int32)
    return lab, markers, rest


def _clusters(seed, vs, n_balls=60, shape=(40, 44, 48)):
    """The clusters of a random packing of balls of radius 1.5-5 voxels (single balls, pairs, chains, and
    one-voxel-thin bridges that only full connectivity joins), each in its bounding box with its distances."""
    rng = np.random.default_rng(seed)
    g = np.indices(shape, dtype=np.float64)
    m = np.zeros(shape, bool)
    for _ in range(n_balls):
        c = rng.uniform(0, shape)
        m |= ((g - c[:, None, None, None]) ** 2).sum(0) <= rng.uniform(1.5, 5.0) ** 2
    m[::7, ::5, 3] = True                        # isolated voxels and thin diagonal contacts
    dist = ndi.distance_transform_edt(m, sampling=vs).astype(np.float32)
    lab, _ = ndi.label(m, structure=np.ones((3, 3, 3), bool))
    for k, sl in enumerate(ndi.find_objects(lab), 1):
        mine = lab[sl] == k
        yield mine, np.where(mine, dist[sl], 0).astype(np.float32)


@pytest.mark.parametrize("seed, vs, h, conn", [(0, (1.0, 1.0, 1.0), 0.5, 1), (1, (2.0, 1.0, 1.0), 1.0, 1),
                                               (2, (1.0, 1.0, 1.0), 0.5, 3), (3, (1.0, 0.7, 0.7), 1.7, 1)])
def test_cluster_split_equals_scikit_image_on_every_cluster(seed, vs, h, conn):
    n_single = n_many = 0
    for mine, dist in _clusters(seed, vs):
        got, want = cluster_split(mine, dist, h, conn), _reference(mine, dist, h, conn)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        one = _one_regional_maximum(mine, dist, ndi.generate_binary_structure(3, 3))
        n_single, n_many = n_single + one, n_many + (not one)
    assert n_single > 20 and n_many > 5          # both paths taken


def test_one_regional_maximum_against_its_definition():
    """Smooth random maps with plateaus and saddles of equal height: "one" exactly where scikit-image finds one
    regional maximum (a wrong "one" would put the closed form on a map with several)."""
    from skimage.morphology import local_maxima

    full = ndi.generate_binary_structure(3, 3)
    rng = np.random.default_rng(5)
    singles = 0
    for _ in range(40):
        g = np.indices((9, 10, 11), dtype=np.float64)
        d = sum(np.exp(-((g - rng.uniform(0, 9, (3, 1, 1, 1))) ** 2).sum(0) / rng.uniform(4, 20))
                for _ in range(int(rng.integers(1, 4))))       # one to three hills
        d = np.round(d, int(rng.integers(1, 4)))     # plateaus, saddles of equal height
        mine = d > np.percentile(d, rng.uniform(10, 60))
        d = np.where(mine, d, 0).astype(np.float32)
        n_max = ndi.label(local_maxima(d, connectivity=3, allow_borders=True) & mine, structure=full)[1]
        one = _one_regional_maximum(mine, d, full)
        assert one == (n_max == 1), n_max
        singles += n_max == 1
    assert 10 <= singles <= 30, singles
