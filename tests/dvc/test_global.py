"""Global (regularised) DVC: large, graded axial stretch with a grey-level change, statuses, options."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import (
    DisplacementField,
    GlobalOptions,
    NodeStatus,
    correlate_global,
    strain_field,
)
from tomo4d.errors import InputError

pytest.importorskip("torch")

Z0, A, B = 8.0, 0.25, 0.0025  # u_z = A (z - Z0) + B (z - Z0)^2: axial strain 0.25 at Z0 -> 0.45 at z = 48


def _u(points):
    dz = points[0] - Z0
    return np.stack([A * dz + B * dz ** 2, 0 * points[1], 0 * points[2]])


def _relit(volume):
    """Contrast falling from 1.0 to 0.4 along z, brightness rising (lithiating silicon)."""
    z = np.linspace(0.0, 1.0, volume.shape[0])[:, None, None]
    mean = float(volume.mean())
    return ((volume - mean) * (1.0 - 0.6 * z) + mean + 800.0 * z).astype(np.float32)


@pytest.fixture(scope="module")
def stretched(texture, warp):
    return texture, _relit(warp(texture, _u))


def _phi0():
    """A global affine guess: the mean stretch about the centre, as a global registration gives."""
    c = (60 - 1) / 2.0
    phi = np.eye(4)
    phi[0, 0] = 1 + A + 2 * B * (c - Z0)
    phi[0, 3] = A * (c - Z0) + B * (c - Z0) ** 2
    return phi


def _error(field):
    true = _u(field.positions_zyx_px.T).T
    ok = field.status == NodeStatus.CONVERGED
    return np.linalg.norm(field.displacement_zyx_px - true, axis=1), ok


@pytest.fixture(scope="module")
def measured(stretched):
    ref, dfm = stretched
    return correlate_global(ref, dfm, phi0=_phi0(), node_spacing=6, levels=2, threads=1)


@pytest.mark.slow
def test_large_graded_stretch_with_grey_change(measured):
    err, ok = _error(measured)
    assert ok.sum() > 0.55 * measured.n_nodes
    # measured: median 0.02 px over the converged nodes (30 % stretch on average, grey change 1 -> 0.6)
    assert np.median(err[ok]) < 0.06, np.median(err[ok])
    st = strain_field(measured)
    e = st.component("hencky_zz")
    z = measured.positions_zyx_px[:, 0].reshape(measured.grid_shape)
    true = np.log(1 + A + 2 * B * (z - Z0))
    sel = st.valid & (z > 12) & (z < 36)
    assert np.abs(e[sel] - true[sel]).mean() < 0.01


@pytest.mark.slow
def test_grey_fields_are_what_makes_it_unbiased(stretched, measured):
    ref, dfm = stretched
    plain = correlate_global(ref, dfm, phi0=_phi0(), node_spacing=6, levels=2, threads=1, grey_fields=False)
    err_plain, ok = _error(plain)
    err, ok2 = _error(measured)
    assert np.median(err_plain[ok]) > 3 * np.median(err[ok2])


@pytest.mark.slow
def test_the_sample_grown_out_of_view_is_flagged(measured):
    """Reference points near the top map beyond the deformed scan (u_z ~ 18 px at z = 50)."""
    z = measured.positions_zyx_px[:, 0]
    top = z + _u(measured.positions_zyx_px.T)[0] > 59 + 6
    assert top.any()
    assert np.all(measured.status[top] == NodeStatus.OUT_OF_VIEW)
    assert not np.any(measured.usable[top])
    bottom = z + _u(measured.positions_zyx_px.T)[0] < -3  # the bottom moves down and out too (u_z = -1.4 at z = 2)
    assert np.all(measured.status[bottom] == NodeStatus.OUT_OF_VIEW)
    within = (z >= 8) & (z + _u(measured.positions_zyx_px.T)[0] < 59 - 12)
    assert np.mean(measured.status[within] == NodeStatus.CONVERGED) > 0.95


@pytest.mark.slow
def test_notes_saved_and_loaded(measured, tmp_path):
    path = measured.save(tmp_path / "g.h5")
    back = DisplacementField.load(path)
    assert back.notes["method"] == "global" and back.notes["options"]["node_spacing"] == 6
    np.testing.assert_allclose(back.phi, measured.phi)


def test_threads_restored(texture):
    import torch

    before = torch.get_num_threads()
    correlate_global(texture, texture, node_spacing=10, levels=1, max_iterations=2, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kw, match", [
    (dict(node_spacing=1), "node_spacing"),
    (dict(node_spacng=4), "did you mean 'node_spacing'"),
    (dict(regularisation=-1), "regularisation"),
    (dict(device="tpu"), "device"),
    (dict(node_spacing=40), "node_spacing=40 is too large"),
    (dict(mask=np.zeros((60, 60, 60), bool)), "mask excludes every voxel"),
    (dict(options={"node_spacing": 4}), "GlobalOptions"),
])
def test_bad_options(texture, kw, match):
    with pytest.raises(InputError, match=match):
        correlate_global(texture, texture, **kw)


def test_bad_pairs(texture):
    with pytest.raises(InputError, match="shape"):
        correlate_global(texture, texture[:50])
    other = DisplacementField(np.zeros((1, 3)), np.eye(4)[None], np.zeros(1, np.int8),
                              notes={"volume_shape_zyx": [50, 60, 60]})
    with pytest.raises(InputError, match="initial was measured on volumes of shape"):
        correlate_global(texture, texture, initial=other)
    assert GlobalOptions(node_spacing=5).node_spacing == 5
