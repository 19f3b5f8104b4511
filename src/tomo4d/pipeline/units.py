"""The unit of every column of the runner's tables, in one place.

A column's unit comes, in this order, from:

1. :data:`UNITS`: explicit names used by the stages whose name carries no unit (counts, fractions,
   grey levels, strains, scores);
2. its suffix (``_um``, ``_um3``, ``_nm``, ``_px``, ``_s``, ``_deg``, ``_db``, ``_mol_l``, ...): :data:`SUFFIXES`,
   the library's own suffixes (:func:`tomo4d.quantify.column_units`) first;
3. its prefix: ``n_`` is a count, ``true_<name>`` has the unit of ``<name>``, ``psnr_db_`` is dB,
   ``ssim_`` / ``cnr_`` / ``fraction_`` are dimensionless.

"1" is dimensionless, "id" a label or index; a column none of these rules knows is ``"unit?"`` (the tests refuse one in the tables
of the full experiment, so a new column needs its unit here).
"""

from __future__ import annotations

__all__ = ["SUFFIXES", "UNITS", "column_unit", "UNKNOWN"]

UNKNOWN = "unit?"

#: suffixes beyond the library's (tomo4d.quantify.tables): unit of a column name ending in them
SUFFIXES = (("_mol_l", "mol/L"), ("_db", "dB"), ("_h", "h"), ("_mib", "MiB"), ("_fraction", "1"),
            ("_accuracy", "1"), ("_share", "1"), ("_angstrom", "Å"), ("_per_cm", "1/cm"), ("_pp", "percentage points"))

_DIMENSIONLESS = (
    # fractions, scores, ratios (segment, particles, phases, thickness, lithiation)
    "volume_fraction", "dice", "iou", "boundary_f1", "accuracy", "precision", "recall", "f1", "link_accuracy",
    "sphericity", "mean_sphericity", "rnl", "expansion", "state_of_charge", "agreement", "cost",
    "changed_fraction", "shell_score", "mean_changed_depth", "ncc", "residual_rms_relative",
    # strains (ln U, det F - 1)
    "hencky_zz_mean", "hencky_zz_median", "volumetric_mean", "volumetric_median", "strain_mean", "strain_median",
    "strain_std", "strain_p05", "strain_p95", "strain_volume_mean", "volume_covered",
    # neutron spectra (lattice strain, 6Li fraction, fit quality)
    "strain", "strain_sigma", "li6_fraction_sigma", "chi2_reduced",
)
_GREY = ("noise_floor", "mean_before_floor", "residual_mean", "residual_max", "residual_mean_true_lithiated",
         "residual_mean_elsewhere", "residual_rms")

#: explicit units of column names that carry none in their name
UNITS: dict[str, str] = {**dict.fromkeys(_DIMENSIONLESS, "1"), **dict.fromkeys(_GREY, "grey level"),
                         **dict.fromkeys(("label", "track", "class", "true_id"), "id"),
                         "n_voxels": "voxels", "sigma_px": "px",
                         "li_per_cm_per_mol_l": "(1/cm) per (mol/L)",  # the Li calibration: mu per concentration
                         "center_found": "1", "mean_relative_error": "1",  # reconstruct: a 0/1 flag, a ratio
                         "beyond_validated_range": "1",  # strain: a 0/1 flag
                         # enhance_hallucination (issue 19): rates, rank correlations, HQ grey levels, slices
                         "false_rate": "1", "missed_rate": "1", "diameter_rel_median": "1", "rho": "1",
                         "rho_voxels": "1", "p_value": "1", "decile_ratio": "1", "spread_mean": "grey level (HQ)",
                         "error_mean": "grey level (HQ)", "band_low": "grey level (HQ)",
                         "band_high": "grey level (HQ)", "z_first": "HQ slice", "z_last": "HQ slice",
                         "indi_steps": "count"}


def column_unit(name: str) -> str:
    """The unit of a table column (module rules), ``"unit?"`` when none applies."""
    from ..quantify import column_units

    name = str(name)
    if name in UNITS:
        return UNITS[name]
    unit = column_units([name])[name]
    if unit:
        return unit
    for suffix, u in SUFFIXES:
        if name.endswith(suffix):
            return u
    if name.startswith("n_"):
        return "count"
    if name.startswith("true_"):
        return column_unit(name[len("true_"):])
    if name.startswith("psnr_db_"):
        return "dB"
    if name.startswith(("ssim_", "cnr_", "fraction_")):
        return "1"
    return UNKNOWN
