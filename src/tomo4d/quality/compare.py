"""One table comparing several images with a reference on all five metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ._common import image_array, image_pair, mask_array, voxel_size_of
from .contrast import cnr, cnr_classes
from .edges import EdgeResolution, edge_resolution
from .fidelity import psnr, ssim, ssim_slices
from .sift import sift_matches

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "sift", "edge", "cnr")


@dataclass(frozen=True)
class QualityRow:
    """Metrics of one image (``None`` where a metric was not computed or does not apply).

    Attributes
    ----------
    name : str
    is_reference : bool
        The row of the reference itself (PSNR/SSIM/SIFT do not apply).
    psnr_db : float or None
        PSNR against the reference, dB (whole image/volume).
    ssim : float or None
        SSIM against the reference (2D: the image; 3D: mean of the per-slice values).
    ssim_std : float or None
        Standard deviation of the per-slice SSIM (0 for a 2D image).
    sift_matches : int or None
        Congruent SIFT features with the reference.
    fwhm_mean_nm, fwhm_std_nm : float or None
        Edge resolution (FWHM of edge-profile derivatives), nm.
    n_edges : int or None
        Edges used for the resolution.
    cnr : float or None
        Contrast-to-noise ratio between the Otsu classes of the reference.
    """

    name: str
    is_reference: bool
    psnr_db: float | None = None
    ssim: float | None = None
    ssim_std: float | None = None
    sift_matches: int | None = None
    fwhm_mean_nm: float | None = None
    fwhm_std_nm: float | None = None
    n_edges: int | None = None
    cnr: float | None = None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if d["psnr_db"] is not None and math.isinf(d["psnr_db"]):
            d["psnr_db"] = "inf"
        return d


_COLUMNS = (("image", "name"), ("PSNR (dB)", "psnr_db"), ("SSIM", "ssim"), ("SIFT matches", "sift_matches"),
            ("edge FWHM (nm)", "fwhm_mean_nm"), ("+- (nm)", "fwhm_std_nm"), ("edges", "n_edges"), ("CNR", "cnr"))


@dataclass(frozen=True, eq=False)
class QualityTable:
    """Result of :func:`compare`.

    Attributes
    ----------
    reference : str
        Name of the reference.
    rows : tuple of QualityRow
        The reference first (when included), then the images in the given order.
    voxel_size_nm : (float, float, float)
        Voxel size (z, y, x) used, nm.
    cnr_noise : str
        Noise term of the CNR (see :func:`cnr`).
    edges : mapping of str to EdgeResolution
        Full edge-resolution results (with profiles) by row name.
    edge_errors : mapping of str to str
        Rows whose edge resolution could not be measured (too few isolated edges), with the
        reason; their FWHM is ``None`` and ``n_edges`` 0 rather than a number from bad profiles.
    """

    reference: str
    rows: tuple[QualityRow, ...]
    voxel_size_nm: tuple[float, float, float]
    cnr_noise: str
    edges: Mapping[str, EdgeResolution]
    edge_errors: Mapping[str, str] = field(default_factory=dict)

    def row(self, name: str) -> QualityRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def header(self) -> list[str]:
        """Column titles of :meth:`table_rows`."""
        return [c for c, _ in _COLUMNS]

    def table_rows(self) -> list[list]:
        """Rows of plain values for printing (``"-"`` where a metric does not apply)."""
        out = []
        for r in self.rows:
            vals = []
            for _, f in _COLUMNS:
                v = getattr(r, f)
                if f == "name" and r.is_reference:
                    v = f"{v} (reference)"
                vals.append("-" if v is None else v)
            out.append(vals)
        return out

    def to_dict(self) -> dict:
        return {"reference": self.reference, "voxel_size_nm": list(self.voxel_size_nm),
                "cnr_noise": self.cnr_noise, "rows": [r.to_dict() for r in self.rows],
                "edges": {k: v.to_dict() for k, v in self.edges.items()}, "edge_errors": dict(self.edge_errors)}


def compare(reference, images: Mapping[str, object], *, voxel_size_nm=None, mask=None,
            metrics: Sequence[str] = METRICS, reference_name: str = "reference", include_reference: bool = True,
            data_range=None, cnr_noise: str = "background", slices=None, edge_options=None,
            sift_options=None) -> QualityTable:
    """Compare ``images`` with ``reference`` on PSNR, SSIM, SIFT, edge resolution and CNR.

    All images must be on the reference's grid (registered, same shape).  PSNR
    and SSIM use the reference's data range; the CNR classes are derived once
    from the reference by Otsu (:func:`cnr_classes`) and used for every image,
    so every image is judged on the same pixels.  Edge resolution and CNR are
    also given for the reference itself (its row has no PSNR/SSIM/SIFT).

    Parameters
    ----------
    reference : array_like or Volume, shape (y, x) or (z, y, x)
    images : mapping of name to array_like or Volume
        Images to judge, in display order.
    voxel_size_nm : float or (z, y, x), optional
        Voxel size in nm; default the reference Volume's.  Needed for edge resolution.
    mask : array_like of bool, optional
        Evaluated region (e.g. :func:`fov_mask`) for every metric but SIFT.
    metrics : sequence of str
        Subset of ``("psnr", "ssim", "sift", "edge", "cnr")``.
    reference_name : str
        Name of the reference row.
    include_reference : bool
        Put a row for the reference first.
    data_range : float, optional
        PSNR/SSIM data range (default: the reference's range in the mask).
    cnr_noise : str
        Noise term of the CNR (see :func:`cnr`).
    slices : sequence of int, optional
        z indices used by SIFT and edge resolution for volumes.
    edge_options, sift_options : mapping, optional
        Further keyword arguments of :func:`edge_resolution` / :func:`sift_matches`.
        An image with too few isolated edges gets no FWHM (``None``, ``n_edges=0``) and its
        reason in ``QualityTable.edge_errors``; the other metrics are still computed.

    Returns
    -------
    QualityTable
    """
    metrics = tuple(metrics)
    bad = sorted(set(metrics) - set(METRICS))
    if bad or not metrics:
        raise InputError(f"metrics={list(metrics)!r}: use a non-empty subset of {', '.join(METRICS)}")
    if not isinstance(images, Mapping) or not images:
        raise InputError("images must be a non-empty mapping of name -> image")
    if reference_name in images:
        raise InputError(f"an image is named like the reference ({reference_name!r}); rename one of them")
    ref = image_array(reference, reference_name)
    arrays = {}
    for name, im in images.items():
        arrays[str(name)] = image_pair(ref, im, names=(reference_name, str(name)))[1]
    vs = voxel_size_of(reference, voxel_size_nm, required="edge" in metrics)
    m = mask_array(mask, ref.shape)
    edge_kw = dict(edge_options or {})
    sift_kw = dict(sift_options or {})
    if ref.ndim == 3 and slices is not None:
        edge_kw.setdefault("slices", slices)
        sift_kw.setdefault("slices", slices)
    classes = cnr_classes(ref, mask=m) if "cnr" in metrics else None

    def measure(name, arr, is_ref):
        row = {"name": name, "is_reference": is_ref}
        if not is_ref:
            if "psnr" in metrics:
                row["psnr_db"] = psnr(ref, arr, data_range=data_range, mask=m)
            if "ssim" in metrics:
                if ref.ndim == 3:
                    st = ssim_slices(ref, arr, data_range=data_range, mask=m, slices=slices)
                    row["ssim"], row["ssim_std"] = st.mean, st.std
                else:
                    row["ssim"], row["ssim_std"] = ssim(ref, arr, data_range=data_range, mask=m), 0.0
            if "sift" in metrics:
                row["sift_matches"] = sift_matches(ref, arr, **sift_kw).n_matches
        res = None
        if "edge" in metrics:
            try:
                res = edge_resolution(arr, voxel_size_nm=vs, mask=m, **edge_kw)
            except InputError as exc:
                if "passed the checks" not in str(exc) and "remain after" not in str(exc):
                    raise
                log.warning("quality %s: edge resolution not measured: %s", name, exc)
                edge_errors[name] = str(exc)
                row["n_edges"] = 0
            else:
                row.update(fwhm_mean_nm=res.fwhm_mean_nm, fwhm_std_nm=res.fwhm_std_nm, n_edges=res.n_edges)
        if "cnr" in metrics:
            row["cnr"] = cnr(arr, classes.foreground, classes.background, noise=cnr_noise)
        log.info("quality %s: %s", name, row)
        return QualityRow(**row), res

    rows, edges, edge_errors = [], {}, {}
    todo = ([(reference_name, ref, True)] if include_reference else []) + \
           [(n, a, False) for n, a in arrays.items()]
    for name, arr, is_ref in todo:
        row, res = measure(name, arr, is_ref)
        rows.append(row)
        if res is not None:
            edges[name] = res
    return QualityTable(reference_name, tuple(rows), vs if vs is not None else (np.nan,) * 3, cnr_noise, edges,
                        edge_errors)
