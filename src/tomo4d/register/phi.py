"""Deformation functions Phi: 4x4 homogeneous matrices in (z, y, x) order.

Convention
----------
A Phi is a ``(4, 4)`` float64 matrix ``[[F, t], [0, 0, 0, 1]]`` in (z, y, x)
order that acts *about a stated centre* ``c`` (voxel coordinates, px)::

    x' = F (x - c) + c + t

``F`` (3x3) is the deformation gradient and ``t`` (3,) the translation of the
centre in px.  Because the matrix acts on centred coordinates ``x - c``, two
Phis about the same centre compose by matrix product: ``compose_phi(a, b)``
applies ``b`` first and then ``a`` and equals ``a @ b``.  :func:`recentre_phi`
moves a Phi to another centre without changing the mapping.

For :func:`tomo4d.register.register` the centre is the centre of the fixed
volume ``c = (shape - 1) / 2`` and Phi maps FIXED voxel coordinates to MOVING
voxel coordinates, so that ``apply_phi(moving, reg.phi)`` (``moving`` sampled
at ``phi(x)`` for every fixed voxel ``x``) reproduces ``fixed``.  For local DVC
every node has its own Phi about the node position, mapping reference to
deformed coordinates; the node displacement is then ``t``.

Rotations are written as rotation vectors ``w`` in (z, y, x) components (axis
times angle, in degrees); the matrix is ``R = exp([w]_x)`` with the physical,
right-handed cross product (a positive rotation about z turns x towards y).  ``F = R U`` is the polar decomposition
into a rotation ``R`` and a symmetric stretch ``U``; the small-strain tensor is
``e = (F + F^T) / 2 - I``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._array import as_float32
from .._validate import check_int, show
from ..errors import InputError
from ..volume import Volume, _check_data

__all__ = [
    "PhiParts", "identity_phi", "make_phi", "compose_phi", "invert_phi", "recentre_phi",
    "apply_phi_to_points", "apply_phi", "decompose_phi", "rotation_matrix", "rotation_vector_deg",
    "check_phi",
]


def _floats(name: str, value, what: str) -> np.ndarray:
    """``value`` as a finite float64 array; refuse None, text and anything not numeric, naming ``name``."""
    if value is None or isinstance(value, (str, bytes)):
        raise InputError(f"{name}={show(value)} is not {what}; give {what} as numbers (numpy array or lists)")
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}={show(value)} is not {what}; give {what} as numbers (numpy array or lists)") from None
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values; give finite numbers ({what})")
    return a


def _vector3(name: str, value) -> np.ndarray:
    a = _floats(name, value, "three (z, y, x) values")
    if a.size != 3:
        raise InputError(f"{name}={show(value)} needs three values (z, y, x), got {a.size}")
    return a.reshape(3)


def check_phi(phi, *, name: str = "phi") -> np.ndarray:
    """Validate a Phi (or a stack ``(..., 4, 4)``) and return it as float64."""
    a = _floats(name, phi, "a (4, 4) matrix")
    if a.shape[-2:] != (4, 4):
        raise InputError(
            f"{name} has shape {show(a.shape)}; a Phi is a (4, 4) homogeneous matrix (z, y, x order)"
        )
    if not np.allclose(a[..., 3, :], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"{name} last row is {show(a[..., 3, :])}; it must be [0, 0, 0, 1]")
    return a


def identity_phi() -> np.ndarray:
    """The identity Phi, ``(4, 4)`` float64."""
    return np.eye(4)


def _skew(w) -> np.ndarray:
    wz, wy, wx = w
    # physical (right-handed x, y, z) cross product w x r, written in (z, y, x) components
    return np.array([[0.0, wx, -wy], [-wx, 0.0, wz], [wy, -wz, 0.0]])


def rotation_matrix(rotation_deg) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of a rotation vector ``(wz, wy, wx)`` in degrees (Rodrigues)."""
    w = np.deg2rad(_vector3("rotation_deg", rotation_deg))
    theta = float(np.linalg.norm(w))
    if theta < 1e-15:
        return np.eye(3)
    k = _skew(w / theta)
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


def rotation_vector_deg(rotation) -> np.ndarray:
    """Rotation vector ``(wz, wy, wx)`` in degrees of a rotation matrix ``(3, 3)`` (inverse of
    :func:`rotation_matrix`)."""
    r = _floats("rotation", rotation, "a (3, 3) rotation matrix")
    if r.shape != (3, 3):
        raise InputError(f"rotation has shape {show(r.shape)}; give a (3, 3) rotation matrix")
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos))
    # axial vector of the antisymmetric part, in the same (z, y, x) cross-product convention
    v = -np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2.0
    if theta < 1e-12:
        return np.rad2deg(v)
    if np.pi - theta < 1e-6:  # near 180 degrees: axis from the symmetric part
        b = (r + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(b), 0.0, None))
        i = int(np.argmax(axis))
        axis = b[i] / axis[i]
        return np.rad2deg(axis / np.linalg.norm(axis) * theta)
    return np.rad2deg(v / np.sin(theta) * theta)


def make_phi(*, translation_px=(0.0, 0.0, 0.0), rotation_deg=(0.0, 0.0, 0.0), stretch=None,
             strain=None, F=None) -> np.ndarray:
    """Build a Phi from its parts: ``F = R U`` and translation ``t``.

    Parameters
    ----------
    translation_px : (3,) float
        Translation ``(tz, ty, tx)`` of the centre, px.
    rotation_deg : (3,) float
        Rotation vector ``(wz, wy, wx)``, degrees (axis times angle).
    stretch : (3,) or (3, 3) float, optional
        Right stretch tensor ``U`` (symmetric); three values are its diagonal (zoom).
    strain : (3,) or (3, 3) float, optional
        Small strain ``e``; ``U = I + e`` (exclusive with ``stretch``).
    F : (3, 3) float, optional
        The full deformation gradient (exclusive with ``rotation_deg``/``stretch``/``strain``).

    Returns
    -------
    (4, 4) float64
    """
    rotation = _vector3("rotation_deg", rotation_deg)
    if F is not None and (stretch is not None or strain is not None or np.any(rotation)):
        raise InputError("make_phi: give either F or rotation_deg/stretch/strain, not both")
    if stretch is not None and strain is not None:
        raise InputError("make_phi: give either stretch (U) or strain (e = U - I), not both")
    if F is None:
        u = np.eye(3)
        if stretch is not None or strain is not None:
            which = "stretch" if stretch is not None else "strain"
            m = _floats(which, stretch if stretch is not None else strain, "3 values or a (3, 3) matrix")
            if m.shape not in ((3,), (3, 3)):
                raise InputError(f"{which} has shape {show(m.shape)}; give 3 values or a (3, 3) matrix")
            m = np.diag(m) if m.shape == (3,) else m
            u = m if stretch is not None else np.eye(3) + m
        F = rotation_matrix(rotation_deg) @ u
    F = _floats("F", F, "a (3, 3) matrix")
    if F.shape != (3, 3):
        raise InputError(f"F has shape {show(F.shape)}; give a (3, 3) matrix")
    t = _vector3("translation_px", translation_px)
    phi = np.eye(4)
    phi[:3, :3] = F
    phi[:3, 3] = t
    return check_phi(phi)


def compose_phi(a, b) -> np.ndarray:
    """``a o b``: apply ``b`` first, then ``a`` (both about the same centre). Stacks broadcast."""
    return check_phi(a, name="a") @ check_phi(b, name="b")


def invert_phi(phi) -> np.ndarray:
    """Inverse Phi (about the same centre). Works on stacks ``(..., 4, 4)``."""
    p = check_phi(phi)
    det = np.linalg.det(p[..., :3, :3])
    if np.any(np.abs(det) < 1e-12):
        raise InputError("phi is singular (det F = 0) and cannot be inverted")
    return np.linalg.inv(p)


def recentre_phi(phi, old_centre, new_centre) -> np.ndarray:
    """The same mapping written about ``new_centre`` instead of ``old_centre`` (px, z, y, x).

    ``t_new = t + (F - I) (new_centre - old_centre)``.  Works on stacks with
    broadcastable centres ``(..., 3)``.
    """
    p = check_phi(phi).copy()
    new = _floats("new_centre", new_centre, "(z, y, x) centre coordinates")
    old = _floats("old_centre", old_centre, "(z, y, x) centre coordinates")
    for name, c in (("new_centre", new), ("old_centre", old)):
        if c.shape[-1:] != (3,):
            raise InputError(f"{name} has shape {show(c.shape)}; give (z, y, x) coordinates, shape (3,) or (..., 3)")
    d = new - old
    f = p[..., :3, :3]
    p[..., :3, 3] += np.einsum("...ij,...j->...i", f - np.eye(3), d * np.ones(p.shape[:-2] + (3,)))
    return p


def apply_phi_to_points(points_zyx, phi, *, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Map points ``(N, 3)`` (px, z, y, x) through ``phi`` about ``centre``; returns ``(N, 3)``."""
    p = check_phi(phi)
    if p.ndim != 2:
        raise InputError(f"phi has shape {show(p.shape)}; apply_phi_to_points takes one (4, 4) Phi")
    pts = _floats("points_zyx", points_zyx, "(N, 3) coordinates in (z, y, x)")
    if pts.shape[-1:] != (3,):
        raise InputError(f"points_zyx has shape {show(pts.shape)}; give (N, 3) coordinates in (z, y, x)")
    c = _vector3("centre", centre)
    return (pts - c) @ p[:3, :3].T + c + p[:3, 3]


def apply_phi(image, phi, *, order: int = 3, centre=None, output_shape=None, mode: str = "nearest",
              cval: float = 0.0):
    """Sample ``image`` at ``phi(x)`` for every output voxel ``x``.

    Parameters
    ----------
    image : (z, y, x) array or Volume
        The image to resample (e.g. the moving volume of a registration).
    phi : (4, 4) array
        Deformation function in (z, y, x) order about ``centre``.
    order : int
        Spline interpolation order, 0 to 5 (3: cubic B-spline).
    centre : (3,) float, optional
        Centre of ``phi`` in px; default the centre of the output grid
        ``(output_shape - 1) / 2``.
    output_shape : (3,) int, optional
        Shape of the result; default the shape of ``image``.
    mode, cval
        How points outside ``image`` are filled (as :func:`scipy.ndimage.map_coordinates`).

    Returns
    -------
    numpy.ndarray (float32) or Volume
        Same kind as ``image``; float32 voxels.

    Notes
    -----
    With ``reg = register(fixed, moving)``, ``apply_phi(moving, reg.phi)`` is
    ``moving`` brought onto ``fixed``.  To move ``fixed`` onto ``moving`` use
    ``apply_phi(fixed, invert_phi(reg.phi))``.
    """
    p = check_phi(phi)
    if p.ndim != 2:
        raise InputError(f"phi has shape {show(p.shape)}; apply_phi takes one (4, 4) Phi")
    order = check_int("order", order, minimum=0, maximum=5)
    is_vol = isinstance(image, Volume)
    if not is_vol:
        image_arr = _check_data(image, "image")
    arr = as_float32(image.numpy() if is_vol else image_arr)
    if arr.ndim != 3:
        raise InputError(f"image has shape {show(arr.shape)}; apply_phi needs a 3D (z, y, x) volume")
    if output_shape is None:
        shape = tuple(int(s) for s in arr.shape)
    else:
        if isinstance(output_shape, (str, bytes)) or not hasattr(output_shape, "__len__") or len(output_shape) != 3:
            raise InputError(f"output_shape={show(output_shape)} must be three positive integers (z, y, x)")
        shape = tuple(check_int("output_shape", s, minimum=1) for s in output_shape)
    c = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 if centre is None else _vector3("centre", centre)
    f = p[:3, :3]
    offset = c + p[:3, 3] - f @ c
    out = ndimage.affine_transform(arr, f, offset=offset, output_shape=shape, order=int(order),
                                   mode=mode, cval=cval, output=np.float32, prefilter=order > 1)
    if is_vol:
        return image.with_data(out, step="apply_phi")
    return out


@dataclass(frozen=True)
class PhiParts:
    """A Phi decomposed (see :func:`decompose_phi`).

    Attributes
    ----------
    translation_px : (3,) float64
        ``t``, (z, y, x), px.
    F : (3, 3) float64
        Deformation gradient.
    rotation : (3, 3) float64
        ``R`` of the polar decomposition ``F = R U``.
    rotation_deg : (3,) float64
        Rotation vector of ``R``, degrees.
    stretch : (3, 3) float64
        Right stretch tensor ``U`` (symmetric positive definite).
    strain : (3, 3) float64
        Small-strain tensor ``e = (F + F^T)/2 - I`` (dimensionless).
    volumetric_strain : float
        ``det F - 1`` (relative volume change).
    deviatoric_strain : float
        Equivalent deviatoric strain ``sqrt(2/3 e_dev : e_dev)`` of the
        logarithm-free Biot strain ``U - I``.
    """

    translation_px: np.ndarray
    F: np.ndarray
    rotation: np.ndarray
    rotation_deg: np.ndarray
    stretch: np.ndarray
    strain: np.ndarray
    volumetric_strain: float
    deviatoric_strain: float

    @property
    def rotation_angle_deg(self) -> float:
        """Angle of the rotation, degrees."""
        return float(np.linalg.norm(self.rotation_deg))

    def to_dict(self) -> dict:
        return {"translation_px": self.translation_px.tolist(), "F": self.F.tolist(),
                "rotation_deg": self.rotation_deg.tolist(), "rotation_angle_deg": self.rotation_angle_deg,
                "stretch": self.stretch.tolist(), "strain": self.strain.tolist(),
                "volumetric_strain": self.volumetric_strain, "deviatoric_strain": self.deviatoric_strain}


def polar_decomposition(F) -> tuple[np.ndarray, np.ndarray]:
    """``F = R U``: rotation ``R`` and symmetric stretch ``U`` of one or many ``(..., 3, 3)``."""
    f = _floats("F", F, "a (3, 3) matrix or a stack (..., 3, 3)")
    if f.shape[-2:] != (3, 3):
        raise InputError(f"F has shape {show(f.shape)}; give a (3, 3) matrix or a stack (..., 3, 3)")
    c = np.swapaxes(f, -1, -2) @ f
    vals, vecs = np.linalg.eigh(c)
    vals = np.sqrt(np.clip(vals, 1e-300, None))
    u = (vecs * vals[..., None, :]) @ np.swapaxes(vecs, -1, -2)
    r = f @ ((vecs / vals[..., None, :]) @ np.swapaxes(vecs, -1, -2))
    return r, u


def decompose_phi(phi) -> PhiParts:
    """Split a Phi into translation, rotation, stretch, small strain, volumetric and deviatoric parts."""
    p = check_phi(phi)
    if p.ndim != 2:
        raise InputError("decompose_phi takes one (4, 4) Phi; loop over stacks")
    f = p[:3, :3].copy()
    if np.linalg.det(f) <= 0:
        raise InputError("phi has det F <= 0 (a reflection or collapse); it cannot be a deformation")
    r, u = polar_decomposition(f)
    e = (f + f.T) / 2.0 - np.eye(3)
    biot = u - np.eye(3)
    dev = biot - np.trace(biot) / 3.0 * np.eye(3)
    return PhiParts(translation_px=p[:3, 3].copy(), F=f, rotation=r, rotation_deg=rotation_vector_deg(r),
                    stretch=u, strain=e, volumetric_strain=float(np.linalg.det(f) - 1.0),
                    deviatoric_strain=float(np.sqrt(2.0 / 3.0 * np.sum(dev * dev))))
