"""Lattice spacings and strain from Bragg edges: Miller indices, cubic plane spacings, ``(d - d0) / d0``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .._validate import show
from ..errors import InputError
from ._checks import positive_float

__all__ = ["LatticeStrain", "parse_hkl", "cubic_d_spacing", "lattice_strain"]


@dataclass(frozen=True)
class LatticeStrain:
    """Lattice strain ``(d - d0) / d0`` (dimensionless) and its uncertainty; NaN where the fit failed."""

    strain: np.ndarray
    strain_sigma: np.ndarray
    d0_angstrom: float
    ok: np.ndarray

    @property
    def microstrain(self) -> np.ndarray:
        """Strain in units of 1e-6."""
        return self.strain * 1e6


def parse_hkl(hkl) -> tuple[int, int, int]:
    """Miller indices ``(h, k, l)`` from three integers or a string ``"110"``, ``"1,1,0"``, ``"1 1 0"``, ``"-1 1 0"``.

    The compact form (no separators) takes one digit per index, with an optional minus sign
    before each (``"1-10"`` is ``(1, -1, 0)``); indices of two digits need separators.
    """
    vals = hkl
    if isinstance(hkl, str):
        text = hkl.strip().strip("()[]{}").strip()
        if re.search(r"[\s,;]", text):
            vals = re.split(r"[\s,;]+", text)
        elif re.fullmatch(r"(-?\d){3}", text):
            vals = re.findall(r"-?\d", text)
    try:
        out = tuple(int(v) for v in vals)
        if isinstance(vals, (str, bytes)) or len(out) != 3:
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"hkl={show(hkl)} must be three integers: (1, 1, 0), '110', '1,1,0' or '1 1 0'") from None
    return out


def cubic_d_spacing(lattice_parameter_angstrom: float, hkl) -> float:
    """Plane spacing ``a / sqrt(h^2 + k^2 + l^2)`` of a cubic lattice, Å (e.g. bcc Fe (110): 2.027 Å).

    ``hkl``: three integers or a string accepted by :func:`parse_hkl` (``"110"``, ``"1,1,0"``, ``"1 1 0"``).
    """
    a = positive_float("lattice_parameter_angstrom", lattice_parameter_angstrom)
    h, k, l_ = parse_hkl(hkl)
    n = h * h + k * k + l_ * l_
    if n == 0:
        raise InputError("hkl=(0, 0, 0) is not a lattice plane; give e.g. (1, 1, 0)")
    return a / math.sqrt(n)


def lattice_strain(edge_position_angstrom, *, d0_angstrom: float, edge_sigma_angstrom=None,
                   ok=None) -> LatticeStrain:
    """Strain ``(d - d0) / d0`` from edge positions (``d = lambda_hkl / 2``).

    Parameters
    ----------
    edge_position_angstrom : array
        Fitted edge positions, Å.
    d0_angstrom : float
        Unstrained lattice spacing, Å (from a reference region, powder or tabulated lattice parameter).
    edge_sigma_angstrom : array, optional
        Uncertainty of the edge positions, Å.
    ok : bool array, optional
        Which fits to trust; others become NaN.
    """
    d0 = positive_float("d0_angstrom", d0_angstrom)
    lam = np.asarray(edge_position_angstrom, dtype=np.float64)
    good = np.isfinite(lam) if ok is None else (np.asarray(ok, bool) & np.isfinite(lam))
    strain = np.where(good, (lam / 2.0 - d0) / d0, np.nan)
    if edge_sigma_angstrom is None:
        sig = np.full(lam.shape, np.nan)
    else:
        sig = np.where(good, np.asarray(edge_sigma_angstrom, dtype=np.float64) / 2.0 / d0, np.nan)
    return LatticeStrain(strain=strain, strain_sigma=sig, d0_angstrom=d0, ok=good)
