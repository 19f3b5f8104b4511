"""Fixtures of the segmentation tests: small synthetic volumes with exact labels."""

from __future__ import annotations

import pytest

from tomo4d.segment import synthetic as syn


@pytest.fixture(scope="session")
def blobs():
    """(16, 64, 64) spheres in a matrix with pores; phases 1 matrix, 2 particles, 3 pores."""
    return syn.spheres((16, 64, 64), n_particles=14, radius=(4.0, 7.0), seed=3)


@pytest.fixture(scope="session")
def blob_scribbles(blobs):
    """Sparse labels on slices 3, 8 and 12 (0 elsewhere)."""
    return syn.scribbles(blobs.phases, fraction=0.08, slices=[3, 8, 12], seed=4)


@pytest.fixture(scope="session")
def blob_forest(blobs, blob_scribbles):
    from tomo4d.segment import train_pixel_classifier

    return train_pixel_classifier(blobs.image, blob_scribbles, n_trees=12, seed=0)


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread (much faster than oversubscribed shared cores for tiny nets)."""
    from tomo4d.segment import torch_threads

    with torch_threads(1):
        yield
