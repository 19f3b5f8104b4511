"""The ``neutron_spectra:`` section of an experiment file: wavelength-resolved transmission spectra per step.

Needs ``inputs.neutron_spectra`` (one transmission spectrum per step, CSV as
:func:`tomo4d.neutron.read_spectrum_csv` reads: wavelength Å, transmission, optional sigma).
``bragg``: reflections of cubic phases whose edge ``2 d_hkl`` is fitted per step
(:func:`tomo4d.neutron.fit_bragg_edge`) and turned into a lattice strain against
``d0 = a / sqrt(h^2 + k^2 + l^2)`` (:func:`tomo4d.neutron.lattice_strain`).  ``li6``: the 6Li
fraction of the region's lithium (:func:`tomo4d.neutron.fit_li6_fraction`) from ``mu = -ln T / L``,
given its Li concentration (a number, one per step, or the neutron stage's layer Li).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .sections import StrictModel

__all__ = ["BraggReflection", "Li6Options", "NeutronSpectraSection", "check_neutron_spectra"]


class BraggReflection(StrictModel):
    """One Bragg edge of a cubic phase: fitted per step, strain against the tabulated lattice parameter."""

    name: str = Field(min_length=1, description="Name of the reflection in the tables (e.g. Cu111).")
    lattice_parameter_angstrom: float = Field(gt=0, allow_inf_nan=False, description=(
        "Unstrained cubic lattice parameter a, Å (Cu 3.615, Si 5.431, bcc Fe 2.8665): d0 = a / sqrt(h²+k²+l²)."))
    hkl: list[int] = Field(min_length=3, max_length=3, description="Miller indices [h, k, l] of the planes.")
    window_angstrom: list[float] | None = Field(None, min_length=2, max_length=2, description=(
        "Wavelength range [lo, hi] fitted around the edge, Å (one edge only, with clean baseline on both sides); "
        "null: 2 d0 ± 0.3 Å."))
    profile: Literal["tail", "gaussian"] = Field("tail", description=(
        "Edge shape: 'tail' (Gaussian with the exponential pulse tail, spallation sources; the position is the "
        "edge onset) or 'gaussian' (symmetric broadening, e.g. a chopper or a simulated edge)."))

    @field_validator("hkl")
    @classmethod
    def _plane(cls, v):
        if all(h == 0 for h in v):
            raise ValueError("hkl=[0, 0, 0] is not a lattice plane; give e.g. [1, 1, 1]")
        return v

    @field_validator("window_angstrom")
    @classmethod
    def _window(cls, v):
        if v is not None and not (math.isfinite(v[0]) and math.isfinite(v[1]) and 0 < v[0] < v[1]):
            raise ValueError(f"window_angstrom={v} must be [lo, hi] with 0 < lo < hi, Å")
        return v

    def d0_angstrom(self) -> float:
        from ..neutron import cubic_d_spacing

        return cubic_d_spacing(self.lattice_parameter_angstrom, self.hkl)

    def window(self) -> tuple[float, float]:
        if self.window_angstrom is not None:
            return float(self.window_angstrom[0]), float(self.window_angstrom[1])
        e = 2.0 * self.d0_angstrom()
        return e - 0.3, e + 0.3


class Li6Options(StrictModel):
    """The 6Li fraction of the region's lithium from its attenuation spectrum (1/v absorption of 6Li)."""

    li_concentration_mol_l: float | list[float] | None = Field(None, description=(
        "Li concentration of the region the spectra cross, mol/L: one number, or one per step (null: "
        "from_neutron_layer)."))
    from_neutron_layer: bool = Field(False, description=(
        "Take each step's Li concentration from the neutron stage's layer table (tables/neutron_layer: needs the "
        "neutron section with layer_phases); the spectra must then cross that layer."))
    li_free_mu_per_cm: float | list[float] | None = Field(None, description=(
        "Attenuation of the region without its lithium at the thermal wavelength 1.798 Å, 1/cm (one number, or one "
        "per step: the region's composition changes as it lithiates), taken as 1/v (proportional to the "
        "wavelength); a wavelength-independent part is fitted as background. Null: 0."))
    path_length_mm: float = Field(gt=0, allow_inf_nan=False, description=(
        "Thickness of the region along the beam, mm: mu = -ln T / path length."))
    wavelength_range_angstrom: list[float] | None = Field(None, min_length=2, max_length=2, description=(
        "Wavelengths [lo, hi] used, Å (e.g. away from strong Bragg edges); null: the whole spectrum."))

    @field_validator("li_concentration_mol_l")
    @classmethod
    def _positive(cls, v):
        for c in [v] if isinstance(v, (int, float)) else v or ():
            if not (math.isfinite(c) and c > 0):
                raise ValueError(f"li_concentration_mol_l has {c!r}; give Li concentrations > 0, mol/L")
        return v

    @field_validator("li_free_mu_per_cm")
    @classmethod
    def _non_negative(cls, v):
        for m in [v] if isinstance(v, (int, float)) else v or ():
            if not (math.isfinite(m) and m >= 0):
                raise ValueError(f"li_free_mu_per_cm has {m!r}; give attenuations >= 0, 1/cm")
        return v

    @field_validator("wavelength_range_angstrom")
    @classmethod
    def _range(cls, v):
        if v is not None and not (math.isfinite(v[0]) and math.isfinite(v[1]) and 0 < v[0] < v[1]):
            raise ValueError(f"wavelength_range_angstrom={v} must be [lo, hi] with 0 < lo < hi, Å")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.li_concentration_mol_l is None) == (not self.from_neutron_layer):
            raise ValueError("give exactly one Li concentration source: li_concentration_mol_l (mol/L, one number "
                             "or one per step) or from_neutron_layer: true")
        return self


class NeutronSpectraSection(StrictModel):
    """Bragg edges (lattice strain) and the 6Li fraction from one transmission spectrum per step."""

    bragg: list[BraggReflection] | None = Field(None, min_length=1, description=(
        "Bragg edges to fit per step -> tables/neutron_bragg (edge position, lattice strain). Null: none."))
    li6: Li6Options | None = Field(None, description=(
        "6Li fraction of the region's lithium per step -> tables/neutron_li6. Null: none."))

    @model_validator(mode="after")
    def _something(self):
        if self.bragg is None and self.li6 is None:
            raise ValueError("the neutron_spectra section has nothing to compute: give bragg (a list of "
                             "reflections) and/or li6")
        names = [r.name for r in self.bragg or ()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"bragg reflection name(s) {dup} repeated; give every reflection its own name")
        return self


def check_neutron_spectra(exp) -> None:
    """Refuse a neutron_spectra section that cannot run (ValueError, worded for the experiment validator)."""
    sec, files = exp.neutron_spectra, exp.inputs.neutron_spectra
    if sec is None and files is not None:
        raise ValueError("inputs.neutron_spectra is given but there is no neutron_spectra section; add one (bragg: "
                         "reflections, li6: ...) or remove inputs.neutron_spectra")
    truth = exp.truth
    if sec is None:
        if truth is not None and (truth.li6_fraction is not None or truth.lattice_strain is not None):
            raise ValueError("truth.li6_fraction / truth.lattice_strain need the neutron_spectra section")
        return
    if files is None:
        raise ValueError("the neutron_spectra section needs inputs.neutron_spectra (one transmission spectrum per "
                         "step, CSV: wavelength Å, transmission[, sigma]; a list or a glob); add it or remove the "
                         "section")
    li6 = sec.li6
    if li6 is not None and li6.from_neutron_layer and (exp.neutron is None or exp.neutron.layer_phases is None):
        raise ValueError("neutron_spectra.li6.from_neutron_layer needs the neutron section with layer_phases (the "
                         "layer Li per step); add them, or give li6.li_concentration_mol_l")
    if truth is not None and truth.lattice_strain is not None:
        names = [r.name for r in sec.bragg or ()]
        bad = [k for k in truth.lattice_strain if k not in names]
        if bad:
            raise ValueError(f"truth.lattice_strain names reflection(s) {bad} not in neutron_spectra.bragg "
                             f"({', '.join(names) or 'none'}); use the reflections' names")
    if truth is not None and truth.li6_fraction is not None and li6 is None:
        raise ValueError("truth.li6_fraction needs neutron_spectra.li6; add it or remove the truth")
