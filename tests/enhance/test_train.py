"""Training, model folder, checkpoint/resume, bad model folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from tomo4d import InputError, OverwriteError  # noqa: E402


def test_tiny_model_beats_bicubic_on_held_out_slices(trained):
    _, res = trained
    assert res.steps == 150 and res.resumed_from_step == 0
    # measured ~+1.3 dB for the tiny net after 100-300 steps; require a clear gain
    assert res.val_psnr_db > res.val_psnr_lq_db + 0.5, res
    assert res.rollbacks == 0          # healthy training never trips the divergence guard


def test_model_folder_contents(trained):
    d, _ = trained
    for f in ("weights.safetensors", "config.json", "metrics.json", "training_log.jsonl", "training_curve.png"):
        assert (d / f).is_file(), f
    assert not (d / "checkpoints").exists()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "tomo4d-enhance-model" and cfg["input_dtype"] == "uint16"
    assert cfg["lq_scaling"]["low"] < cfg["lq_scaling"]["high"]
    assert cfg["provenance"]["registration"] == "coarse translation"
    assert cfg["lq_voxel_size_nm"] == [100.0] * 3 and cfg["hq_voxel_size_nm"] == [50.0] * 3
    metrics = json.loads((d / "metrics.json").read_text())
    assert set(metrics) >= {"val_psnr_db", "val_psnr_lq_db", "final_loss"}
    log = [json.loads(line) for line in (d / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 150 and log[0]["loss"] > log[-2]["loss"]


def test_divergence_guard_restores_the_last_healthy_state_and_halves_the_rate(tmp_path, tiny_config):
    import torch

    from tomo4d.enhance.training import Trainer

    lq = np.random.default_rng(0).uniform(-1, 1, (6, 48, 48)).astype(np.float32)
    mask = np.ones(lq.shape, bool)

    def trainer():
        return Trainer(lq, np.clip(lq * 1.2, -1, 1), mask, [0, 1, 2, 3, 4], [5], tiny_config, device="cpu")

    tr = trainer()
    first = tr.guard(float("nan"), float("inf"))             # nothing healthy kept yet: only slows down
    assert first is not None and "restored" not in first and tr.lr_scale == 0.5
    tr.lr_scale = 1.0
    for _ in range(3):
        tr.train_step()
    assert tr.guard(0.10, 0.09) is None                       # within the factor: healthy, kept
    kept = {k: v.clone() for k, v in tr.net.state_dict().items()}
    for _ in range(3):
        tr.train_step()
    assert any(not torch.equal(kept[k], v) for k, v in tr.net.state_dict().items())
    event = tr.guard(1.0, 0.09)                                # 11x the best window: diverged
    assert event is not None and "restored" in event and tr.lr_scale == 0.5
    assert all(torch.equal(kept[k], v) for k, v in tr.net.state_dict().items())
    assert tr.guard(float("nan"), 0.09) is not None and tr.lr_scale == 0.25
    # the halved rate survives a checkpoint and resume
    tr.save_checkpoint(tmp_path)
    again = trainer()
    again.load_checkpoint(tmp_path)
    assert again.lr_scale == 0.25


def test_existing_model_is_not_overwritten(trained, synth_pair, tiny_config):
    from tomo4d.enhance import train

    with pytest.raises(OverwriteError):
        train(*synth_pair, trained[0], config=tiny_config, register=False)


def _weights(d):
    from safetensors.numpy import load_file

    return load_file(str(d / "weights.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["indi", "gan"])
def test_resume_after_interruption_gives_identical_weights(tmp_path, synth_pair, objective):
    from tomo4d.enhance import TrainConfig, baseline_config, train

    cfg = TrainConfig.preset("tiny", steps=16, checkpoint_every=8, seed=3, batch_size=1)
    if objective != "indi":
        cfg = baseline_config(cfg, objective)
    lq, hq = synth_pair
    full = train(lq, hq, tmp_path / "full", config=cfg, register=False)

    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done == 13:  # last checkpoint at step 8
            raise Stop

    with pytest.raises(Stop):
        train(lq, hq, tmp_path / "cut", config=cfg, register=False, progress=interrupt)
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint.safetensors").is_file()
    assert not (tmp_path / "cut" / "config.json").exists()
    resumed = train(lq, hq, tmp_path / "cut", config=cfg, register=False)
    assert resumed.resumed_from_step == 8 and resumed.steps == full.steps == 16
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_with_another_config_is_refused(tmp_path, synth_pair):
    from tomo4d.enhance import TrainConfig, train

    cfg = TrainConfig.preset("tiny", steps=10, checkpoint_every=5)

    def interrupt(done, total):
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*synth_pair, tmp_path / "m", config=cfg, register=False, progress=interrupt)
    with pytest.raises(InputError, match="another training config"):
        train(*synth_pair, tmp_path / "m", config=TrainConfig.preset("tiny", steps=12), register=False)


@pytest.mark.parametrize("damage", ["missing_weights", "missing_config", "format_version", "foreign", "wrong_shapes"])
def test_damaged_model_folders_give_clear_errors(tmp_path, trained, damage):
    import shutil

    from tomo4d.enhance import load_model

    d = tmp_path / "m"
    shutil.copytree(trained[0], d)
    cfg = json.loads((d / "config.json").read_text())
    if damage == "missing_weights":
        (d / "weights.safetensors").unlink()
        match = "lacks weights.safetensors"
    elif damage == "missing_config":
        (d / "config.json").unlink()
        match = "lacks config.json"
    elif damage == "format_version":
        cfg["format_version"] = 99
        cfg["tomo4d_version"] = "9.0"
        (d / "config.json").write_text(json.dumps(cfg))
        match = "format version 99"
    elif damage == "foreign":
        (d / "config.json").write_text(json.dumps({"hello": 1}))
        match = "not a tomo4d enhancement model"
    else:
        cfg["config"]["network"]["base_filters"] = 16
        (d / "config.json").write_text(json.dumps(cfg))
        match = "do not fit"
    with pytest.raises(InputError, match=match):
        load_model(d)


def test_config_validation_names_the_field():
    from tomo4d.enhance import TrainConfig

    with pytest.raises(InputError, match="crop"):
        TrainConfig.preset("tiny", crop=33)
    with pytest.raises(InputError, match="objective"):
        TrainConfig.preset("tiny", objective="diffusion")
    with pytest.raises(InputError, match="preset"):
        TrainConfig.preset("huge")


def test_config_json_round_trip(tmp_path):
    from tomo4d.enhance import TrainConfig

    cfg = TrainConfig.preset("small", steps=5, network={"base_filters": 8})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"preset": "tiny", "steps": 7}))
    assert TrainConfig.from_json(p).steps == 7


def test_crop_larger_than_slices_is_rejected(tmp_path, synth_pair):
    from tomo4d.enhance import TrainConfig, train

    with pytest.raises(InputError, match="crop"):
        train(*synth_pair, tmp_path / "m", config=TrainConfig.preset("tiny", crop=128), register=False)


def test_one_cycle_schedule():
    from tomo4d.enhance.training import one_cycle_lr

    lrs = [one_cycle_lr(s, 100, max_lr=1e-3, warmup_fraction=0.1) for s in range(101)]
    assert abs(max(lrs) - 1e-3) < 1e-9 and int(np.argmax(lrs)) == 10
    assert lrs[0] == pytest.approx(4e-5) and lrs[-1] == pytest.approx(1e-7)


def test_trainer_leaves_torch_global_random_state_alone(tiny_config):
    """The initial weights come from ``config.seed`` (the same as after ``torch.manual_seed``), and torch's
    global random state is as before the call (a Dask worker runs many calls in one process)."""
    import torch

    from tomo4d.enhance.network import InDINet
    from tomo4d.enhance.training import Trainer

    lq = np.random.default_rng(0).uniform(-1, 1, (6, 48, 48)).astype(np.float32)
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    tr = Trainer(lq, np.clip(lq * 1.2, -1, 1), np.ones(lq.shape, bool), [0, 1, 2, 3, 4], [5], tiny_config,
                 device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(tiny_config.seed)
    ref = InDINet(tiny_config.network)
    for (ka, va), (kb, vb) in zip(tr.net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
