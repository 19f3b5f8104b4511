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
  ``volumes/enhanced_<step>.ome.zarr``; an output over ``chunk_budget_mb`` is written slab by slab into a resumable
  store (:func:`tomo4d.enhance.stream.enhance_to_store`, the same voxels).  The analysis stages read them with ``enhance.apply_to_series``
  (:mod:`.series`: the analysis series and grid).
* ``enhance_repeat``: with ``apply_to_series``, a ``residual`` section and ``inputs.repeat``, the repeat scan
  enhanced the same way (same model, steps and seed) -> ``volumes/repeat_enhanced.ome.zarr``, so that the
  residual stage's noise floor is measured on the same kind of image as its maps.
* ``enhance_quality``: the five image-quality metrics (:func:`tomo4d.quality.compare`: PSNR, SSIM,
  SIFT congruent features, edge resolution as FWHM in nm, CNR) of the bicubic LQ and of InDI against
  HQ, with the edge FWHM and CNR of HQ itself, on the HQ grid through the pair transform, for each
  step with an HQ scan (``enhance.truth_hq``); SIFT and edges on the 4 z slices of
  :func:`quality_slices`.  An edge FWHM that cannot be measured (too few isolated edges) is NaN with
  the reason in ``edge_note_<image>``.  The training pair's row has the held-out PSNR from training
  -> ``tables/enhance_quality``.  Regions of interest (:func:`roi_box`: the 64 x 64 HQ-pixel window
  with most edges of the middle slice) of bicubic / InDI / HQ on the HQ grid, per step with an HQ
  scan and for the training pair (InDI of an LQ crop around it) -> ``tables/enhance_roi.npz``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from .fingerprint import fingerprint
from .series import analysis_enhanced, enhanced_path, enhanced_repeat_path
from .stage import Stage, rel
from .stage_io import read_table_of, write_tables

__all__ = ["ENHANCE", "ENHANCE_QUALITY", "ENHANCE_REPEAT", "ENHANCE_STAGES", "REGISTER_PAIR", "TRAIN",
           "enhanced_path", "quality_slices", "read_rois", "roi_box"]

log = logging.getLogger(__name__)

TRANSFORM = "models/enhance_pair_transform.json"
PAIR_QUALITY = "models/enhance_pair_quality.json"
MODEL_DIR = "models/indi"


def _on(exp, inp) -> bool:
    return exp.enhance is not None and inp.training_pair is not None


def _pair_files(inp, step) -> dict:
    return {"training_pair.lq": inp.training_pair[0], "training_pair.hq": inp.training_pair[1]}


def _write_json(path: Path, obj) -> Path:
    from ..io import write_json

    write_json(obj, path, overwrite=True, indent=1, default=float)
    return path


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
    from ..enhance import TrainConfig
    from ..enhance.model import CONFIG_FILE
    from ..errors import InputError

    stamp = folder / "run_key.json"
    try:
        old = _read_json(stamp)
        # a key written before a TrainConfig field existed: that field at its default
        old["config"] = TrainConfig.from_dict(old["config"]).to_dict()
        same = old == ident
    except (OSError, ValueError, KeyError, TypeError, InputError):
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

def _enhanced(ctx, src: Path, dst: Path):
    """``src`` enhanced: a lazy Volume (written by the save), or over ``chunk_budget_mb`` the
    :class:`~tomo4d.enhance.stream.StoredEnhancement` written slab by slab into ``dst``'s progress store
    (resumable, published by the save; the same voxels)."""
    from ..enhance import enhance_volume
    from ..enhance.stream import enhance_to_store
    from ..io import open_volume
    from .chunked import budget_mb, streams

    sec = ctx.experiment.enhance
    model = ctx.load("train")
    vol = open_volume(src, voxel_size_nm=ctx.experiment.inputs.voxel_size_nm)
    kw = dict(steps=sec.steps, seed=sec.seed, tile=sec.tile, overlap=sec.overlap,
              precision=sec.train_config().precision)  # inference in the training's precision
    out_shape = (2 * vol.shape[0], 2 * vol.shape[1], 2 * vol.shape[2])
    if not streams(ctx, out_shape, vol.dtype.itemsize + 8.0):
        return enhance_volume(model, vol, **kw)
    st = Path(src).stat()
    stamp = ctx.out / MODEL_DIR / "run_key.json"  # the training that made the model
    key = f"{src}:{st.st_size}:{st.st_mtime_ns}:{stamp.read_text() if stamp.is_file() else ''}"
    res = enhance_to_store(model, vol, dst, chunk_budget_mb=budget_mb(ctx), key=key, publish=False, **kw)
    log.info("enhance %s: streamed in %d slabs (%d resumed)", Path(src).name, res.n_slabs, res.n_resumed)
    return res


def _save_enhanced(result, path: Path) -> Path:
    from ..enhance.stream import StoredEnhancement
    from ..io import save_volume

    if isinstance(result, StoredEnhancement):
        return result.store.publish()
    return save_volume(result, path, overwrite=True)


def _enhance_step(ctx, step, previous):
    return _enhanced(ctx, ctx.inputs.series[step], enhanced_path(ctx.out, ctx.inputs.names[step]))


def _enhance_save(vol, out, ctx, step):
    return (rel(out, _save_enhanced(vol, enhanced_path(out, ctx.inputs.names[step]))),)


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


def _repeat_on(exp, inp) -> bool:
    """The residual stage reads the enhanced series and has a repeat scan: enhance it the same way."""
    return (_on(exp, inp) and analysis_enhanced(exp) and inp.repeat is not None and exp.residual is not None
            and exp.dvc is not None and inp.n_steps >= 2)


def _repeat_run(ctx):
    return _enhanced(ctx, ctx.inputs.repeat, enhanced_repeat_path(ctx.out))


def _open(path: Path):
    from ..io import open_volume

    return open_volume(path)


def _repeat_save(vol, out):
    return (rel(out, _save_enhanced(vol, enhanced_repeat_path(out))),)


ENHANCE_REPEAT = Stage(
    name="enhance_repeat", needs=("train",), per_step=False,
    description="the repeat scan (inputs.repeat) enhanced like the series: the residual stage's noise floor",
    outputs="volumes/repeat_enhanced.ome.zarr", enabled=_repeat_on,
    options=lambda exp: {**{f"enhance.{k}": getattr(exp.enhance, k) for k in ("steps", "seed", "tile", "overlap")},
                         "inputs.voxel_size_nm": exp.inputs.voxel_size_nm},
    input_files=lambda inp, step: {"inputs.repeat": inp.repeat},
    run=_repeat_run, save=_repeat_save, load=lambda out: _open(enhanced_repeat_path(out)))


# -- enhance_quality --------------------------------------------------------------------------------

_NAN = float("nan")
QUALITY_TABLE = "enhance_quality"
ROI_FILE = "tables/enhance_roi.npz"
#: side of the regions of interest, HQ pixels (the whole slice when the HQ grid is smaller)
ROI_PX = 64
#: the three images of each comparison: the reference (HQ) first
IMAGES = ("HQ", "bicubic", "InDI")
#: edge detection options (as the demo ``quality`` stage): at most 60 candidate profiles over the slices
EDGE_OPTIONS = {"max_edges": 60}


def quality_slices(nz: int) -> tuple[int, ...]:
    """The z slices of SIFT and edge resolution: 4 evenly spaced in the central 60 % of the HQ grid (as the demo
    ``quality`` stage), away from the top and bottom where the pair transform leaves HQ voxels uncovered."""
    return tuple(sorted({int(v) for v in np.linspace(0.2 * nz, 0.8 * nz - 1, 4)}))


def roi_box(hq: np.ndarray, mask: np.ndarray, size: int = ROI_PX) -> tuple[int, int, int, int]:
    """``(z, y0, x0, side)`` of the region of interest: on the middle z slice of ``hq``, the ``side`` x ``side``
    window (``size``, at most the slice) with the largest summed gradient magnitude (Gaussian, sigma 1 px) inside
    ``mask``: the region with most edges."""
    from scipy import ndimage

    k = hq.shape[0] // 2
    side = int(min(size, *hq.shape[1:]))
    g = ndimage.gaussian_gradient_magnitude(hq[k].astype(np.float32), 1.0) * mask[k]
    c = np.pad(g.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table
    sums = c[side:, side:] - c[:-side, side:] - c[side:, :-side] + c[:-side, :-side]
    y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return k, int(y0), int(x0), side


def _roi_of(images: dict, box) -> dict:
    k, y0, x0, s = box
    return {n: np.asarray(images[n][k, y0:y0 + s, x0:x0 + s], np.float32) for n in IMAGES} | \
        {"origin_zyx": np.array([k, y0, x0])}


def _quality_columns(table) -> dict:
    """The metric columns of one comparison (units in the names; NaN and the reason where not measurable)."""
    row = {}
    for name in IMAGES:
        r = table.row(name)
        if name != "HQ":
            row.update({f"psnr_db_{name}": _num(r.psnr_db), f"ssim_{name}": _num(r.ssim),
                        f"sift_matches_{name}": _num(r.sift_matches)})
        row.update({f"edge_fwhm_nm_{name}": _num(r.fwhm_mean_nm), f"edge_fwhm_std_nm_{name}": _num(r.fwhm_std_nm),
                    f"edge_count_{name}": _num(r.n_edges), f"cnr_{name}": _num(r.cnr),
                    f"edge_note_{name}": table.edge_errors.get(name, "measured")})
    return row


def _step_quality(ctx, step: int, model, phi) -> tuple[dict, dict]:
    """All five metrics of bicubic and InDI against the step's HQ scan (edge FWHM and CNR of HQ too), on the HQ
    grid; and the step's region of interest."""
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
    slices = quality_slices(pr.hq.shape[0])
    table = compare(pr.hq, {"bicubic": bicubic, "InDI": indi}, voxel_size_nm=pr.hq_voxel_size_nm, mask=pr.mask,
                    reference_name="HQ", slices=slices, edge_options=EDGE_OPTIONS)
    row = {"step": inp.names[step], "where": "in-situ step vs its HQ scan (enhance.truth_hq)",
           "slices": " ".join(map(str, slices)), **_quality_columns(table)}
    images = {"HQ": pr.hq, "bicubic": bicubic, "InDI": indi}
    return row, _roi_of(images, roi_box(pr.hq, pr.mask))


def _pair_roi(ctx, model, phi) -> dict:
    """The region of interest of the training pair: InDI of an LQ crop around it (the enhance stage enhances the
    series only), sampled on the HQ grid like the steps."""
    from scipy import ndimage

    from ..enhance import enhance_volume, prepare_pair

    sec = ctx.experiment.enhance
    lq, hq = _pair_volumes(ctx.inputs)
    pr = prepare_pair(lq, hq, register=False, phi0=phi)
    k, y0, x0, s = box = roi_box(pr.hq, pr.mask)
    zyx = np.stack(np.meshgrid([k], np.arange(y0, y0 + s), np.arange(x0, x0 + s), indexing="ij")).reshape(3, -1)
    up = phi[:3, :3] @ zyx + phi[:3, 3:4]  # voxels of the LQ up-sampled x2 (sample j at LQ j/2 - 0.25)
    margin = 6  # LQ voxels beyond the ROI: the cubic samples and the network's context
    lo = np.maximum(np.floor(up.min(1) / 2 - 0.25).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(up.max(1) / 2 - 0.25).astype(int) + margin + 1, lq.shape)
    crop = lq.crop(*(slice(a, b) for a, b in zip(lo, hi)))
    indi = enhance_volume(model, crop, steps=sec.steps, seed=sec.seed, tile=sec.tile, overlap=sec.overlap,
                          precision=sec.train_config().precision).numpy()
    roi_indi = ndimage.map_coordinates(indi.astype(np.float32), up - 2 * lo[:, None], order=3, mode="nearest")
    bicubic = model.info.hq_scaling.inverse(model.info.lq_scaling.forward(pr.lq[k, y0:y0 + s, x0:x0 + s]))
    return {"HQ": np.asarray(pr.hq[k, y0:y0 + s, x0:x0 + s], np.float32), "bicubic": bicubic.astype(np.float32),
            "InDI": roi_indi.reshape(s, s), "origin_zyx": np.array(box[:3])}


def _num(v) -> float:
    return _NAN if v is None else float(v)


def _pair_row(ctx) -> dict:
    """The training pair: held-out PSNR from training; the other metrics are measured on the in-situ steps."""
    metrics = _read_json(ctx.out / MODEL_DIR / "metrics.json")
    row = {"step": "pair", "where": "held-out slices of the training pair (PSNR in [-1, 1] units, from training)",
           "slices": "held-out"}
    for name in IMAGES:
        if name != "HQ":
            row.update({f"psnr_db_{name}": _NAN, f"ssim_{name}": _NAN, f"sift_matches_{name}": _NAN})
        row.update({f"edge_fwhm_nm_{name}": _NAN, f"edge_fwhm_std_nm_{name}": _NAN, f"edge_count_{name}": _NAN,
                    f"cnr_{name}": _NAN, f"edge_note_{name}": "not measured on the training pair"})
    row["psnr_db_bicubic"], row["psnr_db_InDI"] = _num(metrics.get("val_psnr_lq_db")), _num(metrics.get("val_psnr_db"))
    return row


def _quality_run(ctx):
    inp = ctx.inputs
    model, phi = ctx.load("train"), ctx.load("register_pair")
    rows, rois = [_pair_row(ctx)], {"pair": _pair_roi(ctx, model, phi)}
    for i in range(inp.n_steps if inp.truth_hq else 0):
        row, rois[inp.names[i]] = _step_quality(ctx, i, model, phi)
        rows.append(row)
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}, rois


def _quality_save(result, out) -> tuple[str, ...]:
    from ..io import atomic_output

    table, rois = result
    arrays = {"steps": np.asarray(list(rois)), "images": np.asarray(IMAGES), "roi_rule": np.asarray(roi_box.__doc__)}
    for step, r in rois.items():
        arrays.update({f"{step}__{k}": v for k, v in r.items()})
    with atomic_output(out / ROI_FILE, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return (*write_tables(table, out, QUALITY_TABLE), ROI_FILE)


def read_rois(out: Path) -> dict | None:
    """``{step: {"HQ", "bicubic", "InDI": 2D array, "origin_zyx": (z, y0, x0)}}`` of ``tables/enhance_roi.npz``,
    or None."""
    p = Path(out) / ROI_FILE
    if not p.is_file():
        return None
    with np.load(p) as z:
        return {str(s): {k: z[f"{s}__{k}"] for k in (*IMAGES, "origin_zyx")} for s in z["steps"]}


ENHANCE_QUALITY = Stage(
    name="enhance_quality", needs=("register_pair", "train", "enhance"), per_step=False,
    description="PSNR / SSIM / SIFT / edge FWHM / CNR of bicubic LQ and InDI against HQ; LQ / InDI / HQ regions "
    "of interest", outputs=f"tables/{QUALITY_TABLE}, {ROI_FILE}", enabled=_on,
    options=lambda exp: {"enhance.truth_hq": exp.enhance.truth_hq, "inputs.names": exp.inputs.names,
                         **{f"enhance.{k}": getattr(exp.enhance, k) for k in ("steps", "seed", "tile", "overlap")},
                         "enhance_quality.metrics": "psnr ssim sift edge cnr + roi"},
    input_files=lambda inp, step: {f"enhance.truth_hq[{i}]": p for i, p in enumerate(inp.truth_hq)},
    run=_quality_run, save=_quality_save, load=lambda out: read_table_of(out, QUALITY_TABLE))

#: the enhance stages, in workflow order (before every analysis stage)
ENHANCE_STAGES = (REGISTER_PAIR, TRAIN, ENHANCE, ENHANCE_REPEAT, ENHANCE_QUALITY)
