"""SIFT congruence: how many local features of the reference are found again in an image."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, check_choice
from ._common import check_range, image_pair, pick_slices

log = logging.getLogger(__name__)

MODELS = ("none", "euclidean", "similarity", "affine")


@dataclass(frozen=True, eq=False)
class SiftResult:
    """Outcome of :func:`sift_matches`.

    Attributes
    ----------
    n_matches : int
        Congruent features: matches passing Lowe's ratio test (and cross-check),
        and, when a geometric ``model`` was asked for, its RANSAC inliers.
        Summed over the slices for a volume.
    n_keypoints_reference, n_keypoints_image : int
        Keypoints found in each image (summed over slices).
    n_ratio_matches : int
        Matches after the ratio test, before geometric verification.
    per_slice : tuple of int
        ``n_matches`` of each analysed slice (one entry for a 2D image).
    slices : tuple of int
        z index of each entry of ``per_slice`` (0 for a 2D image).
    model : str
        Geometric model used for verification (``"none"``: no verification).
    matches : numpy.ndarray, shape (n_matches, 5)
        ``(z, y_ref, x_ref, y_img, x_img)`` in pixels of each congruent feature.
    """

    n_matches: int
    n_keypoints_reference: int
    n_keypoints_image: int
    n_ratio_matches: int
    per_slice: tuple[int, ...]
    slices: tuple[int, ...]
    model: str
    matches: np.ndarray

    def to_dict(self) -> dict:
        return {"n_matches": self.n_matches, "n_keypoints_reference": self.n_keypoints_reference,
                "n_keypoints_image": self.n_keypoints_image, "n_ratio_matches": self.n_ratio_matches,
                "per_slice": list(self.per_slice), "slices": list(self.slices), "model": self.model}


def _normalise(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InputError("an image given to sift_matches is constant; SIFT finds no features in it")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float64)


def _strength(img: np.ndarray, kp_yx: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Scale-normalised |Laplacian of Gaussian| at each keypoint (ranks keypoints by contrast)."""
    from scipy import ndimage

    out = np.empty(len(kp_yx))
    levels = np.round(np.log2(sigmas) * 3) / 3  # one third of an octave is SIFT's scale step
    for lev in np.unique(levels):
        sel = levels == lev
        s = float(2 ** lev)
        log_img = np.abs(ndimage.gaussian_laplace(img, s)) * s * s
        iy = np.clip(np.rint(kp_yx[sel, 0]).astype(int), 0, img.shape[0] - 1)
        ix = np.clip(np.rint(kp_yx[sel, 1]).astype(int), 0, img.shape[1] - 1)
        out[sel] = log_img[iy, ix]
    return out


def _features(img: np.ndarray, n_keypoints, sift_kw):
    from skimage.feature import SIFT

    det = SIFT(**sift_kw)
    try:
        det.detect_and_extract(img)
    except RuntimeError:  # scikit-image raises when nothing is found
        return np.empty((0, 2)), np.empty((0, 128), np.uint8)
    kp, desc = np.asarray(det.keypoints, float), np.asarray(det.descriptors)
    if n_keypoints is not None and len(kp) > n_keypoints:
        order = np.argsort(-_strength(img, kp, np.asarray(det.sigmas, float)), kind="stable")[:n_keypoints]
        kp, desc = kp[order], desc[order]
    return kp, desc


def _verify(src, dst, model: str, residual_px: float, max_trials: int, seed: int) -> np.ndarray:
    from skimage.measure import ransac
    from skimage.transform import AffineTransform, EuclideanTransform, SimilarityTransform

    cls = {"euclidean": EuclideanTransform, "similarity": SimilarityTransform, "affine": AffineTransform}[model]
    min_samples = 3 if model == "affine" else 2
    if len(src) <= min_samples:
        return np.zeros(len(src), bool)
    # RANSAC works in (x, y) order like the transforms of scikit-image
    _, inliers = ransac((src[:, ::-1], dst[:, ::-1]), cls, min_samples=min_samples, residual_threshold=residual_px,
                        max_trials=max_trials, rng=np.random.default_rng(seed))
    return np.zeros(len(src), bool) if inliers is None else np.asarray(inliers, bool)


def sift_matches(reference, image, *, n_keypoints: int | None = None, ratio: float = 0.8,
                 model: str = "none", residual_px: float = 2.0, max_trials: int = 500, slices=None,
                 seed: int = 0, upsampling: int = 2, n_octaves: int = 8, c_dog: float = 0.04 / 3) -> SiftResult:
    """Number of SIFT features of ``reference`` congruently found in ``image``.

    Keypoints and descriptors come from scikit-image's SIFT [2]_ on each image
    scaled to [0, 1] by its own 0.5/99.5 percentiles.  Descriptors are matched
    by nearest neighbour with Lowe's ratio test [1]_ (closest distance below
    ``ratio`` times the second closest) and a mutual (cross) check.  With
    ``model`` other than ``"none"`` the matches are verified geometrically:
    only RANSAC inliers of a global transform within ``residual_px`` pixels
    count, which discards look-alike features in the wrong place.

    Parameters
    ----------
    reference, image : array_like or Volume, shape (y, x) or (z, y, x)
        Two images of the same shape.  Volumes are analysed on xy ``slices``.
    n_keypoints : int, optional
        Keep at most this many keypoints per image, the strongest by
        scale-normalised Laplacian-of-Gaussian response; default all.
    ratio : float in (0, 1]
        Lowe's ratio threshold (0.8 in [1]_).
    model : {"none", "euclidean", "similarity", "affine"}
        Geometric verification model.
    residual_px : float
        RANSAC inlier distance in pixels.
    max_trials : int
        RANSAC iterations.
    slices : sequence of int, optional
        z indices of a volume; default 5 evenly spaced slices in the central 80 %.
    seed : int
        Seed of RANSAC's random sampling.
    upsampling, n_octaves, c_dog
        Passed to :class:`skimage.feature.SIFT`.

    Returns
    -------
    SiftResult

    References
    ----------
    .. [1] D. G. Lowe, "Distinctive image features from scale-invariant keypoints",
       Int. J. Comput. Vision 60 (2004) 91-110. :DOI:`10.1023/B:VISI.0000029664.99615.94`
    .. [2] I. Rey-Otero, M. Delbracio, "Anatomy of the SIFT method", Image Processing
       On Line 4 (2014) 370-396.
    """
    from skimage.feature import match_descriptors

    check_choice("model", model, MODELS)
    ratio = check_range("ratio", ratio, 1e-6, 1.0)
    if n_keypoints is not None:
        n_keypoints = check_range("n_keypoints", n_keypoints, 1, integer=True)
    residual_px = check_range("residual_px", residual_px, 1e-6)
    max_trials = check_range("max_trials", max_trials, 1, integer=True)
    ref, img = image_pair(reference, image)
    if min(ref.shape[-2:]) < 16:
        raise InputError(f"images of shape {ref.shape} are too small for SIFT; give slices of at least 16x16")
    sift_kw = {"upsampling": check_range("upsampling", upsampling, 1, 4, integer=True),
               "n_octaves": check_range("n_octaves", n_octaves, 1, 16, integer=True),
               "c_dog": check_range("c_dog", c_dog, 0)}
    if sift_kw["upsampling"] not in (1, 2, 4):
        raise InputError(f"upsampling={upsampling!r} must be 1, 2 or 4")
    zs = pick_slices(ref.shape[0], slices, 5) if ref.ndim == 3 else (0,)
    per, n_ref, n_img, n_ratio, rows = [], 0, 0, 0, []
    for z in zs:
        r2 = _normalise(ref[z] if ref.ndim == 3 else ref)
        i2 = _normalise(img[z] if img.ndim == 3 else img)
        kr, dr = _features(r2, n_keypoints, sift_kw)
        ki, di = _features(i2, n_keypoints, sift_kw)
        n_ref += len(kr)
        n_img += len(ki)
        if len(kr) < 2 or len(ki) < 2:
            per.append(0)
            continue
        pairs = match_descriptors(dr, di, max_ratio=ratio, cross_check=True)
        n_ratio += len(pairs)
        src, dst = kr[pairs[:, 0]], ki[pairs[:, 1]]
        if model != "none":
            keep = _verify(src, dst, model, residual_px, max_trials, seed)
            src, dst = src[keep], dst[keep]
        per.append(len(src))
        rows.append(np.column_stack([np.full(len(src), z, float), src, dst]))
    matches = np.concatenate(rows) if rows else np.empty((0, 5))
    log.debug("sift_matches: %d keypoints / %d keypoints, %d ratio matches, %d congruent",
              n_ref, n_img, n_ratio, len(matches))
    return SiftResult(int(sum(per)), int(n_ref), int(n_img), int(n_ratio), tuple(int(p) for p in per),
                      tuple(int(z) for z in zs), model, matches)
