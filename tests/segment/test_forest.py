"""Random-forest pixel classifier: exact tree traversal, accuracy on synthetic truth, chunking,
persistence without pickle, and every user error."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tomo4d.errors import FormatError, InputError
from tomo4d.segment import (
    FeatureSpec,
    PixelClassifier,
    evaluate_segmentation,
    load_model,
    predict_labels,
    predict_lazy,
    predict_proba,
    train_pixel_classifier,
)
from tomo4d.segment.forest import forest_from_sklearn


@pytest.mark.parametrize("n_classes, max_depth", [(2, None), (4, 6)])
def test_traversal_equals_sklearn(n_classes, max_depth):
    from sklearn.ensemble import RandomForestClassifier

    from tomo4d.segment import _trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 7)).astype(np.float32)
    y = (x[:, 0] * 2 + x[:, 1] > 0).astype(int) + (n_classes > 2) * (x[:, 2] > 0.5) * 2
    rf = RandomForestClassifier(n_estimators=9, max_depth=max_depth, random_state=0).fit(x, y)
    xt = rng.normal(size=(2000, 7)).astype(np.float32)
    ours = _trees.run(xt, _trees.pack(forest_from_sklearn(rf)))
    np.testing.assert_allclose(ours, rf.predict_proba(xt), atol=1e-6)


def _plain_walk(x, f):
    """One voxel at a time down the flat forest, float64 thresholds (the rule the packed walk must keep)."""
    out = np.zeros((x.shape[0], f.value.shape[1]), np.float32)
    for i in range(x.shape[0]):
        for r in f.roots:
            node = r
            while f.left[node] != -1:
                node = f.left[node] if np.float64(x[i, f.feature[node]]) <= f.threshold[node] else f.right[node]
            out[i] += f.value[node]
    return (out.astype(np.float64) * (1.0 / f.roots.shape[0])).astype(np.float32)  # the mean as numba forms it


@pytest.mark.parametrize("n", [1, 5, 6, 239, 241, 1000])
def test_packed_walk_is_bit_identical_to_the_plain_walk(n):
    """Six voxels side by side, blocks of 240, float32 thresholds rounded down, any input layout: the same
    bits as the plain walk, also for features equal to a threshold or one float32 step beside it."""
    from sklearn.ensemble import RandomForestClassifier

    from tomo4d.segment import _trees
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(int) + (x[:, 3] > 0.3) * 2
    rf = RandomForestClassifier(n_estimators=7, random_state=0).fit(x, y)
    flat = forest_from_sklearn(rf)
    xt = rng.normal(size=(n, 5)).astype(np.float32)
    inner = flat.left != -1
    hit = rng.choice(np.flatnonzero(inner), size=min(n, inner.sum()), replace=True)
    for i, node in enumerate(hit[: n // 2]):  # features on, just below and just above a threshold
        t32 = np.float32(flat.threshold[node])
        xt[i, flat.feature[node]] = [t32, np.nextafter(t32, np.float32(-np.inf)),
                                     np.nextafter(t32, np.float32(np.inf))][i % 3]
    want = _plain_walk(xt, flat)
    packed = _trees.pack(flat)
    np.testing.assert_array_equal(_trees.run(xt, packed), want)
    channel_first = np.moveaxis(np.ascontiguousarray(xt.T), 0, -1)  # the feature stacks' layout
    np.testing.assert_array_equal(_trees.run(channel_first, packed), want)


def test_scribbles_segment_blobs(blobs, blob_forest, blob_scribbles):
    pred = predict_labels(blob_forest, blobs.image)
    scores = evaluate_segmentation(pred, blobs.phases, region=blob_scribbles == 0)
    assert scores.of(2).dice >= 0.90  # particles (scribbles avoid borders)
    assert scores.of(1).dice >= 0.95  # matrix
    assert scores.accuracy >= 0.93
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {1, 2, 3}


def test_proba_sums_to_one(blobs, blob_forest):
    p = predict_proba(blob_forest, blobs.image[:3])
    assert p.shape == (3, 3, 64, 64) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("slab_depth", [1, 4, 7])
def test_chunked_3d_prediction_is_exact(blobs, blob_scribbles, slab_depth):
    model = train_pixel_classifier(blobs.image, blob_scribbles, n_trees=4, seed=1,
                                   features=FeatureSpec(sigmas=(1.0, 2.5), ndim=3))
    assert model.halo[0] > 0
    full = predict_proba(model, blobs.image, slab_depth=16)
    chunked = predict_proba(model, blobs.image, slab_depth=slab_depth)
    np.testing.assert_allclose(chunked, full, atol=1e-6)


def test_lazy_prediction_streams(blobs, blob_forest, tmp_path):
    import dask.array as da

    from tomo4d.io import open_volume
    from tomo4d.segment import save_labels

    lazy_in = da.from_array(blobs.image, chunks=(4, 64, 64))
    out = predict_lazy(blob_forest, lazy_in, slab_depth=5)
    assert out.chunks[0] == (5, 5, 5, 1)
    direct = predict_labels(blob_forest, blobs.image)
    path = save_labels(out, tmp_path / "seg.zarr")
    np.testing.assert_array_equal(open_volume(path).numpy(), direct)
    np.testing.assert_array_equal(np.asarray(out.compute()), direct)


def test_2d_training_and_prediction(blobs):
    img = blobs.image[8]
    lab = np.where(np.random.default_rng(0).random(img.shape) < 0.1, blobs.phases[8], 0)
    model = train_pixel_classifier(img, lab, n_trees=8)
    pred = model.predict(img)
    assert pred.shape == img.shape
    assert evaluate_segmentation(pred, blobs.phases[8]).of(2).dice > 0.9


def test_save_load_roundtrip_without_pickle(blob_forest, blobs, tmp_path):
    path = blob_forest.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        meta = json.loads(z["meta"].tobytes())
    assert meta["format"] == "tomo4d.pixel_classifier" and meta["classes"] == [1, 2, 3]
    back = load_model(path)
    assert isinstance(back, PixelClassifier) and back.classes == blob_forest.classes
    np.testing.assert_array_equal(predict_proba(back, blobs.image[:2]), predict_proba(blob_forest, blobs.image[:2]))
    with pytest.raises(InputError, match="exists"):
        blob_forest.save(path)


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


def test_corrupted_model_files_are_refused(blob_forest, tmp_path):
    good = blob_forest.save(tmp_path / "m.npz")
    with np.load(good) as z:
        left = z["left"].copy()
        feature = z["feature"].copy()
    inner = np.flatnonzero(left >= 0)[0]
    cyc = left.copy()
    cyc[inner] = 0  # a loop back to the root
    _rewrite(good, tmp_path / "cycle.npz", left=cyc)
    with pytest.raises(FormatError, match="children"):
        load_model(tmp_path / "cycle.npz")
    bad_f = feature.copy()
    bad_f[inner] = 999
    _rewrite(good, tmp_path / "feat.npz", feature=bad_f)
    with pytest.raises(FormatError, match="features"):
        load_model(tmp_path / "feat.npz")
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as zf:
        zf.writestr("x.txt", "hello")
    with pytest.raises(FormatError):
        load_model(tmp_path / "junk.npz")
    (tmp_path / "text.npz").write_text("not a model")
    with pytest.raises(FormatError):
        load_model(tmp_path / "text.npz")


@pytest.mark.parametrize("labels, match", [
    (np.zeros((16, 64, 63), np.uint8), "shape"),
    (np.zeros((16, 64, 64), np.uint8), "no labelled"),
    (np.full((16, 64, 64), 2, np.uint8), "only class 2"),
    (np.full((16, 64, 64), -1, np.int16), "negative"),
    (np.full((16, 64, 64), 0.5, np.float32), "integer"),
])
def test_bad_labels(blobs, labels, match):
    with pytest.raises(InputError, match=match):
        train_pixel_classifier(blobs.image, labels)


@pytest.mark.parametrize("kwargs, match", [({"n_trees": 0}, "n_trees"), ({"max_depth": 0}, "max_depth"),
                                           ({"max_samples_per_class": -3}, "max_samples")])
def test_bad_options(blobs, blob_scribbles, kwargs, match):
    with pytest.raises(InputError, match=match):
        train_pixel_classifier(blobs.image, blob_scribbles, **kwargs)


def test_3d_model_refuses_2d_image(blobs, blob_scribbles):
    model = train_pixel_classifier(blobs.image, blob_scribbles, n_trees=2, features=FeatureSpec(sigmas=(1.0,), ndim=3))
    with pytest.raises(InputError, match="3D"):
        predict_labels(model, blobs.image[0])


def test_out_of_core_output(blobs, blob_forest, tmp_path):
    out = np.lib.format.open_memmap(tmp_path / "seg.npy", mode="w+", dtype=np.uint8, shape=blobs.image.shape)
    calls = []
    predict_labels(blob_forest, blobs.image, out=out, slab_depth=6, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(6, 16), (12, 16), (16, 16)]
    np.testing.assert_array_equal(np.asarray(out), predict_labels(blob_forest, blobs.image))
    with pytest.raises(InputError, match="out has shape"):
        predict_labels(blob_forest, blobs.image, out=np.zeros((2, 2, 2), np.uint8))


def test_train_on_several_images_pools_their_labels():
    """A class labelled in only one of two images is learnt; the list must pair images and labels."""
    import numpy as np
    import pytest

    from tomo4d.errors import InputError
    from tomo4d.segment import predict_labels, train_pixel_classifier

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (4, 24, 24)).astype(np.float32)
    b = a.copy()
    a[:, :, 12:] += 1.0  # image a: classes 1 (dark) and 2 (mid)
    b[:, :, 12:] += 2.0  # image b: classes 1 (dark) and 3 (bright), absent from a
    la = np.zeros(a.shape, np.uint8)
    la[1, :, :12], la[1, :, 12:] = 1, 2
    lb = np.zeros(b.shape, np.uint8)
    lb[1, :, :12], lb[1, :, 12:] = 1, 3
    model = train_pixel_classifier([a, b], [la, lb], n_trees=8)
    assert tuple(model.classes) == (1, 2, 3)
    assert np.mean(predict_labels(model, b)[:, :, 14:] == 3) > 0.95
    assert np.mean(predict_labels(model, a)[:, :, 14:] == 2) > 0.95
    with pytest.raises(InputError, match="labels has 1"):
        train_pixel_classifier([a, b], [la], n_trees=2)


def test_train_and_predict_computes_features_once(blobs, blob_scribbles, monkeypatch):
    """One feature pass for training and prediction of the same image, the labels of the two-pass path (up to
    float rounding of the features), the two-pass fallback above the memory budget, a list of images."""
    from tomo4d.segment import train_and_predict

    calls = _count_feature_passes(monkeypatch)
    model, labels = train_and_predict(blobs.image, blob_scribbles, n_trees=8, seed=1)
    assert calls == {"full": 1, "slab": 0}
    two_pass = predict_labels(train_pixel_classifier(blobs.image, blob_scribbles, n_trees=8, seed=1), blobs.image)
    assert np.mean(labels == two_pass) > 0.995
    assert np.mean(labels == blobs.phases) > 0.95
    assert labels.dtype == two_pass.dtype and list(model.classes) == [1, 2, 3]
    calls.update(full=0, slab=0)
    _, fallback = train_and_predict(blobs.image, blob_scribbles, n_trees=8, seed=1, max_feature_bytes=1000)
    assert calls["full"] == 0 and calls["slab"] > 1
    np.testing.assert_array_equal(fallback, two_pass)
    # a list (the runner's labelled steps): the first image labelled from its one feature pass
    calls.update(full=0, slab=0)
    _, listed = train_and_predict([blobs.image], [blob_scribbles], n_trees=8, seed=1)
    assert calls == {"full": 1, "slab": 0}
    np.testing.assert_array_equal(listed, labels)


def test_train_and_predict_every_image_computes_each_images_features_once(blobs, blob_scribbles, monkeypatch):
    """``every_image``: two labelled images, each featurised once (training and prediction), labels as the
    two-pass route gives them; over the budget the second image is left to the caller (None)."""
    from tomo4d.segment import train_and_predict

    other = np.ascontiguousarray(blobs.image[::-1])                   # a second "step": the image flipped in z
    other_scribbles = np.ascontiguousarray(blob_scribbles[::-1])
    calls = _count_feature_passes(monkeypatch)
    images, scribbles = [blobs.image, other], [blob_scribbles, other_scribbles]
    model, (a, b) = train_and_predict(images, scribbles, n_trees=8, seed=1, every_image=True)
    assert calls == {"full": 2, "slab": 0}
    two_pass = train_pixel_classifier(images, scribbles, n_trees=8, seed=1)
    assert np.mean(a == predict_labels(two_pass, blobs.image)) > 0.995
    assert np.mean(b == predict_labels(two_pass, other)) > 0.995
    assert np.mean(b == blobs.phases[::-1]) > 0.95
    calls.update(full=0, slab=0)
    one_fits = blobs.image.size * model.features.n_features * 6           # 1.5 stacks: T0's stack fits, not both
    _, (a2, b2) = train_and_predict(images, scribbles, n_trees=8, seed=1, every_image=True,
                                    max_feature_bytes=one_fits)
    assert calls["full"] == 1 and b2 is None
    np.testing.assert_array_equal(a2, a)


def _count_feature_passes(monkeypatch) -> dict:
    """Count whole-image and per-slab feature computations (the dict fills as the code runs)."""
    from tomo4d.segment import features as feat_mod
    from tomo4d.segment import forest as forest_mod
    from tomo4d.segment import samples as samples_mod

    calls = {"full": 0, "slab": 0}
    full, slab = feat_mod.compute_features, forest_mod.features_of_slab

    def count_full(*a, **k):
        calls["full"] += 1
        return full(*a, **k)

    def count_slab(*a, **k):
        calls["slab"] += 1
        return slab(*a, **k)

    monkeypatch.setattr(feat_mod, "compute_features", count_full)
    monkeypatch.setattr(forest_mod, "features_of_slab", count_slab)
    monkeypatch.setattr(feat_mod, "features_of_slab", count_slab)
    monkeypatch.setattr(samples_mod, "features_of_slab", count_slab)
    return calls
