"""Neutron (and joint X-ray/neutron) analysis of battery cells.

=====================  =====================================================================
planning               :func:`plan_resolution`, :func:`neutron_resolution_um`, :func:`xray_resolution_um`
normalisation          :func:`normalize_transmission`, :func:`transmission_sigma`,
                       :func:`attenuation_coefficient` (Beer-Lambert, 1/cm)
cross sections         :func:`formula_cross_section`, :func:`attenuation_from_composition`,
                       :func:`li_concentration_from_composition` (``periodictable`` data)
lithium                :func:`calibrate_lithium`, :func:`theoretical_lithium_calibration`,
                       :func:`lithium_concentration` (mol/cm^3 with uncertainty), :func:`region_values`,
                       :func:`attenuation_from_phases` (Li-free matrix map from an X-ray phase map)
wavelength-resolved    :func:`tof_to_wavelength`, :func:`rebin_spectra`, :func:`region_spectra`,
                       :func:`macro_pixel_spectra`, :func:`read_spectrum_csv`
isotopes               :func:`fit_li6_fraction`, :func:`isotope_exchange`
Bragg edges            :func:`fit_bragg_edge` (Santisteban/Kropff edge), :func:`lattice_strain`
joint X-ray/neutron    :func:`align_modalities`, :func:`joint_histogram`, :func:`segment_joint_phases`
figures                :mod:`tomo4d.neutron.plot`
=====================  =====================================================================

Conventions: images ``(z, y, x)``; spectra carry the wavelength on their LAST
axis; wavelengths in Å, cross sections in barn, attenuation in 1/cm,
concentrations in mol/cm^3, geometry distances in mm and resolutions in um.
Per-region fits return arrays with a boolean ``ok`` mask and never raise for
one failed fit.  ``periodictable`` and scikit-learn are imported only when used.
"""

from .bragg import (PARAMETER_NAMES, BraggEdgeFit, LatticeStrain, bragg_edge_model, cubic_d_spacing, edge_profile,
                    fit_bragg_edge, lattice_strain)
from .geometry import (NeutronPlan, NeutronSetup, ResolutionPlan, XrayPlan, XraySetup, neutron_resolution_um,
                       plan_resolution, xray_resolution_um)
from .isotopes import (IsotopeExchange, Li6FractionFit, fit_li6_fraction, isotope_exchange, li_attenuation_per_cm,
                       non_lithium_attenuation_per_cm)
from .joint import (AlignedPair, JointHistogram, JointPhases, align_modalities, joint_histogram, resample_to_grid,
                    segment_joint_phases, segmentation_accuracy)
from .lithium import (LayerLithium, LiCalibration, LiConcentration, RegionValues, attenuation_from_phases,
                      calibrate_lithium, layer_lithium, lithium_concentration,
                      region_values, theoretical_lithium_calibration)
from .normalize import attenuation_coefficient, normalize_transmission, transmission_sigma
from .spectra import (H_OVER_MN_ANGSTROM_M_PER_S, Spectra, macro_pixel_spectra, read_spectrum_csv, rebin_spectra,
                      region_spectra, tof_to_wavelength, wavelength_to_tof)
from .xs import (AVOGADRO_PER_MOL, NATURAL_LI6_FRACTION, THERMAL_WAVELENGTH_ANGSTROM, CrossSection,
                 attenuation_from_composition, formula_cross_section, li_concentration_from_composition,
                 li_cross_section, molar_mass_g_per_mol)

__all__ = [
    "PARAMETER_NAMES", "BraggEdgeFit", "LatticeStrain", "bragg_edge_model", "cubic_d_spacing", "edge_profile",
    "fit_bragg_edge", "lattice_strain",
    "NeutronPlan", "NeutronSetup", "ResolutionPlan", "XrayPlan", "XraySetup", "neutron_resolution_um",
    "plan_resolution", "xray_resolution_um",
    "IsotopeExchange", "Li6FractionFit", "fit_li6_fraction", "isotope_exchange", "li_attenuation_per_cm",
    "non_lithium_attenuation_per_cm",
    "AlignedPair", "JointHistogram", "JointPhases", "align_modalities", "joint_histogram", "resample_to_grid",
    "segment_joint_phases", "segmentation_accuracy",
    "LayerLithium", "LiCalibration", "LiConcentration", "RegionValues", "attenuation_from_phases",
    "calibrate_lithium", "layer_lithium", "lithium_concentration",
    "region_values", "theoretical_lithium_calibration",
    "attenuation_coefficient", "normalize_transmission", "transmission_sigma",
    "H_OVER_MN_ANGSTROM_M_PER_S", "Spectra", "macro_pixel_spectra", "read_spectrum_csv", "rebin_spectra",
    "region_spectra", "tof_to_wavelength", "wavelength_to_tof",
    "AVOGADRO_PER_MOL", "NATURAL_LI6_FRACTION", "THERMAL_WAVELENGTH_ANGSTROM", "CrossSection",
    "attenuation_from_composition", "formula_cross_section", "li_concentration_from_composition",
    "li_cross_section", "molar_mass_g_per_mol",
]
