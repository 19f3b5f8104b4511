"""The ``lithiation`` section of an experiment file (the :mod:`.stages_lithiation` stage)."""

from __future__ import annotations

from pydantic import Field

from .sections import StrictModel

__all__ = ["LithiationSection", "lithiation_needs"]


class LithiationSection(StrictModel):
    """Lithiation mode of every T0 particle (core-shell vs network, tomo4d.quantify.lithiation_modes) from the
    residual maps, and particle-centred frames of the longest tracks."""

    shell_threshold: float | None = Field(None, allow_inf_nan=False, description=(
        "Median profile score from which a particle is core-shell-like (null: the library's default, 0.1)."))
    min_residual: float | None = Field(None, ge=0, allow_inf_nan=False, description=(
        "Mean residual a particle needs at a step for that step to decide its mode (null: 0.1 x Otsu's threshold "
        "of the residual inside the particles)."))
    exclude_border: bool = Field(True, description="Leave particles cut by the field-of-view border undetermined.")
    n_frames: int = Field(3, ge=0, description=(
        "Particle-centred frames of this many tracks (the longest ones, those not cut by the border, then the largest, first) -> "
        "volumes/particle_frames.npz; 0: none."))
    frame_size_um: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "Edge of the frames, um (null: 2.5 equivalent diameters of the largest framed particle)."))
    truth_modes: str | None = Field(None, description=(
        "CSV of the true mode of each true particle (columns id = value in truth.particles, mode = core_shell or "
        "network; optional lithiated_fraction_<step>), e.g. a tomo4d phantom's truth/particles.csv; needs "
        "truth.particles."))


def lithiation_needs(exp) -> None:
    """Refuse a ``lithiation`` section without what it reads (raises ValueError for the experiment's validator)."""
    sec = getattr(exp, "lithiation", None)
    if sec is None:
        return
    for need in ("particles", "residual"):
        if getattr(exp, need) is None:
            raise ValueError(f"the lithiation section needs the {need} section; add {need}: {{}} or remove lithiation")
    if not exp.residual.save_volumes:
        raise ValueError("the lithiation section reads the residual maps, but residual.save_volumes is false; set "
                         "residual.save_volumes: true or remove lithiation")
    if sec.truth_modes is not None and (exp.truth is None or exp.truth.particles is None):
        raise ValueError("lithiation.truth_modes needs truth.particles (the true particle labels its ids refer "
                         "to); add truth.particles or remove lithiation.truth_modes")
