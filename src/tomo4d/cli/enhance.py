"""``tomo4d enhance train|apply|sweep|evaluate``: thin wrappers around :mod:`tomo4d.enhance`."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import click

from ..errors import InputError
from ._paths import declare_paths
from ._util import emit, json_option, parse_triple, progress_bar

RULE_CHOICES = ("balanced", "distortion", "sharpness")   # tomo4d.enhance.steps.RULES (not imported: cheap --help)
PRECISION_CHOICES = ("fp32", "bf16", "fp16")             # tomo4d.enhance.precision.PRECISIONS


def _open(path, voxel_size):
    """A volume, or a 2D image (TIFF) as a stack of one slice (for the slices route)."""
    from ..io import open_image, open_volume

    vs = parse_triple(voxel_size, name="--voxel-size")
    try:
        return open_volume(path, voxel_size_nm=vs)
    except InputError as exc:
        if "holds a 2D image" not in str(exc):
            raise
    from ..volume import Volume

    return Volume(open_image(path)[None], vs)


def _config(config, preset, steps, seed, rule=None, **fields):
    """The training config: ``--config`` or the preset, with the options given on the command line
    (``fields``: TrainConfig fields, None = not given)."""
    from ..enhance import TrainConfig

    cfg = TrainConfig.from_json(config) if config else TrainConfig.preset(preset)
    updates = {"step_rule": rule} if rule else {}
    updates.update({k: v for k, v in fields.items() if v is not None})
    if steps is not None:
        updates["steps"] = steps
    if seed is not None:
        updates["seed"] = seed
    return TrainConfig.from_dict({**cfg.to_dict(), **updates}) if updates else cfg


def _sample_maps(dst) -> tuple[Path, Path]:
    """The spread and data-consistency maps written beside DST by ``apply --samples K``."""
    p = Path(dst)
    base = p.name[: -len("".join(p.suffixes))] if p.suffixes else p.name
    suffix = "".join(p.suffixes)
    return p.with_name(f"{base}_spread{suffix}"), p.with_name(f"{base}_consistency{suffix}")


def _apply_derived(params) -> dict:
    if params.get("samples", 1) > 1 and params.get("dst"):
        spread, cons = _sample_maps(params["dst"])
        return {"spread map": str(spread), "consistency map": str(cons)}
    return {}


def _models_in(params) -> list[str]:
    """The model folders of ``evaluate --model NAME=DIR``."""
    return [spec.partition("=")[2] or spec for spec in params.get("models") or ()]


def _evaluate_derived(params) -> dict:
    out = params.get("out")
    return {f"--output/{f}": str(Path(out) / f) for f in ("table.json", "table.csv", "figure.png")} if out else {}


@click.group()
def enhance():
    """InDI enhancement: train on one LQ/HQ pair, enhance unseen LQ volumes."""


@declare_paths(inputs=("lq", "hq", "config"), outputs=("out",), resumable=("out",))
@enhance.command()
@click.option("--lq", required=True, type=click.Path(path_type=str), help="Low-quality volume (2x coarser voxel).")
@click.option("--hq", required=True, type=click.Path(path_type=str), help="High-quality volume of the same region.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str), help="Model folder to write.")
@click.option("--config", default=None, type=click.Path(path_type=str), help="JSON training config.")
@click.option("--preset", default="small", show_default=True, type=click.Choice(["tiny", "small", "reference"]))
@click.option("--objective", default="indi", show_default=True, type=click.Choice(["indi", "regression", "gan"]),
              help="InDI, or a one-step baseline with the same network.")
@click.option("--steps", default=None, type=int, help="Override the number of optimiser steps.")
@click.option("--seed", default=None, type=int, help="Override the seed.")
@click.option("--rule", default=None, type=click.Choice(RULE_CHOICES),
              help="Rule that recommends the InDI step count from the validation sweep (default: the config's, "
                   "balanced).")
@click.option("--no-register", is_flag=True, help="Skip the sub-pixel registration (rigid, then affine if its stretch is < 1 %; pair already aligned).")
@click.option("--route", default="auto", show_default=True, type=click.Choice(["auto", "volume", "slices"]),
              help="volume: 3D pair (LQ 2x coarser along z, y, x); slices: registered 2D slice pairs or one 2D pair "
                   "(LQ 2x coarser in-plane); auto: slices when LQ and HQ have one slice per slice.")
@click.option("--lq-voxel-size", default=None, help="Override the LQ voxel size (nm, one value or Z,Y,X).")
@click.option("--hq-voxel-size", default=None, help="Override the HQ voxel size (nm).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--precision", default=None, type=click.Choice(PRECISION_CHOICES),
              help="Autocast precision of training (default: the config's, fp32; bf16 on CPU or GPU; fp16 on a "
                   "GPU only).")
@click.option("--val-every", default=None, type=int,
              help="Validate (PSNR/SSIM of the held-out slices) every this many steps (0: at the end only; "
                   "default: the preset's): the curve in validation_curve.json/png.")
@click.option("--early-stop-patience", default=None, type=int,
              help="Stop after this many validations without a gain of more than --early-stop-min-delta dB; the "
                   "best validated weights are saved (0: off, the default).")
@click.option("--early-stop-min-delta", default=None, type=float, help="Smallest gain in dB (default 0.05).")
@click.option("--no-resume", is_flag=True, help="Ignore an existing checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@json_option
def train(lq, hq, out, config, preset, objective, steps, seed, rule, no_register, route, lq_voxel_size,
          hq_voxel_size, device, precision, val_every, early_stop_patience, early_stop_min_delta, no_resume,
          overwrite, as_json):
    """Train a model on one LQ/HQ pair (up-sample, register, mask, split, train)."""
    from ..enhance import baseline_config
    from ..enhance import train as _train

    cfg = _config(config, preset, steps, seed, rule, precision=precision, val_every=val_every,
                  early_stop_patience=early_stop_patience, early_stop_min_delta_db=early_stop_min_delta)
    if objective != "indi":
        cfg = baseline_config(cfg, objective)
    lq_v, hq_v = _open(lq, lq_voxel_size), _open(hq, hq_voxel_size)
    with progress_bar(f"training {objective}") as progress:
        res = _train(lq_v, hq_v, out, config=cfg, register=not no_register, resume=not no_resume,
                     overwrite=overwrite, device=device, route=route, progress=progress)
    emit(res.__dict__, as_json=as_json,
         text=f"model written to {res.model_dir} ({res.steps} steps, {res.seconds:.0f} s on {res.device}); "
              f"validation PSNR {res.val_psnr_db:.2f} dB vs bicubic {res.val_psnr_lq_db:.2f} dB"
              + (f"; recommended InDI steps {res.recommended_steps} (validation sweep, {res.step_rule}: "
                 f"{res.model_dir}/step_sweep.json)" if res.step_rule else "")
              + (f"; stopped early, weights of step {res.best_step}" if res.stopped_early else "")
              + ("; UNDER-TRAINED: validation still rising at the end, train longer "
                 f"({res.model_dir}/validation_curve.png)" if res.undertrained else ""))


@declare_paths(inputs=("model", "src"), outputs=("dst",), derived=_apply_derived)
@enhance.command()
@click.argument("model", type=click.Path(path_type=str))
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--steps", default=None, type=int,
              help="InDI steps (default: the N recommended by the model's validation sweep).")
@click.option("--rule", default=None, type=click.Choice(RULE_CHOICES),
              help="Recommendation rule of the sweep (default: the one chosen at training).")
@click.option("--consistency", is_flag=True,
              help="Project every enhanced slice onto the LQ constraint (degraded back, it reproduces the input).")
@click.option("--seed", default=0, show_default=True, help="Noise seed.")
@click.option("--batch", default=4, show_default=True, help="Tiles per network call.")
@click.option("--tile", default=512, show_default=True, help="Tile side (pixels of the up-sampled slice).")
@click.option("--overlap", default=64, show_default=True, help="Tile overlap (pixels).")
@click.option("--no-z-interp", is_flag=True, help="Keep the LQ slice spacing (no cubic interpolation along z).")
@click.option("--slices/--volume", "slices", default=None,
              help="SRC is a 2D image or a stack of independent slices (no z interpolation, z voxel size not "
                   "checked) / a volume.  Default: slices for a model trained on slice pairs.")
@click.option("--samples", default=1, show_default=True,
              help="K > 1: also write the spread of K samples and the data-consistency map beside the output.")
@click.option("--voxel-size", default=None, help="Override the input voxel size (nm).")
@click.option("--no-voxel-check", is_flag=True, help="Accept a voxel size other than the trained one.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(PRECISION_CHOICES),
              help="Autocast precision of the network (bf16: CPU or GPU; fp16: GPU only).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (never the input).")
@json_option
def apply(model, src, dst, steps, rule, consistency, seed, batch, tile, overlap, no_z_interp, slices, samples,
          voxel_size, no_voxel_check, device, precision, overwrite, as_json):
    """Enhance the LQ volume SRC into DST (slice-wise, tiled, streamed; 2x finer voxels)."""
    from .._validate import check_int
    from ..enhance import enhance_volume, enhance_with_uncertainty, load_model
    from ..io import save_volume, scratch_path

    check_int("--samples", samples, minimum=1)

    m = load_model(model, device=device, precision=precision)
    vol = _open(src, voxel_size)
    out = {"output": str(dst)}
    if samples > 1:
        if consistency:
            raise InputError("--consistency works on single outputs; drop it or use --samples 1")
        if steps is None:
            from ..enhance.sample import check_steps

            steps = check_steps(m, None, rule=rule)
        p = Path(dst)
        spread, cons = _sample_maps(dst)  # declared outputs: checked against the inputs before any work
        # the three maps stream slab by slab into memory maps beside the output (bounded memory),
        # then are written in the requested format; the scratch folder is removed in any case
        spill = scratch_path(p)  # removed below, or by the next write of DST if this run is killed
        try:
            with progress_bar("enhancing (samples)") as progress:
                flat = slices if slices is not None else m.info.provenance.get("route") == "slices"
                res = enhance_with_uncertainty(m, vol, n_samples=samples, steps=steps, seed=seed, tile=tile,
                                               overlap=overlap, batch=batch, z_interp=not (no_z_interp or flat),
                                               check_voxel_size=not no_voxel_check, spill_dir=spill,
                                               progress=progress)
            save_volume(res.mean, dst, overwrite=overwrite)
            save_volume(res.spread, spread, overwrite=overwrite)
            save_volume(res.consistency, cons, overwrite=overwrite)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        out.update(spread=str(spread), consistency=str(cons), **res.summary())
    else:
        enh = enhance_volume(m, vol, steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch,
                             z_interp=not no_z_interp, check_voxel_size=not no_voxel_check, rule=rule,
                             consistency=consistency, slices=slices)
        with progress_bar(f"enhancing {src}") as progress:
            save_volume(enh, dst, overwrite=overwrite, progress=progress)
        e = enh.metadata.extra["enhance"]
        out.update(shape=list(enh.shape), voxel_size_nm=list(enh.voxel_size_nm), steps=e["steps"],
                   steps_from=e["steps_from"])

    def lines():
        yield f"wrote {dst}" + (f" ({out['steps']} InDI steps: {out['steps_from']})" if "steps" in out else "")
        if samples > 1:
            yield (f"spread {out['spread']} (mean {out['spread_mean']:.4g}, p99 {out['spread_p99']:.4g}); "
                   f"data consistency {out['consistency']} (mean {out['consistency_mean']:.4g} vs bicubic "
                   f"{out['consistency_bicubic_mean']:.4g}, LQ noise {out['lq_noise_std']:.4g})")

    emit(out, as_json=as_json, text=lines())


@declare_paths(inputs=("model", "lq", "hq"))
@enhance.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--lq", required=True, type=click.Path(path_type=str))
@click.option("--hq", required=True, type=click.Path(path_type=str))
@click.option("--max-steps", default=16, show_default=True, help="Try 1..MAX_STEPS InDI steps (at most 50).")
@click.option("--rule", default="balanced", show_default=True, type=click.Choice(RULE_CHOICES),
              help="How N is recommended from the curve (tomo4d.enhance.steps).")
@click.option("--consistency", is_flag=True, help="Project every output onto the LQ constraint before judging it.")
@click.option("--no-register", is_flag=True, help="Skip the sub-pixel registration (rigid, then affine if its stretch is < 1 %; pair already aligned).")
@json_option
def sweep(model, lq, hq, max_steps, rule, consistency, no_register, as_json):
    """Quality against the number of InDI steps on the held-out slices (PSNR, SSIM, edge FWHM against HQ; data
    consistency against LQ); recommends N."""
    from .._validate import check_int
    from ..enhance import load_model, sweep_steps

    check_int("--max-steps", max_steps, minimum=1)
    m = load_model(model)
    with progress_bar("sweeping steps") as progress:
        res = sweep_steps(m, _open(lq, None), _open(hq, None), steps=range(1, max_steps + 1), rule=rule,
                          consistency=consistency, register=not no_register, progress=progress)
    emit(res.to_dict, as_json=as_json, text=sweep_lines(res))


def sweep_lines(res) -> list[str]:
    """The sweep as a text table (also used by ``train``)."""
    head = (f"{'steps':>5}  {'PSNR (dB)':>9}  {'SSIM':>6}  {'detail/HQ':>9}  {'FWHM (nm)':>9}  {'FWHM/HQ':>7}  "
            f"{'cons. RMS':>9}  {'> 3 sigma':>9}")
    nan = (float("nan"),) * len(res.steps)
    rows = [f"{n:>5}  {p:>9.2f}  {s:>6.3f}  {d:>9.3f}  {f:>9.1f}  {r:>7.3f}  {c:>9.2f}  {q:>8.1f}%"
            for (n, p, s, f, c, q), r, d in zip(res.rows(), res.fwhm_ratio or nan, res.detail_power or nan)]
    b, h = res.bicubic, res.hq
    return [head, *rows,
            f"bicubic: PSNR {b['psnr_db']:.2f} dB, SSIM {b['ssim']:.3f}, detail/HQ {b.get('detail_power', nan[0]):.3f}, "
            f"FWHM {b['fwhm_nm']:.1f} nm, "
            f"{100 * b['inconsistent_fraction']:.1f}% > 3 sigma; HQ: FWHM {h['fwhm_nm']:.1f} nm, "
            f"{100 * h['inconsistent_fraction']:.1f}% > 3 sigma (sigma_n = {res.lq_noise:.4g} LQ grey values)",
            f"recommended steps: {res.recommended_steps} ({res.rule}); "
            + ", ".join(f"{r}: {n}" for r, n in res.recommended.items())]


@declare_paths(inputs=("lq", "hq", _models_in), outputs=("out",), derived=_evaluate_derived, resumable=("out",))
@enhance.command()
@click.option("--lq", required=True, type=click.Path(path_type=str))
@click.option("--hq", required=True, type=click.Path(path_type=str))
@click.option("--model", "models", multiple=True, required=True,
              help="NAME=MODEL_DIR (repeatable), e.g. --model InDI=m_indi --model CNN=m_cnn --model GAN=m_gan.")
@click.option("--steps", default=None, type=int, help="InDI steps (default: each model's recommendation).")
@click.option("--slices", default="validation", show_default=True, type=click.Choice(["validation", "all"]))
@click.option("--no-register", is_flag=True)
@click.option("--edge-half-length", default=40.0, show_default=True,
              help="Longest half edge profile (HQ pixels) of the edge-resolution measurement.")
@click.option("-o", "--output", "out", default=None, type=click.Path(path_type=str),
              help="Folder for table.json, table.csv and figure.png.")
@click.option("--overwrite", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(lq, hq, models, steps, slices, no_register, edge_half_length, out, overwrite, as_json):
    """Table of PSNR, SSIM, SIFT features, edge FWHM (nm) and CNR for LQ, bicubic and models vs HQ."""
    from ..enhance import evaluate as _evaluate
    from ..enhance import evaluation_figure, load_model

    loaded = {}
    for spec in models:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        loaded[name] = load_model(path)
    res = _evaluate(_open(lq, None), _open(hq, None), models=loaded, steps=steps, slices=slices,
                    register=not no_register, edge_half_length_px=edge_half_length)
    if out:
        from ..io import atomic_output
        from ..report.html import figure_png

        o = Path(out)
        if o.exists() and not o.is_dir():
            raise InputError(f"--output {out!r} exists and is not a folder; give a folder")
        o.mkdir(parents=True, exist_ok=True)
        with atomic_output(o / "table.json", overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(res.to_dict(), indent=2, default=str), encoding="utf-8")
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(res.header())
        w.writerows(res.rows())
        with atomic_output(o / "table.csv", overwrite=overwrite) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        with atomic_output(o / "figure.png", overwrite=overwrite) as tmp:
            tmp.write_bytes(figure_png(evaluation_figure(res)))
    emit(res.to_dict, as_json=as_json, text=[
        "  ".join(f"{h:>14}" for h in res.header()),
        *("  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}" for v in row) for row in res.rows())])
