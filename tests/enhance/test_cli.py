"""``tomo4d enhance`` command line: train, apply, sweep, evaluate, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from tomo4d.cli import main  # noqa: E402

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth_pair):
    from tomo4d.io import save_volume

    d = tmp_path_factory.mktemp("cli")
    lq, hq = synth_pair
    return save_volume(lq, d / "lq.tif"), save_volume(hq, d / "hq.tif"), d


def test_train_apply_sweep_evaluate(files, trained, tmp_path, capsys):
    lq, hq, d = files
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "tiny", "steps": 5}))
    out = tmp_path / "model"
    assert main(["enhance", "train", "--lq", str(lq), "--hq", str(hq), "-o", str(out), "--config", str(cfg),
                 "--no-register", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["steps"] == 5 and (out / "weights.safetensors").is_file()

    model = str(trained[0])
    dst = tmp_path / "enh.tif"
    assert main(["enhance", "apply", model, str(lq), str(dst), "--steps", "2", "--tile", "64", "--overlap", "16",
                 "--samples", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert dst.is_file() and (tmp_path / "enh_spread.tif").is_file() and (tmp_path / "enh_consistency.tif").is_file()
    assert info["n_samples"] == 2
    assert not [f for f in tmp_path.iterdir() if "uncertainty" in f.name]      # scratch maps removed
    assert main(["enhance", "apply", model, str(lq), str(dst), "--samples", "2"]) == 2   # refused before any work
    assert "--overwrite" in capsys.readouterr().err
    before = lq.read_bytes()
    assert main(["enhance", "apply", model, str(lq), str(lq), "--samples", "2", "--overwrite"]) == 2
    assert "never overwrites its inputs" in capsys.readouterr().err and lq.read_bytes() == before

    assert main(["enhance", "sweep", model, "--lq", str(lq), "--hq", str(hq), "--max-steps", "3",
                 "--no-register", "--json"]) == 0
    sw = json.loads(capsys.readouterr().out)
    assert sw["steps"] == [1, 2, 3] and 1 <= sw["recommended_steps"] <= 3

    ev = tmp_path / "eval"
    assert main(["enhance", "evaluate", "--lq", str(lq), "--hq", str(hq), "--model", f"InDI={model}",
                 "--no-register", "--slices", "all", "--edge-half-length", "12", "-o", str(ev), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["table"]
    names = [r["name"] for r in table["rows"]]
    assert names == ["HQ", "LQ", "bicubic", "InDI"]
    assert (ev / "figure.png").is_file() and (ev / "table.csv").is_file()


@pytest.mark.parametrize("args,match", [
    (["enhance", "apply", "/nonexistent/model", "in.tif", "out.tif"], "does not exist"),
    (["enhance", "train", "--lq", "/nonexistent/lq.tif", "--hq", "/nonexistent/hq.tif", "-o", "m"], "does not exist"),
])
def test_user_errors_exit_2_with_one_line(args, match, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error:") and match in err[0]


def test_apply_refuses_wrong_dtype(files, trained, tmp_path, capsys):
    from tomo4d import Volume
    from tomo4d.io import save_volume

    lq, _, _ = files
    from tomo4d.io import open_volume

    f = save_volume(Volume(open_volume(lq).numpy().astype(np.float32), 100.0), tmp_path / "f.tif")
    assert main(["enhance", "apply", str(trained[0]), str(f), str(tmp_path / "o.tif")]) == 2
    assert "dtype" in capsys.readouterr().err


def test_train_and_apply_take_precision_and_validation_options(files, tmp_path, capsys):
    """--precision bf16 (CPU), --val-every, --early-stop-patience reach the config; apply --precision bf16."""
    lq, hq, _ = files
    out = tmp_path / "m"
    assert main(["enhance", "train", "--lq", str(lq), "--hq", str(hq), "-o", str(out), "--preset", "tiny",
                 "--steps", "6", "--no-register", "--device", "cpu", "--precision", "bf16", "--val-every", "2",
                 "--early-stop-patience", "5", "--early-stop-min-delta", "0.1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["precision"], cfg["val_every"], cfg["early_stop_patience"], cfg["early_stop_min_delta_db"]) == \
        ("bf16", 2, 5, 0.1)
    curve = json.loads((out / "validation_curve.json").read_text())
    assert curve["steps"] == [2, 4, 6] and curve["precision"] == "bf16" and res["best_step"] in (2, 4, 6)
    dst = tmp_path / "e.tif"
    assert main(["enhance", "apply", str(out), str(lq), str(dst), "--steps", "1", "--device", "cpu",
                 "--precision", "bf16", "--json"]) == 0
    assert dst.is_file()
