"""Particle labels: components, small objects, watershed splitting (anisotropic voxels too)."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.segment import connected_components, label_particles, match_particles, remove_small_objects, split_touching


def _two_spheres(voxel=(50.0, 50.0, 50.0), r_nm=400.0, gap=0.8, shape_nm=(1200.0, 1200.0, 2200.0)):
    """Two equal spheres whose centres are ``gap * 2r`` apart along x (overlapping when gap < 1)."""
    shape = tuple(int(round(s / v)) for s, v in zip(shape_nm, voxel))
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * v for n, v in zip(shape, voxel)], indexing="ij")
    c = np.array(shape_nm) / 2
    dx = gap * r_nm
    d1 = (grids[0] - c[0]) ** 2 + (grids[1] - c[1]) ** 2 + (grids[2] - c[2] + dx) ** 2
    d2 = (grids[0] - c[0]) ** 2 + (grids[1] - c[1]) ** 2 + (grids[2] - c[2] - dx) ** 2
    truth = np.zeros(shape, np.int32)
    truth[d1 < r_nm**2] = 1
    truth[(d2 < r_nm**2) & (d2 < d1)] = 2
    return truth


@pytest.mark.parametrize("voxel", [(50.0, 50.0, 50.0), (100.0, 50.0, 50.0), (50.0, 100.0, 40.0)])
def test_touching_spheres_are_split(voxel):
    truth = _two_spheres(voxel)
    mask = truth > 0
    assert connected_components(mask).max() == 1  # they touch
    parts = label_particles(mask, voxel_size_nm=voxel)
    assert parts.n_particles == 2
    score = match_particles(parts.labels, truth)
    assert score.n_matched == 2 and score.mean_matched_iou > 0.9
    sphere_nm3 = 4 / 3 * np.pi * 400.0**3
    assert parts.volumes_nm3.sum() == pytest.approx(mask.sum() * np.prod(voxel))
    assert 0.6 * sphere_nm3 < parts.volumes_nm3.min() < sphere_nm3 * 1.1


def test_no_split_keeps_components():
    truth = _two_spheres()
    parts = label_particles(truth > 0, split=False)
    assert parts.n_particles == 1


def test_large_h_merges():
    truth = _two_spheres()
    assert split_touching(truth > 0, voxel_size_nm=50.0, h_nm=5000.0).max() == 1


def test_class_selection_and_small_objects():
    seg = np.ones((10, 30, 30), np.uint8)
    seg[2:8, 2:12, 2:12] = 2          # 600 voxels
    seg[5, 20, 20] = 2                # 1 voxel
    seg[2:4, 20:23, 2:5] = 2          # 18 voxels
    parts = label_particles(seg, particle_class=2, voxel_size_nm=10.0, min_volume_nm3=20 * 1000.0, split=False)
    assert parts.n_particles == 1 and parts.n_removed == 2
    assert parts.volumes_nm3.tolist() == [600 * 1000.0]
    assert parts.labels.dtype == np.int32
    with pytest.raises(InputError, match="particle_class"):
        label_particles(seg, particle_class=7)


def test_remove_small_objects_relabels():
    lab = np.array([[0, 3, 3, 0, 5], [7, 7, 7, 0, 0]])
    out, n = remove_small_objects(lab, min_voxels=2)
    assert n == 1
    assert out.tolist() == [[0, 1, 1, 0, 0], [2, 2, 2, 0, 0]]


def test_synthetic_particles_recovered(blobs):
    parts = label_particles(blobs.phases, particle_class=2, min_volume_nm3=30.0)
    score = match_particles(parts.labels, blobs.particles)
    assert score.f1 >= 0.9
    assert score.recall >= 0.9


def test_2d_input():
    truth = _two_spheres()[12]
    parts = label_particles(truth > 0, voxel_size_nm=(50.0, 50.0))
    assert parts.n_particles == 2


@pytest.mark.parametrize("kwargs, match", [({"voxel_size_nm": (1.0, 2.0)}, "voxel_size_nm"),
                                           ({"h_nm": -1.0}, "h_nm"), ({"min_volume_nm3": -5}, "min_volume")])
def test_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        label_particles(np.ones((4, 5, 6), bool), **kwargs)
