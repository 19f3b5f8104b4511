"""Saving/loading an experiment, the ``tomo4d phantom`` command and the demo stage."""

import json

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.phantom import SyntheticExperiment, make_experiment


@pytest.fixture(scope="module")
def small():
    return make_experiment(shape=(32, 32, 32), n_steps=2, seed=7)


def test_save_load_roundtrip(small, tmp_path):
    out = small.save(tmp_path / "exp")
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["params"]["seed"] == 7 and len(doc["files"]["series"]) == 2
    assert (out / "truth" / "labels_hq_T1.tif").is_file() and (out / "truth" / "displacement_T1.npz").is_file()
    back = SyntheticExperiment.load(out)
    for a, b in [(small.series[1], back.series[1]), (small.hq, back.hq), (small.lq, back.lq)]:
        assert np.array_equal(a.numpy(), b.numpy())
    assert back.series[1].voxel_size_nm == (100.0,) * 3
    assert back.series[1].metadata.time_step == "T1"
    assert back.truth.thickness_nm == small.truth.thickness_nm
    assert np.array_equal(back.truth.labels(1), small.truth.labels(1))
    with np.load(out / "truth" / "displacement_T1.npz") as f:
        pos, u = f["positions_nm"], f["displacement_nm"]
    ref = small.truth.displacement(1, pos.reshape(-1, 3).astype(np.float64))
    assert np.abs(ref - u.reshape(-1, 3)).max() < 0.01      # nm (float32 storage)
    with pytest.raises(Exception, match="exists"):
        small.save(out)


def test_cli_phantom_pair_drift_is_saved_and_reloaded(tmp_path, capsys):
    rc = main(["phantom", str(tmp_path / "p"), "--shape", "32", "--steps", "1", "--pair-drift", "80", "--json"])
    assert rc == 0
    back = SyntheticExperiment.load(tmp_path / "p")
    assert back.params.pair_drift_nm == 80.0
    d = back.lq_drift_nm(np.random.default_rng(0).uniform(0, 3200, (2000, 3)))
    assert np.sqrt((d ** 2).sum(-1).mean()) == pytest.approx(80.0, rel=0.25)
    rc = main(["phantom", str(tmp_path / "q"), "--shape", "32", "--steps", "1", "--pair-drift", "900"])
    assert rc == 2 and "pair_drift_nm=900" in capsys.readouterr().err


def test_load_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match="experiment.json"):
        SyntheticExperiment.load(tmp_path)


def test_cli_phantom_json(tmp_path, capsys):
    rc = main(["phantom", str(tmp_path / "p"), "--shape", "32", "--steps", "2", "--seed", "1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == ["T0", "T1"] and summary["shape"] == [32, 32, 32]
    assert (tmp_path / "p" / "series" / "T1.tif").is_file()


def test_cli_phantom_bad_parameter(tmp_path, capsys):
    rc = main(["phantom", str(tmp_path / "p"), "--shape", "8"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error: shape=")

