"""Image-quality metrics for tomograms: PSNR, SSIM, SIFT congruence, edge resolution, CNR.

Every function takes 2D slices ``(y, x)`` or 3D volumes ``(z, y, x)`` as numpy
arrays or :class:`tomo4d.Volume` (whose voxel size is used when none is given),
computes in float32 and raises :class:`tomo4d.InputError` for bad input instead
of returning NaN.

========================  =====================================================
:func:`psnr`              peak signal-to-noise ratio (dB), masks
:func:`ssim`              structural similarity (agrees with scikit-image), masks
:func:`psnr_slices`,      per-slice values and statistics of volumes
:func:`ssim_slices`
:func:`sift_matches`      SIFT features congruent between two images
:func:`edge_resolution`   FWHM of edge-profile derivatives (nm), automatic edges
:func:`edges_from_labels` profile lines across the true boundaries of a labelled phase
:func:`cnr`               contrast-to-noise ratio of two classes
:func:`cnr_classes`       classes by Otsu thresholding or labels
:func:`fov_mask`          circular field-of-view mask
:func:`noise_sigma`       a scan's white-noise level from the scan alone (wavelet MAD)
:func:`noise_variance_ratio` its noise variance over its grey-level variance
:func:`compare`           everything in one :class:`QualityTable`
========================  =====================================================
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "SliceStatistics": "_common", "fov_mask": "_common",
    "METRICS": "compare", "QualityRow": "compare", "QualityTable": "compare", "compare": "compare",
    "CnrClasses": "contrast", "cnr": "contrast", "cnr_classes": "contrast",
    "FWHM_PER_SIGMA": "edges", "EdgeProfile": "edges", "EdgeResolution": "edges", "edge_resolution": "edges",
    "noise_sigma": "noise", "noise_variance_ratio": "noise",
    "psnr": "fidelity", "psnr_slices": "fidelity", "ssim": "fidelity", "ssim_map": "fidelity",
    "ssim_slices": "fidelity",
    "LabelEdges": "label_edges", "edges_from_labels": "label_edges",
    "edge_profile_figure": "plot", "save_edge_profiles": "plot",
    "SiftResult": "sift", "sift_matches": "sift",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
