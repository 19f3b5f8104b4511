"""Particle tracking driven by a DVC field: assignment, field coverage, search radius, real snow case."""

import numpy as np
import pytest

from tomo4d.quantify import link_particles


def test_vanished_particle_does_not_push_its_neighbour_away():
    """Particle A vanished (left the view), B stayed put, a new particle e appeared 11 px beyond B.
    Linking every source (A -> B's particle, B -> e: cost ~5) must not beat the true pair B -> b (cost 0)."""
    a = np.zeros((8, 8, 40), np.int32)
    a[1:7, 1:7, 3:9] = 1    # A
    a[1:7, 1:7, 14:20] = 2  # B
    b = np.zeros_like(a)
    b[1:7, 1:7, 14:20] = 5  # B, unmoved
    b[1:7, 1:7, 25:31] = 6  # new particle e
    s, d, c = link_particles(a, b, np.zeros((2, 3)), src_ids=np.array([1, 2]), search_radius_factor=3.5)
    assert dict(zip(s.tolist(), d.tolist())) == {2: 5}
    assert c[0] == pytest.approx(0.0)
