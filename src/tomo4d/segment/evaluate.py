"""Scores of a segmentation against ground truth, and comparison of training inputs.

* Per class: Dice ``2|P∩T|/(|P|+|T|)``, IoU ``|P∩T|/|P∪T|`` and boundary F1:
  the boundary voxels of the class in the prediction and in the truth are
  matched when they lie within ``boundary_tolerance_nm`` of each other
  (Euclidean, with the voxel size); precision = matched predicted boundary /
  predicted boundary, recall = matched true boundary / true boundary.
* Per particle: predicted and true particles are matched one-to-one when their
  IoU is at least ``iou_threshold`` (0.5 makes the matching unique);
  precision = matched / predicted, recall = matched / true.

Scores undefined because a class is absent from both prediction and truth
are ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from .._array import to_numpy
from .._validate import check_int, check_labels, check_number, show, show_values
from ..errors import InputError, check_choice
from ..volume import Volume
from .forest import train_pixel_classifier
from .instances import label_particles
from .predict import predict_labels
from .unet import train_unet


@dataclass(frozen=True)
class ClassScores:
    """Agreement of one class between prediction and truth.

    Attributes
    ----------
    label : int
        Class value.
    dice, iou : float
        Overlap scores in [0, 1].
    boundary_precision, boundary_recall, boundary_f1 : float
        Boundary agreement within the tolerance, in [0, 1].
    n_true_voxels, n_predicted_voxels : int
        Voxels of the class in the truth / prediction (inside the evaluated region).
    """

    label: int
    dice: float
    iou: float
    boundary_precision: float
    boundary_recall: float
    boundary_f1: float
    n_true_voxels: int
    n_predicted_voxels: int


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class scores and overall accuracy of a segmentation.

    Attributes
    ----------
    classes : tuple of ClassScores
    accuracy : float
        Fraction of evaluated voxels with the right class.
    n_voxels : int
        Voxels evaluated.
    boundary_tolerance_nm : float
        Tolerance used for boundary matching (nm; voxels when the voxel size is unknown).
    """

    classes: tuple[ClassScores, ...]
    accuracy: float
    n_voxels: int
    boundary_tolerance_nm: float

    def of(self, label: int) -> ClassScores:
        """Scores of class ``label``."""
        for c in self.classes:
            if c.label == int(label):
                return c
        raise InputError(f"class {show(label)} was not evaluated; classes: {[c.label for c in self.classes]}")

    @property
    def mean_dice(self) -> float:
        vals = [c.dice for c in self.classes if not math.isnan(c.dice)]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParticleScores:
    """Particle-level detection scores (matching by IoU).

    Attributes
    ----------
    n_predicted, n_true, n_matched : int
    precision, recall, f1 : float
        In [0, 1] (``nan`` when undefined: no particles on that side).
    mean_matched_iou : float
        Mean IoU of the matched pairs.
    iou_threshold : float
    """

    n_predicted: int
    n_true: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    iou_threshold: float

    def to_dict(self) -> dict:
        return asdict(self)


def _arr(x, name, *, instances: bool = False):
    """Labels ``x`` (Volume or array, 2D or 3D) as integer numpy, checked by :func:`tomo4d._validate.check_labels`."""
    return check_labels(name, x, ndim=(2, 3), instances=instances,
                        role="particle labels are expected" if instances else "labels are expected")


def _check_overlap(pred, true, valid, pred_name="prediction", truth_name="truth"):
    """Refuse two label images with no value in common: their codes differ, every score would be 0."""
    vp, vt = np.unique(pred[valid]), np.unique(true[valid])
    if vp.size and vt.size and not np.intersect1d(vp, vt).size:
        raise InputError(f"{pred_name} holds values {show_values(vp)} and {truth_name} holds {show_values(vt)}: "
                         "no value in common, so every score would be 0; the two use different label codes: "
                         "relabel one of them (--map SRC:DST on the command line, e.g. --map 255:2)")


def _spacing(voxel_size_nm, ndim, *objs):
    if voxel_size_nm is None:
        for o in objs:
            if isinstance(o, Volume) and o.voxel_size_known:
                voxel_size_nm = o.voxel_size_nm
                break
    if voxel_size_nm is None:
        return (1.0,) * ndim
    vs = np.atleast_1d(np.asarray(voxel_size_nm, np.float64))
    if vs.size == 1:
        vs = np.repeat(vs, ndim)
    if vs.size == 3 and ndim == 2:
        vs = vs[1:]
    if vs.size != ndim or np.any(~np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_nm={show(voxel_size_nm)} must be positive, one value or one per axis")
    return tuple(float(v) for v in vs)


def _squeeze_pair(pred, truth, pred_name="prediction", truth_name="truth"):
    if pred.shape != truth.shape:
        sp = tuple(s for s in pred.shape if s != 1)
        st = tuple(s for s in truth.shape if s != 1)
        if sp == st and len(sp) in (2, 3):
            return pred.reshape(sp), truth.reshape(st)
        raise InputError(f"{pred_name} has shape {pred.shape} but {truth_name} has shape {truth.shape}; "
                         "compare segmentations of the same region")
    return pred, truth


def _boundary(m: np.ndarray) -> np.ndarray:
    if not m.any():
        return m
    return m & ~ndi.binary_erosion(m, structure=ndi.generate_binary_structure(m.ndim, 1), border_value=1)


def _ratio(a, b) -> float:
    return float(a) / float(b) if b > 0 else float("nan")


def _f1(p, r) -> float:
    if math.isnan(p) or math.isnan(r):
        return float("nan")
    return 2 * p * r / (p + r) if (p + r) > 0 else 0.0


def boundary_scores(pred_mask, true_mask, *, tolerance_nm: float, spacing, region=None) -> tuple[float, float, float]:
    """(precision, recall, F1) of the boundaries of two boolean masks within ``tolerance_nm``."""
    bp, bt = _boundary(pred_mask), _boundary(true_mask)
    if region is not None:
        bp_c, bt_c = bp & region, bt & region
    else:
        bp_c, bt_c = bp, bt
    n_p, n_t = int(bp_c.sum()), int(bt_c.sum())
    if n_p == 0 and n_t == 0:
        return float("nan"), float("nan"), float("nan")
    if n_p == 0 or n_t == 0:
        return (float("nan") if n_p == 0 else 0.0), (float("nan") if n_t == 0 else 0.0), 0.0
    d_to_true = ndi.distance_transform_edt(~bt, sampling=spacing)
    d_to_pred = ndi.distance_transform_edt(~bp, sampling=spacing)
    prec = float(np.count_nonzero(d_to_true[bp_c] <= tolerance_nm)) / n_p
    rec = float(np.count_nonzero(d_to_pred[bt_c] <= tolerance_nm)) / n_t
    return prec, rec, _f1(prec, rec)


def evaluate_segmentation(prediction, truth, *, classes=None, region=None, ignore_label: int | None = None,
                          voxel_size_nm=None, boundary_tolerance_nm: float | None = None) -> SegmentationScores:
    """Dice, IoU and boundary F1 per class, and accuracy.

    Parameters
    ----------
    prediction, truth : Volume or array_like of int, same shape (2D or 3D)
        Label images.
    classes : sequence of int, optional
        Classes to score; default every value in the truth (except ``ignore_label``).
    region : array_like of bool, optional
        Evaluate only these voxels (e.g. the part not used for training).
        Boundaries are found on the whole images, then counted inside the region.
    ignore_label : int, optional
        Truth voxels with this value are not evaluated (e.g. 0 = unlabelled).
    voxel_size_nm : float or per-axis, optional
        For boundary distances (default: a Volume's voxel size, else 1 nm voxels).
    boundary_tolerance_nm : float, optional
        Default: 2 voxels (of the largest edge).

    Returns
    -------
    SegmentationScores
    """
    pred, true = _squeeze_pair(_arr(prediction, "prediction"), _arr(truth, "truth"))
    spacing = _spacing(voxel_size_nm, true.ndim, prediction, truth)
    tol = (2.0 * max(spacing) if boundary_tolerance_nm is None
           else check_number("boundary_tolerance_nm", boundary_tolerance_nm, minimum=0.0))
    valid = np.ones(true.shape, bool)
    if region is not None:
        reg = np.asarray(to_numpy(region.data if isinstance(region, Volume) else region), dtype=bool)
        if reg.shape != true.shape:
            reg = reg.reshape(true.shape) if reg.size == true.size else None
            if reg is None:
                raise InputError(f"region has shape {np.shape(region)}, the truth {true.shape}; give a boolean "
                                 "mask of the same shape")
        valid &= reg
    if ignore_label is not None:
        valid &= true != check_int("ignore_label", ignore_label, minimum=0)
    n = int(valid.sum())
    if n == 0:
        raise InputError("no voxel to evaluate (the region / ignore_label exclude everything)")
    _check_overlap(pred, true, valid)
    if classes is None:
        classes = [int(c) for c in np.unique(true[valid])]
    rows = []
    for c in classes:
        pm, tm = pred == c, true == c
        pv, tv = pm & valid, tm & valid
        inter = int(np.count_nonzero(pv & tv))
        n_p, n_t = int(pv.sum()), int(tv.sum())
        dice = _ratio(2 * inter, n_p + n_t)
        iou = _ratio(inter, n_p + n_t - inter)
        bp, br, bf = boundary_scores(pm, tm, tolerance_nm=tol, spacing=spacing, region=valid)
        rows.append(ClassScores(label=int(c), dice=dice, iou=iou, boundary_precision=bp, boundary_recall=br,
                                boundary_f1=bf, n_true_voxels=n_t, n_predicted_voxels=n_p))
    acc = float(np.count_nonzero((pred == true) & valid)) / n
    return SegmentationScores(classes=tuple(rows), accuracy=acc, n_voxels=n, boundary_tolerance_nm=tol)


def match_particles(predicted, true, *, iou_threshold: float = 0.5) -> ParticleScores:
    """Match predicted to true particles one-to-one by IoU and count detections.

    Parameters
    ----------
    predicted, true : array_like of int, same shape
        Particle labels (0 = background, each particle one value).
    iou_threshold : float
        Minimum IoU of a match, in (0, 1].  At >= 0.5 each particle can match
        at most one other (pairs are taken by decreasing IoU).

    Returns
    -------
    ParticleScores
    """
    pred, tr = _squeeze_pair(_arr(predicted, "predicted", instances=True), _arr(true, "true", instances=True))
    thr = check_number("iou_threshold", iou_threshold, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    # relabel sequentially so that bincount stays small
    _, p = np.unique(pred.ravel(), return_inverse=True)
    _, t = np.unique(tr.ravel(), return_inverse=True)
    p = p if pred.min() == 0 else p + 1
    t = t if tr.min() == 0 else t + 1
    size_p = np.bincount(p)
    size_t = np.bincount(t)
    n_pred = int(np.count_nonzero(size_p[1:]))
    n_true = int(np.count_nonzero(size_t[1:]))
    both = (p > 0) & (t > 0)
    key = p[both].astype(np.int64) * (size_t.size + 1) + t[both]
    pairs, inter = np.unique(key, return_counts=True)
    pi, ti = pairs // (size_t.size + 1), pairs % (size_t.size + 1)
    return match_overlaps(pi, ti, inter, size_p[pi], size_t[ti], n_pred=n_pred, n_true=n_true, iou_threshold=thr)


def match_overlaps(pi, ti, inter, size_pi, size_ti, *, n_pred: int, n_true: int, iou_threshold: float) -> ParticleScores:
    """One-to-one matching by decreasing IoU from the overlapping pairs ``(pi, ti)`` (sorted by ``(pi, ti)``),
    their shared voxels ``inter`` and the sizes of their two particles; ties keep the pairs' order."""
    iou = inter / (size_pi + size_ti - inter)
    order = np.argsort(-iou, kind="stable")
    used_p, used_t, ious = set(), set(), []
    for k in order:
        if iou[k] < iou_threshold:
            break
        if pi[k] in used_p or ti[k] in used_t:
            continue
        used_p.add(int(pi[k]))
        used_t.add(int(ti[k]))
        ious.append(float(iou[k]))
    m = len(ious)
    prec, rec = _ratio(m, n_pred), _ratio(m, n_true)
    return ParticleScores(n_predicted=n_pred, n_true=n_true, n_matched=m, precision=prec, recall=rec,
                          f1=_ratio(2 * m, n_pred + n_true),
                          mean_matched_iou=float(np.mean(ious)) if ious else float("nan"), iou_threshold=iou_threshold)


@dataclass(frozen=True)
class InputScores:
    """Scores of the segmentation trained and predicted on one input image."""

    name: str
    scores: SegmentationScores
    particles: ParticleScores | None


@dataclass(frozen=True)
class InputComparison:
    """The same training labels and method applied to several images of one region.

    Attributes
    ----------
    method : str
        ``"rf"`` or ``"unet"``.
    inputs : tuple of InputScores
        One entry per input, in the order given.
    focus_class : int or None
        Class whose Dice :meth:`ranking` orders by (default: mean Dice).
    """

    method: str
    inputs: tuple[InputScores, ...]
    focus_class: int | None

    def dice(self, name: str) -> float:
        """Dice of the focus class (mean Dice without one) for input ``name``."""
        for i in self.inputs:
            if i.name == name:
                return i.scores.of(self.focus_class).dice if self.focus_class is not None else i.scores.mean_dice
        raise InputError(f"no input named {name!r}; inputs: {[i.name for i in self.inputs]}")

    def ranking(self) -> tuple[str, ...]:
        """Input names from best to worst Dice."""
        return tuple(sorted((i.name for i in self.inputs), key=lambda n: -self.dice(n)))


def compare_inputs(images: Mapping[str, object], labels, truth, *, method: str = "rf", region=None,
                   focus_class: int | None = None, true_particles=None, particle_class: int | None = None,
                   voxel_size_nm=None, seed: int = 0, train_options: Mapping | None = None,
                   particle_options: Mapping | None = None) -> InputComparison:
    """Train the same classifier on each input image of one region and score each against the truth.

    This measures whether, e.g., InDI-enhanced images segment better than the
    low-quality images they come from: the labels, method, seed and options
    are identical, only the grey values differ.

    Parameters
    ----------
    images : mapping name -> Volume or array
        Co-registered images of the same region (same shape), e.g.
        ``{"LQ": lq, "InDI": enhanced}``.
    labels : array_like of int
        Training labels (scribbles or a few full slices; 0 = unlabelled).
    truth : array_like of int
        Dense true phase labels for evaluation.
    method : {"rf", "unet"}
    region : array_like of bool, optional
        Voxels to evaluate (default: those not labelled for training).
    focus_class : int, optional
        Class of interest (e.g. silicon) for :meth:`InputComparison.ranking`.
    true_particles : array_like of int, optional
        True particle labels; with ``particle_class`` also scores particles.
    particle_class : int, optional
        Label of the particle phase.
    voxel_size_nm, seed, train_options, particle_options
        Passed to the trainer / :func:`~tomo4d.segment.label_particles`.

    Returns
    -------
    InputComparison
    """
    check_choice("method", method, ("rf", "unet"))
    if not images:
        raise InputError("images is empty; give at least one named image, e.g. {'LQ': lq, 'InDI': enhanced}")
    lab = _arr(labels, "labels")
    if region is None:
        region = lab == 0
    results = []
    for name, img in images.items():
        if method == "rf":
            model = train_pixel_classifier(img, lab, seed=seed, voxel_size_nm=voxel_size_nm,
                                           **dict(train_options or {}))
        else:
            model = train_unet(img, lab, seed=seed, **dict(train_options or {}))
        pred = predict_labels(model, img)
        scores = evaluate_segmentation(pred, truth, region=region, voxel_size_nm=voxel_size_nm)
        parts = None
        if true_particles is not None and particle_class is not None:
            pl = label_particles(pred, particle_class=particle_class, voxel_size_nm=voxel_size_nm,
                                 **dict(particle_options or {}))
            parts = match_particles(pl.labels, true_particles)
        results.append(InputScores(name=str(name), scores=scores, particles=parts))
    return InputComparison(method=method, inputs=tuple(results), focus_class=focus_class)


__all__ = ["ClassScores", "SegmentationScores", "ParticleScores", "InputScores", "InputComparison",
           "evaluate_segmentation", "match_particles", "boundary_scores", "compare_inputs"]
