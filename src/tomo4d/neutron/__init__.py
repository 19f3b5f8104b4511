"""Neutron (and joint X-ray/neutron) analysis of battery cells.

=====================  =====================================================================
planning               :func:`plan_resolution`, :func:`neutron_resolution_um`, :func:`xray_resolution_um`
normalisation          :func:`normalize_transmission`, :func:`transmission_sigma`,
                       :func:`attenuation_coefficient` (Beer-Lambert, 1/cm),
                       :func:`estimate_noise_per_cm` (voxel noise of an attenuation volume)
cross sections         :func:`formula_cross_section`, :func:`attenuation_from_composition`,
                       :func:`li_concentration_from_composition` (``periodictable`` data)
lithium                :func:`calibrate_lithium`, :func:`theoretical_lithium_calibration`,
                       :func:`lithium_concentration` (mol/cm^3 with uncertainty), :func:`region_values`,
                       :func:`attenuation_from_phases` (Li-free matrix map from an X-ray phase map)
wavelength-resolved    :func:`tof_to_wavelength`, :func:`rebin_spectra`, :func:`region_spectra`,
                       :func:`macro_pixel_spectra`, :func:`read_spectrum_csv`
raw time of flight     :func:`tof_bin_wavelengths`, :func:`read_tof_counts_csv`, :func:`normalize_tof_counts`
                       (Poisson errors, bad open-beam bins masked), :func:`overlap_correction`,
                       :func:`histogram_events` (NeXus NXevent_data -> ToF stack)
isotopes               :func:`fit_li6_fraction`, :func:`isotope_exchange`
per-voxel maps         :func:`fit_isotope_map` (6Li fraction / Li concentration per voxel or pixel, vectorised),
                       :func:`fit_voxel_maps` (+ Bragg edge and strain where a crystal is, :class:`VoxelMaps`),
                       :func:`fit_bragg_edge_volume`, :func:`bin_spectra` (macro-pixels)
tomography per band    :func:`reconstruct_bands` (ToF projections -> wavelength bands -> FBP per band through
                       :mod:`tomo4d.reconstruct` -> :class:`BandVolumes`, 1/cm with per-voxel sigma), :func:`band_bins`
ToF stacks             :func:`read_tof_stack` (FITS/TIFF folders), :func:`read_fits_image`,
                       :func:`tof_stack_attenuation` (per-pixel -ln T / thickness with Poisson errors)
Bragg edges            :func:`fit_bragg_edge` (Santisteban/Kropff edge), :func:`lattice_strain`,
                       :func:`fit_bragg_edge_map` (vectorised per-pixel maps, shared broadening)
joint X-ray/neutron    :func:`align_modalities`, :func:`bin_to_grid`, :func:`joint_histogram`,
                       :func:`segment_joint_phases` (:meth:`JointPhases.to_columns`)
figures                :mod:`tomo4d.neutron.plot`
=====================  =====================================================================

Conventions: images ``(z, y, x)``; spectra carry the wavelength on their LAST
axis; wavelengths in Å, cross sections in barn, attenuation in 1/cm,
concentrations in mol/cm^3, geometry distances in mm and resolutions in um.
Per-region fits return arrays with a boolean ``ok`` mask and never raise for
one failed fit.  ``periodictable`` and scikit-learn are imported only when used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PARAMETER_NAMES": "bragg", "fit_bragg_edge_map": "bragg_map", "BraggEdgeFit": "bragg", "LatticeStrain": "lattice", "bragg_edge_model": "bragg",
    "cubic_d_spacing": "lattice", "parse_hkl": "lattice", "edge_profile": "bragg", "fit_bragg_edge": "bragg", "lattice_strain": "lattice",
    "BEAMLINES": "geometry", "beamline_setup": "geometry", "NeutronPlan": "geometry", "NeutronSetup": "geometry", "ResolutionPlan": "geometry", "XrayPlan": "geometry",
    "XraySetup": "geometry", "neutron_resolution_um": "geometry", "plan_resolution": "geometry",
    "xray_resolution_um": "geometry",
    "IsotopeExchange": "isotopes", "Li6FractionFit": "isotopes", "fit_li6_fraction": "isotopes",
    "isotope_exchange": "isotopes", "li_attenuation_per_cm": "isotopes", "non_lithium_attenuation_per_cm": "isotopes",
    "AlignedPair": "joint", "bin_to_grid": "joint", "JointHistogram": "joint", "JointPhases": "joint", "align_modalities": "joint",
    "joint_histogram": "joint", "resample_to_grid": "joint", "segment_joint_phases": "joint",
    "segmentation_accuracy": "joint",
    "LayerLithium": "lithium", "LiCalibration": "lithium", "LiConcentration": "lithium", "RegionValues": "lithium",
    "attenuation_from_phases": "lithium", "calibrate_lithium": "lithium", "layer_lithium": "lithium",
    "lithium_concentration": "lithium", "region_values": "lithium", "theoretical_lithium_calibration": "lithium",
    "attenuation_coefficient": "normalize", "estimate_noise_per_cm": "normalize", "normalize_transmission": "normalize", "transmission_sigma": "normalize",
    "H_OVER_MN_ANGSTROM_M_PER_S": "spectra", "Spectra": "spectra", "macro_pixel_spectra": "spectra",
    "read_spectrum_csv": "spectra", "rebin_spectra": "spectra", "region_spectra": "spectra",
    "tof_to_wavelength": "spectra", "wavelength_to_tof": "spectra",
    "TofCounts": "tof", "TofTransmission": "tof", "WAVELENGTH_RANGE_ANGSTROM": "tof", "histogram_events": "tof",
    "normalize_tof_counts": "tof", "overlap_correction": "tof", "read_tof_counts_csv": "tof",
    "tof_bin_wavelengths": "tof", "wavelength_range_warnings": "tof", "raw_transmission_spectrum": "tof",
    "IsotopeMap": "isotope_map", "fit_isotope_map": "isotope_map", "bin_spectra": "isotope_map",
    "MapOptions": "voxel_maps", "VoxelMaps": "voxel_maps", "fit_voxel_maps": "voxel_maps",
    "fit_bragg_edge_volume": "voxel_maps", "band_noise_per_cm": "voxel_maps",
    "read_fits_image": "tof_stack", "write_fits_image": "tof_stack", "read_tof_stack": "tof_stack",
    "tof_stack_attenuation": "tof_stack",
    "BandOptions": "tomography", "BandVolumes": "tomography", "band_bins": "tomography",
    "reconstruct_bands": "tomography",
    "AVOGADRO_PER_MOL": "xs", "NATURAL_LI6_FRACTION": "xs", "THERMAL_WAVELENGTH_ANGSTROM": "xs", "CrossSection": "xs",
    "attenuation_from_composition": "xs", "formula_cross_section": "xs", "li_concentration_from_composition": "xs",
    "li_cross_section": "xs", "molar_mass_g_per_mol": "xs",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
