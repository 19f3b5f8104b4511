"""Network shape, receptive field, tiled inference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomo4d.enhance.config import NetworkConfig, TrainConfig  # noqa: E402
from tomo4d.enhance.data import Scaling  # noqa: E402
from tomo4d.enhance.model import EnhanceModel, ModelInfo  # noqa: E402
from tomo4d.enhance.network import InDINet, receptive_radius  # noqa: E402

NETS = [NetworkConfig(base_filters=4, depth=1, dilations=(2,), time_dim=8, first_kernel=5),
        NetworkConfig(base_filters=4, depth=2, dilations=(2, 3), time_dim=8)]


def _model(net_cfg, seed=0, noise_std=0.05):
    torch.manual_seed(seed)
    net = InDINet(net_cfg).eval()
    cfg = TrainConfig(network=net_cfg, crop=net_cfg.multiple * 4, noise_std=noise_std)
    info = ModelInfo(cfg, Scaling(-1, 1), Scaling(-1, 1), "float32", (100.0,) * 3, (50.0,) * 3, 3)
    return EnhanceModel(net, info)


@pytest.mark.parametrize("cfg", NETS)
def test_output_shape_and_range(cfg):
    net = InDINet(cfg)
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        y = net(x, torch.tensor([0.3, 1.0]))
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0


@pytest.mark.parametrize("cfg", NETS)
def test_receptive_radius_bounds_the_influence_of_a_pixel(cfg):
    torch.manual_seed(0)
    net = InDINet(cfg).eval()
    n = 128
    x = torch.zeros(1, 1, n, n)
    t = torch.tensor([0.5])
    with torch.no_grad():
        a = net(x, t)
        x2 = x.clone()
        x2[0, 0, 64, 64] = 5.0
        b = net(x2, t)
    diff = (a - b).abs()[0, 0].numpy()
    ys, xs = np.nonzero(diff > 0)
    reach = max(np.abs(ys - 64).max(), np.abs(xs - 64).max())
    r = receptive_radius(cfg)
    assert 0 < reach <= r
    assert reach > r / 4  # the bound is not absurdly loose


@pytest.mark.parametrize("cfg", NETS)
@pytest.mark.parametrize("tile,overlap", [(64, 0), (96, 24)])
def test_tiled_equals_untiled_away_from_tile_edges(cfg, tile, overlap):
    from tomo4d.enhance.sample import restore_slices

    model = _model(cfg)
    r = receptive_radius(cfg)
    ov = max(overlap, 4 * r + 8)  # blending margin overlap//4 >= receptive radius: exact result
    tile = max(tile, 2 * ov + 32)
    img = np.random.default_rng(0).uniform(-1, 1, (2, 150, 170)).astype(np.float32)
    ref = restore_slices(model, img, steps=3, seed=4, tile=1024, overlap=0)
    tiled = restore_slices(model, img, steps=3, seed=4, tile=tile, overlap=ov, batch=3)
    np.testing.assert_allclose(tiled, ref, atol=1e-5)


def test_tiling_with_small_overlap_stays_close_and_smooth():
    from tomo4d.enhance.sample import restore_slices

    model = _model(NETS[0])
    img = np.random.default_rng(1).uniform(-1, 1, (1, 140, 140)).astype(np.float32)
    ref = restore_slices(model, img, steps=2, seed=0, tile=1024, overlap=0)
    tiled = restore_slices(model, img, steps=2, seed=0, tile=64, overlap=16)
    assert np.abs(tiled - ref).max() < 0.2
    assert np.abs(tiled - ref).mean() < 0.01


def test_noise_depends_on_slice_index_not_grouping():
    from tomo4d.enhance.sample import restore_slices

    model = _model(NETS[0])
    img = np.random.default_rng(2).uniform(-1, 1, (3, 40, 40)).astype(np.float32)
    whole = restore_slices(model, img, steps=2, seed=7, slice_ids=[10, 11, 12], tile=1024, overlap=0)
    one = restore_slices(model, img[1:2], steps=2, seed=7, slice_ids=[11], tile=1024, overlap=0)
    np.testing.assert_allclose(one[0], whole[1], atol=1e-6)
    other = restore_slices(model, img[1:2], steps=2, seed=8, slice_ids=[11], tile=1024, overlap=0)
    assert np.abs(other[0] - one[0]).max() > 1e-4


@pytest.mark.parametrize("tile,overlap", [(8, 0), (64, 32), (64, -1)])
def test_bad_tiling_is_rejected(tile, overlap):
    from tomo4d import InputError
    from tomo4d.enhance.tiles import check_tiling

    with pytest.raises(InputError):
        check_tiling(tile, overlap)
