"""User mistakes in enhancement: devices, damaged model folders and checkpoints, configs, NaN pairs.

Each must be an :class:`InputError` (exit status 2 on the command line) whose message names the
input and the fix, never an internal error or a bare library message.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomo4d import InputError  # noqa: E402
from tomo4d._validate import check_device  # noqa: E402
from tomo4d.cli import main  # noqa: E402
from tomo4d.errors import FormatError  # noqa: E402


# -- devices --------------------------------------------------------------------------------------
@pytest.fixture
def cpu_only_torch(monkeypatch):
    """Torch as a CPU-only build reports itself (also on a machine with a GPU)."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu_torch(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_on_a_cpu_only_torch_is_refused_with_the_fix(cpu_only_torch, device):
    with pytest.raises(InputError, match=r"device=.*cuda.* but this torch build has no CUDA \(torch .*CPU-only\); "
                                         r"use --device cpu"):
        check_device("device", device)


def test_cuda_build_without_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="sees no GPU.*--device cpu"):
        check_device("device", "cuda")


def test_cuda_index_beyond_the_gpus_present(one_gpu_torch):
    with pytest.raises(InputError, match=r"device='cuda:7' but torch sees 1 GPU \(cuda:0\)"):
        check_device("device", "cuda:7")
    assert check_device("device", "cuda:0") == torch.device("cuda:0")   # no GPU is touched


@pytest.mark.parametrize("device", ["gpu", "", "cuda:-1", "meta", 3.5, True, 0, ["cpu"]])
def test_unknown_devices_are_refused_by_name(device):
    with pytest.raises(InputError, match=r"device=.* (is not a torch device|is not a device name|not supported)"):
        check_device("device", device)


def test_auto_is_the_default_device():
    dev = check_device("device", "auto")
    assert isinstance(dev, torch.device) and dev == check_device("device", None)
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_model_and_train_check_the_device_before_any_work(cpu_only_torch, trained, synth_pair, tmp_path,
                                                               tiny_config):
    from tomo4d.enhance import load_model, train

    with pytest.raises(InputError, match="has no CUDA.*--device cpu"):
        load_model(trained[0], device="cuda")
    with pytest.raises(InputError, match="has no CUDA.*--device cpu"):
        train(*synth_pair, tmp_path / "m", config=tiny_config, register=False, device="cuda")
    assert not (tmp_path / "m").exists()
    m = load_model(trained[0], device="cpu")
    with pytest.raises(InputError, match="has no CUDA"):
        m.to("cuda")


# -- model folders --------------------------------------------------------------------------------
def _edit_config(d, fn):
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _set(path, value):
    def fn(cfg):
        node = cfg
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


def _pop(key):
    return lambda cfg: cfg.pop(key)


def _wrong_shapes(d):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "weights.safetensors"))
    save_file({k: torch.zeros(tuple(s + 1 for s in v.shape)) for k, v in state.items()},
              str(d / "weights.safetensors"))


def _nan_weights(d):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "weights.safetensors"))
    k = next(iter(state))
    state[k] = state[k].clone()
    state[k].view(-1)[0] = float("nan")
    save_file(state, str(d / "weights.safetensors"))


CONFIG_DAMAGE = {
    "list_instead_of_object": (lambda d: (d / "config.json").write_text("[1, 2, 3]"), "JSON array"),
    "not_json": (lambda d: (d / "config.json").write_bytes(b"\x80\x04\x95 pickled?"), "is not a JSON"),
    "text_not_json": (lambda d: (d / "config.json").write_text("format: tomo4d"), "is not a JSON"),
    "missing_key": (lambda d: _edit_config(d, _pop("hq_scaling")), "lacks the field.*hq_scaling"),
    "config_is_list": (lambda d: _edit_config(d, _set(["config"], [1])), "field config is a JSON array"),
    "network_depth_string": (lambda d: _edit_config(d, _set(["config", "network", "depth"], "1")),
                             r"config\.network\.depth='1'"),
    "unknown_config_key": (lambda d: _edit_config(d, _set(["config", "colour"], "red")),
                           r"config\.colour is not a field"),
    "steps_out_of_range": (lambda d: _edit_config(d, _set(["config", "steps"], 0)), r"config\.steps=0"),
    "scaling_lo_equals_hi": (lambda d: _edit_config(d, _set(["lq_scaling"], {"low": 5.0, "high": 5.0})),
                             "lq_scaling.*low < high"),
    "scaling_nan": (lambda d: _edit_config(d, _set(["hq_scaling", "low"], float("nan"))),
                    r"hq_scaling \(low=nan.*low < high"),
    "scaling_string": (lambda d: _edit_config(d, _set(["hq_scaling", "high"], "9")), "hq_scaling.*low < high"),
    "scaling_list": (lambda d: _edit_config(d, _set(["lq_scaling"], [0, 1])), "lq_scaling"),
    "voxel_size_string": (lambda d: _edit_config(d, _set(["lq_voxel_size_nm"], "100")), "lq_voxel_size_nm"),
    "voxel_size_two": (lambda d: _edit_config(d, _set(["hq_voxel_size_nm"], [50, 50])), "hq_voxel_size_nm"),
    "voxel_size_zero": (lambda d: _edit_config(d, _set(["hq_voxel_size_nm"], [50, 0, 50])), "hq_voxel_size_nm"),
    "dtype_garbage": (lambda d: _edit_config(d, _set(["input_dtype"], "wibble")), "input_dtype='wibble'"),
    "dtype_number": (lambda d: _edit_config(d, _set(["input_dtype"], 16)), "input_dtype=16"),
    "steps_fraction": (lambda d: _edit_config(d, _set(["recommended_steps"], 2.5)), "recommended_steps=2.5"),
    "provenance_list": (lambda d: _edit_config(d, _set(["provenance"], [1])), "provenance"),
}

WEIGHTS_DAMAGE = {
    "pickle": (lambda d: (d / "weights.safetensors").write_bytes(pickle.dumps({"w": np.zeros(3)})),
               "is not a safetensors file"),
    "text": (lambda d: (d / "weights.safetensors").write_text("hello"), "is not a safetensors file"),
    "empty": (lambda d: (d / "weights.safetensors").write_bytes(b""), "is not a safetensors file"),
    "wrong_shapes": (_wrong_shapes, "do not fit its config.json"),
    "nan_weights": (_nan_weights, "NaN/Inf"),
}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE) + sorted(WEIGHTS_DAMAGE))
def test_damaged_model_folders_name_the_file_and_the_fix(tmp_path, trained, damage):
    from tomo4d.enhance import load_model

    d = tmp_path / "m"
    shutil.copytree(trained[0], d)
    fn, match = {**CONFIG_DAMAGE, **WEIGHTS_DAMAGE}[damage]
    fn(d)
    with pytest.raises(FormatError, match=match) as info:
        load_model(d, device="cpu")
    msg = str(info.value)
    assert str(d) in msg and "tomo4d enhance train" in msg, msg
    assert "np.float" not in msg and "\n" not in msg


def test_model_path_that_is_a_file(tmp_path):
    from tomo4d.enhance import load_model

    f = tmp_path / "model.json"
    f.write_text("{}")
    with pytest.raises(InputError, match="is a file, not a folder"):
        load_model(f, device="cpu")


def test_degenerate_scaling_is_refused_where_it_is_built():
    from tomo4d.enhance import Scaling

    for lo, hi in [(1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))]:
        with pytest.raises(InputError, match="low < high"):
            Scaling(lo, hi)
    with pytest.raises(InputError, match="low < high"):
        Scaling.from_data(np.full(10, np.nan, np.float32))


# -- checkpoints ----------------------------------------------------------------------------------
def _trainer(cfg):
    from tomo4d.enhance.training import Trainer

    lq = np.random.default_rng(0).uniform(-1, 1, (6, 48, 48)).astype(np.float32)
    return Trainer(lq, np.clip(lq * 1.2, -1, 1), np.ones(lq.shape, bool), [0, 1, 2, 3, 4], [5], cfg, device="cpu")


def _ck_json(fn):
    def damage(d):
        meta = json.loads((d / "checkpoint.json").read_text())
        fn(meta)
        (d / "checkpoint.json").write_text(json.dumps(meta))
    return damage


def _ck_wrong_shapes(d):
    from safetensors.torch import load_file, save_file

    t = load_file(str(d / "checkpoint.safetensors"))
    save_file({k: torch.zeros(tuple(s + 1 for s in v.shape)) if v.ndim else v for k, v in t.items()},
              str(d / "checkpoint.safetensors"))


def _ck_wrong_opt_state(d):
    from safetensors.torch import load_file, save_file

    t = load_file(str(d / "checkpoint.safetensors"))
    save_file({k: torch.zeros(3) if k.startswith("opt.state.") and k.endswith("exp_avg") else v
               for k, v in t.items()}, str(d / "checkpoint.safetensors"))


CHECKPOINT_DAMAGE = {
    "no_config": (_ck_json(lambda m: m.pop("config")), "lacks the field 'config'"),
    "no_step": (_ck_json(lambda m: m.pop("step")), "lacks the field 'step'"),
    "step_is_text": (_ck_json(lambda m: m.update(step="3")), "field 'step' is a str"),
    "step_out_of_range": (_ck_json(lambda m: m.update(step=10 ** 6)), "outside 0"),
    "rng_garbage": (_ck_json(lambda m: m.update(rng={"bit_generator": "nope"})), "does not fit"),
    "param_groups_garbage": (_ck_json(lambda m: m.update(param_groups={"opt": [1]})), "does not fit"),
    "json_list": (lambda d: (d / "checkpoint.json").write_text("[]"), "JSON list"),
    "not_json": (lambda d: (d / "checkpoint.json").write_text("step=3"), "is not a JSON"),
    "tensors_pickle": (lambda d: (d / "checkpoint.safetensors").write_bytes(pickle.dumps([1, 2])),
                       "is not a safetensors file"),
    "tensors_missing": (lambda d: (d / "checkpoint.safetensors").unlink(), "is missing"),
    "tensors_wrong_shapes": (_ck_wrong_shapes, "does not fit"),
    "optimiser_state_wrong_shape": (_ck_wrong_opt_state, "does not fit"),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_damaged_checkpoints_name_the_file_and_how_to_start_over(tmp_path, tiny_config, damage):
    tr = _trainer(tiny_config)
    for _ in range(2):
        tr.train_step()
    tr.save_checkpoint(tmp_path)
    fn, match = CHECKPOINT_DAMAGE[damage]
    fn(tmp_path)
    with pytest.raises(FormatError, match=match) as info:
        _trainer(tiny_config).load_checkpoint(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "--no-resume" in msg and "--overwrite" in msg, msg


@pytest.mark.slow
def test_resume_from_a_damaged_checkpoint_through_train(tmp_path, synth_pair):
    from tomo4d.enhance import TrainConfig, train

    cfg = TrainConfig.preset("tiny", steps=10, checkpoint_every=5)

    def interrupt(done, total):
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*synth_pair, tmp_path / "m", config=cfg, register=False, progress=interrupt)
    ck = tmp_path / "m" / "checkpoints" / "checkpoint.json"
    meta = json.loads(ck.read_text())
    del meta["config"]
    ck.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="lacks the field 'config'.*--no-resume"):
        train(*synth_pair, tmp_path / "m", config=cfg, register=False)
    res = train(*synth_pair, tmp_path / "m", config=cfg, register=False, resume=False)   # the fix works
    assert res.resumed_from_step == 0 and res.steps == 10


# -- training configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("data, match", [
    ({"steps": "100"}, r"steps='100': must be a whole number"),
    ({"steps": True}, r"steps=True: must be a whole number"),
    ({"steps": 10.5}, r"steps=10.5: must be a whole number"),
    ({"max_lr": "0.001"}, r"max_lr='0.001': must be a number"),
    ({"max_lr": float("nan")}, r"max_lr=nan: must be a finite number"),
    ({"weight_decay": float("inf")}, r"weight_decay=inf"),
    ({"seed": -1}, r"seed=-1"),
    ({"percentiles": ["1", 99]}, r"percentiles\.0='1'"),
    ({"network": {"depth": True}}, r"network\.depth=True"),
    ({"network": {"dilations": [2, "4"]}}, r"network\.dilations\.1='4'"),
    ({"network": {"wibble": 1}}, r"network\.wibble is not a field \(known: base_filters"),
    ({"network": [1, 2]}, r"network=\[1, 2\] is not a set of network fields"),
    ({"colour": "red"}, r"colour is not a field \(known: batch_size"),
    ({"crop": np.int64(33)}, r"crop=33 must be a multiple"),
    ({"loss_threshold": np.float64(-1.0)}, r"loss_threshold=-1:"),
])
def test_config_errors_name_the_key_path(data, match):
    from tomo4d.enhance import TrainConfig

    with pytest.raises(InputError, match=match) as info:
        TrainConfig.preset("tiny", **data)
    assert "np.float" not in str(info.value) and "np.int" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    ('{"preset": "tiny", "steps": "5"}', r"c\.json.*steps='5'"),
    ('{"preset": "huge"}', r"c\.json.*preset='huge' is not known"),
    ('{"preset": "tiny", "name": "x"}', r"c\.json.*name is not a field"),
    ('{"preset": "tiny", "network": 5}', r"c\.json.*network=5"),
    ('[1, 2]', r"c\.json.*holds a JSON list"),
    ('"tiny"', r"c\.json.*holds a JSON str"),
    (b"\xff\xfe\x00garbage", r"c\.json.*is not valid JSON"),
])
def test_config_files_name_the_file_and_the_key(tmp_path, content, match):
    from tomo4d.enhance import TrainConfig

    p = tmp_path / "c.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=match):
        TrainConfig.from_json(p)


def test_from_dict_refuses_a_non_mapping():
    from tomo4d.enhance import TrainConfig

    for bad in ([("steps", 5)], "steps=5", 5, None):
        with pytest.raises(InputError, match="not a set of fields"):
            TrainConfig.from_dict(bad)
    with pytest.raises(InputError, match="config=.* is not a TrainConfig"):
        from tomo4d.enhance import train

        train(None, None, "x", config={"steps": 5})


# -- NaN in the training pair -----------------------------------------------------------------------
def _with_nan(vol, n=12):
    from tomo4d import Volume

    a = vol.numpy().astype(np.float32)
    a.reshape(-1)[:n] = np.nan
    return Volume(a, vol.voxel_size_nm, vol.metadata)


@pytest.mark.parametrize("which", ["lq", "hq"])
def test_nan_in_the_pair_is_refused_before_any_registration(tmp_path, synth_pair, tiny_config, which, capfd):
    from tomo4d.enhance import train

    lq, hq = synth_pair
    if which == "lq":
        lq = _with_nan(lq)
    else:
        hq = _with_nan(hq)
    with pytest.raises(InputError, match=rf"^{which} \(--{which}\) holds 12 non-finite \(NaN/Inf\) voxels"):
        train(lq, hq, tmp_path / "m", config=tiny_config, register=True)
    out = capfd.readouterr()
    assert "SVD" not in out.out + out.err and "LAPACK" not in out.out + out.err
    assert not (tmp_path / "m").exists()


# -- command line ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_files(tmp_path_factory, synth_pair):
    from tomo4d.io import save_volume

    d = tmp_path_factory.mktemp("cli_errors")
    lq, hq = synth_pair
    return (save_volume(lq, d / "lq.tif"), save_volume(hq, d / "hq.tif"),
            save_volume(_with_nan(hq), d / "hq_nan.tif"), d)


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error:"), err
    return err[0]


def test_cli_train_with_cuda_on_a_cpu_only_torch_exits_2(cpu_only_torch, pair_files, tmp_path, capsys):
    lq, hq, _, _ = pair_files
    assert main(["enhance", "train", "--lq", str(lq), "--hq", str(hq), "-o", str(tmp_path / "m"),
                 "--preset", "tiny", "--device", "cuda"]) == 2
    assert "--device cpu" in _one_line_error(capsys)


def test_cli_apply_with_cuda_on_a_cpu_only_torch_exits_2(cpu_only_torch, pair_files, trained, tmp_path, capsys):
    lq = pair_files[0]
    assert main(["enhance", "apply", str(trained[0]), str(lq), str(tmp_path / "o.tif"), "--device", "cuda"]) == 2
    assert "no CUDA" in _one_line_error(capsys)


def test_cli_train_with_nan_hq_names_the_option(pair_files, tmp_path, capsys):
    lq, _, hq_nan, _ = pair_files
    assert main(["enhance", "train", "--lq", str(lq), "--hq", str(hq_nan), "-o", str(tmp_path / "m"),
                 "--preset", "tiny"]) == 2
    assert "hq (--hq) holds 12 non-finite" in _one_line_error(capsys)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("damage", ["list_instead_of_object", "scaling_lo_equals_hi"])
def test_cli_apply_with_a_damaged_model_exits_2(pair_files, trained, tmp_path, capsys, damage):
    d = tmp_path / "m"
    shutil.copytree(trained[0], d)
    CONFIG_DAMAGE[damage][0](d)
    assert main(["enhance", "apply", str(d), str(pair_files[0]), str(tmp_path / "o.tif"), "--device", "cpu"]) == 2
    assert "config.json" in _one_line_error(capsys)


def test_cli_train_with_a_bad_config_file_exits_2(pair_files, tmp_path, capsys):
    lq, hq, _, _ = pair_files
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"preset": "tiny", "network": {"depth": "2"}}')
    assert main(["enhance", "train", "--lq", str(lq), "--hq", str(hq), "-o", str(tmp_path / "m"),
                 "--config", str(cfg)]) == 2
    assert "network.depth='2'" in _one_line_error(capsys)
