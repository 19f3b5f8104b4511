"""Digital volume correlation: node grids, batched local correlation, pyramids, global
(regularised) correlation (:func:`correlate_global`), outlier replacement, composition of fields,
finite strain (:mod:`tomo4d.dvc.finite`) and residual maps.

Fields are :class:`DisplacementField` objects: node positions ``(N, 3)`` (px,
z, y, x) in the reference, one Phi per node ``(N, 4, 4)`` about the node
position mapping reference to deformed coordinates (displacement = its
translation), and a :class:`NodeStatus` per node.  :func:`correlate` takes its
options as a frozen :class:`CorrelationOptions` (with its :class:`GreyModel`, and
:class:`PsfCompensation`), or as keyword shortcuts.  The compiled kernels (numba) and torch are imported
only when a correlation runs.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "axial_profile_start": "axial",
    "compose_fields": "compose", "deform_field_points": "compose", "moved_planes": "compose", "moved_band": "compose",
    "correlate": "correlate",
    "deconvolve": "deconvolve", "boundary_margin_px": "deconvolve", "interior_axes": "deconvolve",
    "deconvolve_chunked": "deconvolve_chunked",
    "DisplacementField": "field", "NodeStatus": "field", "node_grid": "field",
    "CorrelationOptions": "options", "GreyModel": "options", "GREY_MODELS": "options", "PsfCompensation": "options",
    "correct_curvature": "postprocess", "flag_outliers": "postprocess", "flag_low_texture": "postprocess", "replace_bad_nodes": "postprocess",
    "correlate_pyramid": "pyramid", "study_levels": "pyramid", "STUDY_PYRAMID": "pyramid",
    "FAILED_WARNING_FRACTION": "correlate",
    "GlobalOptions": "global_dvc", "correlate_global": "global_dvc", "control_grid": "global_dvc",
    "covering_node_plane_px": "global_dvc",
    "InterfaceMotion": "global_dvc",
    "ResidualMap": "residual", "noise_floor": "residual", "residual_map": "residual",
    "equivalent_strain": "finite", "green_lagrange": "finite", "hencky": "finite", "principal_stretches": "finite",
    "small_strain": "finite", "volumetric_strain": "finite",
    "RegionStats": "strain", "StrainField": "strain", "regional_strain": "strain", "strain_field": "strain",
    "SlabMean": "strain", "slab_volume_mean": "strain", "strain_histogram": "strain", "beyond_validated_range": "strain", "VALIDATED_AXIAL_HENCKY": "strain",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
