"""Fixtures of the enhancement tests: synthetic pairs and one tiny trained model (module-shared)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synth import pair  # noqa: E402


@pytest.fixture(scope="session")
def synth_pair():
    """(lq, hq): uint16 Volumes, HQ (16, 96, 96) at 50 nm, LQ (8, 48, 48) at 100 nm, same field."""
    return pair((16, 96, 96), seed=0)


@pytest.fixture(scope="session")
def tiny_config():
    from tomo4d.enhance import TrainConfig

    return TrainConfig.preset("tiny", steps=150, crop=32, noise_std=0.02)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synth_pair, tiny_config):
    """(model_dir, TrainResult) of the tiny InDI model trained on ``synth_pair`` (no registration)."""
    from tomo4d.enhance import train

    lq, hq = synth_pair
    d = tmp_path_factory.mktemp("model") / "indi"
    res = train(lq, hq, d, config=tiny_config, register=False)
    return d, res


@pytest.fixture
def model(trained):
    from tomo4d.enhance import load_model

    return load_model(trained[0], device="cpu")
