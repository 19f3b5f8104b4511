"""Few-label segmentation of phases and particles.

Two trainable segmenters share one prediction path:

* :func:`train_pixel_classifier` -> :class:`PixelClassifier`: Ilastik-like
  multiscale features (:mod:`~tomo4d.segment.features`) and a random forest,
  trained from scribbles (0 = unlabelled) on 2D slices or 3D blocks.
* :func:`train_unet` -> :class:`UNetSegmenter`: an attention residual U-Net
  trained on a few fully labelled slices, applied slice by slice in blended
  tiles; :class:`StepModels` holds separate models for ranges of time steps.

:func:`predict_proba`, :func:`predict_labels` and :func:`predict_lazy` walk a
(possibly larger-than-memory) volume in z-slabs with the model's halo.
:func:`label_particles` turns a phase segmentation into particle labels (out of core, touching
particles split cluster by cluster: :func:`split_particles_chunked`);
:func:`evaluate_segmentation`, :func:`match_particles` and
:func:`compare_inputs` measure the result.  :func:`load_model`,
:func:`read_labels` and :func:`save_labels` handle files.

Importing this package imports neither scikit-learn nor torch; they load
when a model is trained (sklearn) or a U-Net is built or loaded (torch).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "FeatureSpec": "features", "FEATURE_KINDS": "features", "compute_features": "features",
    "feature_names": "features", "feature_halo": "features", "features_of_slab": "features",
    "PixelClassifier": "forest", "train_pixel_classifier": "forest", "train_and_predict": "forest",
    "predict_proba": "predict", "predict_labels": "predict", "predict_lazy": "predict",
    "Particles": "instances", "connected_components": "instances", "remove_small_objects": "instances",
    "split_touching": "instances", "label_particles": "instances",
    "SplitParticles": "split_chunked", "split_particles_chunked": "split_chunked",
    "ClassScores": "evaluate", "SegmentationScores": "evaluate", "ParticleScores": "evaluate",
    "InputScores": "evaluate", "InputComparison": "evaluate", "evaluate_segmentation": "evaluate",
    "match_particles": "evaluate", "boundary_scores": "evaluate", "compare_inputs": "evaluate",
    "UNetConfig": "unet", "UNetSegmenter": "unet", "train_unet": "unet", "StepModels": "models",
    "torch_threads": "unet",
    "load_model": "models", "model_kind": "models",
    "LabelPlanes": "training_labels", "LabelSlabs": "training_labels", "label_source": "training_labels",
    "training_samples": "samples", "labelled_samples": "samples",
    "read_image": "files", "read_label_planes": "files", "read_labels": "files", "save_labels": "files",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
