"""The numba kernels compile once per install, not once per call pattern: a view, a float64 volume or an
order-1 call reuses the compiled signature of the plain C-contiguous float32 call (each new signature costs
seconds to tens of seconds of compilation)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    big = ndimage.gaussian_filter(rng.normal(size=(32, 32, 36)), 1.5)
    big = ((big - big.mean()) / big.std()).astype(np.float32)
    vol = np.ascontiguousarray(big[:, :, :32])
    return big, vol, ndimage.shift(vol, (0.4, -0.3, 0.2), order=3, mode="mirror").astype(np.float32)


def _signatures(module) -> dict[str, int]:
    return {n: len(getattr(module, n).signatures) for n in dir(module) if hasattr(getattr(module, n), "signatures")}


def test_dvc_views_reuse_the_compiled_kernel(pair):
    from tomo4d.dvc import _kernels, correlate

    big, vol, moved = pair
    correlate(vol, moved, node_spacing=10, half_window=6, backend="numba")
    before = _signatures(_kernels)
    correlate(big[:, :, :32], moved, node_spacing=10, half_window=6, backend="numba")            # a view
    correlate(vol.astype(np.float64), big[:, :, 2:34], node_spacing=10, half_window=6, backend="numba", order=1)
    assert _signatures(_kernels) == before


def test_register_views_reuse_the_compiled_kernels(pair):
    from tomo4d.register import _kernels, register

    big, vol, moved = pair
    register(vol, moved, binning=(2, 1))
    before = _signatures(_kernels)
    reg = register(big[:, :, :32], moved.astype(np.float64), binning=(2, 1), order=1, rigid=True)
    assert _signatures(_kernels) == before
    assert np.allclose(reg.translation_px, [0.4, -0.3, 0.2], atol=0.05)


@pytest.mark.filterwarnings("ignore:global DVC.*max_iterations:RuntimeWarning")
def test_global_gauss_newton_compiles_one_signature(pair):
    from tomo4d.dvc import _gn_kernels, correlate_global

    big, vol, moved = pair
    kw = dict(node_spacing=8, levels=1, max_iterations=1, solver="gauss-newton", threads=1)
    correlate_global(vol, moved, **kw)
    before = _signatures(_gn_kernels)
    correlate_global(big[:, :, :32], moved.astype(np.float64), interpolation="cubic", grey_fields=False,
                     mask=vol > 0, **kw)
    correlate_global(vol, moved, psf_sigma_px=1.0, **kw)  # the z-blur stack and its weights
    assert _signatures(_gn_kernels) == before
