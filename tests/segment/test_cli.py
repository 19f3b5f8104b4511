"""``tomo4d segment ...`` end to end: train, apply, particles, evaluate; user errors exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tomo4d.cli import main


@pytest.fixture
def files(tmp_path, blobs, blob_scribbles):
    from tomo4d import Volume
    from tomo4d.io import save_volume
    from tomo4d.segment import save_labels

    img = save_volume(Volume(blobs.image, (60.0, 50.0, 50.0)), tmp_path / "img.tif")
    lab = save_labels(blob_scribbles, tmp_path / "scribbles.zarr", voxel_size_nm=(60.0, 50.0, 50.0))
    truth = save_labels(blobs.phases, tmp_path / "truth.tif", voxel_size_nm=(60.0, 50.0, 50.0))
    return tmp_path, img, lab, truth


def test_train_apply_particles_evaluate(files, capsys, blobs):
    tmp, img, lab, truth = files
    model = tmp / "m.npz"
    assert main(["segment", "train", "--image", str(img), "--labels", str(lab), "-o", str(model),
                 "--trees", "8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == [1, 2, 3] and info["method"] == "rf"
    seg = tmp / "seg.zarr"
    assert main(["segment", "apply", str(model), str(img), str(seg), "--slab-depth", "5"]) == 0
    capsys.readouterr()
    assert main(["segment", "evaluate", str(seg), str(truth), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    dice = {c["label"]: c["dice"] for c in scores["classes"]}
    assert dice[2] > 0.9 and dice[1] > 0.9
    parts = tmp / "particles.tif"
    assert main(["segment", "particles", str(seg), str(parts), "--class", "2", "--min-volume-nm3", "1e6",
                 "--json"]) == 0
    pinfo = json.loads(capsys.readouterr().out)
    assert pinfo["n_particles"] >= 8
    truth_parts = tmp / "truth_particles.tif"
    tifffile.imwrite(truth_parts, blobs.particles)
    assert main(["segment", "evaluate", str(parts), str(truth_parts), "--particles"]) == 0
    out = capsys.readouterr().out
    assert "F1" in out and "matched" in out


def test_2d_tiff_with_mask_map(tmp_path, blobs, capsys):
    img = tmp_path / "slice.tif"
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(img, (blobs.image[8] * 1000).astype(np.uint16))
    tifffile.imwrite(mask, np.where(blobs.phases[8] == 2, 255, 0).astype(np.uint8))
    model = tmp_path / "m.npz"
    assert main(["segment", "train", "--image", str(img), "--labels", str(mask), "--map", "0:1,255:2",
                 "-o", str(model), "--trees", "4"]) == 0
    out = tmp_path / "pred.tif"
    assert main(["segment", "apply", str(model), str(img), str(out)]) == 0
    assert main(["segment", "evaluate", str(out), str(mask), "--map", "0:1,255:2"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text
    pred = tifffile.imread(out)
    assert pred.shape == (64, 64) and set(np.unique(pred)) <= {1, 2}


@pytest.mark.usefixtures("one_torch_thread")
def test_unet_train_and_apply(files, capsys):
    tmp, img, lab, truth = files
    model = tmp / "u.safetensors"
    assert main(["segment", "train", "--image", str(img), "--labels", str(truth), "-o", str(model),
                 "--method", "unet", "--small", "--iterations", "3", "--threads", "1"]) == 0
    assert "UNetSegmenter" in capsys.readouterr().out
    assert main(["segment", "apply", str(model), str(img), str(tmp / "u.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == [1, 2, 3] and (tmp / "u.tif").is_file()


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error: "), err
    return err[0]


def test_user_errors(files, capsys, tmp_path):
    tmp, img, lab, truth = files
    bad = tmp / "bad.tif"
    tifffile.imwrite(bad, np.zeros((6, 5, 7), np.uint8), photometric="minisblack")
    assert main(["segment", "train", "--image", str(img), "--labels", str(bad), "-o", str(tmp / "x.npz")]) == 2
    assert "shape" in _err(capsys)
    empty = tmp / "empty.tif"
    tifffile.imwrite(empty, np.zeros((16, 64, 64), np.uint8))
    assert main(["segment", "train", "--image", str(img), "--labels", str(empty), "-o", str(tmp / "x.npz")]) == 2
    assert "no labelled" in _err(capsys)
    one = tmp / "one.tif"
    tifffile.imwrite(one, np.ones((16, 64, 64), np.uint8))
    assert main(["segment", "train", "--image", str(img), "--labels", str(one), "-o", str(tmp / "x.npz")]) == 2
    assert "only class" in _err(capsys)
    assert main(["segment", "apply", str(tmp / "missing.npz"), str(img), str(tmp / "o.tif")]) == 2
    assert "does not exist" in _err(capsys)
    assert main(["segment", "apply", str(img), str(img), str(tmp / "o.tif")]) == 2
    assert "neither" in _err(capsys)
    assert main(["segment", "evaluate", str(bad), str(truth)]) == 2
    assert "shape" in _err(capsys)
    assert main(["segment", "train", "--image", str(img), "--labels", str(lab), "-o", str(tmp / "x.npz"),
                 "--map", "zz"]) == 2
    assert "--map" in _err(capsys)


def test_apply_never_overwrites_input(files, capsys):
    tmp, img, lab, truth = files
    model = tmp / "m.npz"
    assert main(["segment", "train", "--image", str(img), "--labels", str(lab), "-o", str(model), "--trees", "2"]) == 0
    assert main(["segment", "apply", str(model), str(img), str(img), "--overwrite"]) == 2
    assert "overwrite the input" in _err(capsys)
    assert main(["segment", "train", "--image", str(img), "--labels", str(lab), "-o", str(model)]) == 2
    assert "exists" in _err(capsys)


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("suffix", [".tif", ".ome.zarr"])
def test_particles_stream_over_the_budget_with_the_same_labels(tmp_path, blobs, capsys, split, suffix, monkeypatch):
    """Over --chunk-budget-mb the particles are labelled slab by slab (the watershed cluster by cluster) into DST
    (OME-Zarr) or a scratch store converted to DST; labels and counts equal the in-memory command's."""
    import tomo4d.segment
    from tomo4d.segment import read_labels, save_labels

    seg = save_labels(blobs.phases, tmp_path / "seg.tif", voxel_size_nm=(60.0, 50.0, 50.0))
    extra = ["--class", "2", "--min-volume-nm3", "1e6", "--json"] + ([] if split else ["--no-split"])
    assert main(["segment", "particles", str(seg), str(tmp_path / "whole.tif"), *extra]) == 0
    whole = json.loads(capsys.readouterr().out)

    def refuse(*a, **k):
        raise AssertionError("the in-memory route was taken")

    monkeypatch.setattr(tomo4d.segment, "label_particles", refuse)
    dst = tmp_path / f"streamed{suffix}"
    assert main(["segment", "particles", str(seg), str(dst), *extra, "--chunk-budget-mb", "0.5"]) == 0, \
        capsys.readouterr().err
    streamed = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in streamed.items() if k != "output"} == {k: v for k, v in whole.items() if k != "output"}
    np.testing.assert_array_equal(read_labels(dst), read_labels(tmp_path / "whole.tif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["seg.tif", "whole.tif", dst.name])  # no scratch


def test_evaluate_scores_slab_by_slab_over_the_budget(tmp_path, blobs, capsys, monkeypatch):
    import tomo4d.segment
    from tomo4d.segment import save_labels

    vs = (60.0, 50.0, 50.0)
    truth = save_labels(blobs.phases, tmp_path / "truth.tif", voxel_size_nm=vs)
    noisy = blobs.phases.copy()
    noisy[::3, ::4] = 1
    pred = save_labels(noisy, tmp_path / "pred.ome.zarr", voxel_size_nm=vs)
    assert main(["segment", "evaluate", str(pred), str(truth), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(tomo4d.segment, "evaluate_segmentation", lambda *a, **k: pytest.fail("scored in memory"))
    assert main(["segment", "evaluate", str(pred), str(truth), "--json", "--chunk-budget-mb", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out) == whole


def test_train_reads_the_labels_slab_by_slab(files, capsys, monkeypatch):
    """``--method rf``: the label volume is never read whole (the samples are drawn from per-plane counts); the
    model equals the library's trained on the whole label array."""
    import tomo4d.segment
    from tomo4d.segment import read_image, read_labels, train_pixel_classifier

    tmp, img, lab, _ = files
    want = train_pixel_classifier(read_image(img), read_labels(lab), n_trees=4, seed=3)
    monkeypatch.setattr(tomo4d.segment, "read_labels", lambda *a: pytest.fail("labels read whole"))
    model = tmp / "m.npz"
    assert main(["segment", "train", "--image", str(img), "--labels", str(lab), "-o", str(model),
                 "--trees", "4", "--seed", "3", "--sigmas", "0.7,1.6,3.5,5"]) == 0
    capsys.readouterr()
    got = tomo4d.segment.load_model(model)
    np.testing.assert_array_equal(got.predict_proba(read_image(img)), want.predict_proba(read_image(img)))
