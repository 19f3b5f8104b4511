"""The outlier test (flag_outliers) on exact fields: sound nodes of a curved field kept, a planted outlier flagged."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import DisplacementField, NodeStatus, flag_outliers
from tomo4d.dvc.field import node_grid

SHAPE = (320, 208, 208)


def _graded(spacing, *, stretch=0.35, curvature=3.1e-4):
    """A graded axial stretch ``u_z = a z + b z^2`` (strain 35 % at z = 0 to 55 % at z = 320 with the defaults), each
    node's Phi holding its exact displacement and gradient, as a converged correlation returns them."""
    pos, gs = node_grid(SHAPE, node_spacing=spacing, half_window=spacing)
    z = pos[:, 0].astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = stretch * z + curvature * z ** 2
    phi[:, 0, 0] = 1.0 + stretch + 2.0 * curvature * z
    return DisplacementField(pos.astype(float), phi, np.zeros(len(pos), np.int8), grid_shape=gs,
                             node_spacing_px=(spacing,) * 3, half_window_px=(spacing,) * 3)


@pytest.mark.parametrize("spacing", [10, 35])
def test_sound_nodes_of_a_graded_stretch_are_not_outliers(spacing):
    """At the study's 35 px spacing the plain neighbour average misses such a field by b d^2 = 0.38 px and flagged
    80 of the 128 nodes; the predictions from the neighbours' own gradients are exact for it."""
    flagged = flag_outliers(_graded(spacing))
    assert flagged.notes["outliers"] == 0
    assert np.all(flagged.status == NodeStatus.CONVERGED)


@pytest.mark.parametrize("node", [(3, 1, 2), (0, 0, 0), (7, 3, 3)])
def test_a_planted_outlier_is_flagged_alone(node):
    """One node moved 1.5 px off the graded field (inside, at a corner, at the far corner) is the only one flagged."""
    field = _graded(35)
    k = np.ravel_multi_index(node, field.grid_shape)
    phi = field.phi.copy()
    phi[k, 1, 3] += 1.5
    flagged = flag_outliers(field.with_(phi=phi))
    assert flagged.notes["outliers"] == 1
    assert flagged.status[k] == NodeStatus.OUTLIER
