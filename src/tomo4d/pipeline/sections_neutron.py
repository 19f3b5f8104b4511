"""The ``neutron:`` section of an experiment file: lithium from neutron attenuation volumes.

Needs ``inputs.neutron`` (attenuation volumes, 1/cm, one per step, covering the X-ray field).  The
Li-free attenuation of every X-ray phase (``li_free_mu_per_cm``) turns the attenuation into a Li
concentration (:func:`tomo4d.neutron.lithium_concentration`); the phase labels come from
``inputs.labels``, else from the ``segment`` stage.  The 6Li fraction's default is the one source
of truth, :data:`tomo4d.neutron.xs.NATURAL_LI6_FRACTION`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ..neutron.xs import NATURAL_LI6_FRACTION, THERMAL_WAVELENGTH_ANGSTROM
from .sections import StrictModel

__all__ = ["NeutronSection", "check_neutron"]


class NeutronSection(StrictModel):
    """Li concentration maps and the anode layer's Li from neutron attenuation; joint X-ray/neutron phases."""

    wavelength_angstrom: float = Field(THERMAL_WAVELENGTH_ANGSTROM, gt=0, allow_inf_nan=False, description=(
        "Effective wavelength of the beam, Å (1.798: thermal; the spectrum-weighted mean for a polychromatic "
        "beam): sets the Li cross section."))
    li6_fraction: float = Field(NATURAL_LI6_FRACTION, ge=0, le=1, allow_inf_nan=False, description=(
        "6Li atom fraction of the cell's lithium (default natural lithium, tomo4d.neutron.xs.NATURAL_LI6_FRACTION)."))
    li_free_mu_per_cm: dict[int, float] | None = Field(None, description=(
        "Phase label value -> neutron attenuation of that X-ray phase without its lithium, 1/cm (every label "
        "value present needs one; from the phase's composition, tomo4d.neutron.non_lithium_attenuation_per_cm, or "
        "a reference scan). Null: no Li concentration (joint histogram only)."))
    layer_phases: list[int] | None = Field(None, min_length=1, description=(
        "Label values that form the Li-bearing layer (e.g. the anode: matrix, silicon, lithiated silicon); its mean "
        "Li concentration per step -> tables/neutron_layer. Null: no layer table."))
    psf_sigma_nm: float = Field(0.0, ge=0, allow_inf_nan=False, description=(
        "Standard deviation of the neutron blur (point-spread function) beyond the voxel box, nm: the Li-free map "
        "from the X-ray phases is blurred by it."))
    noise_sigma_per_cm: float | None = Field(None, ge=0, allow_inf_nan=False, description=(
        "Voxel noise of the attenuation volumes, 1/cm; null: estimated from each volume "
        "(tomo4d.neutron.estimate_noise_per_cm)."))
    layer_margin_nm: float | None = Field(None, ge=0, allow_inf_nan=False, description=(
        "The layer is widened by this much on either side (the blur moves Li across its faces), nm; null: "
        "3 x psf_sigma_nm."))
    fill_threshold: float = Field(0.6, gt=0, le=1, allow_inf_nan=False, description=(
        "A z slab of the neutron grid belongs to the layer when the layer phases fill this share of the fullest "
        "slab's fill (tomo4d.neutron.layer_lithium)."))
    joint_phases: Annotated[int, Field(ge=0, le=32)] | Literal["auto"] = Field("auto", description=(
        "Gaussian-mixture phases of the joint X-ray/neutron histogram (X-ray binned to the neutron voxels); "
        "\"auto\": chosen by the Bayesian information criterion among 1..joint_max_phases "
        "(tomo4d.neutron.segment_joint_phases; the curve is saved with the histogram); 0: no joint analysis."))
    joint_max_phases: int = Field(8, ge=1, le=32, description=(
        "Largest number of phases the BIC choice tries (joint_phases: auto)."))
    joint_bins: int = Field(64, ge=8, le=512, description="Bins per axis of the saved joint histogram.")
    seed: int = Field(0, ge=0, description="Seed of the Gaussian mixture's subsampling and initialisation.")
    registration: Literal["none", "rigid", "affine", "translation"] = Field("none", description=(
        "Register each step's X-ray scan onto its neutron volume (tomo4d.register.register_modalities: the neutron "
        "image predicted from the X-ray through the neutron voxel box and psf_sigma_nm) and report the transform "
        "with its uncertainty -> tables/neutron_registration_<step>. The X-ray side is the phase map when there is "
        "one (inputs.labels, else the segment stage's labels: phase-fraction model), else the grey values (a "
        "fitted grey-level mapping; rotations can be off by ~1 degree where two phases share an X-ray grey); the "
        "table says which. Reported only: the Li map and the joint phases still assume the fields are aligned."))
    registration_search_px: float = Field(0.0, ge=0, le=16, allow_inf_nan=False, description=(
        "Mutual-information translation search before the fit, +- neutron voxels (0: start at the shared first "
        "corner, which inputs.neutron guarantees within one neutron voxel)."))
    registration_xray_psf_nm: float = Field(0.0, ge=0, allow_inf_nan=False, description=(
        "Gaussian PSF of the X-ray scan beyond its voxel, nm (grey-value registration; a phase map is sharp)."))

    @field_validator("li_free_mu_per_cm", mode="before")
    @classmethod
    def _int_keys(cls, v):
        """Label keys as integers (JSON and the saved options write them as strings)."""
        if isinstance(v, dict):
            return {int(k) if isinstance(k, str) and k.strip().lstrip("-").isdigit() else k: x for k, x in v.items()}
        return v

    @field_validator("li_free_mu_per_cm")
    @classmethod
    def _finite(cls, v):
        for k, mu in (v or {}).items():
            if not math.isfinite(mu) or mu < 0:
                raise ValueError(f"li_free_mu_per_cm[{k}]={mu!r} must be a finite attenuation >= 0, 1/cm")
        return v

    def joint_enabled(self) -> bool:
        """The joint X-ray/neutron phases run (joint_phases "auto" or > 0)."""
        return self.joint_phases == "auto" or self.joint_phases > 0

    def margin_nm(self) -> float:
        return 3.0 * self.psf_sigma_nm if self.layer_margin_nm is None else self.layer_margin_nm


def check_neutron(exp) -> None:
    """Refuse a neutron section that cannot run (raises ValueError, worded for the experiment validator)."""
    sec = exp.neutron
    if sec is None:
        return
    if exp.inputs.neutron is None:
        raise ValueError("the neutron section needs inputs.neutron (neutron attenuation volumes, 1/cm, one per "
                         "step, a list or a glob); add it or remove the neutron section")
    if sec.li_free_mu_per_cm is None and sec.layer_phases is not None:
        raise ValueError("neutron.layer_phases needs neutron.li_free_mu_per_cm (the Li-free attenuation of every "
                         "phase label, 1/cm); add it or remove layer_phases")
    if sec.li_free_mu_per_cm is None and not sec.joint_enabled() and sec.registration == "none":
        raise ValueError("the neutron section has nothing to compute: give neutron.li_free_mu_per_cm (Li "
                         "concentration), neutron.joint_phases (auto or > 0: joint histogram) or neutron.registration")
    if sec.li_free_mu_per_cm is not None and exp.inputs.labels is None and exp.segment is None:
        raise ValueError("the Li concentration of the neutron section needs phase labels: inputs.labels (one "
                         "volume per step) or the segment section; add one, or remove neutron.li_free_mu_per_cm")
    if sec.li_free_mu_per_cm is not None and exp.inputs.labels is None and exp.align is not None:
        raise ValueError("neutron with the segment stage's labels and align together are not supported: the "
                         "segment labels lie on the aligned grid, the neutron volumes on each step's own scan; "
                         "give inputs.labels or remove the align section")
    if sec.layer_phases is not None and sec.li_free_mu_per_cm is not None:
        missing = [v for v in sec.layer_phases if v not in sec.li_free_mu_per_cm]
        if missing:
            raise ValueError(f"neutron.layer_phases has label(s) {missing} without a value in "
                             "neutron.li_free_mu_per_cm; give every layer phase its Li-free attenuation")
