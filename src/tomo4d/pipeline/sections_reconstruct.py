"""The ``reconstruct:`` section of an experiment file: projections -> volumes (issue 22).

Needs ``inputs.projections`` (NXtomo files: projections, flats and darks by ``image_key``, rotation
angles; one file per scan, a list or a glob).  Each scan is reconstructed with
:func:`tomo4d.reconstruct.reconstruct` (the algotom engine, ``pip install tomo4d[reconstruct]``) into
``volumes/reconstructed_<file stem>.ome.zarr``; ``tables/reconstruct`` lists the centre, clipped values, coverage and,
with ``truth``, the PSNR against the true attenuation volume.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .sections import StrictModel

__all__ = ["PaganinSection", "ReconstructSection", "check_reconstruct"]


class PaganinSection(StrictModel):
    """Single-material Paganin phase retrieval of each projection."""

    delta_beta: float = Field(gt=0, allow_inf_nan=False, description="delta/beta of the material (e.g. 170).")
    energy_kev: float = Field(gt=0, allow_inf_nan=False, description="Photon energy, keV.")
    distance_m: float = Field(ge=0, allow_inf_nan=False, description="Sample-detector propagation distance, m.")


class ReconstructSection(StrictModel):
    """Parallel-beam FBP of every scan of ``inputs.projections`` (algotom engine)."""

    center: float | None = Field(None, allow_inf_nan=False, description=(
        "Rotation axis as a detector column (0-based); null: found per scan (Vo's method)."))
    rings: Literal["none", "sorting", "filtering", "normalization", "wavelet", "all"] = Field(
        "none", description="Ring (stripe) removal on the transmission sinograms (algotom's methods).")
    ring_size: int = Field(21, ge=3, description="Stripe filter window, detector columns (odd).")
    filter: Literal["ramp", "hann", "hamming", "parzen", "blackman"] = Field("ramp", description="FBP filter.")
    paganin: PaganinSection | None = Field(None, description="Phase retrieval before -log (null: none).")
    pixel_size_nm: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "Detector pixel at the sample, nm; overrides the file's (null: x_pixel_size of the NXtomo file)."))
    slab_rows: int = Field(32, ge=1, description="Detector rows reconstructed at a time (bounds the memory).")
    allow_missing_flats: bool = Field(False, description=(
        "Accept files without flats or darks (their projections already flat-corrected transmissions)."))
    drift: bool = Field(False, description=(
        "Interpolate flats and darks taken before and after the projections, per projection (linear drift)."))
    uint16_range: list[float] | None = Field(None, min_length=2, max_length=2, description=(
        "Write uint16 volumes: [lo, hi] attenuation per voxel -> 0..65535 (outside clipped and counted); null: "
        "float32."))
    geometry: Literal["parallel", "cone"] = Field("parallel", description=(
        "Beam geometry; cone is refused (the algotom engine has no cone-beam reconstruction; RTK, astra or TIGRE "
        "would be needed)."))
    as_series: bool = Field(False, description=(
        "The reconstructed scans are the in-situ series: inputs.projections holds one file per time step, in time "
        "order, and inputs.series is left out; the downstream stages (segment, dvc, ...) read "
        "volumes/reconstructed_<stem>.ome.zarr, keyed by their content."))
    truth: list[str] | str | None = Field(None, description=(
        "True attenuation volumes (mu x voxel), one per scan on the reconstruction grid: PSNR in the table."))

    def library_options(self):
        """The :class:`tomo4d.reconstruct.ReconstructOptions` of this section."""
        from ..reconstruct import PaganinOptions, ReconstructOptions

        pag = None if self.paganin is None else PaganinOptions(self.paganin.delta_beta, self.paganin.energy_kev,
                                                               self.paganin.distance_m)
        return ReconstructOptions(center=self.center, rings=self.rings, ring_size=self.ring_size, filter=self.filter,
                                  paganin=pag, pixel_size_nm=self.pixel_size_nm, slab_rows=self.slab_rows,
                                  allow_missing_flats=self.allow_missing_flats, drift=self.drift,
                                  uint16_range=None if self.uint16_range is None else tuple(self.uint16_range))


def check_reconstruct(exp) -> None:
    """The section needs ``inputs.projections``; ``inputs.series`` is given unless ``as_series``; an even ring_size
    and a cone beam are refused here (the key path named)."""
    as_series = exp.reconstruct is not None and exp.reconstruct.as_series
    if exp.inputs.series is None and not as_series:
        raise ValueError("inputs.series is missing: give the volume files of the time steps, or reconstruct them from "
                         "inputs.projections with reconstruct: {as_series: true}")
    if as_series and exp.inputs.series is not None:
        raise ValueError("reconstruct.as_series makes the reconstructed scans the series: leave inputs.series out (or "
                         "set as_series: false)")
    if exp.reconstruct is None:
        return
    if exp.inputs.projections is None:
        raise ValueError("the reconstruct section needs inputs.projections (NXtomo files, one per scan); add them "
                         "or remove the reconstruct section")
    if exp.reconstruct.geometry == "cone":
        from ..reconstruct.options import CONE_BEAM_MESSAGE

        raise ValueError(f"reconstruct.{CONE_BEAM_MESSAGE}")
    if exp.reconstruct.ring_size % 2 == 0:
        raise ValueError(f"reconstruct.ring_size={exp.reconstruct.ring_size} must be odd; use "
                         f"{exp.reconstruct.ring_size + 1}")
