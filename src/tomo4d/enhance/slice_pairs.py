"""Training pairs of any shape (issue 19): the ``"volume"`` route (3D pair, LQ 2x coarser along z, y and x)
and the ``"slices"`` route (registered 2D slice pairs, LQ 2x coarser in-plane only).

``"slices"`` takes a stack of S slice pairs (LQ ``(S, y, x)``, HQ ``(S, 2y, 2x)``, one LQ slice per HQ
slice) or a single pair (S = 1).  The slices are independent: nothing is interpolated along z and
the z voxel sizes are not compared.  A stack holds out short blocks of slices spread through it
(:func:`tomo4d.enhance.holdout.holdout_split`, the split of the volume route, without guard slices by
default: the slices share no z up-sampling); a single slice is cut into horizontal strips of ``strip``
rows, and strips spread over the image the same way (the middle one when one is held out) validate:
the model is then validated on a part of the image it never saw.  The in-plane cubic up-sampling of
the LQ reaches 2 LQ rows (4 HQ rows) into the neighbouring strip; a training crop beside a validation
strip can therefore see those rows' LQ, never their HQ.
"""

from __future__ import annotations

import logging

import numpy as np

from .._array import as_float32
from .._validate import check_finite, check_int, check_number
from ..errors import InputError, check_choice

log = logging.getLogger(__name__)

ROUTES = ("auto", "volume", "slices")


def _ratio(lq, hq) -> np.ndarray:
    return np.asarray(lq.voxel_size_nm, float) / np.asarray(hq.voxel_size_nm, float)


def looks_like_slices(lq, hq) -> bool:
    """A stack of 2D slice pairs: one LQ slice per HQ slice, equal z voxel sizes (or a single slice)."""
    r = _ratio(lq, hq)
    return lq.shape[0] == hq.shape[0] and (abs(r[0] - 1.0) <= 0.05 or lq.shape[0] == 1)


def resolve_route(route: str, lq, hq) -> str:
    """Check the route against the pair's shapes and voxel sizes; ``"auto"`` picks one."""
    check_choice("route", route, ROUTES)
    slices = looks_like_slices(lq, hq)
    if route == "auto":
        return "slices" if slices else "volume"
    r = _ratio(lq, hq)
    if route == "volume" and slices:
        raise InputError(
            f"route='volume' super-resolves z, y and x, but lq {lq.shape} and hq {hq.shape} hold one LQ slice per HQ "
            f"slice (z voxel ratio {r[0]:.3g}): a 2D pair; use route='slices' (--route slices)")
    if route == "slices" and not slices:
        raise InputError(
            f"route='slices' super-resolves y and x only, but lq {lq.shape} and hq {hq.shape} differ along z "
            f"(z voxel ratio {r[0]:.3g}): a 3D pair; use route='volume' (--route volume)")
    return route


def check_slice_voxel_sizes(lq, hq, *, tolerance: float = 0.05) -> None:
    """Raise unless the LQ pixel is twice the HQ pixel along y and x (the axes the slices route super-resolves)."""
    r = _ratio(lq, hq)[1:]
    if not np.all(np.abs(r - 2.0) <= 2.0 * tolerance):
        raise InputError(
            f"voxel sizes do not match an x2 enhancement of 2D slices: LQ {tuple(lq.voxel_size_nm)} nm vs HQ "
            f"{tuple(hq.voxel_size_nm)} nm (ratio {tuple(float(v) for v in np.round(r, 3))} along y, x; the slices route needs 2 "
            "along y and x, z is not compared); fix the voxel sizes in the files or give --lq-voxel-size/"
            "--hq-voxel-size")


def _strips(a: np.ndarray, h: int) -> np.ndarray:
    k = a.shape[1] // h
    return np.ascontiguousarray(a[0, : k * h].reshape(k, h, a.shape[2]))


def prepare_slice_pair(lq, hq, *, phi0=None, val_fraction: float = 0.1, fov: bool = False, strip: int = 64,
                       min_overlap_score: float = 0.3, holdout: str = "spread", guard: int = 0):
    """Up-sample LQ slices x2 in-plane, align them on HQ (translation), mask, split (see the module docstring).

    Alignment: ``phi0`` when given; none when the up-sampled LQ has HQ's shape (registered pairs); else the
    coarse translation search of :func:`tomo4d.enhance.data.prepare_pair`, along y and x only.

    Returns
    -------
    TrainingPair
        On the HQ grid; for a single slice, ``(K, strip, X)`` strips of it.
    """
    from ..volume import as_volume
    from .data import TrainingPair, _coarse_translation, _resample, fov_mask, upsample2_xy
    from .holdout import holdout_split

    lq, hq = as_volume(lq), as_volume(hq)
    check_slice_voxel_sizes(lq, hq)
    val_fraction = check_number("val_fraction", val_fraction, minimum=0, maximum=0.9, exclusive_minimum=True)
    strip = check_int("strip", strip, minimum=8)
    if lq.shape[0] != hq.shape[0]:
        raise InputError(f"lq has {lq.shape[0]} slices and hq {hq.shape[0]}; the slices route pairs them one to one")
    if min(hq.shape[1:]) < 16 or min(lq.shape[1:]) < 8:
        raise InputError(f"slices of hq {hq.shape[1:]} / lq {lq.shape[1:]} are too small; give at least 16 x 16 "
                         "HQ pixels")
    hq_a = as_float32(hq.numpy())
    check_finite("hq (--hq)", hq_a)
    lq_a = as_float32(lq.numpy())
    check_finite("lq (--lq)", lq_a)
    lq_up = upsample2_xy(lq_a)
    phi = np.eye(4)
    if phi0 is not None:
        phi = np.asarray(phi0, float)
        if phi.shape != (4, 4):
            raise InputError(f"phi0 must be a 4x4 matrix, got shape {phi.shape}")
        how = "given"
    elif lq_up.shape == hq_a.shape:
        how = "none (registered slice pairs, same field)"
    else:
        corner, score = _coarse_translation(hq_a, lq_up)
        if score < min_overlap_score:
            raise InputError(f"LQ and HQ slices do not overlap: best normalised cross-correlation {score:.2f} < "
                             f"{min_overlap_score}; check that both show the same region (or give phi0)")
        phi[1:3, 3] = corner[1:]
        how = "coarse translation (y, x)"
    lq_reg = lq_up if how.startswith("none") else _resample(lq_up, phi, hq_a.shape, order=3)
    covered = (np.ones(hq_a.shape, bool) if how.startswith("none") else
               _resample(np.ones_like(lq_up), phi, hq_a.shape, order=1, cval=0.0) > 0.99)
    mask = covered & fov_mask(hq_a.shape[1:])[None] if fov else covered
    if mask.mean() < 0.05:
        raise InputError(f"LQ and HQ overlap in only {100 * mask.mean():.1f}% of the HQ pixels; they must image "
                         "the same region")
    if hq_a.shape[0] == 1:
        if hq_a.shape[1] // strip < 2:
            raise InputError(f"a single slice of {hq_a.shape[1]} rows makes fewer than 2 strips of strip={strip} "
                             "rows (one to train on, one to validate); give a larger image or a smaller crop")
        lq_reg, hq_a, mask = (_strips(a, strip) for a in (lq_reg, hq_a, mask))
        log.info("single slice pair cut into %d strips of %d rows", hq_a.shape[0], strip)
    nz = hq_a.shape[0]
    if nz < 2:
        raise InputError(f"{nz} slice is too few to hold out {val_fraction:.0%} for validation; give more slices "
                         "or a larger image")
    split = holdout_split(nz, val_fraction, guard=guard, holdout=holdout)
    if split.note and split.holdout == "spread":
        log.warning("validation split: %s", split.note)
    vs_hq, vs_lq = tuple(hq.voxel_size_nm), tuple(lq.voxel_size_nm)
    return TrainingPair(lq_reg.astype(np.float32), hq_a, mask, split.train, split.val,
                        phi, how, vs_hq, (vs_hq[0],) + vs_lq[1:], route="slices", split=split)


def as_slice_volume(image, voxel_size_nm=None, *, name: str = "image"):
    """A 2D image ``(y, x)`` or a stack ``(S, y, x)`` as a :class:`~tomo4d.Volume` of independent slices."""
    from ..volume import Volume, as_volume

    if isinstance(image, Volume):
        return image
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"{name} has shape {a.shape}; give a 2D image (y, x) or a stack of slices (S, y, x)")
    if voxel_size_nm is None:
        return as_volume(a)
    return Volume(a, voxel_size_nm)
