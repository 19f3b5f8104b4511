"""InDI enhancement: train on one LQ/HQ pair, enhance unseen (4D) LQ series.

Inversion by Direct Iteration (Delbracio & Milanfar, TMLR 2023) as used by the
reference study (design guide, section 2): a U-Net-like network F(x_t, t) is
trained on x_t = (1 - t) x_HQ + t y_LQ to predict x_HQ; a few steps turn an
up-sampled LQ slice into an HQ-like one.

Main entry points (torch is imported only when they are used)::

    train(lq, hq, model_dir, config=TrainConfig.preset("small"))   -> TrainResult
    model = load_model(model_dir)
    enhance_volume(model, lq_volume, steps=8)                        -> lazy Volume (2x finer)
    enhance_with_uncertainty(model, lq_volume, n_samples=4)          -> UncertaintyResult
    sweep_steps(model, lq, hq)                                        -> StepSweep
    model.sweep                          the validation sweep stored by train (recommended N by rule)
    load_curve(model_dir)                the validation PSNR/SSIM against the training step -> ValidationCurve
    evaluate(lq, hq, models={...})                                    -> EvaluationResult
    hallucination_report({"InDI": out, "bicubic": bic, "HQ": hq}, true_particles)  -> HallucinationReport
    spread_error_correlation(spread, enhanced, hq)                    -> SpreadErrorCorrelation
    holdout_split(n_slices, val_fraction)  the validation blocks spread through z, with guards -> HoldoutSplit
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config", "NetworkConfig": "config", "PRESETS": "config",
    "Scaling": "data", "TrainingPair": "data", "prepare_pair": "data", "upsample2_xy": "data",
    "upsample2_axis": "data", "fov_mask": "data",
    "bicubic_volume": "baselines", "baseline_config": "baselines",
    "EnhanceModel": "model", "ModelInfo": "model", "load_model": "model", "save_model": "model",
    "train": "training", "train_on_pair": "training", "TrainResult": "training", "Trainer": "training",
    "enhance_volume": "sample", "enhance_slices": "sample", "enhance_image": "sample",
    "prepare_slice_pair": "slice_pairs", "restore_slices": "sample",
    "enhance_with_uncertainty": "uncertainty", "UncertaintyResult": "uncertainty", "data_consistency": "uncertainty",
    "sweep_steps": "evaluation", "SweepResult": "evaluation", "evaluate": "evaluation",
    "EvaluationResult": "evaluation", "evaluation_figure": "evaluation",
    "StepSweep": "steps", "validation_sweep": "steps", "recommend": "steps", "load_sweep": "steps",
    "project_onto_lq": "steps", "sweep_figure": "steps", "RULES": "steps",
    "hallucination_report": "hallucination", "HallucinationReport": "hallucination",
    "HallucinationOptions": "hallucination", "spread_error_correlation": "hallucination",
    "SpreadErrorCorrelation": "hallucination", "spread_error_figure": "hallucination",
    "holdout_split": "holdout", "HoldoutSplit": "holdout",
    "ValidationCurve": "validation_curve", "load_curve": "validation_curve", "PRECISIONS": "precision",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
