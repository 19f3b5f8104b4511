"""Local digital volume correlation: node grids, batched correlation, pyramids,
outlier replacement, composition of fields, finite strain (:mod:`tomo4d.dvc.finite`) and
residual maps.

Fields are :class:`DisplacementField` objects: node positions ``(N, 3)`` (px,
z, y, x) in the reference, one Phi per node ``(N, 4, 4)`` about the node
position mapping reference to deformed coordinates (displacement = its
translation), and a :class:`NodeStatus` per node.  :func:`correlate` takes its
options as a frozen :class:`CorrelationOptions` (and :class:`PsfCompensation`),
or as keyword shortcuts.  The compiled kernels (numba) and torch are imported
only when a correlation runs.
"""

from .compose import compose_fields, deform_field_points
from .correlate import correlate
from .field import DisplacementField, NodeStatus, node_grid
from .options import CorrelationOptions, PsfCompensation
from .postprocess import correct_curvature, flag_outliers, replace_bad_nodes
from .pyramid import correlate_pyramid
from .residual import ResidualMap, noise_floor, residual_map
from .finite import equivalent_strain, green_lagrange, hencky, principal_stretches, small_strain, volumetric_strain
from .strain import RegionStats, StrainField, regional_strain, strain_field, strain_histogram

__all__ = [
    "DisplacementField", "NodeStatus", "node_grid", "correlate", "correlate_pyramid", "CorrelationOptions",
    "PsfCompensation", "flag_outliers", "correct_curvature",
    "replace_bad_nodes", "compose_fields", "deform_field_points", "StrainField", "strain_field",
    "RegionStats", "regional_strain", "strain_histogram", "ResidualMap", "residual_map", "noise_floor",
    "small_strain", "green_lagrange", "hencky", "principal_stretches", "equivalent_strain", "volumetric_strain",
]
