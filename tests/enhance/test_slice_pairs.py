"""Any pair shape (issue 19): training on a stack of registered 2D slice pairs and on a single 2D pair (LQ 2x
coarser in-plane), enhancing a 2D image / a stack of independent slices, and the refused mismatches."""

from __future__ import annotations

import numpy as np
import pytest
from _synth import spheres, to_uint16
from scipy import ndimage

from tomo4d.errors import InputError


def _pair2d(n_slices: int, size: int, *, seed: int, sigma: float = 1.5, noise: float = 0.03):
    """(lq, hq) uint16 Volumes of independent slices: HQ (S, size, size) 50 nm pixels, LQ blurred in-plane,
    2x2 binned (S, size/2, size/2) 100 nm pixels; z voxel 50 nm for both (independent slices)."""
    from tomo4d import Volume

    hq = spheres((n_slices, size, size), seed=seed, rmin=4, rmax=9, n=max(6, n_slices * size * size // 700))
    b = ndimage.gaussian_filter(hq, (0, sigma, sigma))
    lq = b.reshape(n_slices, size // 2, 2, size // 2, 2).mean((2, 4))
    lq = lq + np.random.default_rng(seed + 1).normal(0, noise, lq.shape)
    hq_n = hq + np.random.default_rng(seed + 2).normal(0, 0.01, hq.shape)
    return (Volume(to_uint16(lq), (50.0, 100.0, 100.0)), Volume(to_uint16(hq_n), 50.0))


@pytest.fixture(scope="module")
def single_pair_model(tmp_path_factory):
    from tomo4d.enhance import TrainConfig, train

    lq, hq = _pair2d(1, 192, seed=3)
    d = tmp_path_factory.mktemp("m2d") / "indi"
    cfg = TrainConfig.preset("tiny", steps=150, crop=32, noise_std=0.02, sweep_steps=(1, 2, 4))
    res = train(lq, hq, d, config=cfg, register=False, fov=False)
    return d, res


@pytest.mark.slow
def test_a_single_2d_pair_trains_on_strips_and_beats_bicubic_on_an_unseen_image(single_pair_model):
    from tomo4d.enhance import enhance_image, load_model
    from tomo4d.quality import psnr

    d, res = single_pair_model
    m = load_model(d, device="cpu")
    assert m.info.provenance["route"] == "slices" and m.sweep is not None
    assert res.val_psnr_db > res.val_psnr_lq_db            # validated on an unseen strip of the slice (the middle)
    lq2, hq2 = _pair2d(1, 128, seed=11)                    # another image, never seen
    out = enhance_image(m, lq2.numpy()[0])
    assert out.shape == (128, 128)
    ref = hq2.numpy()[0].astype(np.float32)
    from tomo4d.enhance import upsample2_xy

    bic = m.info.hq_scaling.inverse(m.info.lq_scaling.forward(upsample2_xy(lq2.numpy()[0])))
    rng = float(ref.max() - ref.min())
    assert psnr(ref, out, data_range=rng) > psnr(ref, bic, data_range=rng) + 1.0


@pytest.mark.slow
def test_a_stack_of_independent_slices_is_enhanced_slice_by_slice(single_pair_model):
    from tomo4d.enhance import enhance_slices, enhance_volume, load_model

    m = load_model(single_pair_model[0], device="cpu")
    lq, _ = _pair2d(3, 64, seed=5)
    out = enhance_volume(m, lq, steps=2)                   # slices: the model's route, no z interpolation
    assert out.shape == (3, 64, 64) and out.voxel_size_nm == (50.0, 50.0, 50.0)
    each = np.stack([enhance_slices(m, lq.numpy()[k:k + 1], steps=2, slice_ids=[k])[0] for k in range(3)])
    np.testing.assert_allclose(out.numpy().astype(np.float32), np.clip(np.rint(each), 0, 65535), atol=1)


def test_a_stack_of_slice_pairs_trains_through_the_auto_route(tmp_path):
    from tomo4d.enhance import TrainConfig, prepare_pair, train

    lq, hq = _pair2d(6, 64, seed=7)
    pair = prepare_pair(lq, hq, register=False, fov=False)
    assert pair.route == "slices" and pair.lq.shape == (6, 64, 64) and pair.val_slices == (2,)   # the middle slice
    res = train(lq, hq, tmp_path / "m", config=TrainConfig.preset("tiny", steps=30, crop=32, sweep_steps=(1, 2)),
                register=False, fov=False)
    assert res.recommended_steps in (1, 2)


def test_slice_route_refuses_voxel_sizes_not_2_to_1_in_plane():
    from tomo4d import Volume
    from tomo4d.enhance import prepare_pair

    lq, hq = _pair2d(2, 64, seed=1)
    bad = Volume(lq.numpy(), (50.0, 100.0, 150.0))
    with pytest.raises(InputError, match=r"ratio \(2\.0, 3\.0\) along y, x; the slices route needs 2 along y and x"):
        prepare_pair(bad, hq, route="slices", register=False)


def test_2d_pair_given_to_the_3d_route_and_the_reverse(synth_pair):
    from tomo4d.enhance import prepare_pair

    lq, hq = _pair2d(2, 64, seed=1)
    with pytest.raises(InputError, match=r"route='volume' super-resolves z, y and x.*use route='slices'"):
        prepare_pair(lq, hq, route="volume", register=False)
    with pytest.raises(InputError, match=r"2D image of shape \(32, 32\): a 2D pair.*route='slices'"):
        prepare_pair(lq.numpy()[0], hq.numpy()[0], route="volume", register=False)
    lq3, hq3 = synth_pair
    with pytest.raises(InputError, match=r"route='slices' super-resolves y and x only.*a 3D pair; use route='volume'"):
        prepare_pair(lq3, hq3, route="slices", register=False)
    with pytest.raises(InputError, match="route="):
        prepare_pair(lq3, hq3, route="2d", register=False)


def test_cli_trains_on_a_2d_pair_and_enhances_a_2d_image(tmp_path, capsys):
    import json

    import tifffile

    from tomo4d.cli import main

    lq, hq = _pair2d(1, 128, seed=4)
    tifffile.imwrite(tmp_path / "lq.tif", lq.numpy()[0])
    tifffile.imwrite(tmp_path / "hq.tif", hq.numpy()[0])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "tiny", "steps": 20, "crop": 32, "sweep_steps": [1, 2]}))
    model = str(tmp_path / "m")
    args = ["enhance", "train", "--lq", str(tmp_path / "lq.tif"), "--hq", str(tmp_path / "hq.tif"), "-o", model,
            "--config", str(cfg), "--no-register", "--lq-voxel-size", "50,100,100", "--hq-voxel-size", "50"]
    assert main(args + ["--route", "volume"]) == 2
    assert "use route='slices'" in capsys.readouterr().err
    assert main(args + ["--route", "slices", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recommended_steps"] in (1, 2)
    dst = tmp_path / "out.tif"
    assert main(["enhance", "apply", model, str(tmp_path / "lq.tif"), str(dst), "--voxel-size", "50,100,100",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [1, 128, 128] and info["steps_from"].startswith("validation sweep")
