"""The result of a global registration: :class:`Registration` (one ``phi``, its convergence, JSON round trip)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import write_json
from .phi import PhiParts, check_phi, decompose_phi

__all__ = ["Registration"]


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register` / :func:`register_multimodal`.

    Attributes
    ----------
    phi : (4, 4) float64
        Maps FIXED voxel coordinates to MOVING voxel coordinates about
        ``centre_zyx_px``: ``x' = F (x - c) + c + t``.
    converged : bool
        The last (finest) level reached the tolerance before ``max_iterations``.
    iterations : int
        Gauss-Newton iterations over all levels.
    residual : float
        RMS of ``moving(phi(x)) - fixed(x)`` over the used voxels, divided by the
        standard deviation of ``fixed`` there (0 = perfect match, ~1.4 = unrelated).
    centre_zyx_px : (3,) float
        Centre of ``phi``, px: the centre of the fixed volume ``(shape - 1) / 2``.
    delta_phi_norm : float
        Size of the last update, px (translation plus window-edge motion of ``F``).
    levels : tuple of int
        Binning factors used, coarse to fine.
    method : str
        ``"gauss-newton"`` or ``"mutual-information"``.
    """

    phi: np.ndarray
    converged: bool
    iterations: int
    residual: float
    centre_zyx_px: tuple[float, float, float] = (0.0, 0.0, 0.0)
    delta_phi_norm: float = float("nan")
    levels: tuple[int, ...] = ()
    method: str = "gauss-newton"
    extra: dict = field(default_factory=dict)

    @property
    def translation_px(self) -> np.ndarray:
        """Translation ``(tz, ty, tx)`` of the centre, px."""
        return self.phi[:3, 3].copy()

    @property
    def F(self) -> np.ndarray:
        """Deformation gradient ``(3, 3)``."""
        return self.phi[:3, :3].copy()

    @property
    def parts(self) -> PhiParts:
        """Translation, rotation, stretch and strains of ``phi``."""
        return decompose_phi(self.phi)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (phi as nested lists)."""
        parts = self.parts.to_dict()
        return {"phi": self.phi.tolist(), "centre_zyx_px": list(self.centre_zyx_px),
                "converged": self.converged, "iterations": self.iterations, "residual": self.residual,
                "delta_phi_norm": self.delta_phi_norm, "levels": list(self.levels), "method": self.method,
                "translation_px": parts["translation_px"], "rotation_deg": parts["rotation_deg"],
                "rotation_angle_deg": parts["rotation_angle_deg"], "strain": parts["strain"],
                "volumetric_strain": parts["volumetric_strain"], **self.extra}

    def save(self, path, *, overwrite: bool = False, inputs=()) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        write_json(self.to_dict(), path, overwrite=overwrite, inputs=inputs)

    @classmethod
    def load(cls, path) -> Registration:
        """Read a JSON file written by :meth:`save` (or any JSON with ``phi``)."""
        try:
            d = json.loads(Path(path).read_text())
            phi = check_phi(d["phi"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{str(path)!r} is not a tomo4d registration JSON with a 'phi' entry ({exc})") from None
        return cls(phi=phi, converged=bool(d.get("converged", True)), iterations=int(d.get("iterations", 0)),
                   residual=float(d.get("residual", float("nan"))),
                   centre_zyx_px=tuple(d.get("centre_zyx_px", (0.0, 0.0, 0.0))),
                   delta_phi_norm=float(d.get("delta_phi_norm", float("nan"))),
                   levels=tuple(d.get("levels", ())), method=str(d.get("method", "gauss-newton")))
