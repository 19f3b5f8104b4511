"""ParaView files of the runner's fields: legacy VTK structured points (ASCII), one file per step.

* ``fields/dvc_T0_<step>.vtk`` (dvc stage): the displacement vectors (px, x y z order), ``status``
  (:class:`tomo4d.dvc.NodeStatus` codes) and ``residual`` per node
  (:meth:`tomo4d.dvc.DisplacementField.to_vtk`).
* ``fields/strain_T0_<step>.vtk`` (strain stage): the same grid and vectors, with the finite strain
  as scalars: ``hencky_zz`` (axial logarithmic strain), ``volumetric`` (det F - 1) and
  ``strain_valid`` (1 where the strain is measured, 0 where it was filled; NaN is written as 0).

Written when ``dvc.vtk`` is true (the default).  ASCII VTK is about 60 bytes per node: ~50 MB
for a 2048^3 scan at node spacing 35 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stage import rel

__all__ = ["STRAIN_SCALARS", "write_dvc_vtk", "write_strain_vtk"]

#: the strain components written as scalars into ``strain_T0_<step>.vtk``
STRAIN_SCALARS = ("hencky_zz", "volumetric")


def write_dvc_vtk(field, out: Path, name: str) -> str:
    """``fields/dvc_T0_<name>.vtk`` of a displacement field (with status and residual); the path relative to ``out``."""
    return rel(out, field.to_vtk(Path(out) / "fields" / f"dvc_T0_{name}.vtk", overwrite=True))


def write_strain_vtk(field, strain, out: Path, name: str) -> str:
    """``fields/strain_T0_<name>.vtk``: the field's vectors and status with :data:`STRAIN_SCALARS` and ``strain_valid``."""
    scalars = {c: np.ravel(strain.component(c)) for c in STRAIN_SCALARS}
    scalars["strain_valid"] = np.ravel(strain.valid).astype(float)
    return rel(out, field.to_vtk(Path(out) / "fields" / f"strain_T0_{name}.vtk", scalars=scalars, overwrite=True))
