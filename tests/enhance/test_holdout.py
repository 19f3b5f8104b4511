"""The validation split of a training pair: blocks spread through z, guards that never train (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.enhance.data import upsample2_axis
from tomo4d.enhance.holdout import Z_GUARD, holdout_split, spread_pick
from tomo4d.errors import InputError


def _lq_sources(j: int, n_lq: int, shift: float = 0.5) -> set[int]:
    """LQ slices an HQ slice's input takes (ground truth by construction): the x2 cubic z up-sampling of an
    impulse per LQ slice, then the registration's sub-voxel shift (cubic: the taps either side)."""
    out = set()
    for k in range(n_lq):
        e = np.zeros((n_lq, 1, 1), np.float32)
        e[k] = 1
        up = upsample2_axis(e, 0)[:, 0, 0]
        lo, hi = int(np.floor(j + shift)) - 1, int(np.floor(j + shift)) + 2   # 4 cubic taps around j + shift
        if np.any(up[max(lo, 0):min(hi, 2 * n_lq - 1) + 1] != 0):
            out.add(k)
    return out


@pytest.mark.parametrize("n", [96, 200])
def test_training_inputs_never_take_lq_that_images_a_validation_slice(n):
    s = holdout_split(n, 0.1)
    assert s.guard == Z_GUARD and s.note == ""
    val, guards, train = set(s.val), set(s.guard_slices), set(s.train)
    assert not (val & train) and not (guards & train) and not (val & guards)
    assert val | guards | train == set(range(n))
    n_lq = n // 2
    imaging_val = {z // 2 for z in val}                # the LQ slice k images HQ slices 2k, 2k + 1
    for j in train:
        assert not (_lq_sources(j, n_lq) & imaging_val), j
    # the guard is needed: a slice right beside a block does take such LQ
    a = s.blocks[1][0]
    assert _lq_sources(a - 1, n_lq) & imaging_val


def test_blocks_cover_top_middle_bottom_not_one_end_block():
    n = 96                                             # the demo phantom's depth
    s = holdout_split(n, 0.1)
    assert len(s.blocks) == 3
    thirds = {min(2, int(3 * (a + e) / 2 / n)) for a, e in s.blocks}
    assert thirds == {0, 1, 2}
    assert max(s.val) < n - 1 and len(s.val) == round(0.1 * n)   # not the last slices
    assert s.to_dict()["holdout"] == "spread"


def test_split_is_deterministic_and_end_split_kept_for_old_models():
    assert holdout_split(120, 0.1) == holdout_split(120, 0.1)
    e = holdout_split(20, 0.1, holdout="end")
    assert e.val == (18, 19) and e.train == tuple(range(18)) and e.holdout == "end"


@pytest.mark.parametrize("n", [8, 16, 32, 48, 64])
def test_small_stacks_fall_back_and_say_so(n):
    s = holdout_split(n, 0.1)
    assert len(s.train) >= n / 2 and s.val and not set(s.train) & set(s.val)
    assert "too few for the full split" in s.note
    for (_a, e), (a2, _) in zip(s.blocks, s.blocks[1:]):   # guards of neighbouring blocks do not overlap blocks
        assert a2 - e > s.guard
    # no training slice within the guard of a block
    assert all(min(abs(z - v) for v in s.val) > s.guard for z in s.train)


def test_too_large_fraction_is_refused():
    with pytest.raises(InputError, match="val_fraction"):
        holdout_split(10, 0.7)


def test_spread_pick_takes_every_block():
    s = holdout_split(96, 0.1)
    picked = spread_pick(s.val, 4)
    assert len(picked) == 4
    assert all(any(a <= z <= e for z in picked) for a, e in s.blocks)


def test_prepared_pair_spreads_validation_and_training_crops_avoid_it():
    """A 3D pair of 96 HQ slices whose HQ slice z holds the value z: every training crop's target comes from a
    training slice (never a validation or guard slice), and the split is spread."""
    from tomo4d import Volume
    from tomo4d.enhance import TrainConfig
    from tomo4d.enhance.data import prepare_pair
    from tomo4d.enhance.training import Trainer

    nz = 96
    rng = np.random.default_rng(0)
    hq = np.repeat(np.arange(nz, dtype=np.float32)[:, None, None], 32, 1).repeat(32, 2)
    hq += rng.normal(0, 1e-3, hq.shape).astype(np.float32)
    lq = hq.reshape(nz // 2, 2, 16, 2, 16, 2).mean((1, 3, 5))
    pr = prepare_pair(Volume(lq, 100.0), Volume(hq, 50.0), register=False, phi0=np.eye(4), fov=False)
    assert pr.split is not None and len(pr.split.blocks) == 3 and pr.split.guard == Z_GUARD
    assert pr.val_slices == pr.split.val and max(pr.val_slices) < nz - 1
    cfg = TrainConfig.preset("tiny", steps=10, crop=16, batch_size=8)
    tr = Trainer(pr.lq, pr.hq, pr.mask, pr.train_slices, pr.val_slices, cfg, device="cpu")
    seen = set()
    for _ in range(40):
        _, x, *_ = tr.sample_batch()
        seen |= {int(round(float(v))) for v in np.median(x, axis=(1, 2, 3))}
    assert seen <= set(pr.train_slices)
    assert not seen & (set(pr.val_slices) | set(pr.split.guard_slices))
    assert len(seen) > 20                                     # crops come from many training slices


def test_slice_routes_spread_validation_without_guard():
    from tomo4d import Volume
    from tomo4d.enhance.data import prepare_pair

    rng = np.random.default_rng(1)
    hq = rng.random((30, 32, 32), dtype=np.float32)
    lq = hq.reshape(30, 16, 2, 16, 2).mean((2, 4))
    pr = prepare_pair(Volume(lq, (50.0, 100.0, 100.0)), Volume(hq, 50.0), route="slices")
    assert pr.route == "slices" and pr.split.guard == 0 and len(pr.split.blocks) == 3
    # a single pair: strips, the middle one validates (not the bottom of the image)
    big = rng.random((1, 160, 64), dtype=np.float32)
    one = prepare_pair(Volume(big.reshape(1, 80, 2, 32, 2).mean((2, 4)), (50.0, 100.0, 100.0)), Volume(big, 50.0),
                       route="slices", strip=32)
    assert one.hq.shape[0] == 5 and one.val_slices == (2,)
