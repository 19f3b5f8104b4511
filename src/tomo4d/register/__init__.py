"""Registration: deformation functions (Phi algebra), global and multimodal registration (same grid:
:func:`register_multimodal`; different resolutions, rigid with uncertainties: :func:`register_modalities`).

See :mod:`tomo4d.register.phi` for the Phi convention: a 4x4 homogeneous matrix
in (z, y, x) order acting about a stated centre, ``x' = F (x - c) + c + t``.
``register(fixed, moving)`` returns a Phi about the fixed centre ``(shape - 1) / 2``
mapping FIXED voxel coordinates to MOVING ones, so that
``apply_phi(moving, reg.phi)`` reproduces ``fixed``.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Registration": "_registration", "register": "_global", "LEVEL_BYTES_PER_VOXEL": "_global",
    "APPLY_BYTES_PER_VOXEL": "_outofcore",
    "register_multimodal": "multimodal", "apply_phi_slab": "_outofcore",
    "register_modalities": "modalities", "ModalityRegistration": "modalities",
    "PhiParts": "phi", "apply_phi": "phi", "apply_phi_to_points": "phi", "compose_phi": "phi", "decompose_phi": "phi",
    "identity_phi": "phi", "invert_phi": "phi", "make_phi": "phi", "recentre_phi": "phi", "rotation_matrix": "phi",
    "rotation_vector_deg": "phi",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
