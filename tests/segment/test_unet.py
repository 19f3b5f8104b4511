"""Attention residual U-Net: shapes, seamless tiling, training on a few slices, persistence,
per-time-step models, and the errors a user can cause."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.errors import FormatError, InputError
from tomo4d.segment import (
    StepModels,
    UNetConfig,
    evaluate_segmentation,
    load_model,
    predict_labels,
    predict_proba,
    train_unet,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slices(blobs, zs=(3, 8, 12)):
    lab = np.zeros_like(blobs.phases)
    for z in zs:
        lab[z] = blobs.phases[z]
    return lab


@pytest.fixture(scope="module")
def trained_unet(blobs):
    """A U-Net trained to segment the blobs (~25 s on 2 cores: only the accuracy test, marked slow, uses it)."""
    from tomo4d.segment import torch_threads

    with torch_threads(1):
        return train_unet(blobs.image, _slices(blobs), config=UNetConfig.small(iterations=120, patch_size=48),
                          seed=0)


@pytest.fixture(scope="module")
def unet(blobs):
    """A briefly trained U-Net: enough for tiling, persistence and the refusals (not for accuracy)."""
    from tomo4d.segment import torch_threads

    with torch_threads(1):
        return train_unet(blobs.image, _slices(blobs), config=UNetConfig.small(iterations=20, patch_size=48),
                          seed=0)


@pytest.mark.slow
def test_few_slices_segment_blobs(trained_unet, blobs):
    unet = trained_unet
    pred = predict_labels(unet, blobs.image)
    region = np.ones(blobs.phases.shape, bool)
    region[[3, 8, 12]] = False
    s = evaluate_segmentation(pred, blobs.phases, region=region)
    assert s.of(2).dice >= 0.9
    assert s.of(1).dice >= 0.9
    assert unet.training["iterations"] == 120 and unet.training["n_slices"] == 3


@pytest.mark.parametrize("shape", [(37, 53), (150, 200)])
def test_tiled_inference_is_seamless(unet, shape):
    """Small overlapping tiles give the same probabilities as one whole-slice tile (up to blending)."""
    from dataclasses import replace

    from tomo4d.segment import synthetic as syn

    img = syn.spheres((1,) + shape, n_particles=40, radius=(4.0, 7.0), seed=5).image[0]
    whole = type(unet)(unet.network, classes=unet.classes, norm=unet.norm,
                       config=replace(unet.config, tile_size=256)).proba_slice(img)
    tiled = type(unet)(unet.network, classes=unet.classes, norm=unet.norm,
                       config=replace(unet.config, tile_size=32, tile_overlap=12)).proba_slice(img)
    assert tiled.shape == whole.shape == (3,) + shape
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(tiled - whole).mean() < 0.02
    assert np.mean(tiled.argmax(0) == whole.argmax(0)) > 0.98


def test_save_load_roundtrip(unet, blobs, tmp_path):
    from safetensors import safe_open

    path = unet.save(tmp_path / "unet.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["format"] == "tomo4d.unet"
    back = load_model(path, device="cpu")
    assert back.classes == unet.classes and back.norm == unet.norm
    np.testing.assert_allclose(predict_proba(back, blobs.image[:2]), predict_proba(unet, blobs.image[:2]), atol=1e-6)


def test_weights_for_other_classes_are_refused(unet, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = unet.save(tmp_path / "u.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        header = dict(fh.metadata())
    meta = json.loads(header["meta"])
    meta["classes"] = [1, 2]  # claims 2 classes, weights have 3 outputs
    header["meta"] = json.dumps(meta)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(FormatError, match="2 classes"):
        load_model(tmp_path / "bad.safetensors")


def test_seeded_and_leaves_global_rng_alone(blobs):
    import torch

    state = torch.random.get_rng_state()
    cfg = UNetConfig.small(iterations=3, patch_size=32, batch_size=2)
    a = train_unet(blobs.image, _slices(blobs), config=cfg, seed=7)
    b = train_unet(blobs.image, _slices(blobs), config=cfg, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_finetune_needs_same_classes(unet, blobs):
    lab = _slices(blobs)
    lab[lab == 3] = 1  # only two classes left
    with pytest.raises(InputError, match="classes"):
        train_unet(blobs.image, lab, init=unet, config=UNetConfig.small(iterations=2))
    tuned = train_unet(blobs.image, _slices(blobs), init=unet, config=unet.config.__class__.small(iterations=2),
                       seed=1)
    assert tuned.training["fine_tuned"] and tuned.norm == unet.norm


def test_step_models(unet, blob_forest, tmp_path, blobs):
    models = StepModels([(0, 2), (3, 9)], [blob_forest, unet])
    assert models.model_for(1) is blob_forest and models.model_for(5) is unet
    with pytest.raises(InputError, match="no model"):
        models.model_for(10)
    with pytest.raises(InputError, match="overlap"):
        StepModels([(0, 3), (3, 9)], [blob_forest, unet])
    folder = models.save(tmp_path / "steps")
    back = load_model(folder)
    assert back.ranges == ((0, 2), (3, 9)) and back.models[0].kind == "rf" and back.models[1].kind == "unet"
    np.testing.assert_array_equal(back.predict_labels(blobs.image[:1], step=4),
                                  predict_labels(unet, blobs.image[:1]))


def test_step_models_need_same_classes(unet, blobs):
    from tomo4d.segment import train_pixel_classifier

    lab = np.zeros_like(blobs.phases)
    lab[5, :4] = 1
    lab[5, -4:] = 2
    two = train_pixel_classifier(blobs.image, lab, n_trees=2)
    with pytest.raises(InputError, match="different classes"):
        StepModels([(0, 1), (2, 3)], [two, unet])


@pytest.mark.parametrize("kwargs, match", [({"depth": 0}, "depth"), ({"tile_overlap": 500}, "tile_overlap"),
                                           ({"device": "tpu"}, "device"), ({"learning_rate": 0.0}, "learning_rate")])
def test_bad_config(kwargs, match):
    with pytest.raises(InputError, match=match):
        UNetConfig(**kwargs)


def test_bad_training_labels(blobs):
    with pytest.raises(InputError, match="no labelled"):
        train_unet(blobs.image, np.zeros_like(blobs.phases), config=UNetConfig.small(iterations=1))
    with pytest.raises(InputError, match="shape"):
        train_unet(blobs.image, blobs.phases[:3], config=UNetConfig.small(iterations=1))
