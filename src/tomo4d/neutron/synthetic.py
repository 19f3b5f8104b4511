"""A small layered solid-state cell with known phases, for demonstrations and tests of the joint analysis.

One of tomo4d's three synthetic-data generators, kept because the joint X-ray/neutron analysis
needs a cell the others do not make (cathode | solid electrolyte | Li metal, each phase's values
chosen by the caller); the in-situ silicon-anode experiment is :mod:`tomo4d.phantom`.

Layers along z (the electrode-thickness axis): cathode (with spherical pores) | solid electrolyte |
Li-metal anode | gap.  The X-ray and neutron values of each phase are the caller's choice (e.g. from
:func:`tomo4d.neutron.attenuation_from_composition`).
"""

from __future__ import annotations

import numpy as np

from .._validate import show
from ..errors import InputError

__all__ = ["layered_cell_labels", "CELL_PHASES"]

#: label values of :func:`layered_cell_labels`
CELL_PHASES = {1: "gap / pore", 2: "Li metal", 3: "solid electrolyte", 4: "cathode"}


def layered_cell_labels(shape=(32, 48, 48), *, rng=None, n_pores: int = 10, pore_radius_px=(2.5, 4.0)) -> np.ndarray:
    """Phase labels 1..4 (see :data:`CELL_PHASES`), int16, of a layered cell with pores in the cathode.

    The cathode fills the first 40 % of z, the electrolyte the next 30 %, Li metal the next 20 %, the
    gap the rest; ``n_pores`` spheres of radius drawn from ``pore_radius_px`` are cut into the cathode.
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 8:
        raise InputError(f"shape={show(shape)} must be three sizes (z, y, x) of at least 8 voxels")
    if not (isinstance(n_pores, (int, np.integer)) and n_pores >= 0):
        raise InputError(f"n_pores={show(n_pores)} must be an integer >= 0")
    rng = np.random.default_rng(rng)
    nz, ny, nx = shp
    lab = np.zeros(shp, np.int16)
    lab[: int(0.40 * nz)] = 4
    lab[int(0.40 * nz): int(0.70 * nz)] = 3
    lab[int(0.70 * nz): int(0.90 * nz)] = 2
    lab[int(0.90 * nz):] = 1
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shp], indexing="ij")
    for _ in range(int(n_pores)):
        c = rng.uniform([2, 4, 4], [0.40 * nz - 2, ny - 4, nx - 4])
        r = rng.uniform(*pore_radius_px)
        lab[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r) & (lab == 4)] = 1
    return lab
