"""Ilastik-like pixel classifier: multiscale features + a random forest, trained from scribbles.

Training uses scikit-learn's :class:`~sklearn.ensemble.RandomForestClassifier`
on the features of the labelled voxels only (0 = unlabelled).  The fitted
trees are then flattened into plain arrays, and prediction runs a compiled
traversal of those arrays (:mod:`tomo4d.segment._trees`), so that a saved
model is data, not code: loading one never unpickles anything.

Model file format (``.npz``, read with ``numpy.load(allow_pickle=False)``)
--------------------------------------------------------------------------
==============  ============  ===============================================================
key             dtype/shape   meaning
==============  ============  ===============================================================
``meta``        uint8 (n,)    UTF-8 JSON: ``{"format": "tomo4d.pixel_classifier", "version": 1,
                              "classes": [...], "features": FeatureSpec.to_dict(),
                              "feature_names": [...], "n_trees": T, "training": {...}}``
``left``        int32 (N,)    global index of the left child, -1 at leaves
``right``       int32 (N,)    global index of the right child, -1 at leaves
``feature``     int32 (N,)    feature index of the split (ignored at leaves)
``threshold``   float64 (N,)  go left when ``x[feature] <= threshold``
``value``       float32 (N,C) class fractions at the node (rows sum to 1 at leaves)
``roots``       int64 (T,)    index of each tree's root node
==============  ============  ===============================================================

All trees are concatenated; children always have larger indices than their
parent (checked on load, which guarantees that traversal terminates).  The
probability of class ``classes[c]`` is the mean over trees of ``value[leaf, c]``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validate import show
from .._version import __version__
from ..errors import FormatError, InputError
from ..io import atomic_output
from ._common import image_array, voxel_size_of
from .features import FeatureSpec, feature_halo, feature_names, features_of_slab
from .predict import predict_labels, predict_proba
from .samples import labelled_samples, training_samples

log = logging.getLogger(__name__)

FORMAT = "tomo4d.pixel_classifier"
VERSION = 1


@dataclass(frozen=True)
class _Forest:
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray


class PixelClassifier:
    """A trained random-forest pixel classifier (flattened trees + feature spec).

    Create one with :func:`train_pixel_classifier` or :meth:`load`; predict
    with :func:`tomo4d.segment.predict_proba` / :func:`~tomo4d.segment.predict_labels`
    (or the :meth:`predict_proba` / :meth:`predict` shortcuts).

    Attributes
    ----------
    classes : tuple of int
        Label value of each probability channel.
    features : FeatureSpec
        The features the trees were trained on.
    training : dict
        What the model was trained on (samples per class, voxel size, seed).
    """

    kind = "rf"

    def __init__(self, forest: _Forest, *, classes, features: FeatureSpec, training: dict | None = None):
        self._forest = forest
        self._packed = None  # the forest renumbered for prediction (_trees.pack), made on first use
        self.classes = tuple(int(c) for c in classes)
        self.features = features
        self.training = dict(training or {})
        _validate_forest(forest, n_features=features.n_features, n_classes=len(self.classes))

    def __repr__(self) -> str:
        return (f"<PixelClassifier classes={self.classes} trees={self.n_trees} nodes={self.n_nodes} "
                f"features={self.features.n_features} ({self.features.ndim}D)>")

    @property
    def n_trees(self) -> int:
        return int(self._forest.roots.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self._forest.left.shape[0])

    @property
    def halo(self) -> tuple[int, int, int]:
        """Voxels of context needed around a block along (z, y, x) (from the feature kernels)."""
        return feature_halo(self.features)

    def bytes_per_slice(self, ny: int, nx: int) -> int:
        """Working memory in bytes per z-slice of a prediction slab (features + probabilities)."""
        return int(ny) * int(nx) * 4 * (self.features.n_features + 2 * len(self.classes) + 4)

    def proba_of_features(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities ``(..., C)`` float32 of a feature array ``(..., F)``."""
        from . import _trees

        f = np.asarray(feats, dtype=np.float32)
        if f.shape[-1] != self.features.n_features:
            raise InputError(f"features have {f.shape[-1]} channels, the model needs {self.features.n_features}")
        if self._packed is None:
            self._packed = _trees.pack(self._forest)
        return _trees.run(f.reshape(-1, f.shape[-1]), self._packed).reshape(f.shape[:-1] + (len(self.classes),))

    def proba_slab(self, source, z0: int, z1: int) -> np.ndarray:
        """Probabilities ``(C, z1-z0, y, x)`` of slices ``z0:z1`` of ``source`` (reads slab + halo)."""
        feats = features_of_slab(source, z0, z1, self.features)
        p = self.proba_of_features(feats)
        return np.moveaxis(p, -1, 0)

    def predict_proba(self, image, **kwargs) -> np.ndarray:
        """Shortcut for :func:`tomo4d.segment.predict_proba` (``(C, *image.shape)`` float32)."""
        return predict_proba(self, image, **kwargs)

    def predict(self, image, **kwargs) -> np.ndarray:
        """Shortcut for :func:`tomo4d.segment.predict_labels`."""
        return predict_labels(self, image, **kwargs)

    # -- persistence -------------------------------------------------------
    def meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "classes": list(self.classes),
                "features": self.features.to_dict(), "feature_names": list(feature_names(self.features)),
                "n_trees": self.n_trees, "training": self.training, "tomo4d_version": __version__}

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the model to ``path`` (``.npz``, see the module docstring), atomically."""
        path = Path(path)
        f = self._forest
        meta = np.frombuffer(json.dumps(self.meta(), sort_keys=True).encode("utf-8"), dtype=np.uint8)
        with atomic_output(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, meta=meta, left=f.left, right=f.right, feature=f.feature,
                                    threshold=f.threshold, value=f.value, roots=f.roots)
        return path

    @classmethod
    def load(cls, path) -> PixelClassifier:
        """Read a model written by :meth:`save` (no pickle is ever loaded)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"model {str(path)!r} does not exist; check the path")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise FormatError(f"{str(path)!r} is not a tomo4d pixel-classifier file ({exc})") from None
        need = {"meta", "left", "right", "feature", "threshold", "value", "roots"}
        if not need <= set(arrays):
            raise FormatError(f"{str(path)!r} lacks {sorted(need - set(arrays))}; not a tomo4d pixel classifier")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FormatError(f"{str(path)!r}: unreadable metadata; not a tomo4d pixel classifier") from None
        if meta.get("format") != FORMAT:
            raise FormatError(f"{str(path)!r} is a {meta.get('format')!r} file, not a {FORMAT}")
        if int(meta.get("version", 0)) > VERSION:
            raise FormatError(f"{str(path)!r} has format version {meta.get('version')}; this tomo4d reads "
                              f"version <= {VERSION}; upgrade tomo4d")
        forest = _Forest(
            left=np.ascontiguousarray(arrays["left"], np.int32),
            right=np.ascontiguousarray(arrays["right"], np.int32),
            feature=np.ascontiguousarray(arrays["feature"], np.int32),
            threshold=np.ascontiguousarray(arrays["threshold"], np.float64),
            value=np.ascontiguousarray(arrays["value"], np.float32),
            roots=np.ascontiguousarray(arrays["roots"], np.int64),
        )
        try:
            spec = FeatureSpec.from_dict(meta["features"])
            return cls(forest, classes=meta["classes"], features=spec, training=meta.get("training"))
        except (KeyError, TypeError, InputError) as exc:
            raise FormatError(f"{str(path)!r}: inconsistent pixel-classifier file ({exc})") from None


def _validate_forest(f: _Forest, *, n_features: int, n_classes: int) -> None:
    """Check the flat arrays so that the compiled traversal can never index out of bounds or loop."""
    n = f.left.shape[0]
    if not (f.right.shape == f.feature.shape == f.threshold.shape == (n,)) or f.value.shape != (n, n_classes):
        raise FormatError(f"forest arrays have inconsistent shapes (nodes {n}, classes {n_classes})")
    if f.roots.ndim != 1 or f.roots.size == 0 or f.roots.min() < 0 or f.roots.max() >= n:
        raise FormatError("forest roots are missing or out of range")
    leaf = f.left == -1
    if not np.array_equal(leaf, f.right == -1):
        raise FormatError("forest nodes with only one child")
    idx = np.arange(n)
    inner = ~leaf
    if np.any(f.left[inner] <= idx[inner]) or np.any(f.right[inner] <= idx[inner]) \
            or np.any(f.left[inner] >= n) or np.any(f.right[inner] >= n):
        raise FormatError("forest children must have larger indices than their parent and exist")
    if np.any(f.feature[inner] < 0) or np.any(f.feature[inner] >= n_features):
        raise FormatError(f"forest splits use features outside 0..{n_features - 1}")


def forest_from_sklearn(rf) -> _Forest:
    """Flatten the trees of a fitted scikit-learn forest into global node arrays."""
    lefts, rights, feats, thrs, vals, roots = [], [], [], [], [], []
    offset = 0
    for est in rf.estimators_:
        t = est.tree_
        left = t.children_left.astype(np.int64)
        right = t.children_right.astype(np.int64)
        leaf = left == -1
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        feats.append(np.where(leaf, 0, t.feature))
        thrs.append(np.asarray(t.threshold, np.float64))
        v = np.asarray(t.value[:, 0, :], np.float64)
        v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)
        vals.append(v)
        roots.append(offset)
        offset += t.node_count
    return _Forest(
        left=np.concatenate(lefts).astype(np.int32), right=np.concatenate(rights).astype(np.int32),
        feature=np.concatenate(feats).astype(np.int32), threshold=np.concatenate(thrs),
        value=np.concatenate(vals).astype(np.float32), roots=np.asarray(roots, np.int64),
    )


def train_pixel_classifier(image, labels, *, features: FeatureSpec | None = None, n_trees: int = 32,
                           max_depth: int | None = None, min_samples_leaf: int = 1,
                           max_samples_per_class: int = 20_000, balance_classes: bool = True,
                           voxel_size_nm=None, seed: int = 0, progress=None) -> PixelClassifier:
    """Train a random-forest pixel classifier from sparse labels (scribbles).

    To label every voxel of the training image too, :func:`train_and_predict` computes its features
    once for both.

    Parameters
    ----------
    image : Volume or array_like, shape (y, x) or (z, y, x); or a list of them
        Grey values.  A lazy (dask) volume is read only around labelled slices.  A list trains one
        classifier on the labelled voxels of several images (e.g. time steps in which different phases
        are present); every image must share the voxel size.
    labels : Volume, array_like of int, :class:`~tomo4d.segment.LabelPlanes` or :class:`~tomo4d.segment.LabelSlabs`
        Same shape (a list of the same length for a list of images); 0 = unlabelled, 1, 2, ... = classes (at
        least two classes over all images).  Read slab by slab (a lazy volume is never loaded whole): the
        samples are drawn from per-plane class counts before any feature is computed
        (:func:`tomo4d.segment.training_samples`).
    features : FeatureSpec, optional
        Feature set; default :class:`FeatureSpec()` (slice-wise).  Its
        ``voxel_ratio`` is replaced by the image's voxel size when known.
    n_trees : int
        Number of trees.
    max_depth, min_samples_leaf : int
        Tree size limits (scikit-learn meaning).
    max_samples_per_class : int
        At most this many labelled voxels per class are used (random, seeded).
    balance_classes : bool
        Weight classes inversely to their sample counts.
    voxel_size_nm : float or (z, y, x), optional
        Overrides the voxel size of a Volume (only its ratios matter).
    seed : int
        Seed of the subsampling and of the forest.
    progress : callable(done, total), optional
        Called while features of labelled slabs are computed.

    Returns
    -------
    PixelClassifier

    Raises
    ------
    InputError
        Labels of another shape, no labelled voxel, a single class, bad options.
    """
    return _train(image, labels, features=features, n_trees=n_trees, max_depth=max_depth,
                  min_samples_leaf=min_samples_leaf, max_samples_per_class=max_samples_per_class,
                  balance_classes=balance_classes, voxel_size_nm=voxel_size_nm, seed=seed, progress=progress)


def train_and_predict(image, labels, *, max_feature_bytes: int = 2**30, every_image: bool = False, **options):
    """Train a pixel classifier on the scribbles of ``image`` and label every voxel of that image, computing
    its feature stack once (not once for the labelled slabs and again for the prediction).

    Parameters
    ----------
    image, labels
        As in :func:`train_pixel_classifier`.  With a list (several labelled images, pooled), every voxel
        of the first image is labelled; the others are read only around their labelled slices.
    max_feature_bytes : int
        The whole feature stack of the (first) image (voxels x features x 4 bytes) is kept only up to this
        size; a lazy (dask) image within it is read into memory.  A larger image falls back to
        :func:`train_pixel_classifier` then :func:`predict_labels`, slab by slab.
    every_image : bool
        With a list: also label the other images, from their feature stacks, when the stacks of all images
        fit ``max_feature_bytes`` together (each image's features then computed once); when they do not,
        the others are left to the caller (None in the list: predicting them here would compute their
        features a second time anyway, :func:`predict_labels` does that slab by slab).
    **options
        Keyword options of :func:`train_pixel_classifier`.

    Returns
    -------
    (PixelClassifier, numpy.ndarray or list of numpy.ndarray)
        The model and the labels of every voxel (values of ``model.classes``, the smallest unsigned dtype),
        as :func:`predict_labels` gives them up to float rounding of the features; with ``every_image`` a
        list, one label volume (or None) per image.
    """
    from ._common import label_dtype
    from .features import compute_features

    several = isinstance(image, (list, tuple))
    images = list(image) if several else [image]
    arrays = [image_array(im) for im in images]
    every = every_image and several
    kept: list[np.ndarray | None] = []

    def stacks_for(spec: FeatureSpec):
        whole = arrays if every else arrays[:1]
        if sum(a.size for a in whole) * spec.n_features * 4 <= max_feature_bytes:
            kept.extend(compute_features(np.asarray(a), spec) for a in whole)
            return kept + [None] * (len(arrays) - len(kept))  # the others: their labelled slabs
        if every and arrays[0].size * spec.n_features * 4 <= max_feature_bytes:
            kept.append(compute_features(np.asarray(arrays[0]), spec))
            return kept + [None] * (len(arrays) - 1)
        return None

    model = _train(image, labels, stacks_for=stacks_for, **options)
    classes = np.asarray(model.classes, dtype=label_dtype(model.classes))
    out: list[np.ndarray | None] = []
    for k, im in enumerate(images[: len(images) if every else 1]):
        if k >= len(kept) or kept[k] is None:
            out.append(predict_labels(model, im) if k == 0 else None)
            continue
        feats, kept[k] = kept[k], None                        # each stack freed once its image is labelled
        lab = np.empty(feats.shape[:-1], classes.dtype)
        step = max(1, 2**24 // max(1, int(np.prod(feats.shape[1:-1])) * len(classes)))   # ~64 MiB of probabilities
        for z0 in range(0, lab.shape[0], step):
            lab[z0:z0 + step] = classes[np.argmax(model.proba_of_features(feats[z0:z0 + step]), axis=-1)]
        del feats
        out.append(lab)
    return model, (out if every else out[0])


def _train(image, labels, *, features: FeatureSpec | None = None, n_trees: int = 32, max_depth: int | None = None,
           min_samples_leaf: int = 1, max_samples_per_class: int = 20_000, balance_classes: bool = True,
           voxel_size_nm=None, seed: int = 0, progress=None, stacks_for=None) -> PixelClassifier:
    """:func:`train_pixel_classifier`; ``stacks_for(spec)`` may return the feature stack of every image."""
    from sklearn.ensemble import RandomForestClassifier

    pairs = _pairs(image, labels)
    data = image_array(pairs[0][0])
    for name, v in (("n_trees", n_trees), ("min_samples_leaf", min_samples_leaf),
                    ("max_samples_per_class", max_samples_per_class)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}={show(v)} must be an integer >= 1")
    if max_depth is not None and (not isinstance(max_depth, (int, np.integer)) or max_depth < 1):
        raise InputError(f"max_depth={show(max_depth)} must be None or an integer >= 1")
    spec = features or FeatureSpec()
    vs = voxel_size_of(pairs[0][0], voxel_size_nm)
    if vs is not None:
        spec = FeatureSpec.for_voxel_size(vs, sigmas=spec.sigmas, kinds=spec.kinds, ndim=spec.ndim,
                                          truncate=spec.truncate, include_raw=spec.include_raw)
    if data.ndim == 2 and spec.ndim == 3:
        raise InputError("features.ndim=3 needs a 3D (z, y, x) image; use FeatureSpec(ndim=2) for a 2D slice")
    rng = np.random.default_rng(seed)
    x, y, classes = training_samples(pairs, spec, max_per_class=int(max_samples_per_class), rng=rng,
                                     progress=progress, stacks=None if stacks_for is None else stacks_for(spec))
    counts = {str(c): int(np.count_nonzero(y == c)) for c in classes}
    rf = RandomForestClassifier(
        n_estimators=int(n_trees), max_depth=max_depth, min_samples_leaf=int(min_samples_leaf),
        max_features="sqrt", class_weight="balanced" if balance_classes else None,
        random_state=int(rng.integers(2**31 - 1)), n_jobs=1,
    )
    rf.fit(x, y)
    forest = forest_from_sklearn(rf)
    training = {"samples_per_class": counts, "voxel_size_nm": list(vs) if vs else None, "seed": int(seed),
                "n_trees": int(n_trees), "max_depth": max_depth, "min_samples_leaf": int(min_samples_leaf),
                "image_shape": list(data.shape), "n_images": len(pairs)}
    log.info("pixel classifier: %d trees, %d nodes, %d samples", n_trees, forest.left.size, y.size)
    model = PixelClassifier(forest, classes=[int(c) for c in rf.classes_], features=spec, training=training)
    return model


def _pairs(image, labels) -> list:
    """``[(image, labels), ...]`` of one pair or of two equal-length lists."""
    if isinstance(image, (list, tuple)):
        if not isinstance(labels, (list, tuple)) or len(labels) != len(image) or not image:
            n = len(labels) if isinstance(labels, (list, tuple)) else "not a list"
            raise InputError(f"image is a list of {len(image)} volumes but labels has {n}; give one label "
                             "volume per image")
        return list(zip(image, labels))
    return [(image, labels)]


__all__ = ["PixelClassifier", "train_pixel_classifier", "train_and_predict", "labelled_samples",
           "forest_from_sklearn"]
