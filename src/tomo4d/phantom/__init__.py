"""Synthetic in-situ battery experiments with exact ground truth.

The main one of tomo4d's three synthetic-data generators (the test and demo backbone: every stage,
with truth); :mod:`tomo4d.segment.synthetic` (sphere images for fast segmentation tests) and
:mod:`tomo4d.neutron.synthetic` (a layered solid-state cell for the joint X-ray/neutron analysis)
stay beside it for what it does not make.

:func:`make_experiment` builds a :class:`SyntheticExperiment`: a silicon-anode electrode
(copper collector on top at small z, polydisperse irregular Si particles in a porous
carbon-binder matrix, fibrous separator at the bottom) imaged as a high/low-quality training pair,
an in-situ series T0..Tn during lithiation, a repeated scan, and neutron volumes; its
:class:`GroundTruth` gives labels, displacement and strain fields, thickness, lithiation per
particle, blur and noise levels.  See :mod:`tomo4d.phantom.experiment` for frames and grids.

Modules: :mod:`~tomo4d.phantom.params` (parameters, validation, constants, grids),
:mod:`~tomo4d.phantom._engine` (the renderer and its caches), :mod:`~tomo4d.phantom.truth`
(:class:`GroundTruth`), :mod:`~tomo4d.phantom.experiment` (:class:`SyntheticExperiment`,
:func:`make_experiment`, save/load); the model is :mod:`~tomo4d.phantom._model` (types, phases,
constants), :mod:`~tomo4d.phantom._microstructure`, :mod:`~tomo4d.phantom._deform`,
:mod:`~tomo4d.phantom._render` and :mod:`~tomo4d.phantom._kernels` (numba); the finite-strain
truth is :mod:`~tomo4d.phantom._finite`.
Points are mapped through a Phi with :func:`tomo4d.register.apply_phi_to_points`.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "AnodeStrainTruth": "_finite",
    "LithiationMode": "_model", "Phase": "_model",
    "SyntheticExperiment": "experiment", "make_experiment": "experiment",
    "GridSpec": "params", "PhantomParams": "params", "default_soc_schedule": "params",
    "GroundTruth": "truth",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
