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


def _uniform_field(shift, shape, spacing=5):
    from tomo4d.dvc import DisplacementField

    axes = [np.arange(spacing, n - spacing + 1, spacing) for n in shape]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = shift
    return DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=tuple(len(a) for a in axes),
                             node_spacing_px=(spacing,) * 3, half_window_px=(spacing,) * 3)


def test_field_prediction_is_not_overruled_by_the_no_motion_guess():
    """A moved 6 px (the field, measured all around it, says so) and half of it left the view; a new particle of
    A's size appeared where A was.  The old tracker also looked for A where it was (penalty 0.25) and took the
    newcomer (cost 0.25 < 1.3 for the half-cut true partner); with a covering field there is no fallback guess."""
    from tomo4d.quantify import track_particles

    shape = (23, 20, 20)
    a = np.zeros(shape, np.int32)
    a[14:20, 7:13, 7:13] = 1
    b = np.zeros_like(a)
    b[20:23, 7:13, 7:13] = 4   # A moved +6 in z, half cut by the top of the volume
    b[14:20, 7:13, 7:13] = 9   # a new particle where A was
    tr = track_particles([a, b], displacement=[_uniform_field((6.0, 0, 0), shape)], voxel_size_nm=50)
    rows = {int(r[0]): int(r[1]) for r in tr.label}
    assert rows[1] == 4
    assert rows[0] == 9 and tr.first_step[tr.label[:, 1] == 9][0] == 1   # the newcomer starts a track
