"""Synthetic in-situ battery experiments with exact ground truth.

:func:`make_experiment` builds a :class:`SyntheticExperiment`: a silicon-anode electrode
(copper collector on top at small z, polydisperse irregular Si particles in a porous
carbon-binder matrix, fibrous separator at the bottom) imaged as a high/low-quality training pair,
an in-situ series T0..Tn during lithiation, a repeated scan, and neutron volumes; its
:class:`GroundTruth` gives labels, displacement and strain fields, thickness, lithiation per
particle, blur and noise levels.  See :mod:`tomo4d.phantom.experiment` for frames and grids.
"""

from ._finite import AnodeStrainTruth
from ._model import LithiationMode, Phase
from .experiment import (GridSpec, GroundTruth, PhantomParams, SyntheticExperiment, apply_phi,
                         default_soc_schedule, make_experiment)

__all__ = ["make_experiment", "SyntheticExperiment", "GroundTruth", "PhantomParams", "GridSpec",
           "Phase", "LithiationMode", "apply_phi", "default_soc_schedule", "AnodeStrainTruth"]
