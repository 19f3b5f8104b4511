"""Tiled InDI inference (issue 20): a slice is processed once plus the overlaps, and the results equal the
previous tiling (4 px reflected border, fixed-stride tiles of the full tile size) within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.enhance.sample import restore_slices
from tomo4d.enhance.tiles import _weight_1d, tile_grid


def _legacy_starts(n, tile, stride):
    if n <= tile:
        return (0,)
    s = list(range(0, n - tile, stride))
    s.append(n - tile)
    return tuple(sorted(set(s)))


def _legacy_restore(model, a, *, steps, seed, tile, overlap, batch=4):
    """The tiling before issue 20 (a copy of the old ``restore_slices``): the reference."""
    import torch

    cfg = model.info.config
    mult, border = cfg.network.multiple, cfg.network.multiple
    S, Y, X = a.shape

    def pad_amounts(n):
        extra = (-(n + 2 * border)) % mult
        return border, border + extra

    pads = (pad_amounts(Y), pad_amounts(X))
    x = np.pad(a, [(0, 0)] + list(pads), mode="reflect")
    noise = np.stack([np.random.default_rng([seed, i]).standard_normal(x.shape[1:], dtype=np.float32)
                      for i in range(S)])
    x = (x + np.float32(cfg.noise_std) * noise).astype(np.float32)
    PY, PX = x.shape[1:]
    t_ = max(mult, (tile // mult) * mult)
    ty, tx = min(t_, PY), min(t_, PX)
    stride = max(mult, ((t_ - overlap) // mult) * mult)
    sys_, sxs = _legacy_starts(PY, ty, stride), _legacy_starts(PX, tx, stride)
    margin, ramp = overlap // 4, max(overlap - 2 * (overlap // 4), 1)
    wy = {sy: _weight_1d(ty, sy > 0, sy + ty < PY, margin, ramp) for sy in sys_}
    wx = {sx: _weight_1d(tx, sx > 0, sx + tx < PX, margin, ramp) for sx in sxs}
    tiles = [(s, sy, sx) for s in range(S) for sy in sys_ for sx in sxs]
    wsum = np.zeros((PY, PX))
    for sy in sys_:
        for sx in sxs:
            wsum[sy:sy + ty, sx:sx + tx] += np.outer(wy[sy], wx[sx])
    with torch.inference_mode():
        for k in range(steps, 0, -1):
            t = k / steps
            pred = np.zeros(x.shape)
            for b0 in range(0, len(tiles), batch):
                chunk = tiles[b0:b0 + batch]
                inp = torch.from_numpy(np.stack([x[s, sy:sy + ty, sx:sx + tx] for s, sy, sx in chunk])[:, None])
                out = model.net(inp, torch.full((len(chunk),), t)).numpy()[:, 0]
                for (s, sy, sx), o in zip(chunk, out):
                    pred[s, sy:sy + ty, sx:sx + tx] += o * np.outer(wy[sy], wx[sx])
            pred = (pred / wsum).astype(np.float32)
            frac = np.float32((1.0 / steps) / t)
            x = frac * pred + (1 - frac) * x
    return x[:, pads[0][0]:pads[0][0] + Y, pads[1][0]:pads[1][0] + X]


@pytest.mark.parametrize("n, tile, overlap, n_tiles", [(512, 512, 64, 1), (2048, 512, 64, 5), (520, 512, 64, 2),
                                                       (96, 64, 16, 2), (100, 512, 64, 1)])
def test_tiles_cover_a_slice_once_plus_the_overlap(n, tile, overlap, n_tiles):
    g = tile_grid((n, n), tile=tile, overlap=overlap, multiple=4)
    assert len(g.starts_y) == n_tiles and g.tile_y <= max(tile, n if n <= tile else 0) or n_tiles == 1
    assert g.starts_y[0] == 0 and g.starts_y[-1] + g.tile_y == n           # covers the slice, never past it
    assert all(s % 4 == 0 for s in g.starts_y) and g.tile_y % 4 == 0
    gaps = np.diff(g.starts_y)
    assert np.all(g.tile_y - gaps >= overlap)                                   # at least the overlap
    processed = len(g.starts_y) * g.tile_y
    # once plus the (requested overlap + rounding to the multiple) per seam
    assert processed <= n + (len(g.starts_y) - 1) * (overlap + 2 * 4) + 4
    if n == 2048:
        assert processed / n < 1.16      # the old tiling: 5 x 512 = 2560 (1.25x per axis, 1.56x per slice)


def test_a_512_slice_is_one_tile_with_no_padding():
    g = tile_grid((512, 512), tile=512, overlap=64, multiple=4)
    assert (g.starts_y, g.starts_x, g.tile_y, g.tile_x) == ((0,), (0,), 512, 512)


@pytest.mark.parametrize("shape, tile, overlap", [((2, 96, 96), 64, 16), ((1, 130, 118), 48, 12),
                                                  ((1, 96, 96), 512, 64)])
def test_results_equal_the_previous_tiling_within_tolerance(model, synth_pair, shape, tile, overlap):
    """Stated tolerance ([-1, 1] units of the tiny trained model, 4 steps): the padding (a reflected border
    of 2**depth px) is the old one, so a slice that fits one tile gives the old untiled result exactly
    (the old tiling cut a padded 520^2 slice into four 512^2 tiles); otherwise only the seams move:
    RMS <= 0.01 and 99th percentile <= 0.05 over the slice, and the RMS difference is no larger than
    the old tiling's own difference from untiled inference (its seam error) plus 0.002."""
    lq, _ = synth_pair
    from tomo4d.enhance import upsample2_xy

    up = model.info.lq_scaling.forward(upsample2_xy(lq.numpy()[2:2 + shape[0]]))
    up = np.pad(up, ((0, 0), (0, max(0, shape[1] - up.shape[1])), (0, max(0, shape[2] - up.shape[2]))),
                mode="reflect")[:, :shape[1], :shape[2]]
    new = restore_slices(model, up, steps=4, seed=3, tile=tile, overlap=overlap)
    old = _legacy_restore(model, up, steps=4, seed=3, tile=tile, overlap=overlap)
    untiled = _legacy_restore(model, up, steps=4, seed=3, tile=1024, overlap=overlap)
    d = np.abs(new - old)
    rms = float(np.sqrt(np.mean(d ** 2)))
    assert rms <= 0.01 and np.percentile(d, 99) <= 0.05, (rms, np.percentile(d, 99))
    assert rms <= float(np.sqrt(np.mean((old - untiled) ** 2))) + 0.002
    if max(shape[1:]) <= tile:
        np.testing.assert_allclose(new, old, atol=1e-5)


def test_tiling_does_not_change_the_result_beyond_the_seams(model, synth_pair):
    """One tile vs many of the same slice (tiles of 40 px, overlap 16, shorter than the receptive field):
    RMS <= 0.005 and 99.9th percentile <= 0.05 ([-1, 1] units)."""
    lq, _ = synth_pair
    from tomo4d.enhance import upsample2_xy

    up = model.info.lq_scaling.forward(upsample2_xy(lq.numpy()[3:5]))
    one = restore_slices(model, up, steps=3, seed=1, tile=512, overlap=64)
    many = restore_slices(model, up, steps=3, seed=1, tile=40, overlap=16, batch=3)
    d = np.abs(one - many)
    assert np.sqrt(np.mean(d ** 2)) <= 0.005 and np.percentile(d, 99.9) <= 0.05
