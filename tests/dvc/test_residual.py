"""Residual maps and the noise floor."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import correlate, noise_floor, residual_map
from tomo4d.errors import InputError


def test_residual_reveals_local_change_only(texture, warp):
    shift = np.array([0.8, -0.5, 0.3])[:, None, None, None]
    dfm = warp(texture, lambda x: np.zeros_like(x) + shift)
    rng = np.random.default_rng(0)
    noisy_ref = texture + rng.normal(0, 20, texture.shape).astype(np.float32)
    changed = dfm + rng.normal(0, 20, texture.shape).astype(np.float32)
    changed[28:34, 28:34, 28:34] += 3000.0  # grey-level change not due to motion ("lithiation")
    field = correlate(noisy_ref, changed, node_spacing=8, half_window=8)
    floor = noise_floor(texture + rng.normal(0, 20, texture.shape).astype(np.float32),
                        texture + rng.normal(0, 20, texture.shape).astype(np.float32))
    assert 0 < floor < 20
    res = residual_map(noisy_ref, changed, field, noise=floor)
    spot = res.residual[27:34, 27:34, 27:34].mean()
    far = np.median(res.residual[5:20, 5:20, 40:55])
    assert spot > 500 and far < 60, (spot, far)
    ident = residual_map(noisy_ref, changed, field.with_(phi=np.tile(np.eye(4), (field.n_nodes, 1, 1))))
    assert ident.mean_before_floor > 3 * res.mean_before_floor
    assert 0 < res.fraction_above_floor < 1 and res.noise_floor == pytest.approx(floor)


def test_residual_bad_input(texture):
    with pytest.raises(InputError, match="DisplacementField"):
        residual_map(texture, texture, object())
    with pytest.raises(InputError, match="statistic"):
        noise_floor(texture, texture, statistic="max")


def test_residual_of_a_field_without_usable_node_is_a_clear_error():
    from tomo4d.dvc import DisplacementField, NodeStatus, node_grid, residual_map
    from tomo4d.errors import InputError

    vol = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    pos, gs = node_grid(vol.shape, node_spacing=8, half_window=4)
    failed = DisplacementField(pos.astype(float), np.tile(np.eye(4), (len(pos), 1, 1)),
                               np.full(len(pos), NodeStatus.DIVERGED, np.int8), grid_shape=gs,
                               node_spacing_px=(8,) * 3, half_window_px=(4,) * 3)
    with pytest.raises(InputError, match="no usable node"):
        residual_map(vol, vol, failed)


def _whole_volume_residual(ref, dfm, field, sigma, noise):
    """The map computed on whole volumes at once (the definition the slab-wise map must equal)."""
    from scipy import ndimage

    coef = ndimage.spline_filter(dfm, order=3, output=np.float32, mode="mirror")
    u = field.dense_displacement(ref.shape)
    grid = np.meshgrid(*[np.arange(n) for n in ref.shape], indexing="ij")
    warped = ndimage.map_coordinates(coef, np.stack([g + d for g, d in zip(grid, u)]), order=3, mode="mirror",
                                     prefilter=False)
    return np.clip(np.abs(ndimage.gaussian_filter(warped - ref, sigma)) - np.float32(noise), 0, None)


def test_slab_wise_map_equals_the_whole_volume_and_reads_lazily(texture, warp, tmp_path):
    """Slabs (with the blur's halo) and boxes of the deformed volume (a stretch that pulls points past the top
    edge, mirrored) give the whole-volume map; dask inputs written slab by slab into a Zarr array give the same."""
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")

    dfm = warp(texture, lambda x: np.stack([0.08 * (x[0] - 10), 0.5 + 0 * x[1], -0.7 + 0 * x[2]]))
    field = correlate(texture, dfm, node_spacing=8, half_window=8)
    mask = np.zeros(texture.shape, bool)
    mask[10:50] = True
    whole = _whole_volume_residual(texture, dfm, field, 2.0, 5.0)
    res = residual_map(texture, dfm, field, noise=5.0, slab=7, mask=mask)
    assert np.abs(res.residual - whole).max() < 1e-5 * np.abs(whole).max()  # B-spline boxes: float32 rounding
    assert res.mean_before_floor == pytest.approx(float(_before_floor(texture, dfm, field)[mask].mean()), rel=1e-5)
    store = zarr.open(str(tmp_path / "res.zarr"), mode="w", shape=texture.shape, chunks=(7, 60, 60), dtype="f4")
    lazy = residual_map(da.from_array(texture, chunks=(13, 31, 60)), da.from_array(dfm, chunks=(17, 60, 29)), field,
                        noise=5.0, slab=7, mask=da.from_array(mask, chunks=20), out=store)
    assert lazy.residual is store
    np.testing.assert_array_equal(np.asarray(store[:]), res.residual)
    assert lazy.mean_before_floor == res.mean_before_floor and lazy.fraction_above_floor == res.fraction_above_floor


def _before_floor(ref, dfm, field):
    return _whole_volume_residual(ref, dfm, field, 2.0, 0.0)


@pytest.mark.parametrize("statistic", ["mean", "p95"])
@pytest.mark.parametrize("sigma", [0.0, 2.0])
@pytest.mark.parametrize("masked", [False, True])
def test_noise_floor_slab_by_slab_equals_the_whole_volume(texture, statistic, sigma, masked, monkeypatch):
    """Over chunk_budget_mb the scans are read slab by slab with the blur's halo (never whole): the same floor."""
    import dask.array as da

    from tomo4d.dvc import residual

    rng = np.random.default_rng(4)
    a = texture + rng.normal(0, 20, texture.shape).astype(np.float32)
    b = texture + rng.normal(0, 20, texture.shape).astype(np.float32)
    mask = (rng.random(texture.shape) > 0.2) if masked else None
    whole = noise_floor(a, b, sigma_px=sigma, mask=mask, statistic=statistic)
    monkeypatch.setattr(residual, "as_image", lambda *x, **k: pytest.fail("a scan was read whole"))
    lazy = [da.from_array(v, chunks=(7,) + v.shape[1:]) for v in (a, b)]
    got = noise_floor(*lazy, sigma_px=sigma, mask=mask, statistic=statistic, chunk_budget_mb=0.2)
    assert got == pytest.approx(whole, rel=1e-6)
