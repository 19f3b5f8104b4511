"""The enhance stages, first in the workflow: ``register_pair``, ``train``, ``enhance``, ``enhance_quality``.

* ``register_pair``: the LQ scan of ``inputs.training_pair`` up-sampled x2 and aligned onto the HQ scan
  (:func:`tomo4d.enhance.prepare_pair`: coarse translation, then :func:`tomo4d.register.register`
  on a blur-matched HQ) -> ``models/enhance_pair_transform.json`` (the 4x4 transform HQ voxel ->
  up-sampled LQ voxel) and ``models/enhance_pair_quality.json`` (normalised cross-correlation,
  grey-level residual and covered fraction of the aligned pair).
* ``train``: InDI trained on the aligned pair (:func:`tomo4d.enhance.train_on_pair`) ->
  ``models/indi/`` (the model folder).  The library's :class:`~tomo4d.enhance.Trainer` checkpoints
  into ``models/indi/checkpoints`` every ``checkpoint_every`` steps: a run killed mid-training
  (SIGKILL included) resumes from the last checkpoint with exactly the weights of an uninterrupted
  run.  ``models/indi/run_key.json`` records the config and pair a checkpoint belongs to; another
  config or pair starts over.
* ``enhance`` (per step): every step of ``inputs.series`` (LQ) enhanced
  (:func:`tomo4d.enhance.enhance_volume`, z interpolated: twice finer along every axis) ->
  ``volumes/enhanced_<step>.ome.zarr``.
* ``enhance_quality``: PSNR / SSIM / CNR of the bicubic LQ and of InDI against HQ
  (:func:`tomo4d.quality.compare`), on the HQ grid through the pair transform: for each step with
  an HQ scan (``enhance.truth_hq``), and the held-out slices of the training pair (PSNR, from
  training) -> ``tables/enhance_quality``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from .fingerprint import fingerprint
from .stage import Stage, rel
from .stage_io import read_table_of, write_tables

__all__ = ["ENHANCE", "ENHANCE_QUALITY", "ENHANCE_STAGES", "REGISTER_PAIR", "TRAIN", "analysis_scale",
           "enhanced_path", "series_volume"]

log = logging.getLogger(__name__)

TRANSFORM = "models/enhance_pair_transform.json"
PAIR_QUALITY = "models/enhance_pair_quality.json"
MODEL_DIR = "models/indi"


def _on(exp, inp) -> bool:
    return exp.enhance is not None and inp.training_pair is not None


def _pair_files(inp, step) -> dict:
    return {"training_pair.lq": inp.training_pair[0], "training_pair.hq": inp.training_pair[1]}


def _write_json(path: Path, obj) -> Path:
    from ..io import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=float), encoding="utf-8")
    return path


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def enhanced_path(out: Path, name: str) -> Path:
    """The enhanced volume of step ``name`` in the run folder ``out``."""
    return Path(out) / "volumes" / f"enhanced_{name}.ome.zarr"


def series_volume(ctx, step: int) -> Path:
    """The volume of ``step`` that the analysis stages read: the enhanced one when the enhance stage runs with
    ``apply_to_series``, else ``inputs.series[step]``."""
    sec = ctx.experiment.enhance
    if sec is not None and sec.apply_to_series and ctx.inputs.training_pair is not None:
        return enhanced_path(ctx.out, ctx.inputs.names[step])
    return ctx.inputs.series[step]


def analysis_scale(ctx) -> int:
    """Voxels of the analysis grid per voxel of ``inputs.series``: 2 when the dvc stage reads the enhanced series."""
    return 2 if series_volume(ctx, 0) != ctx.inputs.series[0] else 1


# -- register_pair ----------------------------------------------------------------------------------

def _pair_volumes(inp):
    from .stage_io import read_volume

    return read_volume(inp.training_pair[0]), read_volume(inp.training_pair[1])


def _register_run(ctx):
    from ..enhance import prepare_pair

    lq, hq = _pair_volumes(ctx.inputs)
    pair = prepare_pair(lq, hq, register=ctx.experiment.enhance.refine_registration)
    m = pair.mask
    a, b = pair.lq[m].astype(np.float64), pair.hq[m].astype(np.float64)
    coef = np.polyfit(b, a, 1) if a.size > 1 else np.array([1.0, 0.0])
    resid = a - np.polyval(coef, b)
    ac, bc = a - a.mean(), b - b.mean()
    quality = {"ncc": float((ac * bc).sum() / (np.sqrt((ac * ac).sum() * (bc * bc).sum()) + 1e-12)),
               "residual_rms": float(np.sqrt(np.mean(resid ** 2))), "residual_rms_relative":
               float(np.sqrt(np.mean(resid ** 2)) / (a.std() + 1e-12)), "covered_fraction": float(m.mean()),
               "registration": pair.registration}
    transform = {"phi_hq_to_lq_up": pair.phi.tolist(), "registration": pair.registration,
                 "convention": "HQ voxel (z, y, x, 1) -> voxel of the LQ up-sampled x2 (sample j at LQ j/2 - 0.25)",
                 "lq_voxel_size_nm": list(pair.lq_voxel_size_nm), "hq_voxel_size_nm": list(pair.hq_voxel_size_nm),
                 "lq": str(ctx.inputs.training_pair[0]), "hq": str(ctx.inputs.training_pair[1])}
    return transform, quality


def _register_save(result, out):
    transform, quality = result
    return rel(out, _write_json(out / TRANSFORM, transform)), rel(out, _write_json(out / PAIR_QUALITY, quality))


REGISTER_PAIR = Stage(
    name="register_pair", needs=(), per_step=False, description="LQ up-sampled x2 and registered onto HQ",
    outputs=f"{TRANSFORM}, {PAIR_QUALITY}", enabled=_on,
    options=lambda exp: {"enhance.refine_registration": exp.enhance.refine_registration},
    input_files=_pair_files, run=_register_run, save=_register_save,
    load=lambda out: np.asarray(_read_json(out / TRANSFORM)["phi_hq_to_lq_up"], float))


# -- train ------------------------------------------------------------------------------------------

def _train_options(exp) -> dict:
    cfg = exp.enhance.train_config().to_dict()
    return {"enhance.preset": exp.enhance.preset, **{f"enhance.train.{k}": v for k, v in cfg.items()}}


def _training_pair(ctx, val_fraction: float):
    """The aligned pair, resampled with the saved transform (no second registration)."""
    from ..enhance import prepare_pair

    lq, hq = _pair_volumes(ctx.inputs)
    return lq, prepare_pair(lq, hq, register=False, phi0=ctx.load("register_pair"), val_fraction=val_fraction)


def _claim_model_dir(folder: Path, ident: dict) -> bool:
    """Keep ``folder`` (a checkpoint or a finished model) only if it was trained for ``ident``; True if the
    model in it is finished."""
    from ..enhance.model import CONFIG_FILE

    stamp = folder / "run_key.json"
    try:
        same = _read_json(stamp) == ident
    except (OSError, ValueError):
        same = False
    if folder.exists() and not same:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        _write_json(stamp, ident)
    return same and (folder / CONFIG_FILE).is_file()


def _train_run(ctx):
    from ..enhance import train_on_pair

    cfg = ctx.experiment.enhance.train_config()
    folder = ctx.out / MODEL_DIR
    phi = ctx.load("register_pair")
    ident = {"config": cfg.to_dict(), "phi_hq_to_lq_up": np.round(phi, 9).tolist(),
             "pair": [fingerprint(p) for p in ctx.inputs.training_pair]}  # content: another pair starts over
    ident = json.loads(json.dumps(ident))
    if _claim_model_dir(folder, ident):  # finished before the run was killed (model saved, marker not yet)
        return folder
    lq, pair = _training_pair(ctx, cfg.val_fraction)
    prov = {"lq": str(ctx.inputs.training_pair[0]), "hq": str(ctx.inputs.training_pair[1]),
            "registration": pair.registration, "phi_hq_to_lq_up": pair.phi.tolist()}
    res = train_on_pair(pair, folder, config=cfg, input_dtype=str(lq.dtype), resume=True, provenance=prov)
    log.info("train: %d steps (resumed from step %d) in %.1f s; validation PSNR InDI %.2f dB, bicubic %.2f dB",
             res.steps, res.resumed_from_step, res.seconds, res.val_psnr_db, res.val_psnr_lq_db)
    metrics = _read_json(folder / "metrics.json")
    _write_json(folder / "metrics.json", {**metrics, "resumed_from_step": res.resumed_from_step})
    return folder


def _train_save(folder, out):
    return (rel(out, folder),)


def _train_load(out):
    from ..enhance import load_model

    return load_model(out / MODEL_DIR)


TRAIN = Stage(
    name="train", needs=("register_pair",), per_step=False, description="InDI trained on the registered pair "
    "(resumable from its checkpoints)", outputs=f"{MODEL_DIR}/ (model, metrics, training log; checkpoints while "
    "training)", enabled=_on, options=_train_options, input_files=_pair_files,
    run=_train_run, save=_train_save, load=_train_load)


# -- enhance ----------------------------------------------------------------------------------------

def _enhance_step(ctx, step, previous):
    from ..enhance import enhance_volume
    from ..io import open_volume

    sec, inp = ctx.experiment.enhance, ctx.inputs
    model = ctx.load("train")
    vol = open_volume(inp.series[step], voxel_size_nm=ctx.experiment.inputs.voxel_size_nm)
    return enhance_volume(model, vol, steps=sec.steps, seed=sec.seed, tile=sec.tile, overlap=sec.overlap)


def _enhance_save(vol, out, ctx, step):
    from ..io import save_volume

    return (rel(out, save_volume(vol, enhanced_path(out, ctx.inputs.names[step]), overwrite=True)),)


def _enhance_load(out, ctx, step):
    from ..io import open_volume

    return open_volume(enhanced_path(out, ctx.inputs.names[step]))


ENHANCE = Stage(
    name="enhance", needs=("train",), per_step=True, description="every step of inputs.series (LQ) enhanced by InDI",
    outputs="volumes/enhanced_<step>.ome.zarr", enabled=_on,
    options=lambda exp: {**{f"enhance.{k}": getattr(exp.enhance, k) for k in ("steps", "seed", "tile", "overlap")},
                         "inputs.names": exp.inputs.names, "inputs.voxel_size_nm": exp.inputs.voxel_size_nm},
    input_files=lambda inp, step: {inp.names[step]: inp.series[step]},
    steps=lambda ctx: tuple(range(ctx.inputs.n_steps)),
    run_step=_enhance_step, save_step=_enhance_save, load_step=_enhance_load)


# -- enhance_quality --------------------------------------------------------------------------------

_NAN = float("nan")


def _step_quality(ctx, step: int, model, phi) -> dict:
    """PSNR / SSIM / CNR of bicubic and InDI against the step's HQ scan, on the HQ grid."""
    from ..enhance import prepare_pair
    from ..enhance.data import _resample
    from ..quality import compare
    from .stage_io import read_volume

    inp = ctx.inputs
    lq = read_volume(inp.series[step], ctx.experiment.inputs.voxel_size_nm)
    hq = read_volume(inp.truth_hq[step])
    pr = prepare_pair(lq, hq, register=False, phi0=phi)
    bicubic = model.info.hq_scaling.inverse(model.info.lq_scaling.forward(pr.lq))  # HQ grey levels, metric-fair
    indi = _resample(read_volume(enhanced_path(ctx.out, inp.names[step])).numpy(), phi, pr.hq.shape, order=3)
    table = compare(pr.hq, {"bicubic": bicubic, "InDI": indi}, voxel_size_nm=pr.hq_voxel_size_nm, mask=pr.mask,
                    metrics=("psnr", "ssim", "cnr"), reference_name="HQ")
    row = {"step": inp.names[step], "where": "in-situ step vs its HQ scan (enhance.truth_hq)"}
    for name in ("bicubic", "InDI"):
        r = table.row(name)
        row.update({f"psnr_db_{name}": _num(r.psnr_db), f"ssim_{name}": _num(r.ssim), f"cnr_{name}": _num(r.cnr)})
    row["cnr_HQ"] = _num(table.row("HQ").cnr)
    return row


def _num(v) -> float:
    return _NAN if v is None else float(v)


def _quality_run(ctx):
    inp = ctx.inputs
    metrics = _read_json(ctx.out / MODEL_DIR / "metrics.json")
    rows = [{"step": "pair", "where": "held-out slices of the training pair (PSNR in [-1, 1] units, from training)",
             "psnr_db_bicubic": _num(metrics.get("val_psnr_lq_db")), "ssim_bicubic": _NAN, "cnr_bicubic": _NAN,
             "psnr_db_InDI": _num(metrics.get("val_psnr_db")), "ssim_InDI": _NAN, "cnr_InDI": _NAN, "cnr_HQ": _NAN}]
    if inp.truth_hq:
        model, phi = ctx.load("train"), ctx.load("register_pair")
        rows += [_step_quality(ctx, i, model, phi) for i in range(inp.n_steps)]
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


ENHANCE_QUALITY = Stage(
    name="enhance_quality", needs=("register_pair", "train", "enhance"), per_step=False,
    description="PSNR / SSIM / CNR of bicubic LQ and InDI against HQ", outputs="tables/enhance_quality",
    enabled=_on, options=lambda exp: {"enhance.truth_hq": exp.enhance.truth_hq, "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {f"enhance.truth_hq[{i}]": p for i, p in enumerate(inp.truth_hq)},
    run=_quality_run, save=lambda table, out: write_tables(table, out, "enhance_quality"),
    load=lambda out: read_table_of(out, "enhance_quality"))

#: the enhance stages, in workflow order (before every analysis stage)
ENHANCE_STAGES = (REGISTER_PAIR, TRAIN, ENHANCE, ENHANCE_QUALITY)
