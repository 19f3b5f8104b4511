"""Reconstruction from projections (issue 22): glue around the algotom engine (optional extra).

``pip install tomo4d[reconstruct]`` brings algotom (Apache-2.0); it does the numerical work: stripe
(ring) removal, the centre-of-rotation search, the Paganin/Fresnel filter and the FBP.  This package
reads the projections (NXtomo HDF5, TIFF stacks with flats/darks and an angle list), normalises them,
and reconstructs slab by slab into a :class:`~tomo4d.volume.Volume` with provenance::

    from tomo4d.reconstruct import open_projections, reconstruct, ReconstructOptions
    rec = reconstruct(open_projections("scan.nxs"), options=ReconstructOptions(rings="sorting"))
    save_volume(rec.volume, "scan_rec.zarr")
    # or streamed into the file slab by slab (bounded memory), slabs on 4 worker processes:
    reconstruct_to(open_projections("scan.nxs"), "scan_rec.ome.zarr", workers=4)
"""

from .core import coverage_deg, phase_retrieve, reconstruct, reconstruct_slab, transmission
from .options import FILTERS, RING_METHODS, PaganinOptions, Reconstruction, ReconstructOptions
from .readers import Projections, open_projections, read_angles, read_nxtomo, read_tiff_projections
from .simulate import SimulatedScan, cells_phantom, phase_contrast_projection, save_nxtomo, simulate_scan
from .stream import reconstruct_to

__all__ = [
    "FILTERS", "RING_METHODS", "PaganinOptions", "Projections", "Reconstruction", "ReconstructOptions",
    "SimulatedScan", "cells_phantom", "coverage_deg", "open_projections", "phase_contrast_projection",
    "phase_retrieve", "read_angles", "read_nxtomo", "read_tiff_projections", "reconstruct", "reconstruct_slab",
    "reconstruct_to", "save_nxtomo",
    "simulate_scan",
    "transmission",
]
