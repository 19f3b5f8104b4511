"""No silent wrong segmentations: NaN voxels, grey images or masks given as labels are refused."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.errors import InputError


@pytest.fixture(scope="module")
def forest():
    from tomo4d.segment import synthetic as syn
    from tomo4d.segment import train_pixel_classifier

    b = syn.spheres((16, 32, 32), n_particles=5, radius=(4.0, 6.0), seed=3)
    lab = syn.scribbles(b.phases, fraction=0.1, slices=[3, 8], seed=4)
    return train_pixel_classifier(b.image, lab, n_trees=4, seed=0), np.asarray(b.image, np.float32)


def _with_nan(img, z=11):
    a = img.copy()
    a[z, 3, 3] = np.nan
    a[z, 4, 4] = np.inf
    return a


@pytest.mark.parametrize("how", ["labels", "proba", "lazy", "lazy_proba"])
def test_prediction_refuses_nan_voxels(forest, how):
    import dask.array as da

    from tomo4d.segment import predict_labels, predict_lazy, predict_proba

    model, img = forest
    bad = _with_nan(img)
    if how == "labels":
        with pytest.raises(InputError, match=r"image holds 2 non-finite \(NaN/Inf\) voxels"):
            predict_labels(model, bad)
    elif how == "proba":
        with pytest.raises(InputError, match=r"image holds 2 non-finite"):
            predict_proba(model, bad)
    else:
        lazy = predict_lazy(model, da.from_array(bad, chunks=(4, 32, 32)), slab_depth=4,
                            probabilities=how == "lazy_proba")
        with pytest.raises(InputError, match=r"image holds 2 non-finite .* in z-slices \d+..\d+ \(first at z = 11"):
            lazy.compute(scheduler="synchronous")
        # finite lazy input: the checked reads change nothing
        good = predict_lazy(model, da.from_array(img, chunks=(4, 32, 32)), slab_depth=4,
                            probabilities=how == "lazy_proba")
        ref = predict_proba(model, img) if how == "lazy_proba" else predict_labels(model, img)
        assert np.array_equal(good.compute(), ref)


def _mask255():
    a = np.zeros((8, 16, 16), np.uint8)
    a[1:4, 2:6, 2:6] = 255
    a[5:8, 9:14, 9:14] = 255
    return a


@pytest.mark.parametrize("segmentation, kw, pattern", [
    (np.random.default_rng(0).random((8, 16, 16), dtype=np.float32), {}, r"segmentation .*grey-value image"),
    (np.full((8, 16, 16), -2, np.int8), {}, r"negative values \{-2\}"),
    (_mask255(), {"particle_class": 7}, r"particle_class=7 does not occur .*values \{0, 255\}"),
    (_mask255(), {"particle_class": 2.5}, r"particle_class=2.5 is not an integer"),
    (_mask255(), {"min_volume_nm3": float("nan")}, r"min_volume_nm3=nan is not finite"),
    (_mask255(), {"h_nm": "3"}, r"h_nm='3' is not a number"),
    (_mask255(), {"connectivity": 4}, r"connectivity=4 is out of range"),
])
def test_label_particles_refuses_grey_images_and_bad_options(segmentation, kw, pattern):
    from tomo4d.segment import label_particles

    with pytest.raises(InputError, match=pattern):
        label_particles(segmentation, **kw)


def test_label_particles_counts_a_0_255_mask_but_not_its_grey_image():
    from tomo4d.segment import label_particles

    grey = np.where(_mask255() > 0, 0.8, 0.1).astype(np.float32) + np.float32(0.01)
    with pytest.raises(InputError, match=r"grey-value image"):
        label_particles(grey, split=False)      # was "1 particle": every voxel > 0
    assert label_particles(_mask255(), split=False).n_particles == 2


@pytest.mark.parametrize("pred, truth, kw, pattern", [
    (np.ones((8, 8), np.uint8), np.full((8, 8), 255, np.uint8), {}, r"no value in common"),
    (np.ones((8, 8), np.float32) * 0.5, np.ones((8, 8), np.uint8), {}, r"prediction .*grey-value image"),
    (np.ones((8, 8), np.uint8), -np.ones((8, 8), np.int16), {}, r"truth holds negative values"),
    (np.ones((8, 8), np.uint8), np.ones((8, 8), np.uint8), {"boundary_tolerance_nm": float("nan")},
     r"boundary_tolerance_nm=nan is not finite"),
])
def test_evaluate_refuses_labels_that_cannot_be_compared(pred, truth, kw, pattern):
    from tomo4d.segment import evaluate_segmentation

    with pytest.raises(InputError, match=pattern):
        evaluate_segmentation(pred, truth, **kw)


def test_match_particles_refuses_a_mask_for_particle_labels():
    from scipy import ndimage

    from tomo4d.segment import match_particles

    m = _mask255()
    parts = ndimage.label(m)[0]
    with pytest.raises(InputError, match=r"true holds only the values \{0, 255\}: a binary mask of 2"):
        match_particles(parts, m)
    with pytest.raises(InputError, match=r"iou_threshold=0 is out of range"):
        match_particles(parts, parts, iou_threshold=0)
    assert match_particles(parts, parts).f1 == 1.0


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error: "), err
    return err[0]


def test_cli_apply_refuses_nan_and_particles_refuses_grey(forest, tmp_path, capsys):
    import tifffile

    model, img = forest
    m = tmp_path / "m.npz"
    model.save(m)
    src = tmp_path / "nan.tif"
    tifffile.imwrite(src, _with_nan(img))
    dst = tmp_path / "seg.tif"
    assert main(["segment", "apply", str(m), str(src), str(dst)]) == 2
    assert "non-finite" in _err(capsys) and not dst.exists()
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, img)
    assert main(["segment", "particles", str(grey), str(tmp_path / "p.tif")]) == 2
    assert "grey-value image" in _err(capsys)
