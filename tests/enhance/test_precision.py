"""Mixed precision (issue 19): bf16 autocast on CPU in inference (within a stated tolerance of fp32) and in
training; fp16 refused without CUDA; torch's global autocast state left alone."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.errors import InputError

torch = pytest.importorskip("torch")


def _autocast_state():
    return (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))


def test_bf16_inference_stays_within_the_stated_tolerance_of_fp32(model, synth_pair):
    from tomo4d.enhance import restore_slices
    from tomo4d.enhance.data import upsample2_xy
    from tomo4d.enhance.precision import BF16_TOLERANCE

    lq, _ = synth_pair
    x = model.info.lq_scaling.forward(upsample2_xy(np.asarray(lq.data[2:4], np.float32)))
    before = _autocast_state()
    ref = restore_slices(model, x, steps=4, seed=1)
    low = restore_slices(model, x, steps=4, seed=1, precision="bf16")
    assert _autocast_state() == before                    # no global torch state left changed
    diff = np.abs(low - ref)
    assert 0 < diff.max() <= BF16_TOLERANCE, diff.max()   # bf16 really ran, and stays close to fp32
    assert diff.mean() < BF16_TOLERANCE / 5
    # the model's default precision: load_model(precision=...) / set_precision
    model.set_precision("bf16")
    try:
        np.testing.assert_array_equal(restore_slices(model, x, steps=4, seed=1), low)
    finally:
        model.set_precision("fp32")


def test_bf16_training_steps_run_on_cpu(synth_pair):
    """A Trainer in bf16: finite losses, float32 weights that change, the autocast state restored."""
    from tomo4d.enhance import TrainConfig
    from tomo4d.enhance.training import Trainer

    cfg = TrainConfig.preset("tiny", precision="bf16", batch_size=1, steps=5)
    rng = np.random.default_rng(0)
    lq = rng.uniform(-1, 1, (6, 48, 48)).astype(np.float32)
    before = _autocast_state()
    tr = Trainer(lq, np.clip(lq * 1.2, -1, 1), np.ones(lq.shape, bool), [0, 1, 2, 3, 4], [5], cfg, device="cpu")
    w0 = tr.net.stem.weight.detach().clone()
    losses = [tr.train_step() for _ in range(3)]
    assert all(np.isfinite(losses)) and _autocast_state() == before
    assert tr.net.stem.weight.dtype == torch.float32 and not torch.equal(w0, tr.net.stem.weight)
    val = tr.validate()
    assert np.isfinite(val["val_psnr_db"]) and 0 < val["val_ssim"] <= 1


def test_fp16_without_cuda_is_refused_with_the_fix(tmp_path, trained, synth_pair):
    from tomo4d.enhance import TrainConfig, load_model, restore_slices, train

    with pytest.raises(InputError, match="fp16.*needs a CUDA GPU.*bf16"):
        load_model(trained[0], device="cpu", precision="fp16")
    with pytest.raises(InputError, match="config.precision='fp16' needs a CUDA GPU"):
        train(*synth_pair, tmp_path / "m", config=TrainConfig.preset("tiny", precision="fp16"), register=False,
              device="cpu")
    assert not (tmp_path / "m").exists()                 # refused before any work
    m = load_model(trained[0], device="cpu")
    with pytest.raises(InputError, match="fp16"):
        restore_slices(m, np.zeros((1, 32, 32), np.float32), steps=1, precision="fp16")
    with pytest.raises(InputError, match="not a precision"):
        restore_slices(m, np.zeros((1, 32, 32), np.float32), steps=1, precision="half")
    with pytest.raises(InputError, match="precision"):
        TrainConfig.preset("tiny", precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_resumes_bit_exactly_on_cuda(tmp_path, synth_pair, precision):
    """On a GPU: bf16/fp16 training (fp16 with its gradient scaler checkpointed) resumes to the same weights."""
    from tomo4d.enhance import TrainConfig, train

    cfg = TrainConfig.preset("tiny", steps=12, checkpoint_every=6, batch_size=1, precision=precision)
    full = train(*synth_pair, tmp_path / "full", config=cfg, register=False, device="cuda")

    def stop(done, total):
        if done == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*synth_pair, tmp_path / "cut", config=cfg, register=False, device="cuda", progress=stop)
    cut = train(*synth_pair, tmp_path / "cut", config=cfg, register=False, device="cuda")
    assert cut.resumed_from_step == 6 and np.isfinite(full.val_psnr_db)
    from safetensors.numpy import load_file

    a, b = (load_file(str(d / "weights.safetensors")) for d in (tmp_path / "full", tmp_path / "cut"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
