"""The ``enhance`` section and the ``inputs.training_pair`` of an experiment file.

The training options are not re-declared here: ``enhance.preset`` names a preset of
:class:`tomo4d.enhance.TrainConfig` and ``enhance.train`` overrides any of its fields; both are
validated by ``TrainConfig`` itself (its message, under the key ``enhance``), so the experiment file
accepts exactly what :func:`tomo4d.enhance.train` accepts.

Which series is enhanced: ``inputs.series`` (the in-situ scans, LQ: the voxel size of
``training_pair.lq``).  Which series the later stages read (:mod:`.series`): with ``apply_to_series: true``
every analysis stage (segment, quantify, dvc, strain, particles, residual, lithiation, neutron) works on
the enhanced volumes ``volumes/enhanced_<step>.ome.zarr`` (twice finer, voxel size halved): label files
given on the ``inputs.series`` grid are repeated x2 per axis onto it (each plane of ``segment.slices``
covers two enhanced planes), ``dvc`` node spacing and windows are enhanced px, and the repeat scan is
enhanced too (``enhance_repeat``) for the residual noise floor.  With ``false`` (or without this section)
every stage reads ``inputs.series``.  ``align`` with ``apply_to_series`` is refused (the enhanced series
is not aligned).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import InputError
from .sections import StrictModel

__all__ = ["EnhanceSection", "TrainingPairInput"]


class TrainingPairInput(StrictModel):
    """An LQ/HQ pair of one sample (same region; LQ voxel twice the HQ voxel): the InDI training data."""

    lq: str = Field(description="Low-quality scan (the in-situ series' resolution), any format open_volume reads.")
    hq: str = Field(description="High-quality scan of the same region (voxel half the LQ voxel).")
    extent_tolerance: float = Field(0.05, ge=0, le=1, allow_inf_nan=False,
                                    description="--check: the HQ field (nm) may exceed the LQ field by this "
                                                "fraction per axis; a pair whose fields cannot overlap is refused.")


class EnhanceSection(StrictModel):
    """InDI enhancement (tomo4d.enhance): LQ registered onto HQ, InDI trained on the pair, every step of
    inputs.series (LQ) enhanced. With apply_to_series every analysis stage reads the enhanced volumes
    (volumes/enhanced_<step>.ome.zarr, twice finer) instead of inputs.series."""

    preset: Literal["tiny", "small", "reference"] = Field("small", description="TrainConfig preset "
                                                          "(tomo4d.enhance.TrainConfig.preset).")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields overriding the preset "
                                  "(e.g. {steps: 500, checkpoint_every: 50}); validated by TrainConfig.")
    steps: int | None = Field(None, ge=1, le=200, description="InDI sampling steps (null: the N recommended by "
                              "the validation sweep that ends the training, rule train.step_rule; the report "
                              "shows the curve).")
    apply_to_series: bool = Field(True, description="The analysis stages (segment, quantify, dvc, particles, "
                                  "residual, lithiation, neutron) work on the enhanced series (twice finer; label "
                                  "files repeated x2 onto it) instead of inputs.series.")
    refine_registration: bool = Field(True, description="Refine the LQ->HQ alignment with tomo4d.register (else the coarse "
                                             "translation only).")
    seed: int = Field(0, ge=0, description="Noise seed of InDI sampling.")
    tile: int = Field(256, ge=16, description="Tile side of the enhanced slices, px.")
    overlap: int = Field(32, ge=0, description="Overlap of the tiles, px.")
    truth_hq: list[str] | str | None = Field(None, description="HQ scans of the in-situ steps, one per step (list or "
                                                               "glob): quality truth (phantoms: series_hq/T*.tif).")
    truth_particles: list[str] | str | None = Field(None, description="True particle labels (integer ids, 0 = none) "
                                                    "on the grid of each truth_hq scan, one per step (list or glob): "
                                                    "the hallucination audit of InDI (needs truth_hq; phantoms: "
                                                    "truth/particles_hq_T*.tif).")

    @model_validator(mode="after")
    def _config(self):
        try:
            self.train_config()
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self

    def train_config(self):
        """The :class:`tomo4d.enhance.TrainConfig` of this section."""
        from ..enhance import TrainConfig

        return TrainConfig.preset(self.preset, **dict(self.train))
