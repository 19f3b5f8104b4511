"""The torch backend of the batched Gauss-Newton agrees with the numba kernel (run on the CPU here)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tomo4d.dvc import correlate
from tomo4d.errors import InputError

torch = pytest.importorskip("torch")


def _affine_warp(texture, warp):
    f = np.array([[1.03, 0.01, 0.0], [0.0, 0.98, 0.0], [0.0, 0.0, 1.01]])
    c = np.array([30.0, 30.0, 30.0])

    def u(x):
        return np.einsum("ij,j...->i...", f - np.eye(3), x - c[:, None, None, None]) + np.array(
            [0.6, -1.2, 0.3])[:, None, None, None]

    return warp(texture, u)


@pytest.mark.parametrize("order", [1, 3])
def test_torch_matches_numba_on_texture(texture, warp, order):
    """Same nodes, same algorithm: displacements agree to < 1e-3 px (float32 vs compiled float32 sampling),
    F to 1e-4, statuses equal; measured ~1e-5 px."""
    dfm = _affine_warp(texture, warp)
    kw = dict(node_spacing=12, half_window=6, order=order, replace=False)
    a = correlate(texture, dfm, backend="numba", **kw)
    b = correlate(texture, dfm, backend="torch", device="cpu", **kw)
    assert b.notes["backend"] == "torch:cpu" and a.notes["backend"] == "numba"
    d = np.linalg.norm(a.displacement_zyx_px - b.displacement_zyx_px, axis=1)
    assert np.median(d) < 1e-3 and d.max() < 5e-3
    assert np.abs(a.F - b.F).max() < 1e-4
    np.testing.assert_array_equal(a.status, b.status)
    assert a.converged.mean() > 0.9


@pytest.mark.slow
@pytest.mark.realdata
def test_torch_matches_numba_on_snow_sine(snow_sine):
    """Snow acceptance case: median |u_torch - u_numba| < 0.005 px (measured 3e-6), same convergence."""
    ref, dfm = snow_sine
    a = correlate(ref, dfm, node_spacing=10, half_window=10, backend="numba", replace=False)
    b = correlate(ref, dfm, node_spacing=10, half_window=10, backend="torch", device="cpu", replace=False)
    d = np.linalg.norm(a.displacement_zyx_px - b.displacement_zyx_px, axis=1)
    assert np.median(d) < 0.005
    np.testing.assert_array_equal(a.status, b.status)
    assert b.converged.all()


def test_torch_mask_and_failing_nodes(texture):
    """Masked-out and textureless nodes are skipped identically by both backends."""
    ref = texture.copy()
    ref[:, :, :20] = 5000.0
    mask = np.ones(ref.shape, bool)
    mask[:, :12, :] = False
    kw = dict(node_spacing=10, half_window=6, mask=mask, replace=False)
    a = correlate(ref, ref, backend="numba", **kw)
    b = correlate(ref, ref, backend="torch", device="cpu", **kw)
    np.testing.assert_array_equal(a.status, b.status)
    assert np.abs(b.displacement_zyx_px[b.converged]).max() < 1e-3


def test_backend_choice_and_bad_input(texture):
    kw = dict(node_spacing=12, half_window=6)
    auto = correlate(texture, texture, backend="auto", **kw)
    assert auto.notes["backend"] == ("torch:cuda" if torch.cuda.is_available() else "numba")
    with pytest.raises(InputError, match="backend='gpu'"):
        correlate(texture, texture, backend="gpu", **kw)
    with pytest.raises(InputError, match="device='cpu' needs backend='torch'"):
        correlate(texture, texture, backend="numba", device="cpu", **kw)
    with pytest.raises(InputError, match="device='nonsense'"):
        correlate(texture, texture, backend="torch", device="nonsense", **kw)


def test_import_does_not_load_torch():
    code = "import sys, tomo4d, tomo4d.dvc; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
