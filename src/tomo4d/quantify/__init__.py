"""4D quantification: thickness, phase volumes, particles and tracks, regional strain, lithiation modes.

Functions take label volumes, images and fields (arrays or :class:`~tomo4d.volume.Volume`) and
return frozen dataclasses with units in their field names; every result has ``to_columns()`` for
:func:`write_table` (CSV / Parquet).  Figures are in :mod:`tomo4d.quantify.plots`.

- :func:`align_steps`, :func:`collector_band`: rigid time alignment on the current collector.
- :func:`electrode_thickness`, :func:`thickness_series`, :func:`axial_profile`, :func:`electrode_mask`.
- :func:`phase_volumes`, :func:`phase_series` (relative non-lithiated silicon volume, RNL).
- :func:`particle_properties`, :func:`size_distribution`, :func:`detect_cracks`.
- :func:`track_particles`, :func:`link_particles`, :func:`particle_frames`.
- :func:`regional_strain_series`.
- :func:`lithiation_modes`, :func:`residual_series`, :func:`particle_depth`.

Submodules load on first use (importing this package imports numpy only).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PhaseCodes": "_common",
    "TimeAlignment": "align", "align_steps": "align", "collector_band": "align",
    "Thickness": "thickness", "ThicknessSeries": "thickness", "AxialProfile": "thickness",
    "electrode_thickness": "thickness", "thickness_series": "thickness", "axial_profile": "thickness",
    "electrode_mask": "thickness",
    "PhaseVolumes": "phases", "PhaseSeries": "phases", "phase_volumes": "phases", "phase_series": "phases",
    "ParticleTable": "particles", "SizeDistribution": "particles", "CrackReport": "particles",
    "particle_properties": "particles", "size_distribution": "particles", "detect_cracks": "particles",
    "Tracks": "tracking", "track_particles": "tracking", "link_particles": "tracking",
    "ParticleFrames": "frames", "particle_frames": "frames",
    "RegionalStrain": "regions", "regional_strain_series": "regions", "layer_names": "regions", "ELECTRODE": "regions",
    "LithiationModes": "modes", "lithiation_modes": "modes", "residual_series": "modes", "particle_depth": "modes",
    "write_table": "tables", "read_table": "tables", "column_units": "tables",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
