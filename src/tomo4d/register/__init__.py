"""Registration: deformation functions (Phi algebra), global and multimodal registration.

See :mod:`tomo4d.register.phi` for the Phi convention: a 4x4 homogeneous matrix
in (z, y, x) order acting about a stated centre, ``x' = F (x - c) + c + t``.
``register(fixed, moving)`` returns a Phi about the fixed centre ``(shape - 1) / 2``
mapping FIXED voxel coordinates to MOVING ones, so that
``apply_phi(moving, reg.phi)`` reproduces ``fixed``.
"""

from ._global import Registration, register
from .multimodal import register_multimodal
from .phi import (PhiParts, apply_phi, apply_phi_to_points, compose_phi, decompose_phi, identity_phi,
                  invert_phi, make_phi, recentre_phi, rotation_matrix, rotation_vector_deg)

__all__ = [
    "Registration", "register", "register_multimodal", "PhiParts", "apply_phi", "apply_phi_to_points",
    "compose_phi", "decompose_phi", "identity_phi", "invert_phi", "make_phi", "recentre_phi",
    "rotation_matrix", "rotation_vector_deg",
]
