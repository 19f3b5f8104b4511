"""Validation during training (issue 19): the PSNR/SSIM curve in the model folder, the under-training flag,
early stopping with the best validated weights, all through checkpoint/resume (bit-exact), and old
checkpoints/model folders without them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow

pytest.importorskip("torch")


def _weights(d):
    from safetensors.numpy import load_file

    return load_file(str(d / "weights.safetensors"))


def _interrupted(lq, hq, d, cfg, at: int):
    from tomo4d.enhance import train

    class Stop(Exception):
        pass

    def interrupt(done, total):
        if done == at:
            raise Stop

    with pytest.raises(Stop):
        train(lq, hq, d, config=cfg, register=False, progress=interrupt)
    assert (d / "checkpoints" / "checkpoint.safetensors").is_file()


def test_curve_is_stored_and_continues_through_a_resume_with_identical_weights(tmp_path, synth_pair):
    """val_every=4 over 16 steps: evaluations at 4, 8, 12 and the end; early stopping on (patience high: the
    best weights are checkpointed and may be the saved ones); a run cut at step 13 and resumed from the
    checkpoint of step 8 ends with the same weights and the same curve."""
    from tomo4d.enhance import TrainConfig, train
    from tomo4d.enhance.validation_curve import load_curve

    cfg = TrainConfig.preset("tiny", steps=16, checkpoint_every=8, seed=3, batch_size=1, val_every=4,
                             early_stop_patience=50)
    lq, hq = synth_pair
    full = train(lq, hq, tmp_path / "full", config=cfg, register=False)
    _interrupted(lq, hq, tmp_path / "cut", cfg, 13)
    ck = json.loads((tmp_path / "cut" / "checkpoints" / "checkpoint.json").read_text())
    assert [r["step"] for r in ck["log"] if "val_psnr_db" in r] == [4, 8]   # the curve travels in the checkpoint
    resumed = train(lq, hq, tmp_path / "cut", config=cfg, register=False)
    assert resumed.resumed_from_step == 8 and not resumed.stopped_early
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c_full, c_cut = load_curve(tmp_path / "full"), load_curve(tmp_path / "cut")
    assert c_full.steps == (4, 8, 12, 16) and c_full == c_cut
    assert all(math.isfinite(v) for v in c_full.psnr_db) and all(0 < v <= 1 for v in c_full.ssim)
    assert 0 < c_full.ssim_lq < 1 and c_full.precision == "fp32"
    assert (tmp_path / "full" / "validation_curve.png").stat().st_size > 1000
    es = c_full.early_stopping
    assert es["best_step"] == int(c_full.steps[int(np.argmax(c_full.psnr_db))]) == full.best_step
    assert full.val_psnr_db == pytest.approx(max(c_full.psnr_db))    # the saved model is the best validated one
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["early_stopping"] == es and metrics["precision"] == "fp32"
    cfg_json = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg_json["provenance"]["early_stopping"] == es


def test_late_rise_and_the_undertraining_rule():
    from tomo4d.enhance.validation_curve import UNDERTRAINED_DB, late_rise

    steps = [100, 200, 300, 400]
    # last 25 %: 400 against the best of <= 300
    assert late_rise(steps, [20.0, 21.0, 21.5, 21.9]) == pytest.approx(0.4)
    assert late_rise(steps, [20.0, 21.0, 21.5, 21.55]) == pytest.approx(0.05)
    assert late_rise(steps, [20.0, 22.0, 21.5, 21.6]) == pytest.approx(-0.4)
    assert math.isnan(late_rise([400], [22.0]))
    assert 0.05 < UNDERTRAINED_DB < 0.4


class _Scripted:
    """Trainer.validate replaced by a scripted PSNR per step (records the weights at every call)."""

    def __init__(self, psnr_of_step):
        self.psnr_of_step, self.seen, self.nets = psnr_of_step, [], {}

    def __call__(self, trainer, **kw):
        s = trainer.step
        self.seen.append(s)
        self.nets[s] = {k: v.detach().clone().numpy() for k, v in trainer.net.state_dict().items()}
        return {"val_psnr_db": float(self.psnr_of_step(s)), "val_ssim": 0.5, "val_psnr_lq_db": 20.0,
                "val_ssim_lq": 0.4}


def _patched(monkeypatch, script):
    from tomo4d.enhance.training import Trainer

    monkeypatch.setattr(Trainer, "validate", lambda self, **kw: script(self, **kw))


def test_early_stopping_stops_on_a_plateau_and_saves_the_best_weights(tmp_path, synth_pair, monkeypatch):
    """PSNR rises to a peak at step 8, then drops: patience 2 stops at step 16 (two evaluations without a
    gain of 0.05 dB), of 40; the saved weights are those of step 8, and the metadata says so."""
    from tomo4d.enhance import TrainConfig, train
    from tomo4d.enhance.validation_curve import load_curve

    script = _Scripted(lambda s: {4: 20.5, 8: 21.0, 12: 20.99, 16: 20.9}.get(s, 20.0))
    _patched(monkeypatch, script)
    cfg = TrainConfig.preset("tiny", steps=40, checkpoint_every=0, batch_size=1, val_every=4,
                             early_stop_patience=2, early_stop_min_delta_db=0.05)
    res = train(*synth_pair, tmp_path / "m", config=cfg, register=False)
    assert res.stopped_early and res.steps == 16 and res.best_step == 8
    assert script.seen == [4, 8, 12, 16]
    w = _weights(tmp_path / "m")
    for k, v in script.nets[8].items():
        np.testing.assert_array_equal(w[k], v, err_msg=k)
    assert not np.array_equal(w["stem.weight"], script.nets[16]["stem.weight"])   # not the final weights
    curve = load_curve(tmp_path / "m")
    assert curve.steps_trained == 16 and curve.steps_planned == 40
    assert curve.early_stopping == {"patience": 2, "min_delta_db": 0.05, "stopped_early": True, "best_step": 8,
                                    "best_psnr_db": 21.0, "used_best": True}
    assert res.val_psnr_db == 21.0
    assert "stopped at step 16 of 40" in curve.summary


def test_early_stopping_does_not_stop_while_validation_improves(tmp_path, synth_pair, monkeypatch):
    from tomo4d.enhance import TrainConfig, train

    script = _Scripted(lambda s: 20.0 + 0.1 * s)        # +0.4 dB per evaluation
    _patched(monkeypatch, script)
    cfg = TrainConfig.preset("tiny", steps=24, checkpoint_every=0, batch_size=1, val_every=4,
                             early_stop_patience=2, early_stop_min_delta_db=0.05)
    res = train(*synth_pair, tmp_path / "m", config=cfg, register=False)
    assert not res.stopped_early and res.steps == 24 and res.best_step == 24
    assert script.seen == [4, 8, 12, 16, 20, 24]
    assert res.undertrained is True                    # still rising at the end: flagged


def test_early_stopping_resumes_to_the_same_stop(tmp_path, synth_pair, monkeypatch):
    """The patience counter and the best weights go through the checkpoint: a run cut after the peak stops at
    the same step with the same saved weights."""
    from tomo4d.enhance import TrainConfig, train

    _patched(monkeypatch, _Scripted(lambda s: {4: 20.5, 8: 21.0}.get(s, 20.0)))
    cfg = TrainConfig.preset("tiny", steps=40, checkpoint_every=12, batch_size=1, val_every=4,
                             early_stop_patience=3)
    full = train(*synth_pair, tmp_path / "full", config=cfg, register=False)
    _interrupted(*synth_pair, tmp_path / "cut", cfg, 14)
    cut = train(*synth_pair, tmp_path / "cut", config=cfg, register=False)
    assert cut.resumed_from_step == 12 and cut.steps == full.steps == 20 and cut.best_step == full.best_step == 8
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_early_stopping_needs_validations():
    from tomo4d.enhance import TrainConfig
    from tomo4d.errors import InputError

    with pytest.raises(InputError, match="val_every"):
        TrainConfig.preset("tiny", early_stop_patience=3, val_every=0)


def test_a_checkpoint_written_before_these_fields_resumes(tmp_path, synth_pair):
    """An older checkpoint (its config lacks precision / early stopping, no early-stopping state) resumes when
    the run uses their defaults, and ends with the weights of an uninterrupted run."""
    from tomo4d.enhance import TrainConfig, train

    cfg = TrainConfig.preset("tiny", steps=12, checkpoint_every=6, seed=1, batch_size=1)
    full = train(*synth_pair, tmp_path / "full", config=cfg, register=False)
    _interrupted(*synth_pair, tmp_path / "cut", cfg, 8)
    path = tmp_path / "cut" / "checkpoints" / "checkpoint.json"
    meta = json.loads(path.read_text())
    for k in ("precision", "early_stop_patience", "early_stop_min_delta_db"):
        del meta["config"][k]
    del meta["early_stopping"], meta["scaler"]
    path.write_text(json.dumps(meta))
    resumed = train(*synth_pair, tmp_path / "cut", config=cfg, register=False)
    assert resumed.resumed_from_step == 6 and resumed.steps == full.steps
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_model_folder_without_the_curve_loads(tmp_path, trained):
    import shutil

    from tomo4d.enhance import load_model
    from tomo4d.enhance.validation_curve import load_curve

    d = tmp_path / "old"
    shutil.copytree(trained[0], d)
    (d / "validation_curve.json").unlink()
    (d / "validation_curve.png").unlink()
    assert load_curve(d) is None and load_model(d, device="cpu").objective == "indi"
    assert load_curve(trained[0]) is not None
