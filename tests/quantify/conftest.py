"""Shared phantom fixtures of the quantify tests (built once per session, ~10 s)."""

from __future__ import annotations

import numpy as np
import pytest

N_STEPS = 4
NODE_SPACING = 4


class PhantomCase:
    """A 64^3 phantom (4 steps) with truth labels, truth fields and truth change masks in the T0 frame."""

    def __init__(self):
        from scipy import ndimage

        from tomo4d.dvc import DisplacementField
        from tomo4d.phantom import make_experiment

        self.exp = make_experiment(shape=(64, 64, 64), n_steps=N_STEPS, seed=0, core_shell_fraction=0.3)
        t = self.truth = self.exp.truth
        g = self.grid = t.hq_grid
        self.vs = g.voxel_size_nm
        self.labels = [t.labels(s).copy() for s in range(N_STEPS)]
        self.particles = [t.particle_labels(s).copy() for s in range(N_STEPS)]
        # truth T0 -> Tn fields on a node grid (px of the HQ grid), as DVC would measure them
        ax = np.arange(0, 64, NODE_SPACING)
        gs = (len(ax),) * 3
        pos = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3).astype(float)
        self.fields = [None]
        for s in range(1, N_STEPS):
            u = t.displacement(s, np.asarray(g.origin_nm) + pos * self.vs) / self.vs
            phi = np.tile(np.eye(4), (len(pos), 1, 1))
            phi[:, :3, 3] = u
            self.fields.append(DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs,
                                                 node_spacing_px=(NODE_SPACING,) * 3, voxel_size_nm=(self.vs,) * 3))
        # lithiated voxels of every step pulled back onto T0 (nearest neighbour through the truth field)
        idx = np.indices(self.labels[0].shape).astype(np.float32)
        self.changes = [np.zeros(self.labels[0].shape, bool)]
        for s in range(1, N_STEPS):
            u = self.fields[s].dense_displacement(self.labels[0].shape)
            w = ndimage.map_coordinates(self.labels[s], idx + u, order=0, mode="nearest")
            self.changes.append((w == 3) & (self.particles[0] > 0))


@pytest.fixture(scope="session")
def phantom_case():
    return PhantomCase()
