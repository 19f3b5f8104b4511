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
:func:`compare`           everything in one :class:`QualityTable`
========================  =====================================================
"""

from ._common import SliceStatistics, fov_mask
from .compare import METRICS, QualityRow, QualityTable, compare
from .contrast import CnrClasses, cnr, cnr_classes
from .edges import FWHM_PER_SIGMA, EdgeProfile, EdgeResolution, edge_resolution
from .fidelity import psnr, psnr_slices, ssim, ssim_map, ssim_slices
from .label_edges import LabelEdges, edges_from_labels
from .plot import edge_profile_figure, save_edge_profiles
from .sift import SiftResult, sift_matches

__all__ = ["psnr", "ssim", "psnr_slices", "ssim_slices", "ssim_map", "SliceStatistics", "sift_matches",
           "SiftResult", "edge_resolution", "EdgeResolution", "EdgeProfile", "edges_from_labels", "LabelEdges", "FWHM_PER_SIGMA", "cnr",
           "cnr_classes", "CnrClasses", "fov_mask", "compare", "QualityTable", "QualityRow", "METRICS",
           "edge_profile_figure", "save_edge_profiles"]
